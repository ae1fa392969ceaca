#!/usr/bin/env bash
# Installs what is needed, builds (Release), and runs every test; then rebuilds the loader, CLI
# and server tests and the fuzz targets (fuzz/) with AddressSanitizer + UBSan and runs them again.
# Exit status is the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
JOBS=${JOBS:-2}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$JOBS"
# The example program from the README, run on a fixture model.
FIX=${LONGCTX_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
if [ -d "$FIX" ]; then
  build/bin/example_generate "$FIX/models/llama_mha" "The quick brown fox" 8 "$FIX/tokenizer.model"
fi
(cd build && ctest --output-on-failure -j"$JOBS")
if [ "${LONGCTX_SKIP_ASAN:-0}" != "1" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLONGCTX_SANITIZE=ON -DLONGCTX_BUILD_BENCH=OFF
  cmake --build build-asan -j"$JOBS" --target longctx test_gguf test_kquants test_bpe test_loaders test_bias test_cli test_server \
    fuzz_seeds fuzz_gguf fuzz_safetensors fuzz_shard_index fuzz_hf_config fuzz_request fuzz_tokenizer \
    fuzz_spm_model fuzz_chat fuzz_state fuzz_overrides
  (cd build-asan && ctest --output-on-failure -j"$JOBS" -R "Loader|HfConfig|Bias|Gguf|GGUF|KQuants|Bpe|Cli|CLI|Server|Chat|fuzz_")
fi
