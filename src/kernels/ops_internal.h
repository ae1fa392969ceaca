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

// ---- Low-precision GEMM (prompt processing, n_tokens > kGemvMaxTokens) ------------------------
//
// Int8 (Q8_0 / Q4_0 weights): activations are quantized exactly as QuantActs, then multiplied
// with vpdpbusd (unsigned x signed bytes -> int32). Weights stay signed (Q8_0 as stored, Q4_0 as
// nibble - 8) and are broadcast 4 bytes at a time; activations are biased to unsigned, q + 128,
// and the bias is removed with a per-(row, block) correction -128 * sum(w). Each 32-block's
// integer sum is exact; y = sum_b d_w * d_x * isum, as scalar::matmul_rows_q8acts. The error
// against float activations is the same as the int8 GEMV's: at most half an activation
// quantization step per element, |dy| <= sum_c |w[r,c]| * d_x(block of c) / 2.
//
// Bf16 (F16 / BF16 weights, opt-in with LONGCTX_FAST_BF16=1): activations and weights rounded to
// bfloat16 (round to nearest even), products summed in float32 by vdpbf16ps. Each product has a
// relative error of at most about 2^-8 for BF16 weights (only x is rounded) and 2^-7 for F16
// weights (both rounded): |dy| <= sum_c |w[r,c] x[t,c]| * (2^-8 or 2^-7), plus float32 summation.
//
// Both pack activations once per matmul call, shared by all threads, tokens interleaved in groups
// of kPackTokens so that one zmm holds the same columns of 16 tokens:
//   int8: per token group and 32-block: 8 x [16 tokens x 4 bytes (q + 128)] then 16 float d_x
//         (kInt8GroupBlockBytes bytes); pad tokens have q = 0 and d_x = 0.
//   bf16: per token group and column pair: [16 tokens x 2 bf16] (64 bytes); cols padded to even.
//
// Amx (F16 / BF16 weights on CPUs with AMX-BF16, the default there; LONGCTX_AMX=0 turns it off):
// TDPBF16PS tiles, 16 weight rows x 16 tokens x 32 columns per instruction, ~10x the f32 FMA rate
// of the same core. bf16 products are exact in float32, so the operands are split into bf16
// pieces (Henry, Tang & Heinecke, "Leveraging the bfloat16 artificial intelligence datatype for
// higher-precision computations", ARITH 2019): x = x_hi + x_mid + x_lo + r, each piece the bf16
// rounding (to nearest even, within 2^-8) of what the ones before it left, so |r| <= 2^-24 |x|;
// F16 weights are exactly w_hi + w_lo (11 significant bits = 8 + 3), BF16 weights one piece.
// Products summed in float32: w_hi (x_hi + x_mid + x_lo) + w_lo (x_hi + x_mid) for F16 (five tile
// products a MAC), w (x_hi + x_mid + x_lo) for BF16 (three). Dropped: w r and w_lo x_lo, each
// <= 2^-24 |w x|: |dy| <= 2^-23 sum_c |w[r,c] x[t,c]| plus float32 summation, i.e. float32
// quality (three pieces are needed: with two, 2^-15, the F16 fixtures moved up to 8.7e-5 of their
// 1e-4). scalar::matmul_rows_amx is the twin.
//   amx: per token group, 32-column chunk and piece (x_hi, x_mid, x_lo): a 1 KiB B tile
//        [16 column pairs][16 tokens][2 bf16]; cols padded to a multiple of 32 with zeros.
constexpr int64_t kPackTokens = 16;
constexpr int64_t kInt8GroupBlockBytes = 8 * 64 + kPackTokens * 4;
enum class GemmMode : uint8_t { F32, Int8, Bf16, Amx, AmxInt8 };
constexpr int64_t kAmxChunk = 32;  // columns per AMX tile product (32 bf16 = 64 bytes a row)

inline int64_t pack_token_groups(int64_t n_tokens) { return (n_tokens + kPackTokens - 1) / kPackTokens; }
inline size_t packed_acts_bytes(GemmMode mode, int64_t cols, int64_t n_tokens) {
  const int64_t groups = pack_token_groups(n_tokens);
  if (mode == GemmMode::Int8 || mode == GemmMode::AmxInt8) {
    return size_t(groups * (cols / kQBlock) * kInt8GroupBlockBytes);
  }
  if (mode == GemmMode::Bf16) return size_t(groups * ((cols + 1) / 2) * 64);
  if (mode == GemmMode::Amx) return size_t(groups * ((cols + kAmxChunk - 1) / kAmxChunk) * 3 * 1024);
  return 0;
}

// One matmul call: y[t, r] = sum_c w[r, c] * x[t, c].
struct MatmulJob {
  MatRef w;                // [rows, cols]
  const float* x = nullptr;  // [n_tokens, cols]
  int64_t n_tokens = 0;
  float* y = nullptr;      // [n_tokens, rows]
  QuantActs xq;            // set (n_tokens <= kGemvMaxTokens, Q8_0/Q4_0 weights): int8 path
  GemmMode mode = GemmMode::F32;  // Int8 / Bf16: xp holds all n_tokens packed as described above
  const uint8_t* xp = nullptr;
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
  // Token groups [g0, g1) of x ([n_tokens, cols]) packed for GemmMode::Int8 / Bf16 into xp (the
  // whole buffer of packed_acts_bytes); nullptr where the variant has no such GEMM.
  void (*pack_acts_int8)(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
  void (*pack_acts_bf16)(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
  // Same for GemmMode::Amx and AmxInt8 (the AVX-512 table; used only where cpu_amx_ready()).
  void (*pack_acts_amx)(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
  void (*pack_acts_amx_int8)(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
};

// LONGCTX_FAST_BF16=1 (read once): F16/BF16 prompt-processing matmuls use the bf16 GEMM.
bool fast_bf16_requested();
// LONGCTX_FAST_BF16=1 or =attention: BF16 FoT memory attention of prompts as bf16 dot products.
bool fast_bf16_attention_requested();
bool cpu_has_avx512bf16();
// AMX-TILE, AMX-BF16 and AMX-INT8 in CPUID, tile state enabled by the OS (XCR0) and, on Linux, this process
// granted the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16). Checked once.
bool cpu_amx_ready();

// The AMX kernels (ops_amx.cpp), called from the AVX-512 table for GemmMode::Amx jobs.
namespace amx {
void pack_acts(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
void gemm(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
void pack_acts_int8(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp);
void gemm_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
}  // namespace amx
// Whether matmul with table k uses mode for these weights and n_tokens (CPU features included).
GemmMode gemm_mode(const KernelTable& k, DType t, int64_t n_tokens, bool fast_bf16);
// matmul() with an explicit kernel table and bf16 choice (tests run every variant through it).
void matmul_with(const KernelTable& k, bool fast_bf16, const MatRef& w, const float* x, int64_t n_tokens, float* y,
                 ThreadPool& pool);

// Rows [r0, r1) for tokens [t0, t1) of a job whose weight dtype has no kernel of its own in table
// k (the GEMM of the GGML block types Q4_1 ... Q6_K, and their GEMV without AVX-512): blocks of
// rows dequantized to float32 (k.dequantize_row, bit-identical to the reference dequantizers)
// and multiplied by k's F32 kernels. Same result as the scalar twin up to float summation order.
void matmul_rows_via_f32(const KernelTable& k, const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
// Whether table k has an int8-activation GEMV for weights of dtype t (QuantActs are then made).
bool has_int8_gemv(const KernelTable& k, DType t);

// The table of one instruction set, or nullptr when it is not compiled in or the CPU lacks it.
const KernelTable* kernel_table(KernelIsa isa);
// The table chosen for this process (see active_kernel_isa()).
const KernelTable& active_kernels();

namespace scalar {
extern const KernelTable kTable;
void matmul_rows_job(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
// Row r of w as float32 (any dtype, Q4_0_R16 included).
void weight_row(const MatRef& w, int64_t r, float* dst);
void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d);
// The twin of the SIMD int8 GEMV and GEMM: sum over blocks of d_w * d_x * (integer block dot).
void matmul_rows_q8acts(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
// The twin of the bf16 GEMM: x and w rounded to bf16, exact products summed in float32.
void matmul_rows_bf16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
// The twin of the AMX bf16 GEMM: the bf16 pieces described at GemmMode::Amx, exact products
// summed in float32.
void matmul_rows_amx(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
}  // namespace scalar
namespace avx2 {
extern const KernelTable kTable;
}
namespace avx512 {
extern const KernelTable kTable;
}

}  // namespace lcx::kernels
