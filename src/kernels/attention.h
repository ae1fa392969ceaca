// Attention kernels: one softmax over causal local keys plus (optionally) a set of memory keys
// that every query sees — LLaMA's attention and LongLLaMA's FoT memory attention in one
// routine. Keys and values live in rows of head_dim values in one of a few storage formats.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"
#include "runtime/thread_pool.h"

namespace lcx::kernels {

// Storage of one key or value row (head_dim values).
//   Q8Row: a float32 scale (max|x|/127) followed by head_dim int8 values — per-row int8.
enum class KvFormat : uint8_t { F32, F16, BF16, Q8Row };

size_t kv_row_bytes(KvFormat f, int64_t head_dim);
void kv_encode(KvFormat f, const float* x, int64_t head_dim, uint8_t* dst);
void kv_decode(KvFormat f, const uint8_t* src, int64_t head_dim, float* dst);

// n tokens of keys and values; the row of token t, kv head g is at
// base + t * token_stride + g * head_stride (bytes).
struct KvSpan {
  KvFormat fmt = KvFormat::F32;
  const uint8_t* k = nullptr;
  const uint8_t* v = nullptr;
  int64_t n = 0;
  size_t token_stride = 0;
  size_t head_stride = 0;
};

struct AttentionArgs {
  const float* q = nullptr;  // [n_q, n_head, head_dim], already rotated
  int64_t n_q = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;     // GQA: query head h uses kv head h / (n_head / n_head_kv)
  int64_t head_dim = 0;
  float scale = 1.0f;        // 1/sqrt(head_dim)
  KvSpan local;              // causal: query i sees local tokens [0, n_past + i]
  int64_t n_past = 0;
  KvSpan mem;                // every query sees all of it (FoT memory); n may be 0
  float mem_score_floor = -1e6f;  // LongLLaMA clamps memory scores below at -1e6
  int64_t mem_topk = 0;      // >0: only the top-k memory scores per query and head take part
  // Approximate kNN (an index chose the keys): when set, each query and head attends to its
  // local keys and only these memory rows, [n_q, n_head, mem_n_cand]; -1 (or a row outside
  // the memory) = none. Replaces mem_topk's exact selection.
  const int32_t* mem_cand = nullptr;
  int64_t mem_n_cand = 0;
  float* out = nullptr;      // [n_q, n_head, head_dim]
  // BF16 memory, prompt blocks: q.k and p.v of memory tiles as bf16 dot products (vdpbf16ps,
  // queries and probabilities rounded to bf16, f32 sums): 2x the MACs per instruction, not
  // exact. attention() sets it when LONGCTX_FAST_BF16=1 and the CPU has AVX512_BF16.
  bool mem_bf16_dot = false;
};

// Dispatches to the fastest implementation; results match scalar::attention to float
// rounding (exact top-k selection is the same set).
void attention(const AttentionArgs& a, ThreadPool& pool);
// One variant (tests, benchmarks): Scalar runs the oracle; a variant this CPU lacks, too.
void attention(const AttentionArgs& a, ThreadPool& pool, KernelIsa isa);

namespace scalar {
// The oracle: queries*heads work items [w0, w1) (w = h * n_q + i); scratch holds at least
// local.n + max(mem.n, mem_n_cand) + 2 * head_dim floats.
void attention_items(const AttentionArgs& a, int64_t w0, int64_t w1, float* scratch);
}  // namespace scalar

}  // namespace lcx::kernels
