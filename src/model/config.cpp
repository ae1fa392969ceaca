#include "model/config.h"

#include <algorithm>
#include <cstdio>

#include "runtime/error.h"

namespace lcx {

const char* arch_name(Arch a) { return a == Arch::LongLlama ? "longllama" : "llama"; }

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) fail("invalid model config: " + what);
  };
  need(n_vocab > 0, "vocab_size must be > 0");
  need(n_embd > 0, "hidden_size must be > 0");
  need(n_ff > 0, "intermediate_size must be > 0");
  need(n_layer > 0, "num_hidden_layers must be > 0");
  need(n_head > 0, "num_attention_heads must be > 0");
  need(n_head_kv > 0 && n_head % n_head_kv == 0,
       "num_key_value_heads (" + std::to_string(n_head_kv) + ") must divide num_attention_heads (" +
           std::to_string(n_head) + ")");
  need(head_dim > 0 && head_dim % 2 == 0, "head_dim must be a positive even number");
  need(n_ctx_train > 0, "max_position_embeddings must be > 0");
  need(rms_eps > 0, "rms_norm_eps must be > 0");
  // Plausibility caps, each far above any released model (which stay below 300k tokens, 32k
  // hidden, 128k intermediate, 200 layers, 256 heads of 256 dims), so a corrupt or hostile
  // config is refused here instead of sizing tables by it (num_hidden_layers = 10^9 ended in
  // std::bad_alloc).
  auto cap = [&](int64_t v, int64_t limit, const char* key) {
    need(v <= limit, std::string(key) + " = " + std::to_string(v) + " is implausibly large (limit " +
                         std::to_string(limit) + "): the config is corrupt or not for this model");
  };
  cap(n_vocab, int64_t(1) << 24, "vocab_size");
  cap(n_embd, int64_t(1) << 20, "hidden_size");
  cap(n_ff, int64_t(1) << 22, "intermediate_size");
  cap(n_layer, int64_t(1) << 16, "num_hidden_layers");
  cap(n_head, int64_t(1) << 16, "num_attention_heads");
  cap(head_dim, int64_t(1) << 16, "head_dim");
  // The caps alone still allow products past int64 (and past any memory): bound the parameter
  // count the shapes imply, in double so the sum itself cannot overflow. 2^50 (~10^15) is ~500x
  // the largest models and keeps byte counts (up to 4 bytes each) far inside int64.
  const double d_embd = double(n_embd), q_dim = double(n_head) * double(head_dim),
               kv_dim = double(n_head_kv) * double(head_dim);
  const double per_layer = d_embd * (2.0 * q_dim + 2.0 * kv_dim) + 3.0 * d_embd * double(n_ff) + 2.0 * d_embd;
  const double n_params = double(n_layer) * per_layer + 2.0 * double(n_vocab) * d_embd + d_embd;
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", n_params);
  need(n_params <= double(int64_t(1) << 50),
       std::string("the shapes imply ") + count + " parameters, far more than any model (limit 2^50): "
       "hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, head_dim or vocab_size is corrupt");
  for (int l : mem.layers)
    need(l >= 0 && l < n_layer, "mem_layers entry " + std::to_string(l) + " is not a layer index");
  // Tokens of a prompt's end kept in the local cache: past 2^30 it could never be filled.
  need(mem.last_context_length > 0 && mem.last_context_length <= (int64_t(1) << 30),
       "last_context_length must be in [1, 2^30], got " + std::to_string(mem.last_context_length));
  // -1 is "none" in GGUF files (llama.cpp's LLAMA_TOKEN_NULL); config.json refuses negatives
  // itself. Other ids must name a token, as the GGUF vocabulary reader requires.
  for (auto [id, key] : {std::pair{bos_id, "bos_token_id"}, {eos_id, "eos_token_id"}})
    need(id >= -1 && id < n_vocab, std::string(key) + " " + std::to_string(id) + " is outside the vocabulary [0, " +
                                       std::to_string(n_vocab) + ") (vocab_size)");
  need(mem.dtype == DType::F32 || mem.dtype == DType::BF16 || mem.dtype == DType::F16 ||
           mem.dtype == DType::Q8_0,
       "mem_dtype must be float32, bfloat16, float16 or q8_0");
}

void normalize_mem_layers(std::vector<int>& layers) {
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
}

}  // namespace lcx
