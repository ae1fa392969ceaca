// Model hyper-parameters, as one validated struct per model. Names follow the glossary used
// everywhere: n_embd, n_head, n_head_kv, head_dim, n_ff, n_layer, n_ctx_train, il (layer index).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/rope.h"
#include "runtime/dtype.h"

namespace lcx {

enum class Arch { Llama, LongLlama };

// Focused Transformer memory settings (LongLLaMA config fields, Tworkowski et al. 2023).
struct MemConfig {
  std::vector<int> layers;             // mem_layers: layers that attend to the memory cache
  bool positionals = true;             // mem_positionals: memory keys rotated as position 0
  DType dtype = DType::BF16;           // mem_dtype (F32, BF16, F16)
  int64_t attention_grouping_size = 0; // mem_attention_grouping[1]... 0 = ungrouped
  int64_t attention_grouping_groups = 0;
  int64_t last_context_length = 1024;  // tokens kept in the local cache at the end of a prompt
  bool is_mem_layer(int il) const {
    for (int l : layers) if (l == il) return true;
    return false;
  }
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t n_ctx_train = 0;   // max_position_embeddings
  float rms_eps = 1e-6f;
  bool tie_embeddings = false;
  // transformers' LlamaConfig attention_bias (q/k/v/o projections) and mlp_bias (gate/up/down):
  // each Linear then has a bias vector, added after its matmul. GGUF files say so by carrying
  // blk.N.attn_q.bias etc. (llama.cpp's LLaMA graph takes each one when present).
  bool attn_bias = false;
  bool mlp_bias = false;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  // Other ids that end generation as eos_id does (llama.cpp's "end of generation" set): the rest
  // of a config.json eos_token_id list (Llama 3: 128001, 128008, 128009), generation_config.json's
  // eos_token_id (what transformers' generate() stops at), GGUF
  // tokenizer.ggml.eot_token_id / eom_token_id, and the vocabulary's end-of-turn control tokens
  // (<|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>).
  std::vector<int32_t> eog_ids;
  bool is_eog(int32_t id) const {
    if (id == eos_id) return true;
    for (int32_t e : eog_ids)
      if (e == id) return true;
    return false;
  }
  RopeConfig rope;
  // config.json's rope_scaling.original_max_position_embeddings for yarn, which transformers
  // v4.49 (and so rope.orig_ctx) does not use; `info` points it out (0: none given).
  int64_t yarn_unused_orig_ctx = 0;
  MemConfig mem;             // used when arch == LongLlama

  // Throws lcx::Error with the offending field when the numbers cannot describe a model.
  void validate() const;
};

const char* arch_name(Arch a);

// mem_layers as a set: sorted, each layer once. The reference only asks `layer in mem_layers`,
// so a repeated entry means nothing more; counting memory per listed entry would double it.
void normalize_mem_layers(std::vector<int>& layers);

}  // namespace lcx
