// AVX-512 kernels (F, BW, DQ, VL, VNNI; F16C/FMA/AVX2 on 256-bit halves). Chosen at run time
// by ops.cpp; the scalar twins in ops_scalar.cpp are the test oracle.
//
// Every function here gets its instruction set from the `#pragma GCC target` below, not from
// compiler flags, so that inline library code (std::min, headers' inline functions) is never
// emitted with AVX-512 instructions into a COMDAT the linker could pick for non-AVX-512 callers.
// Headers are therefore included before the pragma and no STL templates are used after it.
// The file is compiled with -ffp-contract=off so that quantize_row's separate multiplies and
// adds round exactly as the scalar reference does.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/ops_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* helpers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

namespace lcx::kernels::avx512 {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- loads and dequantization ---------------------------------------------------------------

// 16 weights of a F32/F16/BF16 row from column c, as float32 (exact); lanes outside m are 0.
template <DType T>
inline __m512 load16(const void* row, int64_t c, __mmask16 m) {
  if constexpr (T == DType::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + c);
  } else if constexpr (T == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + c));
  } else {  // BF16: the top half of a float32
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + c);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// The 32 values of block b as float32 in lo (values 0..15) and hi (16..31); exactly d * q.
inline void dequant_block(const BlockQ8_0& b, __m512& lo, __m512& hi) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(b.d));
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))));
}
inline void dequant_block(const BlockQ4_0& b, __m512& lo, __m512& hi) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(b.d));
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i ql = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
  const __m128i qh = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(ql)));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(qh)));
}

// Columns [c0, c0 + n) of a row as float32 into dst (for quantized types c0, n are multiples of 32).
template <DType T>
inline void dequant_span(const void* row, int64_t c0, int64_t n, float* dst) {
  if constexpr (T == DType::Q8_0 || T == DType::Q4_0) {
    using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
    const Block* b = static_cast<const Block*>(row) + c0 / kQBlock;
    for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
      __m512 lo, hi;
      dequant_block(b[ib], lo, hi);
      _mm512_storeu_ps(dst + ib * kQBlock, lo);
      _mm512_storeu_ps(dst + ib * kQBlock + 16, hi);
    }
  } else {
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = tail_mask(n - c);
      _mm512_mask_storeu_ps(dst + c, m, load16<T>(row, c0 + c, m));
    }
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32: dequant_span<DType::F32>(src, 0, n, dst); return;
    case DType::F16: dequant_span<DType::F16>(src, 0, n, dst); return;
    case DType::BF16: dequant_span<DType::BF16>(src, 0, n, dst); return;
    case DType::Q8_0: dequant_span<DType::Q8_0>(src, 0, n, dst); return;
    case DType::Q4_0: dequant_span<DType::Q4_0>(src, 0, n, dst); return;
    default: scalar::dequantize_row(t, src, dst, n); return;
  }
}

// ---- quantization (bit-exact with the scalar reference) ---------------------------------------

// roundf (half away from zero), exactly: v - trunc(v) is exact for |v| < 2^23.
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f), _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
  return _mm512_mask_add_ps(t, up, t, one);
}

void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n) {
  for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
    const __m512 x0 = _mm512_loadu_ps(src + ib * kQBlock), x1 = _mm512_loadu_ps(src + ib * kQBlock + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    dst[ib].d = uint16_t(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(x0, vid)));
    const __m512i q1 = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(x1, vid)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[ib].qs), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[ib].qs + 16), _mm512_cvtsepi32_epi8(q1));
  }
}

void quantize_row_q4_0(const float* src, BlockQ4_0* dst, int64_t n) {
  for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
    const float* x = src + ib * kQBlock;
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    const __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    // The reference keeps the first value of largest magnitude (with its sign).
    const __m512 va = _mm512_set1_ps(amax);
    const uint32_t eq = uint32_t(_mm512_cmp_ps_mask(a0, va, _CMP_EQ_OQ)) |
                        uint32_t(_mm512_cmp_ps_mask(a1, va, _CMP_EQ_OQ)) << 16;
    const float max = amax == 0.0f || eq == 0 ? 0.0f : x[__builtin_ctz(eq)];
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    dst[ib].d = uint16_t(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m512 vid = _mm512_set1_ps(id), half8 = _mm512_set1_ps(8.5f);
    const __m512i fifteen = _mm512_set1_epi32(15);
    const __m512i q0 = _mm512_min_epi32(fifteen, _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(x0, vid), half8)));
    const __m512i q1 = _mm512_min_epi32(fifteen, _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(x1, vid), half8)));
    const __m512i packed = _mm512_or_si512(q0, _mm512_slli_epi32(q1, 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[ib].qs), _mm512_cvtepi32_epi8(packed));
  }
}

// float32 -> bfloat16, round to nearest even, NaN kept quiet (as lcx::f32_to_bf16).
inline __m256i to_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                              _mm512_set1_epi32(0x7f800000), _MM_CMPINT_NLE);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm256_mask_storeu_epi16(d + i, m, to_bf16(_mm512_maskz_loadu_ps(m, src + i)));
      }
      return;
    }
    case DType::Q8_0: quantize_row_q8_0(src, static_cast<BlockQ8_0*>(dst), n); return;
    case DType::Q4_0: quantize_row_q4_0(src, static_cast<BlockQ4_0*>(dst), n); return;
    default: scalar::quantize_row(t, src, dst, n); return;  // F32 copy; F16 keeps the exact NaN rule
  }
}

// Activations -> int8 blocks with a float scale (see QuantActs); bit-exact with scalar::quantize_acts.
void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d) {
  for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
    const __m512 x0 = _mm512_loadu_ps(x + ib * kQBlock), x1 = _mm512_loadu_ps(x + ib * kQBlock + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    d[ib] = amax / 127.0f;
    const __m512 vid = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    // cvtps rounds to nearest even under the default MXCSR mode, as nearbyint does.
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + ib * kQBlock), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + ib * kQBlock + 16), _mm512_cvtsepi32_epi8(q1));
  }
}

// ---- GEMV: n_tokens <= kGemvMaxTokens, one pass over each weight row ---------------------------

template <DType T, int NT>
void gemv_f(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols;
  const size_t rb = dtype_row_bytes(T, K);
  const float* x = job.x + t0 * K;  // [NT, K]
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m512 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= K; c += 32) {
      const __m512 w0 = load16<T>(row, c, 0xffff), w1 = load16<T>(row, c + 16, 0xffff);
      for (int t = 0; t < NT; ++t) {
        acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * K + c), acc0[t]);
        acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * K + c + 16), acc1[t]);
      }
    }
    for (; c < K; c += 16) {
      const __mmask16 m = tail_mask(K - c);
      const __m512 w0 = load16<T>(row, c, m);
      for (int t = 0; t < NT; ++t) acc0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * K + c), acc0[t]);
    }
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
  }
}

// Integer dot of one block per 32-bit lane group: sum_j w_j * y_j with w, y int8 and |y| <= 127.
// vpdpbusd multiplies unsigned by signed bytes, so use |w| and move w's sign onto y.
struct Q8Weights {
  __m256i absw;
  __mmask32 neg;
};
inline Q8Weights prep_weights(const BlockQ8_0& b) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return {_mm256_abs_epi8(w), _mm256_movepi8_mask(w)};
}
inline __m256i block_dot(const Q8Weights& w, __m256i y) {
  const __m256i ys = _mm256_mask_sub_epi8(y, w.neg, _mm256_setzero_si256(), y);
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w.absw, ys);
}
// Q4_0: nibbles n in 0..15 are already unsigned; sum (n - 8) y = sum n y - sum 8 y.
inline __m256i prep_weights(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
inline __m256i block_dot(__m256i nib, __m256i y) {
  const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), nib, y);
  const __m256i c = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), y);
  return _mm256_sub_epi32(s, c);
}

template <DType T, int NT>
void gemv_q(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
  const int64_t K = job.w.cols, nb = K / kQBlock;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  for (int64_t r = r0; r < r1; ++r) {
    const Block* row = static_cast<const Block*>(job.w.data) + r * nb;
    __m256 acc[2][NT];  // two chains per token hide the FMA latency
    for (int t = 0; t < NT; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
      const auto w = prep_weights(row[ib]);
      const float dw = _cvtsh_ss(row[ib].d);
      for (int t = 0; t < NT; ++t) {
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + ib * kQBlock));
        const __m256 s = _mm256_set1_ps(dw * xd[t * nb + ib]);
        acc[ib & 1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot(w, y)), s, acc[ib & 1][t]);
      }
    }
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = hsum256(_mm256_add_ps(acc[0][t], acc[1][t]));
  }
}

// ---- GEMM: tiles of MR weight rows dequantized to f32, reused across tokens ---------------------

constexpr int kMR = 32;    // weight rows per micro-panel (two zmm)
constexpr int kNR = 12;    // tokens per micro-kernel call: 24 accumulators
constexpr int64_t kKC = 256;  // columns per panel: 32 KiB of packed weights stays in L1

// y[t, 0..32) (+)= sum_k wp[k, 0..32) * xp[k, t] for NT tokens; wp is [kc, 32], xp [kc, 12].
template <int NT>
void micro_kernel(const float* wp, const float* xp, int64_t kc, float* y, int64_t ldy,
                  __mmask16 m0, __mmask16 m1, bool first) {
  __m512 a0[NT], a1[NT];
  for (int t = 0; t < NT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 w0 = _mm512_load_ps(wp + k * kMR), w1 = _mm512_load_ps(wp + k * kMR + 16);
    for (int t = 0; t < NT; ++t) {
      const __m512 b = _mm512_set1_ps(xp[k * kNR + t]);
      a0[t] = _mm512_fmadd_ps(w0, b, a0[t]);
      a1[t] = _mm512_fmadd_ps(w1, b, a1[t]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    float* yt = y + t * ldy;
    if (!first) {
      a0[t] = _mm512_add_ps(a0[t], _mm512_maskz_loadu_ps(m0, yt));
      a1[t] = _mm512_add_ps(a1[t], _mm512_maskz_loadu_ps(m1, yt + 16));
    }
    _mm512_mask_storeu_ps(yt, m0, a0[t]);
    _mm512_mask_storeu_ps(yt + 16, m1, a1[t]);
  }
}

using MicroFn = void (*)(const float*, const float*, int64_t, float*, int64_t, __mmask16, __mmask16, bool);
constexpr MicroFn kMicro[kNR + 1] = {nullptr,          micro_kernel<1>,  micro_kernel<2>, micro_kernel<3>,
                                     micro_kernel<4>,  micro_kernel<5>,  micro_kernel<6>, micro_kernel<7>,
                                     micro_kernel<8>,  micro_kernel<9>,  micro_kernel<10>, micro_kernel<11>,
                                     micro_kernel<12>};

// Rows [rb, rb + nr) x columns [k0, k0 + kc) -> wp[kc, 32] (rows beyond nr are zero).
template <DType T>
void pack_panel(const MatmulJob& job, int64_t rb, int nr, int64_t k0, int64_t kc, float* wp) {
  alignas(64) float tmp[kKC];
  const size_t row_bytes = dtype_row_bytes(T, job.w.cols);
  for (int i = 0; i < nr; ++i) {
    dequant_span<T>(static_cast<const uint8_t*>(job.w.data) + size_t(rb + i) * row_bytes, k0, kc, tmp);
    for (int64_t k = 0; k < kc; ++k) wp[k * kMR + i] = tmp[k];
  }
  for (int i = nr; i < kMR; ++i) {
    for (int64_t k = 0; k < kc; ++k) wp[k * kMR + i] = 0.0f;
  }
}

// x[t0..t1, k0..k0+kc) -> xp as blocks of kNR tokens, each [kc, kNR] (missing tokens are 0), so
// the micro-kernel broadcasts from one stream; x's own rows are often 4 KiB-aliased (cols 2048).
void pack_acts(const float* x, int64_t K, int64_t t0, int64_t t1, int64_t k0, int64_t kc, float* xp) {
  for (int64_t tb = t0; tb < t1; tb += kNR) {
    float* dst = xp + (tb - t0) * kc;
    const int64_t nt = imin(kNR, t1 - tb);
    for (int64_t t = 0; t < nt; ++t) {
      const float* src = x + (tb + t) * K + k0;
      for (int64_t k = 0; k < kc; ++k) dst[k * kNR + t] = src[k];
    }
    for (int64_t t = nt; t < kNR; ++t) {
      for (int64_t k = 0; k < kc; ++k) dst[k * kNR + t] = 0.0f;
    }
  }
}

template <DType T>
void gemm(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  alignas(64) float wp[kKC * kMR];
  const int64_t K = job.w.cols, ldy = job.w.rows;
  // Packed activations for all tokens of one column block (malloc: no STL in this file).
  const int64_t n_tblocks = (t1 - t0 + kNR - 1) / kNR;
  float* xp = static_cast<float*>(std::malloc(size_t(n_tblocks * kNR * kKC) * sizeof(float)));
  if (xp == nullptr) std::abort();  // hot path: no exceptions; a few hundred KiB
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {  // k outermost: x[:, k0:k0+kc] stays in L2
    const int64_t kc = imin(kKC, K - k0);
    pack_acts(job.x, K, t0, t1, k0, kc, xp);
    for (int64_t rb = r0; rb < r1; rb += kMR) {
      const int nr = int(imin(kMR, r1 - rb));
      pack_panel<T>(job, rb, nr, k0, kc, wp);
      const __mmask16 m0 = tail_mask(nr), m1 = nr > 16 ? tail_mask(nr - 16) : 0;
      for (int64_t t = t0; t < t1; t += kNR) {
        const int nt = int(imin(kNR, t1 - t));
        kMicro[nt](wp, xp + (t - t0) * kc, kc, job.y + t * ldy + rb, ldy, m0, m1, k0 == 0);
      }
    }
  }
  std::free(xp);
}

template <DType T>
void matmul_typed(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  constexpr bool quant = T == DType::Q8_0 || T == DType::Q4_0;
  if constexpr (quant) {
    if (job.xq.qs != nullptr) {
      for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
        switch (imin(kGemvMaxTokens, t1 - t)) {
          case 1: gemv_q<T, 1>(job, r0, r1, t); break;
          case 2: gemv_q<T, 2>(job, r0, r1, t); break;
          case 3: gemv_q<T, 3>(job, r0, r1, t); break;
          default: gemv_q<T, 4>(job, r0, r1, t); break;
        }
      }
      return;
    }
  } else {
    if (t1 - t0 <= kGemvMaxTokens) {
      switch (t1 - t0) {
        case 1: gemv_f<T, 1>(job, r0, r1, t0); return;
        case 2: gemv_f<T, 2>(job, r0, r1, t0); return;
        case 3: gemv_f<T, 3>(job, r0, r1, t0); return;
        default: gemv_f<T, 4>(job, r0, r1, t0); return;
      }
    }
  }
  gemm<T>(job, r0, r1, t0, t1);
}

void matmul_rows(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
  switch (job.w.dtype) {
    case DType::F32: matmul_typed<DType::F32>(job, r0, r1, t0, t1); return;
    case DType::F16: matmul_typed<DType::F16>(job, r0, r1, t0, t1); return;
    case DType::BF16: matmul_typed<DType::BF16>(job, r0, r1, t0, t1); return;
    case DType::Q8_0: matmul_typed<DType::Q8_0>(job, r0, r1, t0, t1); return;
    case DType::Q4_0: matmul_typed<DType::Q4_0>(job, r0, r1, t0, t1); return;
    default: scalar::matmul_rows_job(job, r0, r1, t0, t1); return;
  }
}

// ---- vector ops -------------------------------------------------------------------------------

// exp(x) to ~1 ulp: x = n ln2 + r with ln2 split in two (Cody-Waite, Cephes constants),
// |r| <= ln2/2, degree-7 Taylor polynomial (truncation error < 6e-9 relative), then scalef
// applies 2^n with correct overflow to inf and gradual underflow to 0.
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));  // NaN passes
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

float dot_f32(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

void axpy(float a, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  __m512 ss = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  const float inv = 1.0f / std::sqrt(_mm512_reduce_add_ps(ss) / float(n) + eps);
  const __m512 vinv = _mm512_set1_ps(inv);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), v));
  }
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(n - i), x + i));
  const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
    _mm512_mask_storeu_ps(x + i, m, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

}  // namespace

const KernelTable kTable = {KernelIsa::Avx512, matmul_rows, quantize_acts, dequantize_row, quantize_row,
                            dot_f32, rmsnorm, swiglu, softmax, axpy};

}  // namespace lcx::kernels::avx512

#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // x86-64
