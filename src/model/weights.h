// Model weights: const views into mapped files (or owned buffers when a format needs a
// conversion, e.g. GGUF's permuted q/k rows or bf16 norm vectors). One table lists every
// tensor with its Hugging Face name, its GGUF name and its expected shape; the HF and GGUF
// loaders, the converter and `info` all walk that table.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/mmap_file.h"
#include "runtime/tensor.h"

namespace lcx {

struct LayerWeights {
  TensorView attn_norm;  // [n_embd]                      F32
  TensorView wq;         // [n_head * head_dim, n_embd]
  TensorView wk;         // [n_head_kv * head_dim, n_embd]
  TensorView wv;         // [n_head_kv * head_dim, n_embd]
  TensorView wo;         // [n_embd, n_head * head_dim]
  TensorView ffn_norm;   // [n_embd]                      F32
  TensorView w_gate;     // [n_ff, n_embd]
  TensorView w_up;       // [n_ff, n_embd]
  TensorView w_down;     // [n_embd, n_ff]
  // Biases (attention_bias / mlp_bias; data == nullptr when absent), F32, added after the matmul.
  TensorView bq, bk, bv, bo;     // [q_dim], [kv_dim], [kv_dim], [n_embd]
  TensorView b_gate, b_up, b_down;  // [n_ff], [n_ff], [n_embd]
};

struct ModelWeights {
  TensorView tok_embd;     // [n_vocab, n_embd]
  TensorView output_norm;  // [n_embd]            F32
  TensorView output;       // [n_vocab, n_embd]   (the embedding when tied)
  std::vector<LayerWeights> layers;

  // Ownership of the bytes the views point into.
  std::vector<std::shared_ptr<MappedFile>> files;
  std::deque<std::vector<uint8_t>> owned;
  // Copies bytes into an owned buffer and returns a pointer that stays valid.
  const void* own(std::vector<uint8_t> bytes) {
    owned.push_back(std::move(bytes));
    return owned.back().data();
  }
};

// Which rotation a GGUF q/k weight needs: llama.cpp's converter permutes q/k rows so that
// RoPE pairs are adjacent (interleaved); HF pairs i with i + head_dim/2.
enum class QkPermute { None, Q, K };

struct TensorSlot {
  std::string hf_name;    // model.layers.3.self_attn.q_proj.weight
  std::string gguf_name;  // blk.3.attn_q.weight
  std::vector<int64_t> shape;  // row-major, HF order
  TensorView* dst;
  bool is_norm = false;   // converted to F32 on load (RMSNorm weights and biases are tiny)
  bool optional = false;  // lm_head when tied
  QkPermute permute = QkPermute::None;
  bool gguf_optional = false;  // biases: a GGUF file may carry any subset (llama.cpp takes each)
};

// The single tensor-name table for a config. Slots point into w.
std::vector<TensorSlot> tensor_slots(const ModelConfig& cfg, ModelWeights& w);

// Binds every slot from a name -> view map (by hf or gguf name), checking shapes and
// dtypes; errors name missing, unexpected and mis-shaped tensors. Norms become F32.
enum class NameKind { HF, GGUF };
void bind_weights(const ModelConfig& cfg, const std::map<std::string, TensorView>& tensors,
                  NameKind kind, ModelWeights& w);

// Rewrites Q4_0 matmul weights in place into Q4_0_R16 (runtime/dtype.h), the layout the AVX-512
// decode GEMV reads ~3x faster per core; same bytes, so no memory is added. Only the projection
// and output matrices with rows % 16 == 0 (the embedding table is read by row, and a tied output
// head is the embedding table). Mapped files stay untouched on disk: their mapping is private
// (repacked pages become private memory, so tensors of mapped files are left as they are when
// they would need more than half of MemAvailable). Returns the number of tensors repacked.
int repack_weights_for_kernels(ModelWeights& w);

// Row permutation between HF and llama.cpp q/k layouts, for n_head heads of head_dim rows:
// to_gguf=true applies llama.cpp's convert_hf_to_gguf permute, false undoes it.
std::vector<uint8_t> permute_qk_rows(const TensorView& t, int64_t n_head, bool to_gguf);

}  // namespace lcx
