// GGML block quantization formats, unpacked into one shape every kernel can read.
//
// llama.cpp's block types (ggml-common.h; dequantize_row_* in ggml-quants.c define what the bits
// mean) all reduce to: a group of 32 or 256 values, split into sub-blocks of 16, where
//
//   value[i] = S[i / 16] * (q[i] - z[i / 16]) - M[i / 16]        q[i] an unsigned small integer
//
// S is the float scale of the sub-block (the block's fp16 d, times an integer sub-scale for the
// k-quants), z an integer zero point (8 for Q4_0, 16 for Q5_0, 32 for Q6_K, 4 for Q3_K, 128 for
// Q8_0 whose q is stored signed) and M a float offset (the min of Q4_1/Q5_1/Q2_K/Q4_K/Q5_K, 0
// elsewhere). The float operations are the ones the reference dequantizers perform, in their
// order (S = d * sub_scale, then S * (q - z), then - M), so dequantizing through this form is
// bit-identical to llama.cpp's dequantize_row_* (checked against gguf-py's dequantizers by
// tests/data/kquants.gguf).
//
// The integer form is what the int8 dot products want: with activations quantized per 32 values
// (QuantActs), sum_i value[i] x[i] = sum_j S_j dx (isum_j - z_j xsum_j) - M_j dx xsum_j, where
// isum_j = sum q[i] xq[i] and xsum_j = sum xq[i] over sub-block j: vpdpbusd multiplies the
// unsigned q by the signed xq directly.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace lcx::kernels {

constexpr int kQSub = 16;         // values per sub-block
constexpr int kQGroupMax = 256;   // values per group (k-quant super-block)

struct QGroup {
  uint8_t q[kQGroupMax];          // [values]
  float S[kQGroupMax / kQSub];    // [sub-blocks]
  float M[kQGroupMax / kQSub];    // [sub-blocks]
  int32_t z[kQGroupMax / kQSub];  // [sub-blocks]
};

// Values in one group of t: 256 for the k-quants, 32 for the other block types
// (dtype_block_values; Q4_0_R16 is not row-major and has no groups here).
inline int64_t qgroup_values(DType t) { return dtype_block_values(t); }
// Whether unpack_qgroup understands t (every quantized type except Q4_0_R16).
bool qgroup_supported(DType t);
// One block of t (dtype_block_bytes(t) bytes at blk) into g's first qgroup_values(t) values.
void unpack_qgroup(DType t, const uint8_t* blk, QGroup& g);

// n values (n % qgroup_values(t) == 0) into blocks of t (Q4_1, Q5_0, Q5_1, Q2_K ... Q6_K), for
// `longctx convert --outtype`. The 32-value types follow llama.cpp's reference quantizers
// (quantize_row_*_ref); the k-quants are plain round-to-nearest: per sub-block scale (and min,
// clamped to <= 0 as llama.cpp does) from the range, sub-scales quantized to 4/6/8 bits against
// the super-block scale, then each value rounded against its dequantized scale. llama.cpp's own
// quantizers search the scales (and use an importance matrix) and give lower error; the format
// is the same, so either reads the other's files.
void quantize_blocks(DType t, const float* src, uint8_t* dst, int64_t n);

}  // namespace lcx::kernels
