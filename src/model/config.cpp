#include "model/config.h"

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
  for (int l : mem.layers)
    need(l >= 0 && l < n_layer, "mem_layers entry " + std::to_string(l) + " is not a layer index");
  need(mem.last_context_length > 0, "last_context_length must be > 0");
  need(mem.dtype == DType::F32 || mem.dtype == DType::BF16 || mem.dtype == DType::F16 ||
           mem.dtype == DType::Q8_0,
       "mem_dtype must be float32, bfloat16, float16 or q8_0");
}

}  // namespace lcx
