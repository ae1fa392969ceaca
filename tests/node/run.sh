#!/usr/bin/env bash
# Runs server.test.js (node's built-in test runner + the official `openai` package) against a
# real `longctx serve` with the fixture model.
#   usage: tests/node/run.sh [BIN_DIR] [FIXTURES_DIR]
# Exits 77 (CTest: skipped) when node/npm are missing or the package cannot be installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../build/bin}"
fixtures="${LONGCTX_FIXTURES:-${2:-$here/../../../shared/fixtures}}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "run.sh: node and npm are needed (Debian: apt-get install nodejs npm); skipping"
  exit 77
fi
cd "$here"
if [ ! -f node_modules/openai/package.json ]; then
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "run.sh: cannot install the openai package (offline?); skipping"
    exit 77
  fi
fi

work="$(mktemp -d)"
key="node-test-key"
"$bin/longctx" serve -m "$fixtures/models/llama_mha" --tokenizer "$fixtures/tokenizer.model" \
  --chat-template chatml -c 512 --port 0 --parallel 2 -t 2 --api-key "$key" --quiet --no-cache-prompt \
  >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$work/out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "run.sh: the server exited:"; cat "$work/err"; exit 1; }
  sleep 0.1
done
url="$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$work/out")"
[ -n "$url" ] || { echo "run.sh: the server did not start:"; cat "$work/err"; exit 1; }

LONGCTX_BASE_URL="$url/v1" LONGCTX_API_KEY="$key" LONGCTX_MODEL="llama_mha" node --test server.test.js
