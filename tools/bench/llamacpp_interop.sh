#!/usr/bin/env bash
# GGUF interoperability between longctx and llama.cpp, both directions (docs/LLAMACPP.md).
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp tools/bench/llamacpp_interop.sh
#
# Needs: a CPU build of llama.cpp in $LLAMA_CPP_DIR/build (targets llama, llama-quantize), the
# longctx CLI ($LONGCTX, default build/bin/longctx), /usr/bin/python3 with numpy and
# sentencepiece, and the fixtures ($FIXTURES, default ../shared/fixtures).
#
# (a) llama.cpp -> longctx: each model is written with llama.cpp's gguf-py the way
#     convert_hf_to_gguf.py writes it (tools/bench/hf_to_gguf_ref.py), quantised with
#     llama-quantize to Q8_0 and Q4_0, and `longctx logits` on those files is compared with
#     `longctx logits` on the Hugging Face directory (itself checked against the fixture's
#     float64 transformers reference by tests/test_fixtures.cpp).
# (b) longctx -> llama.cpp: `longctx convert` writes F32/F16/Q8_0/Q4_0; llama.cpp's logits for
#     the same ids (tools/bench/llamacpp_logits.c, one llama_decode with every row's logits) are
#     compared with `longctx logits` on the same file.
# Every comparison prints max|diff|, relative error, RMSE and argmax agreement; the script
# exits non-zero when a bound below is broken.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp checkout built in \$LLAMA_CPP_DIR/build}"
LONGCTX="${LONGCTX:-$ROOT/build/bin/longctx}"
FIXTURES="${FIXTURES:-$ROOT/../shared/fixtures}"
OUT="${OUT:-/tmp/longctx-interop}"
THREADS="${THREADS:-2}"
PY=/usr/bin/python3
LBIN="$LLAMA_CPP_DIR/build/bin"
mkdir -p "$OUT"

# Models: two fixtures (MHA with head_dim 8; GQA) by default. "tiny" adds a random model at
# tools/make_random_model.py's tiny shape (n_embd 64, head_dim 16; n_ff 172 is not a multiple
# of 32, so llama-quantize refuses Q8_0/Q4_0 for it and only F32/F16 run).
MODELS="${MODELS:-llama_mha llama_gqa}"
# Optional real-shape GGUF files (e.g. from `longctx convert`, tinyllama-1.1b.Q8_0.gguf): each
# is run in both engines on the first 16 ids; quantised ones are judged against the F16 file
# with the same name stem when it exists.
BIG_GGUFS="${BIG_GGUFS:-}"
TOK="$FIXTURES/tokenizer.model"

# The token ids: the fixture case llama_mha_len64's input (BOS + 63 ids), truncated to 48 so it
# fits every model's trained context.
IDS="$($PY -c "import json;print(','.join(map(str,json.load(open('$FIXTURES/cases/llama_mha_len64/case.json'))['input_ids'][:48])))")"

echo "== building the llama.cpp logits dumper"
cc -O2 -std=c11 "$ROOT/tools/bench/llamacpp_logits.c" -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
  -L"$LBIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LBIN" -o "$OUT/llamacpp_logits"

fails=0
cmp() {  # cmp REF TEST LABEL [extra cmp_logits flags]
  local ref="$1" test="$2" label="$3"
  shift 3
  $PY "$ROOT/tools/bench/cmp_logits.py" "$ref" "$test" --label "$label" "$@" || { echo "   ^^^ FAILED bound"; fails=$((fails + 1)); }
}
lcx_logits() {  # lcx_logits MODEL OUT [IDS]
  "$LONGCTX" logits -m "$1" --tokenizer "$TOK" --ids "${3:-$IDS}" --out "$2" -t "$THREADS" 2>/dev/null
}
lcpp_logits() {  # lcpp_logits MODEL.gguf OUT [IDS]
  "$OUT/llamacpp_logits" "$1" "${3:-$IDS}" "$2" "$THREADS" 2>/dev/null
}

for m in $MODELS; do
  if [ "$m" = tiny ]; then
    hf="$OUT/tiny-hf"
    [ -f "$hf/model.safetensors" ] || $PY "$ROOT/tools/make_random_model.py" --shape tiny --dtype f32 --tokenizer "$TOK" --out "$hf" 2>/dev/null
  else
    hf="$FIXTURES/models/$m"
  fi
  d="$OUT/$m"
  mkdir -p "$d"
  echo "== $m"
  lcx_logits "$hf" "$d/hf.f32"

  # (a) llama.cpp's writer and quantiser -> longctx. Bounds: F32 must reproduce the HF result
  # (same weights, same longctx kernels); F16 within F16 weight rounding; quantised files only
  # as close to HF as llama.cpp itself gets on the same file (RMSE within 25%), and the same
  # file in both engines must agree better than either agrees with the F32 model.
  PYTHONPATH="$LLAMA_CPP_DIR/gguf-py" $PY "$ROOT/tools/bench/hf_to_gguf_ref.py" "$hf" --tokenizer "$TOK" --outtype f32 -o "$d/ref.F32.gguf" >/dev/null
  PYTHONPATH="$LLAMA_CPP_DIR/gguf-py" $PY "$ROOT/tools/bench/hf_to_gguf_ref.py" "$hf" --tokenizer "$TOK" --outtype f16 -o "$d/ref.F16.gguf" >/dev/null
  lcx_logits "$d/ref.F32.gguf" "$d/a.F32.f32"; cmp "$d/hf.f32" "$d/a.F32.f32" "(a) $m gguf-py F32 -> longctx vs HF" --max-abs 1e-5 --argmax
  lcx_logits "$d/ref.F16.gguf" "$d/a.F16.f32"; cmp "$d/hf.f32" "$d/a.F16.f32" "(a) $m gguf-py F16 -> longctx vs HF" --max-abs 1e-2
  lcpp_logits "$d/ref.F32.gguf" "$d/a.F32.llamacpp.f32"; cmp "$d/a.F32.f32" "$d/a.F32.llamacpp.f32" "(a) $m gguf-py F32: llama.cpp vs longctx" --max-abs 1e-4 --argmax
  for q in Q8_0 Q4_0; do
    # --pure: every matrix in $q. Without it llama-quantize stores output.weight (and, for Q4_0,
    # token_embd) as Q6_K / Q4_K, k-quants longctx does not read (it says so and refuses).
    if ! "$LBIN/llama-quantize" --pure "$d/ref.F32.gguf" "$d/ref.$q.gguf" "$q" >"$d/quantize.$q.log" 2>&1; then
      echo "(a) $m $q: skipped, llama-quantize refuses: $(grep -m1 -o 'ncols.*' "$d/quantize.$q.log")"
      continue
    fi
    lcx_logits "$d/ref.$q.gguf" "$d/a.$q.f32"
    lcpp_logits "$d/ref.$q.gguf" "$d/a.$q.llamacpp.f32"
    $PY - "$d" "$q" "$m" <<'PYEOF' || { echo "   ^^^ FAILED bound"; fails=$((fails + 1)); }
import sys, numpy as np
d, q, m = sys.argv[1:]
ld = lambda f: np.fromfile(f"{d}/{f}", dtype="<f4").reshape(-1, 32000).astype(np.float64)
hf, lc, lp = ld("hf.f32"), ld(f"a.{q}.f32"), ld(f"a.{q}.llamacpp.f32")
rm = lambda x: float(np.sqrt(((x - hf) ** 2).mean()))
mx = lambda x: float(np.abs(x - hf).max())
ag = lambda x: int((x.argmax(1) == hf.argmax(1)).sum())
print(f"(a) {m} llama-quantize {q} vs HF: longctx max|diff| {mx(lc):.3e} rmse {rm(lc):.3e} argmax {ag(lc)}/{len(hf)}; "
      f"llama.cpp max|diff| {mx(lp):.3e} rmse {rm(lp):.3e} argmax {ag(lp)}/{len(hf)}")
sys.exit(0 if rm(lc) <= 1.25 * rm(lp) else 1)
PYEOF
    cmp "$d/a.$q.f32" "$d/a.$q.llamacpp.f32" "(a) $m llama-quantize $q: llama.cpp vs longctx" --quant-ref "$d/hf.f32"
  done

  # (b) longctx convert -> llama.cpp: the same file in both engines.
  for t in f32 f16 q8_0 q4_0; do
    T="$(echo $t | tr a-z A-Z)"
    if ! "$LONGCTX" convert -m "$hf" --tokenizer "$TOK" --outtype "$t" -o "$d/lcx.$T.gguf" 2>"$d/convert.$T.log"; then
      echo "(b) $m $T: skipped, longctx convert refuses: $(tail -1 "$d/convert.$T.log")"
      continue
    fi
    lcx_logits "$d/lcx.$T.gguf" "$d/b.$T.longctx.f32"
    lcpp_logits "$d/lcx.$T.gguf" "$d/b.$T.llamacpp.f32"
    case $T in
      F32) cmp "$d/b.$T.longctx.f32" "$d/b.$T.llamacpp.f32" "(b) $m longctx convert $T: llama.cpp vs longctx" --max-abs 1e-4 --argmax ;;
      F16) cmp "$d/b.$T.longctx.f32" "$d/b.$T.llamacpp.f32" "(b) $m longctx convert $T: llama.cpp vs longctx" --max-abs 1e-2 ;;
      *) cmp "$d/b.$T.longctx.f32" "$d/b.$T.llamacpp.f32" "(b) $m longctx convert $T: llama.cpp vs longctx" --quant-ref "$d/hf.f32" ;;
    esac
  done
done

# Real-shape files: the same GGUF in both engines on 16 ids (argmax agreement is reported, not
# required: random weights give nearly flat logits).
IDS16="$(echo "$IDS" | cut -d, -f1-16)"
for g in $BIG_GGUFS; do
  b="$OUT/big.$(basename "$g" .gguf)"
  lcx_logits "$g" "$b.longctx.f32" "$IDS16"
  lcpp_logits "$g" "$b.llamacpp.f32" "$IDS16"
  f16="$(echo "$g" | sed -E 's/\.(Q8_0|Q4_0)\.gguf$/.F16.gguf/')"
  if [ "$f16" != "$g" ] && [ -f "$OUT/big.$(basename "$f16" .gguf).longctx.f32" ]; then
    cmp "$b.longctx.f32" "$b.llamacpp.f32" "$(basename "$g"): llama.cpp vs longctx" --quant-ref "$OUT/big.$(basename "$f16" .gguf).longctx.f32"
  else
    cmp "$b.longctx.f32" "$b.llamacpp.f32" "$(basename "$g"): llama.cpp vs longctx"
  fi
done
echo "== $fails bound(s) broken"
exit $((fails > 0))
