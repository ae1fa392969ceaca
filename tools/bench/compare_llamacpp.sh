#!/usr/bin/env bash
# longctx vs llama.cpp speed on the same GGUF files, same threads, runs alternated
# (longctx, llama.cpp, longctx, llama.cpp, ...) so that load from other processes on a shared
# machine hits both engines alike. Results: docs/PERFORMANCE.md.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp tools/bench/compare_llamacpp.sh MODEL.gguf [MODEL.gguf ...]
#
# Environment:
#   LONGCTX   longctx binary (default build/bin/longctx)
#   THREADS   threads for both engines (default 2)
#   ROUNDS    alternations per test (default 3); each run is `-r $REPS` timed repetitions after
#             one untimed warm-up, so every engine gets ROUNDS*REPS samples per test
#   REPS      repetitions per run (default 2)
#   TESTS     space-separated tests, each "pP" | "tgN" | "pP@dD" | "tgN@dD" (default "p512 tg128")
#   FA        llama.cpp flash attention for tests with a depth (-fa, default 1); tests without a
#             depth use llama-bench's default unless FA_ALL=1
#   OUT       directory for the raw JSON (default /tmp/longctx-compare)
#   LONGCTX_EXTRA  extra `longctx bench` arguments (e.g. "-ctk f16 -ctv f16": llama-bench's
#             default KV cache type is f16, longctx's f32), with TAG as below
#   LLAMA_EXTRA  extra llama-bench arguments (e.g. "--poll 0"), with TAG a suffix for the test
#             name in the table (e.g. TAG=-poll0) so such runs stay apart
# Prints a markdown table of medians (tokens/s) and the longctx / llama.cpp ratio; the raw
# per-run JSON stays in $OUT/*.json for tools/bench/summarize_compare.py.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout built in \$LLAMA_CPP_DIR/build}"
LONGCTX="${LONGCTX:-$ROOT/build/bin/longctx}"
LLAMA_BENCH="$LLAMA_CPP_DIR/build/bin/llama-bench"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
REPS="${REPS:-2}"
TESTS="${TESTS:-p512 tg128}"
FA="${FA:-1}"
OUT="${OUT:-/tmp/longctx-compare}"
mkdir -p "$OUT"
[ $# -ge 1 ] || { echo "usage: LLAMA_CPP_DIR=... $0 MODEL.gguf [...]" >&2; exit 2; }

echo "# longctx $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty'), llama.cpp $LLAMA_CPP_DIR, threads $THREADS, $(date -u +%FT%TZ)" | tee "$OUT/run.info"

for model in "$@"; do
  base="$(basename "$model" .gguf)"
  for test in $TESTS; do
    depth=0
    spec="$test"
    if [[ "$test" == *@d* ]]; then depth="${test#*@d}"; spec="${test%@d*}"; fi
    case "$spec" in
      p*) pn=(-p "${spec#p}" -n 0) ;;
      tg*) pn=(-p 0 -n "${spec#tg}") ;;
      *) echo "bad test '$test'" >&2; exit 2 ;;
    esac
    fa=()
    if [ "$depth" != 0 ] || [ "${FA_ALL:-0}" = 1 ]; then fa=(-fa "$FA"); fi
    for round in $(seq 1 "$ROUNDS"); do
      tag="$OUT/${base}.${test}${TAG:-}.r${round}"
      echo "[$(date +%T)] $base $test round $round/$ROUNDS: longctx" >&2
      "$LONGCTX" bench -m "$model" "${pn[@]}" -d "$depth" -t "$THREADS" -r "$REPS" ${LONGCTX_EXTRA:-} --json >"$tag.longctx.json"
      echo "[$(date +%T)] $base $test round $round/$ROUNDS: llama.cpp" >&2
      "$LLAMA_BENCH" -m "$model" "${pn[@]}" -d "$depth" -t "$THREADS" -r "$REPS" "${fa[@]}" ${LLAMA_EXTRA:-} -o json \
        >"$tag.llamacpp.json" 2>"$tag.llamacpp.err"
    done
  done
done
/usr/bin/python3 "$ROOT/tools/bench/summarize_compare.py" "$OUT"
