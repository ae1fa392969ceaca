#!/usr/bin/env bash
# Installs every Debian package longctx needs to build, test and run its tools. Idempotent:
# re-running it only installs what is missing.
set -euo pipefail
PKGS=(
  g++ cmake make pkg-config git
  libsentencepiece-dev        # tokenizer.model (SentencePiece) — the reference tokenizer
  nlohmann-json3-dev          # config.json, safetensors headers, CLI JSON output
  libgtest-dev libgmock-dev   # tests
  libbenchmark-dev            # kernel microbenchmarks
  libcpp-httplib-dev          # longctx serve (HTTP server; Debian ships it as a library)
  libhnswlib-dev              # --mem-index hnsw: approximate kNN over FoT memory (header-only)
  libpcre2-dev                # byte-level BPE pre-tokenizer regexes (GPT-2 / Llama 3 vocabularies)
  python3 python3-numpy python3-sentencepiece  # tools/ scripts that write test models
  python3-matplotlib          # longctx passkey/synth --plot heat maps (tools/plot_passkey.py)
  python3-torch               # tools/train/ (training longctx-fot-tiny; its CI smoke test)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
