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

# Models: two fixtures (MHA head_dim 8; GQA) and, when MAKE_TINY=1 (default), a random model at
# tools/make_random_model.py's "tiny" shape (n_embd 64, head_dim 16).
MODELS="${MODELS:-llama_mha llama_gqa tiny}"
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
lcx_logits() {  # lcx_logits MODEL OUT
  "$LONGCTX" logits -m "$1" --tokenizer "$TOK" --ids "$IDS" --out "$2" -t "$THREADS" 2>/dev/null
}

for m in $MODELS; do
  if [ "$m" = tiny ]; then
    hf="$OUT/tiny-hf"
    [ -f "$hf/model.safetensors" ] || $PY "$ROOT/tools/make_random_model.py" --shape tiny --dtype f32 --tokenizer "$TOK" --out "$hf" >/dev/null
  else
    hf="$FIXTURES/models/$m"
  fi
  d="$OUT/$m"
  mkdir -p "$d"
  echo "== $m"
  lcx_logits "$hf" "$d/hf.f32"

  # (a) llama.cpp's writer and quantiser -> longctx
  PYTHONPATH="$LLAMA_CPP_DIR/gguf-py" $PY "$ROOT/tools/bench/hf_to_gguf_ref.py" "$hf" --tokenizer "$TOK" --outtype f32 -o "$d/ref.F32.gguf" >/dev/null
  PYTHONPATH="$LLAMA_CPP_DIR/gguf-py" $PY "$ROOT/tools/bench/hf_to_gguf_ref.py" "$hf" --tokenizer "$TOK" --outtype f16 -o "$d/ref.F16.gguf" >/dev/null
  for q in Q8_0 Q4_0; do
    # --pure: every matrix in $q. Without it llama-quantize stores output.weight (and, for Q4_0,
    # token_embd) as Q6_K / Q4_K, k-quants longctx does not read (it says so and refuses).
    "$LBIN/llama-quantize" --pure "$d/ref.F32.gguf" "$d/ref.$q.gguf" "$q" >"$d/quantize.$q.log" 2>&1
  done
  lcx_logits "$d/ref.F32.gguf" "$d/a.F32.f32"; cmp "$d/hf.f32" "$d/a.F32.f32" "(a) $m gguf-py F32 -> longctx vs HF" --max-abs 1e-4 --argmax
  lcx_logits "$d/ref.F16.gguf" "$d/a.F16.f32"; cmp "$d/hf.f32" "$d/a.F16.f32" "(a) $m gguf-py F16 -> longctx vs HF" --max-abs 2e-2
  lcx_logits "$d/ref.Q8_0.gguf" "$d/a.Q8_0.f32"; cmp "$d/hf.f32" "$d/a.Q8_0.f32" "(a) $m llama-quantize Q8_0 -> longctx vs HF" --max-abs 5e-2
  lcx_logits "$d/ref.Q4_0.gguf" "$d/a.Q4_0.f32"; cmp "$d/hf.f32" "$d/a.Q4_0.f32" "(a) $m llama-quantize Q4_0 -> longctx vs HF" --max-abs 3e-1
  # Same files in llama.cpp: how far llama.cpp's own result is from HF, for scale.
  for t in F32 Q8_0 Q4_0; do
    "$OUT/llamacpp_logits" "$d/ref.$t.gguf" "$IDS" "$d/a.$t.llamacpp.f32" "$THREADS" 2>/dev/null
    cmp "$d/a.$t.f32" "$d/a.$t.llamacpp.f32" "(a) $m llama-quantize $t: llama.cpp vs longctx"
  done

  # (b) longctx convert -> llama.cpp
  for t in f32 f16 q8_0 q4_0; do
    T="$(echo $t | tr a-z A-Z)"
    "$LONGCTX" convert -m "$hf" --tokenizer "$TOK" --outtype "$t" -o "$d/lcx.$T.gguf" 2>/dev/null
    lcx_logits "$d/lcx.$T.gguf" "$d/b.$T.longctx.f32"
    "$OUT/llamacpp_logits" "$d/lcx.$T.gguf" "$IDS" "$d/b.$T.llamacpp.f32" "$THREADS" 2>/dev/null
    case $T in F32) tol=1e-4 ;; F16) tol=2e-2 ;; Q8_0) tol=5e-2 ;; Q4_0) tol=1e-1 ;; esac
    cmp "$d/b.$T.longctx.f32" "$d/b.$T.llamacpp.f32" "(b) $m longctx convert $T: llama.cpp vs longctx" --max-abs "$tol"
  done
done
echo "== $fails bound(s) broken"
exit $((fails > 0))
