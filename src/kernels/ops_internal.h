// Kernel variants behind the dispatching entry points of ops.h. Each instruction set fills one
// KernelTable (ops_scalar.cpp, ops_avx2.cpp, ops_avx512.cpp); ops.cpp picks one at run time.
// Tests include this header to run every variant against the scalar twins.
#pragma once
#include <cstdint>

#include "kernels/ops.h"

namespace lcx::kernels {

// Up to this many tokens a matmul is a GEMV: each weight row is streamed once and dotted with
// every token (decode is memory-bandwidth bound). Above it, weight tiles are dequantized to f32
// and reused across tokens from registers (prompt processing is compute bound).
constexpr int64_t kGemvMaxTokens = 4;

// Activations quantized for the integer dot products of Q8_0 / Q4_0 GEMV, as llama.cpp does
// (it quantizes activations to block_q8_0). Blocks of 32: q = nearbyint(x / d), d = amax / 127,
// so |q| <= 127 (never -128, which the sign tricks of the SIMD dots rely on). The scale stays
// float32 rather than fp16 (no need for GGML's storage format here, and it is more accurate).
struct QuantActs {
  const int8_t* qs = nullptr;  // [n_tokens, cols]
  const float* d = nullptr;    // [n_tokens, cols / 32]
};

// One matmul call: y[t, r] = sum_c w[r, c] * x[t, c].
struct MatmulJob {
  MatRef w;                // [rows, cols]
  const float* x = nullptr;  // [n_tokens, cols]
  int64_t n_tokens = 0;
  float* y = nullptr;      // [n_tokens, rows]
  QuantActs xq;            // set (n_tokens <= kGemvMaxTokens, Q8_0/Q4_0 weights): int8 path
};

struct KernelTable {
  KernelIsa isa;
  // Output rows [r0, r1) for tokens [t0, t1) of job; single-threaded.
  void (*matmul_rows)(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
  // n values (n % 32 == 0) into int8 blocks qs[n] and scales d[n / 32] (see QuantActs).
  void (*quantize_acts)(const float* x, int64_t n, int8_t* qs, float* d);
  void (*dequantize_row)(DType t, const void* src, float* dst, int64_t n);
  void (*quantize_row)(DType t, const float* src, void* dst, int64_t n);
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  void (*rmsnorm)(const float* x, const float* w, int64_t n, float eps, float* out);
  void (*swiglu)(const float* gate, const float* up, int64_t n, float* out);
  void (*softmax)(float* x, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);
};

// The table of one instruction set, or nullptr when it is not compiled in or the CPU lacks it.
const KernelTable* kernel_table(KernelIsa isa);
// The table chosen for this process (see active_kernel_isa()).
const KernelTable& active_kernels();

namespace scalar {
extern const KernelTable kTable;
void matmul_rows_job(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d);
// The twin of the SIMD int8 GEMV: sum over blocks of d_w * d_x * (integer block dot).
void matmul_rows_q8acts(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
}  // namespace scalar
namespace avx2 {
extern const KernelTable kTable;
}
namespace avx512 {
extern const KernelTable kTable;
}

}  // namespace lcx::kernels
