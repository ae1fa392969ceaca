// Numeric kernels. They see raw pointers, dtypes and shapes only — never model types.
// Every function here has a plain scalar twin in ops_scalar.cpp that tests use as the oracle;
// the dispatching entry points pick the best implementation compiled for this CPU.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/thread_pool.h"

namespace lcx::kernels {

// A row-major weight matrix in its stored dtype: rows = n_out, cols = n_in.
struct MatRef {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
};

// y[t, r] = sum_c w[r, c] * x[t, c]          x: [n_tokens, cols], y: [n_tokens, rows]
void matmul(const MatRef& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
// y_i = w_i x for n matrices that read the same x (the q/k/v projections, gate/up): one
// fork-join over all their rows instead of one per matrix, and x quantized (decode) or packed
// (int8 / bf16 prompt GEMMs) once. Matrices of different dtypes or widths, and f32 prompt
// GEMMs, run as separate matmuls. n <= 4. Same results as separate matmuls, bit for bit.
void matmul_multi(const MatRef* w, int n, const float* x, int64_t n_tokens, float* const* y, ThreadPool& pool);

// Rows [r0, r1) only, single-threaded (the building block of matmul).
void matmul_rows(const MatRef& w, const float* x, int64_t n_tokens, float* y, int64_t r0, int64_t r1);

// Row r of w as float32.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// n values into t's storage format (n % 32 == 0 for quantized types). Matches llama.cpp's
// reference quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref).
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// HF LlamaRMSNorm: in float32, out = w * (x / sqrt(mean(x^2) + eps)).
void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out);
float dot_f32(const float* a, const float* b, int64_t n);
// out = silu(gate) * up, elementwise.
void swiglu(const float* gate, const float* up, int64_t n, float* out);
// In-place softmax over n values (float32, max-subtracted, as torch does).
void softmax(float* x, int64_t n);
// y += a * x
void axpy(float a, const float* x, float* y, int64_t n);

// Instruction sets with their own kernel variants. The best one this CPU supports is chosen once,
// on first use; LONGCTX_KERNELS=scalar|avx2|avx512 forces one (a variant the CPU lacks, or an
// unknown name, falls back to the automatic choice with a warning on stderr).
enum class KernelIsa : uint8_t { Scalar, Avx2, Avx512, kCount };
// Whether the active kernels read Q4_0 weights faster as DType::Q4_0_R16 (the AVX-512 and AVX2
// ones do).
bool q4_0_r16_preferred();
// Same for Q4_K -> DType::Q4_K_R16 and Q5_0 -> DType::Q5_0_R16 (AVX-512; LONGCTX_Q4K_R16=0 keeps
// the file layout of both, for A/B).
bool q4_k_r16_preferred();
const char* kernel_isa_name(KernelIsa isa);
bool kernel_isa_supported(KernelIsa isa);  // compiled in and this CPU can run it
KernelIsa active_kernel_isa();
// Whether prompt matmuls use the AMX tile GEMMs: the CPU has AMX-TILE/BF16/INT8, the OS grants
// the tile state, the active kernels are AVX-512, and LONGCTX_AMX=0 did not turn them off.
bool amx_enabled();

// The plain scalar twins: the oracle for every SIMD variant.
namespace scalar {
void matmul_rows(const MatRef& w, const float* x, int64_t n_tokens, float* y, int64_t r0, int64_t r1);
float dot_f32(const float* a, const float* b, int64_t n);
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
void quantize_row(DType t, const float* src, void* dst, int64_t n);
void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out);
void swiglu(const float* gate, const float* up, int64_t n, float* out);
void softmax(float* x, int64_t n);
void axpy(float a, const float* x, float* y, int64_t n);
}  // namespace scalar

}  // namespace lcx::kernels
