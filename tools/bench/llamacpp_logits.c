// Dumps llama.cpp's logits for given token ids, for comparison with `longctx logits`.
// Not part of the longctx build: tools/bench/llamacpp_interop.sh compiles it against a llama.cpp
// build (its public C API, include/llama.h) outside this repository.
//
//   llamacpp_logits MODEL.gguf 1,2,3 OUT.f32 [THREADS] [FLASH_ATTN 0|1]
//
// Writes float32 little-endian logits, row-major [n_tokens, n_vocab] — the same layout as
// `longctx logits --out` — from one llama_decode call that asks for every row's logits.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... OUT.f32 [THREADS] [FLASH_ATTN 0|1]\n", argv[0]);
    return 2;
  }
  const int n_threads = argc > 4 ? atoi(argv[4]) : 2;
  const int flash = argc > 5 ? atoi(argv[5]) : 0;

  // Parse the comma-separated ids.
  int cap = 16, n = 0;
  llama_token* ids = malloc(sizeof(llama_token) * cap);
  for (char* tok = strtok(argv[2], ","); tok; tok = strtok(NULL, ",")) {
    if (n == cap) ids = realloc(ids, sizeof(llama_token) * (cap *= 2));
    ids[n++] = (llama_token)atoi(tok);
  }
  if (n == 0) {
    fprintf(stderr, "no token ids\n");
    return 2;
  }

  llama_log_set(quiet, NULL);
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  struct llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "llama.cpp could not load %s\n", argv[1]);
    return 1;
  }
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)(n < 256 ? 256 : n);
  cp.n_batch = cp.n_ubatch = (uint32_t)n;
  cp.n_threads = cp.n_threads_batch = n_threads;
  cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  // llama.cpp's KV cache defaults to F16; keep it F32 (like longctx's) so that the comparison
  // measures the weights' format and the matmuls, not cache rounding. KV_F16=1 restores the default.
  const char* kv16 = getenv("KV_F16");
  cp.type_k = cp.type_v = (kv16 && kv16[0] == '1') ? GGML_TYPE_F16 : GGML_TYPE_F32;
  struct llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    fprintf(stderr, "llama.cpp could not create a context\n");
    return 1;
  }

  struct llama_batch b = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    b.token[i] = ids[i];
    b.pos[i] = i;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = 0;
    b.logits[i] = 1;  // every row
  }
  b.n_tokens = n;
  if (llama_decode(ctx, b) != 0) {
    fprintf(stderr, "llama_decode failed\n");
    return 1;
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  FILE* f = fopen(argv[3], "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", argv[3]);
    return 1;
  }
  for (int i = 0; i < n; ++i) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, f);
  fclose(f);
  fprintf(stderr, "wrote %d x %d logits to %s\n", n, n_vocab, argv[3]);

  llama_batch_free(b);
  llama_free(ctx);
  llama_model_free(model);
  free(ids);
  return 0;
}
