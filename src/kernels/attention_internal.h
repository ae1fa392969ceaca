// SIMD attention variants behind kernels::attention (attention.cpp). Each instruction set fills
// one AttnKernels table from the shared flash-attention code in attention_simd.inc; the scalar
// oracle (scalar::attention_items) is what tests compare them with.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace lcx::kernels {

// Keys per tile of the flash loop: a tile of decoded f32 keys and values (64 x 128 x 4 B = 32 KiB
// each at head_dim 128) and its scores stay in L1/L2 while every query row of a block uses them.
constexpr int64_t kAttnTile = 64;
// Widest vector of any variant (floats); scratch sizes are computed with it.
constexpr int64_t kAttnMaxLanes = 16;

// The running softmax state of one block of query rows, handed out unnormalised (top-k mode:
// attention.cpp merges the selected memory keys in before normalising).
struct FlashState {
  float* o = nullptr;   // [m, head_dim] sum_j exp(s_j - mx) v_j
  float* mx = nullptr;  // [m] running max score (finite: every query sees local key 0)
  float* l = nullptr;   // [m] sum_j exp(s_j - mx)
};

// One work item: kv head g, queries [i0, i1). Its m = (i1 - i0) * group rows are ordered
// r = il * group + hh (query i0 + il, query head g * group + hh).
struct AttnBlock {
  int64_t g = 0, i0 = 0, i1 = 0;
};

struct AttnKernels {
  KernelIsa isa;
  int lanes;  // floats per vector; blocks of fewer query rows use the decode layout
  // Softmax over the local keys plus (with_mem) all memory keys, result into a.out; or, when
  // state is set, the unnormalised state into it (and a.out untouched).
  void (*flash_block)(const AttentionArgs& a, const AttnBlock& b, bool with_mem, const FlashState* state,
                      float* scratch);
  // Memory scores max(q.k * scale, floor) of every row of the block: s[m, mem.n].
  void (*mem_scores)(const AttentionArgs& a, const AttnBlock& b, float* s, float* scratch);
  // Decode (all n_q * group rows of a head fewer than lanes): keys [t_begin, t_end) of the memory
  // (mem) or the local span for every kv head; head g's unnormalised state (o[m, hd], mx[m], l[m])
  // into states + g * m * (head_dim + 2). Local keys past the causal horizon are masked.
  void (*narrow_range)(const AttentionArgs& a, bool mem, int64_t t_begin, int64_t t_end, float* states,
                       float* scratch);
  // One row into head_dim floats (SIMD decode).
  void (*decode_row)(KvFormat f, const uint8_t* src, int64_t head_dim, float* dst);
  // Decode top-k (optional; nullptr: the per-head topk path): memory scores max(q.k * scale,
  // floor) of memory tokens [t0, t1) for every kv head g and row r (m = n_q * group rows, ordered
  // as in narrow_range) into s[(g * m + r) * ld + t], reading the keys in storage order.
  // scratch: attn_range_scratch_floats floats.
  void (*mem_scores_range)(const AttentionArgs& a, int64_t t0, int64_t t1, float* s, int64_t ld, float* scratch);
};

// Floats of scratch flash_block / mem_scores need for blocks of up to m rows (64-byte aligned).
size_t attn_scratch_floats(int64_t head_dim, int64_t m);

// Floats of scratch narrow_range needs.
size_t attn_range_scratch_floats(int64_t head_dim, int64_t m, int64_t n_head_kv);

// The table of one instruction set, or nullptr (scalar: none, the oracle runs instead).
const AttnKernels* attn_kernels(KernelIsa isa);

namespace attn_avx2 {
extern const AttnKernels kAttn;
}
namespace attn_avx512 {
extern const AttnKernels kAttn;
}

}  // namespace lcx::kernels
