#!/usr/bin/env bash
# The server's prompt cache: time of a request whose prompt extends the previous turn, with the
# cache (default) and with "cache_prompt": false, alternated. Results: docs/SERVER.md.
#
#   tools/bench/prompt_cache.sh MODEL [ROUNDS]
#
# Environment: LONGCTX (default build/bin/longctx), THREADS (default 2), PORT (default 18091).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LONGCTX="${LONGCTX:-$ROOT/build/bin/longctx}"
MODEL="${1:?usage: $0 MODEL [ROUNDS]}"
ROUNDS="${2:-3}"
PORT="${PORT:-18091}"
"$LONGCTX" serve -m "$MODEL" --port "$PORT" -t "${THREADS:-2}" --quiet -c 4096 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 1 120); do curl -s "localhost:$PORT/health" >/dev/null && break; sleep 1; done
prompt=$(python3 -c "print('The quick brown fox jumps over the lazy dog near the river bank. ' * 120)")
body() {
  python3 -c "import json,sys; print(json.dumps({'prompt': sys.argv[1], 'max_tokens': 16, 'temperature': 0, 'cache_prompt': sys.argv[2] == '1'}))" "$1" "$2"
}
tmp=$(mktemp -d)
echo "round cache seconds prompt_tokens cached_tokens"
for r in $(seq 1 "$ROUNDS"); do
  for c in 1 0; do
    body "$prompt" 1 >"$tmp/a.json"
    curl -s "localhost:$PORT/v1/completions" -d @"$tmp/a.json" >/dev/null  # the previous turn
    body "$prompt And then the fox said hello $r." "$c" >"$tmp/b.json"
    out=$(curl -s -w ' %{time_total}' "localhost:$PORT/v1/completions" -d @"$tmp/b.json")
    echo "$r $c ${out##* } $(echo "${out% *}" | python3 -c "import json,sys; u=json.load(sys.stdin)['usage']; print(u['prompt_tokens'], u.get('prompt_tokens_details', {}).get('cached_tokens', 0))")"
  done
done
rm -rf "$tmp"
