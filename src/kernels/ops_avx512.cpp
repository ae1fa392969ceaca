// AVX-512 kernels (F, BW, DQ, VL, VNNI; F16C/FMA/AVX2 on 256-bit halves). Chosen at run time
// by ops.cpp; the scalar twins in ops_scalar.cpp are the test oracle.
//
// Every function here gets its instruction set from the `LCX_ISA_BEGIN` region below (kernels/isa_region.h), not from
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
#include "kernels/isa_region.h"
#include "kernels/quants.h"

#if defined(__x86_64__) && defined(__GNUC__)

// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* helpers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // a GCC-only warning group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

namespace lcx::kernels::avx512 {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
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

// Lane sums of 16 vectors: result lane i = sum of v[i]'s lanes (a transposing tree of adds,
// about 3 operations per vector instead of 9 for a horizontal sum each).
inline __m512 reduce16(const __m512* v) {
  __m512 u[8], w[4], x[2];
  for (int i = 0; i < 8; ++i) {  // [v 2i: 8 partials, v 2i+1: 8 partials]
    const __m512 a = v[2 * i], b = v[2 * i + 1];
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  }
  for (int i = 0; i < 4; ++i) {  // quarter k: 4 partials of v 4i + k
    const __m512 a = u[2 * i], b = u[2 * i + 1];
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd));
  }
  for (int i = 0; i < 2; ++i) {  // quarter k: 2 partials of v 8i + k, then of v 8i + 4 + k, interleaved
    const __m512 a = w[2 * i], b = w[2 * i + 1];
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  // Quarter k: [v k, v 4 + k, v 8 + k, v 12 + k]; lane 4k + j holds v (k + 4j).
  const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x[0]), _mm512_castps_pd(x[1]))),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x[0]), _mm512_castps_pd(x[1]))));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), s);
}

// 64-byte aligned scratch memory of one call; data is nullptr when the allocation failed.
// Per-thread scratch that only grows: the decode GEMV needs a few KiB on every pool thread per
// call, and the decode loop must not allocate (it did ~310 times per TinyLlama token).
struct ThreadScratch {
  uint8_t* data = nullptr;
  size_t cap = 0;
  ~ThreadScratch() { std::free(data); }
};
inline uint8_t* thread_scratch(size_t bytes) {
  thread_local ThreadScratch s;
  if (bytes > s.cap) {
    const size_t cap = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, cap);
    if (p == nullptr) return nullptr;
    std::free(s.data);
    s.data = static_cast<uint8_t*>(p);
    s.cap = cap;
  }
  return s.data;
}

// F32 / F16 / BF16 weights: 64 columns per step into four accumulators per token, row sums
// reduced 16 rows at a time. In L2 this runs at ~50 GB/s of F16 (bound by vcvtph2ps and the
// activation loads), above DRAM bandwidth. Measured and dropped: BF16 as 32 weights per 512-bit
// load (shift / mask into even / odd columns against activations split once per call) was
// slower (~39 vs ~49 GB/s in L2).
// Software prefetch distance of the F32/F16/BF16 GEMV, bytes ahead in the row being read (into
// L2). The hardware prefetchers alone kept one F16 row stream at ~17 GB/s per core here; 32 KiB
// ahead: TinyLlama F16 decode 7.8-8.0 -> 8.7-10.0 t/s on one thread, 11-12 -> 13-16 on two
// (alternated A/B runs; into L1 at 2 KiB it was slower). The int8 GEMV got slower with the same
// prefetch (Q8_0 24 -> 18 t/s at 16-64 KiB, no clear change at 2 KiB), so it keeps its own short
// one for Q4_0 only.
// LONGCTX_F16_PF=bytes overrides (0: off), for measuring on other machines.
inline int64_t pf_dist() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_F16_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(32768);
  }();
  return d;
}

// Q4_0 GEMV software prefetch distance (into L1; into L2 was slower). 3072 bytes: TinyLlama Q4_0
// decode 42.1 -> 42.9 t/s median, faster in 5 of 5 alternated pairs against 1536.
// LONGCTX_Q4_PF=bytes overrides.
inline int64_t q4_pf_dist() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_Q4_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(3072);
  }();
  return d;
}

// Q8_0 GEMV software prefetch distance in bytes (LONGCTX_Q8_PF; 0 turns it off). Intel Xeon with
// AMX (session 17), tg128 of the 1.1B Q8_0 shape alternated 3 x 2 runs: 18.30/18.15/17.76 t/s
// without, 18.79/18.47/18.63 with 1024 (3072: no better, 6144: worse).
inline int64_t q8_pf_dist() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_Q8_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(1024);
  }();
  return d;
}

template <DType T, int NT>
void gemv_f(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols;
  const size_t rb = dtype_row_bytes(T, K);
  const float* x = job.x + t0 * K;  // [NT, K]
  __m512 part[NT][16];              // [token][row within the batch] lane partial sums
  for (int64_t rb0 = r0; rb0 < r1; rb0 += 16) {
    const int nr = int(imin(16, r1 - rb0));
    for (int i = 0; i < nr; ++i) {
      const void* row = static_cast<const uint8_t*>(job.w.data) + size_t(rb0 + i) * rb;
      __m512 acc[4][NT];
      for (int t = 0; t < NT; ++t) acc[0][t] = acc[1][t] = acc[2][t] = acc[3][t] = _mm512_setzero_ps();
      const auto step32 = [&](int64_t c, int a) {  // columns [c, c + 32) into acc[a], acc[a + 1]
        const __m512 w0 = load16<T>(row, c, 0xffff), w1 = load16<T>(row, c + 16, 0xffff);
        for (int t = 0; t < NT; ++t) {
          acc[a][t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * K + c), acc[a][t]);
          acc[a + 1][t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * K + c + 16), acc[a + 1][t]);
        }
      };
      int64_t c = 0;
      const char* rowc = static_cast<const char*>(row);
      const int64_t pd = pf_dist();
      for (; c + 64 <= K; c += 64) {
        if (pd > 0) {
          // 64 columns are 128 bytes of F16/BF16 (two lines), 256 of F32 (four)
          const char* p = rowc + c * (T == DType::F32 ? 4 : 2) + pd;
          _mm_prefetch(p, _MM_HINT_T1);
          _mm_prefetch(p + 64, _MM_HINT_T1);
          if constexpr (T == DType::F32) {
            _mm_prefetch(p + 128, _MM_HINT_T1);
            _mm_prefetch(p + 192, _MM_HINT_T1);
          }
        }
        step32(c, 0);
        step32(c + 32, 2);
      }
      if (c + 32 <= K) {
        step32(c, 0);
        c += 32;
      }
      for (; c < K; c += 16) {
        const __mmask16 m = tail_mask(K - c);
        const __m512 w0 = load16<T>(row, c, m);
        for (int t = 0; t < NT; ++t) acc[3][t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * K + c), acc[3][t]);
      }
      for (int t = 0; t < NT; ++t) {
        part[t][i] = _mm512_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]), _mm512_add_ps(acc[2][t], acc[3][t]));
      }
    }
    for (int t = 0; t < NT; ++t) {
      for (int i = nr; i < 16; ++i) part[t][i] = _mm512_setzero_ps();
      _mm512_mask_storeu_ps(job.y + (t0 + t) * job.w.rows + rb0, tail_mask(nr), reduce16(part[t]));
    }
  }
}

// One token, R rows per pass (F16/BF16 decode): each activation vector is loaded once for R
// rows, dividing the L1 load traffic per weight byte by R; the rows are adjacent in memory, so
// the DRAM stream stays one stream. Same per-row summation order as gemv_f<T, 1>, so the
// results are bit-identical to it. TinyLlama F16 decode, alternated A/B: 2 threads, R=2 against
// R=1 faster in 7 of 8 pairs (mean ratio 1.10); 1 thread, R=4 against R=1 faster in 6 of 6
// (median 9.73 -> 10.49 t/s); R=2 and R=4 indistinguishable there (Zen 4), R=4 ahead on Zen 5
// (f16_rows below).
template <DType T, int R>
void gemv_f_rows(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  static_assert(16 % R == 0, "row groups tile the 16-row reduction");
  const int64_t K = job.w.cols;
  const size_t rb = dtype_row_bytes(T, K);
  const float* x = job.x + t0 * K;
  const int64_t pd = pf_dist();
  __m512 part[16];
  for (int64_t rb0 = r0; rb0 < r1; rb0 += 16) {
    const int nr = int(imin(16, r1 - rb0));
    for (int i = 0; i < nr; i += R) {
      const uint8_t* row[R];
      for (int j = 0; j < R; ++j)  // rows past nr repeat the last one (computed, not stored)
        row[j] = static_cast<const uint8_t*>(job.w.data) + size_t(rb0 + imin(i + j, nr - 1)) * rb;
      __m512 acc[R][4];
      for (int j = 0; j < R; ++j)
        for (int k = 0; k < 4; ++k) acc[j][k] = _mm512_setzero_ps();
      int64_t c = 0;
      for (; c + 64 <= K; c += 64) {
        if (pd > 0) {
          for (int j = 0; j < R; ++j) {
            const char* p = reinterpret_cast<const char*>(row[j]) + c * 2 + pd;
            _mm_prefetch(p, _MM_HINT_T1);
            _mm_prefetch(p + 64, _MM_HINT_T1);
          }
        }
        for (int k = 0; k < 4; ++k) {
          const __m512 xv = _mm512_loadu_ps(x + c + 16 * k);
          for (int j = 0; j < R; ++j) acc[j][k] = _mm512_fmadd_ps(load16<T>(row[j], c + 16 * k, 0xffff), xv, acc[j][k]);
        }
      }
      // Tail as gemv_f<T, 1>: a 32-column step into accumulators 0 and 1, then 16 at a time into 3.
      if (c + 32 <= K) {
        for (int k = 0; k < 2; ++k) {
          const __m512 xv = _mm512_loadu_ps(x + c + 16 * k);
          for (int j = 0; j < R; ++j) acc[j][k] = _mm512_fmadd_ps(load16<T>(row[j], c + 16 * k, 0xffff), xv, acc[j][k]);
        }
        c += 32;
      }
      for (; c < K; c += 16) {
        const __mmask16 m = tail_mask(K - c);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
        for (int j = 0; j < R; ++j) acc[j][3] = _mm512_fmadd_ps(load16<T>(row[j], c, m), xv, acc[j][3]);
      }
      for (int j = 0; j < R && i + j < nr; ++j)
        part[i + j] = _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
    }
    for (int i = nr; i < 16; ++i) part[i] = _mm512_setzero_ps();
    _mm512_mask_storeu_ps(job.y + t0 * job.w.rows + rb0, tail_mask(nr), reduce16(part));
  }
}

// LONGCTX_F16_ROWS=1|2|4: rows per pass of the F16/BF16 decode GEMV (A/B measurements). Default
// 4: on Zen 5 four row streams per thread keep more DRAM reads in flight than two. A simulated
// TinyLlama F16 decode (its 89 matrices, 2 threads, variants alternated per token, 12 tokens
// each): R=2 19.8 t/s (41 GB/s), R=4 22.1 t/s (45.8 GB/s), R=1 18.4; the real decode, tg32
// alternated 6 times: R=4 faster in 5, one tie (medians ~17.8 vs ~16.4 t/s). On the Zen 4 VM
// of sessions 1-10, R=2 and R=4 were indistinguishable.
inline int f16_rows() {
  static const int n = [] {
    const char* e = std::getenv("LONGCTX_F16_ROWS");
    const int v = e ? std::atoi(e) : 4;
    return v == 1 || v == 2 ? v : 4;
  }();
  return n;
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

// Q8_0 / Q4_0 decode: columns in groups of four 32-blocks (128 columns), each group's weights
// as two zmm of unsigned bytes, lo = columns 0..15 of the four blocks and hi = columns 16..31, so
// that 32-bit lane l of a vpdpbusd sums products of block l / 4 only:
//   Q8_0: w + 128 (w ^ 0x80, exact for every int8 w, -128 included) from the 32-byte quants of
//         blocks 0,1 and 2,3 loaded as two zmm whose 128-bit quarters are regrouped (vshufi64x2);
//   Q4_0: the nibbles n = w + 8 of the four 16-byte quants (low nibbles are columns 0..15).
// With that bias, sum_j w_j y_j = sum_j (w_j + bias) y_j - bias * sum_j y_j: the second term
// depends only on the activations, so it is computed once per call (prep_gemv_acts) and seeds the
// accumulator, and two vpdpbusd give each lane's exact int32 share of the block's integer dot.
// Lanes are scaled by d_w * d_x of their block (the same float product as
// scalar::matmul_rows_q8acts), so results differ from the twin only in float summation order.
// Per group and token that is 2 vpdpbusd, a convert, a multiply and an FMA, plus 8 operations
// per group shared by the tokens. In L2 (Zen 4-class core, 1 zmm FMA / vpdpbusd per cycle) this
// runs at ~40 GB/s of Q8_0 and ~25 GB/s of Q4_0. Measured and dropped (no gain): two rows at a
// time sharing the activation loads, Q4_0 quants gathered by one vpermt2b (VBMI), and even
// removing the weight scale conversion only gave ~5%.

// Activations of nt tokens for gemv_int8, per group of 4 blocks and token (256 bytes, 64-aligned):
// y lo (columns 0..15 of each block), y hi (16..31), the seed -bias * (sum of the 8 y of each
// lane) as 16 int32 and d_x of each lane's block as 16 floats.
constexpr int64_t kGemvGroupBytes = 256;

void prep_gemv_acts(const int8_t* xq, const float* xd, int64_t K, int nt, int32_t bias, uint8_t* out) {
  const int64_t nb = K / kQBlock, ng = nb / 4;
  const __m512i ones = _mm512_set1_epi8(1), nbias = _mm512_set1_epi32(-bias);
  const __m512i lane_block = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  for (int64_t g = 0; g < ng; ++g) {
    for (int t = 0; t < nt; ++t) {
      const int8_t* y = xq + t * K + g * 4 * kQBlock;
      uint8_t* o = out + (g * nt + t) * kGemvGroupBytes;
      // Quarters [b0 0..15, b0 16..31, b1 0..15, b1 16..31] and the same for b2, b3.
      const __m512i a = _mm512_loadu_si512(y), b = _mm512_loadu_si512(y + 64);
      const __m512i lo = _mm512_shuffle_i64x2(a, b, 0x88), hi = _mm512_shuffle_i64x2(a, b, 0xdd);
      const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, lo), ones, hi);
      _mm512_store_si512(o, lo);
      _mm512_store_si512(o + 64, hi);
      _mm512_store_si512(o + 128, _mm512_mullo_epi32(s, nbias));
      _mm512_store_ps(o + 192, _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_loadu_ps(xd + t * nb + g * 4))));
    }
  }
}

template <DType T, int NT>
void gemv_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
  const int64_t K = job.w.cols, nb = K / kQBlock, ng = nb / 4;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  uint8_t* xg = thread_scratch(size_t(ng * NT * kGemvGroupBytes));  // [ng, NT] groups of prep_gemv_acts
  if (ng > 0 && xg == nullptr) {  // out of memory: the kernel that needs no scratch
    gemv_q<T, NT>(job, r0, r1, t0);
    return;
  }
  prep_gemv_acts(xq, xd, K, NT, T == DType::Q8_0 ? 128 : 8, xg);
  const __m512i low4 = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8(char(0x80));
  // f16 scale words -> lanes [d0 x4, d1 x4, d2 x4, d3 x4]. Q8_0 (34-byte blocks): words 0 and 17
  // of two 64-byte loads at blocks 0 and 2; Q4_0 (18-byte blocks): words 0, 9, 18, 27 of one.
  const __m512i didx = T == DType::Q8_0
                           ? _mm512_setr_epi32(0, 0, 0x00110011, 0x00110011, 0x00200020, 0x00200020, 0x00310031,
                                               0x00310031, 0, 0, 0, 0, 0, 0, 0, 0)
                           : _mm512_setr_epi32(0, 0, 0x00090009, 0x00090009, 0x00120012, 0x00120012, 0x001b001b,
                                               0x001b001b, 0, 0, 0, 0, 0, 0, 0, 0);
  // Row sums are reduced 16 rows at a time (reduce16): a horizontal sum per row would cost
  // about as much as the row's multiply-adds at K = 2048.
  __m512 part[NT][16];  // [token][row within the batch] lane partial sums
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int nr = int(imin(16, r1 - rb));
    for (int i = 0; i < nr; ++i) {
      const Block* row = static_cast<const Block*>(job.w.data) + (rb + i) * nb;
      // Even / odd groups go to two accumulator sets to hide the FMA latency.
      __m512 acc0[NT], acc1[NT];
      for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
      const auto group = [&](int64_t g, __m512(&acc)[NT]) {
        const Block* b = row + 4 * g;
        if constexpr (T == DType::Q4_0) {  // measured: helps Q4_0 from DRAM (~+10%), not Q8_0
          const char* p = reinterpret_cast<const char*>(b) + q4_pf_dist();
          _mm_prefetch(p, _MM_HINT_T0);
          _mm_prefetch(p + 64, _MM_HINT_T0);
        } else if (q8_pf_dist() > 0) {
          const char* p = reinterpret_cast<const char*>(b) + q8_pf_dist();
          _mm_prefetch(p, _MM_HINT_T0);
          _mm_prefetch(p + 64, _MM_HINT_T0);
          _mm_prefetch(p + 128, _MM_HINT_T0);
        }
        __m512i lo, hi;
        __m512 dw;
        if constexpr (T == DType::Q8_0) {
          const auto q = [&](int j) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[j].qs)); };
          const __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(q(0)), q(1), 1);
          const __m512i c = _mm512_inserti64x4(_mm512_castsi256_si512(q(2)), q(3), 1);
          lo = _mm512_xor_si512(_mm512_shuffle_i64x2(a, c, 0x88), flip);
          hi = _mm512_xor_si512(_mm512_shuffle_i64x2(a, c, 0xdd), flip);
          dw = _mm512_cvtph_ps(
              _mm512_castsi512_si256(_mm512_permutex2var_epi16(_mm512_loadu_si512(b), didx, _mm512_loadu_si512(b + 2))));
        } else {
          const auto q = [&](int j) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[j].qs)); };
          const __m512i a =
              _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(q(0)), q(1), 1)),
                                 _mm256_inserti128_si256(_mm256_castsi128_si256(q(2)), q(3), 1), 1);
          lo = _mm512_and_si512(a, low4);
          hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), low4);
          dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(didx, _mm512_loadu_si512(b))));
        }
        const uint8_t* xt = xg + g * NT * kGemvGroupBytes;
        for (int t = 0; t < NT; ++t, xt += kGemvGroupBytes) {
          const __m512i seed = _mm512_load_si512(xt + 128);
          const __m512i isum =
              _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(seed, lo, _mm512_load_si512(xt)), hi, _mm512_load_si512(xt + 64));
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_load_ps(xt + 192)), acc[t]);
        }
      };
      int64_t g = 0;
      for (; g + 2 <= ng; g += 2) {
        group(g, acc0);
        group(g + 1, acc1);
      }
      if (g < ng) group(g, acc0);
      for (int t = 0; t < NT; ++t) {
        __m512 sum = _mm512_add_ps(acc0[t], acc1[t]);
        for (int64_t ib = ng * 4; ib < nb; ++ib) {  // the last nb % 4 blocks one at a time, as gemv_q
          const auto w = prep_weights(row[ib]);
          const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + ib * kQBlock));
          const __m256 s = _mm256_set1_ps(_cvtsh_ss(row[ib].d) * xd[t * nb + ib]);
          sum = _mm512_add_ps(sum, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(block_dot(w, yv)), s)));
        }
        part[t][i] = sum;
      }
    }
    for (int t = 0; t < NT; ++t) {
      for (int i = nr; i < 16; ++i) part[t][i] = _mm512_setzero_ps();
      _mm512_mask_storeu_ps(job.y + (t0 + t) * job.w.rows + rb, tail_mask(nr), reduce16(part[t]));
    }
  }
}

// ---- GEMM: tiles of MR weight rows dequantized to f32, reused across tokens ---------------------

constexpr int kMR = 32;    // weight rows per micro-panel (two zmm)
constexpr int kNR = 12;    // tokens per micro-kernel call: 24 accumulators
// Columns per block: a 12-token activation slice (24 KiB) stays in L1 while kPanels micro-panels
// of weights (64 KiB each) stream from L2; the output rows are read and written K / kKC times.
// Zen 5, TinyLlama F16 pp512, alternated against 256 columns x 1 panel (32 KiB of weights in
// L1, the activation slice streamed): see the commit that introduced it.
constexpr int64_t kKC = 512;
constexpr int kPanels = 2;

// y[t, 0..32) (+)= sum_k wp[k, 0..32) * xp[k, t] for NT tokens; wp is [kc, 32], xp [kc, 12].
template <int NT>
void micro_kernel(const float* wp, const float* xp, int64_t kc, float* y, int64_t ldy,
                  __mmask16 m0, __mmask16 m1, bool first) {
  __m512 a0[NT], a1[NT];
  for (int t = 0; t < NT; ++t) {
    a0[t] = a1[t] = _mm512_setzero_ps();
    // y's rows are far apart and were last touched a whole column block ago (L3 or DRAM):
    // fetch them now so that the read-modify-write below does not stall.
    if (!first) {
      _mm_prefetch(reinterpret_cast<const char*>(y + t * ldy), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(y + t * ldy + 16), _MM_HINT_T0);
    }
  }
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

// In-register transpose of a 16 x 16 block: r[i] lane j -> r[j] lane i. Unpacks within 128-bit
// lanes give u[g][c] (lane L = column 4L + c of rows 4g..4g+3); two rounds of 128-bit lane
// shuffles gather each column's four row groups. 64 shuffles for 256 values.
inline void transpose16x16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 u[4][4];
  for (int g = 0; g < 4; ++g) {
    const __m512d lo01 = _mm512_castps_pd(t[4 * g]), lo23 = _mm512_castps_pd(t[4 * g + 2]);
    const __m512d hi01 = _mm512_castps_pd(t[4 * g + 1]), hi23 = _mm512_castps_pd(t[4 * g + 3]);
    u[g][0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo01, lo23));
    u[g][1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo01, lo23));
    u[g][2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi01, hi23));
    u[g][3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi01, hi23));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 a_lo = _mm512_shuffle_f32x4(u[0][c], u[1][c], 0x88), a_hi = _mm512_shuffle_f32x4(u[0][c], u[1][c], 0xdd);
    const __m512 b_lo = _mm512_shuffle_f32x4(u[2][c], u[3][c], 0x88), b_hi = _mm512_shuffle_f32x4(u[2][c], u[3][c], 0xdd);
    r[c] = _mm512_shuffle_f32x4(a_lo, b_lo, 0x88);       // lane group 0: column c
    r[4 + c] = _mm512_shuffle_f32x4(a_hi, b_hi, 0x88);   // column 4 + c
    r[8 + c] = _mm512_shuffle_f32x4(a_lo, b_lo, 0xdd);   // column 8 + c
    r[12 + c] = _mm512_shuffle_f32x4(a_hi, b_hi, 0xdd);  // column 12 + c
  }
}

// Rows [rb, rb + nr) x columns [k0, k0 + kc) -> wp[kc, 32] (rows beyond nr are zero). Sixteen
// rows at a time are dequantized row-major and transposed in registers (a scalar transposing
// copy cost ~14% of the GEMM's time).
template <DType T>
void pack_panel(const MatmulJob& job, int64_t rb, int nr, int64_t k0, int64_t kc, float* wp) {
  const size_t row_bytes = dtype_row_bytes(T, job.w.cols);
  const uint8_t* base = static_cast<const uint8_t*>(job.w.data) + size_t(rb) * row_bytes;
  if constexpr (T == DType::F32 || T == DType::F16 || T == DType::BF16) {
    // Loaded (and widened) straight into the transpose's registers: no row-major copy.
    for (int h = 0; h < kMR; h += 16) {
      const int n = int(imax(0, imin(16, nr - h)));
      for (int64_t k = 0; k < kc; k += 16) {
        const int64_t nk = imin(16, kc - k);
        const __mmask16 m = tail_mask(nk);
        __m512 r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = i < n ? load16<T>(base + size_t(h + i) * row_bytes, k0 + k, m) : _mm512_setzero_ps();
        transpose16x16(r);
        for (int j = 0; j < nk; ++j) _mm512_store_ps(wp + (k + j) * kMR + h, r[j]);
      }
    }
    return;
  }
  alignas(64) float tmp[16 * kKC];  // [16, kc] with row stride kKC
  for (int h = 0; h < kMR; h += 16) {
    const int n = int(imax(0, imin(16, nr - h)));
    for (int i = 0; i < n; ++i) dequant_span<T>(base + size_t(h + i) * row_bytes, k0, kc, tmp + i * kKC);
    for (int i = n; i < 16; ++i) std::memset(tmp + i * kKC, 0, size_t(kc) * sizeof(float));
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(tmp + i * kKC + k);
      transpose16x16(r);
      for (int j = 0; j < 16; ++j) _mm512_store_ps(wp + (k + j) * kMR + h, r[j]);
    }
    for (; k < kc; ++k)
      for (int i = 0; i < 16; ++i) wp[k * kMR + h + i] = tmp[i * kKC + k];
  }
}

// x[t0..t1, k0..k0+kc) -> xp as blocks of kNR tokens, each [kc, kNR] (missing tokens are 0), so
// the micro-kernel broadcasts from one stream. Sixteen columns of the block's tokens are
// transposed in registers (the scalar copy was 7 % of F16 pp512).
void pack_acts(const float* x, int64_t K, int64_t t0, int64_t t1, int64_t k0, int64_t kc, float* xp) {
  static_assert(kNR <= 16, "one transpose per 16 columns");
  constexpr __mmask16 kTok = __mmask16((1u << kNR) - 1u);
  for (int64_t tb = t0; tb < t1; tb += kNR) {
    float* dst = xp + (tb - t0) * kc;
    const int64_t nt = imin(kNR, t1 - tb);
    for (int64_t k = 0; k < kc; k += 16) {
      const int64_t nk = imin(16, kc - k);
      const __mmask16 m = tail_mask(nk);
      __m512 r[16];
      for (int64_t t = 0; t < 16; ++t)
        r[t] = t < nt ? _mm512_maskz_loadu_ps(m, x + (tb + t) * K + k0 + k) : _mm512_setzero_ps();
      transpose16x16(r);
      for (int64_t j = 0; j < nk; ++j) _mm512_mask_storeu_ps(dst + (k + j) * kNR, kTok, r[j]);
    }
  }
}

// Per-thread scratch of the f32 GEMM, kept between calls: a prompt makes hundreds of GEMM calls
// and a fresh ~1 MiB malloc each time went to mmap, page faults and zeroing (~5 % of F16 pp512).
struct GemmScratch {
  float* p = nullptr;
  size_t cap = 0;  // floats
  ~GemmScratch() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
      if (p == nullptr) std::abort();  // hot path: no exceptions; about a MiB
      cap = n;
    }
    return p;
  }
};

template <DType T>
void gemm(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  thread_local GemmScratch scratch;
  const int64_t K = job.w.cols, ldy = job.w.rows;
  const int64_t n_tblocks = (t1 - t0 + kNR - 1) / kNR;
  // Rows of up to kFullK columns in one block: no read-modify-write of the output between blocks;
  // the two panels (2 x 256 KiB at 2048 columns) still fit L2. TinyLlama ffn_up 5632x2048 x 512
  // tokens, alternated: 1 thread 183-186 -> 191-199 GFLOP/s, 2 threads 179-185 -> 193-196; model
  // F16 pp512 faster in 7 of 10 pairs (~+2.5 %). 5632 columns in one block were slower (standalone
  // harness: 150 against 204 GFLOP/s), hence the limit.
  constexpr int64_t kFullK = 2048;
  constexpr bool direct = T == DType::F32 || T == DType::F16 || T == DType::BF16;  // pack_panel's tmp holds kKC
  const int64_t KB = direct && K <= kFullK ? K : kKC;
  const size_t wp_floats = size_t(kPanels) * KB * kMR;
  float* wp = scratch.get(wp_floats + size_t(n_tblocks * kNR * KB));  // [kPanels][kc, 32]
  float* xp = wp + wp_floats;  // packed activations of all tokens for one column block
  for (int64_t k0 = 0; k0 < K; k0 += KB) {  // k outermost: x[:, k0:k0+kc] stays in L2
    const int64_t kc = imin(KB, K - k0);
    pack_acts(job.x, K, t0, t1, k0, kc, xp);
    for (int64_t rb0 = r0; rb0 < r1; rb0 += kMR * kPanels) {
      const int np = int(imin(kPanels, (r1 - rb0 + kMR - 1) / kMR));
      for (int p = 0; p < np; ++p) {
        const int64_t rb = rb0 + p * kMR;
        pack_panel<T>(job, rb, int(imin(kMR, r1 - rb)), k0, kc, wp + p * KB * kMR);
      }
      for (int64_t t = t0; t < t1; t += kNR) {
        const int nt = int(imin(kNR, t1 - t));
        for (int p = 0; p < np; ++p) {  // the activation slice is reused from L1
          const int64_t rb = rb0 + p * kMR;
          const int nr = int(imin(kMR, r1 - rb));
          const __mmask16 m0 = tail_mask(nr), m1 = nr > 16 ? tail_mask(nr - 16) : 0;
          kMicro[nt](wp + p * KB * kMR, xp + (t - t0) * kc, kc, job.y + t * ldy + rb, ldy, m0, m1, k0 == 0);
        }
      }
    }
  }
}

// ---- Int8 GEMM (Q8_0 / Q4_0, n_tokens > kGemvMaxTokens): vpdpbusd, tokens in lanes ----------
//
// See GemmMode in ops_internal.h for the numerics and the packed activation layout. One zmm holds
// 4 columns of 16 tokens (biased to unsigned); 4 signed weight bytes of one row are broadcast, so
// Q8_0 rows are read in place and only Q4_0 needs its nibbles spread to bytes. Per 32-block the
// int32 sums start from the bias correction and are scaled once: acc += float(isum) * (d_x * d_w).

constexpr int kI8Rows = 4;     // weight rows per micro-tile (broadcast)
constexpr int kI8Groups = 3;   // token groups of 16 per micro-tile: 12 int32 + 12 f32 accumulators
constexpr int64_t kPanelRows = 32;  // rows whose scales (and Q4_0 bytes) are prepared together

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Quantizes 32 values as quantize_acts does (bit-exact) into q[32] biased by +128; returns d.
inline float quant_block_biased(const float* x, uint8_t* q) {
  const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
  const __m512 vid = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
  const __m128i bias = _mm_set1_epi8(char(0x80));
  const __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x0, vid)));
  const __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x1, vid)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_xor_si128(q0, bias));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm_xor_si128(q1, bias));
  return amax / 127.0f;
}

void pack_acts_int8(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp) {
  const int64_t nb = cols / kQBlock;
  for (int64_t g = g0; g < g1; ++g) {
    uint8_t* base = xp + g * nb * kInt8GroupBlockBytes;
    // Block-major: the 16 tokens' 4-byte pieces of one block (576 bytes) are written together
    // while its lines are in L1; token-major wrote every line of the group (36-99 KiB) 16 times.
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = base + b * kInt8GroupBlockBytes;
      for (int64_t i = 0; i < kPackTokens; ++i) {
        const int64_t t = g * kPackTokens + i;
        alignas(32) uint8_t q[kQBlock];
        float d = 0.0f;
        if (t < n_tokens) {
          d = quant_block_biased(x + t * cols + b * kQBlock, q);
        } else {
          std::memset(q, 0x80, sizeof(q));  // q = 0
        }
        for (int j = 0; j < 8; ++j) std::memcpy(blk + j * 64 + i * 4, q + 4 * j, 4);
        std::memcpy(blk + 8 * 64 + i * 4, &d, 4);
      }
    }
  }
}

// Weight scales and bias corrections of panel rows, [nr][nb]; Q4_0 rows also spread to signed
// bytes (nibble - 8) in wq[nr][cols], value order as in dequantization.
template <DType T>
void prepare_int8_panel(const MatmulJob& job, int64_t rp, int64_t nr, float* dw, int32_t* corr, int8_t* wq) {
  const int64_t K = job.w.cols, nb = K / kQBlock;
  const __m256i bias = _mm256_set1_epi8(char(0x80));
  for (int64_t i = 0; i < nr; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      __m256i q;
      uint16_t d;
      if constexpr (T == DType::Q8_0) {
        const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(job.w.data)[(rp + i) * nb + b];
        q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs));
        d = blk.d;
      } else {
        const BlockQ4_0 blk = T == DType::Q4_0_R16 ? q4_0_r16_block(job.w.data, K, rp + i, b)
                                                   : static_cast<const BlockQ4_0*>(job.w.data)[(rp + i) * nb + b];
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
        const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
        q = _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(wq + i * K + b * kQBlock), q);
        d = blk.d;
      }
      // sum of the signed bytes: sad of the biased bytes, minus 32 * 128.
      const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(q, bias), _mm256_setzero_si256());
      const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const int32_t sum = int32_t(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1)) - 32 * 128;
      dw[i * nb + b] = _cvtsh_ss(d);
      corr[i * nb + b] = -128 * sum;
    }
  }
}

// Q4_0_R16 panel rows [rp, rp + nr) (rp and nr multiples of 16) from the R16 lane layout: per
// 4-row micro-tile and block, wq gets 8 x 16 bytes (column quad g = 0..7 of its 4 rows, signed
// bytes nibble - 8; micro-tile t of group gi at wq + (gi * 4 + t) * nb * 128), dw and corr 16
// lanes per group and block. Chunk k of an R16 group holds bytes 4k..4k+3 of every row's qs,
// whose low nibbles are columns 4k.. (quad k) and high nibbles columns 16 + 4k.. (quad 4 + k),
// so a group is 4 loads, masks and shifts, where the row-major preparation gathered 4 bytes at a
// time (perf: 16 % of the Q4_0 prompt GEMM). Micro-tile-major, each tile's weights for a block
// are two lines (with all 16 rows' quads in one 512-byte block, each tile touched 8 lines).
void prepare_r16_lanes(const MatmulJob& job, int64_t rp, int64_t nr, float* dw, int32_t* corr, int8_t* wq) {
  const int64_t nb = job.w.cols / kQBlock;
  const __m512i low4 = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8), ones = _mm512_set1_epi8(1);
  const auto* base = static_cast<const uint8_t*>(job.w.data);
  for (int64_t gi = 0; gi < nr / kR16Rows; ++gi) {
    const uint8_t* panel = base + size_t((rp / kR16Rows + gi) * nb) * kR16GroupBytes;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* g = panel + size_t(b) * kR16GroupBytes;
      int8_t* out = wq + gi * nb * (8 * 64) + b * 128;  // micro-tile 0 of the group, block b
      __m512i sum = _mm512_setzero_si512();  // per row: sum of the unsigned nibbles
      for (int k = 0; k < 4; ++k) {
        const __m512i a = _mm512_loadu_si512(g + 2 * kR16Rows + 64 * k);
        const __m512i lo = _mm512_and_si512(a, low4), hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), low4);
        sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum, lo, ones), hi, ones);
        const __m512i q[2] = {_mm512_sub_epi8(lo, eight), _mm512_sub_epi8(hi, eight)};
        // quad k (low nibbles) and 4 + k (high) of the four 4-row micro-tiles of the group
        for (int h = 0; h < 2; ++h) {
          const int quad = 4 * h + k;
          _mm_store_si128(reinterpret_cast<__m128i*>(out + 0 * nb * 128 + quad * 16), _mm512_extracti32x4_epi32(q[h], 0));
          _mm_store_si128(reinterpret_cast<__m128i*>(out + 1 * nb * 128 + quad * 16), _mm512_extracti32x4_epi32(q[h], 1));
          _mm_store_si128(reinterpret_cast<__m128i*>(out + 2 * nb * 128 + quad * 16), _mm512_extracti32x4_epi32(q[h], 2));
          _mm_store_si128(reinterpret_cast<__m128i*>(out + 3 * nb * 128 + quad * 16), _mm512_extracti32x4_epi32(q[h], 3));
        }
      }
      // signed sum = nibble sum - 32 * 8; corr = -128 * signed sum (see prepare_int8_panel)
      const __m512i ssum = _mm512_sub_epi32(sum, _mm512_set1_epi32(32 * 8));
      _mm512_store_si512(corr + (gi * nb + b) * 16, _mm512_mullo_epi32(ssum, _mm512_set1_epi32(-128)));
      _mm512_store_ps(dw + (gi * nb + b) * 16,
                      _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g))));
    }
  }
}

// out[m][v * 16 + i] = y of row m, token i of group v, for MR rows and NV token groups.
// w[m]: the row's bytes; block b's 32 bytes at w[m] + b * WS (WS = 34 reads Q8_0 blocks in place).
// Scales and corrections of row m, block b: dw[m * dsm + b * dsb] (row-major panels: dsm = nb,
// dsb = 1; R16 lane panels: dsm = 1, dsb = 16). Column quad g of block b: w[m] + b * WS + g * GS.
template <int NV, int MR, int WS, int GS>
void int8_tile(const uint8_t* const* w, const float* dw, const int32_t* corr, int64_t dsm, int64_t dsb,
               int64_t nb, const uint8_t* xg, int64_t gstride, float* out) {
  __m512 facc[NV][MR];
  for (int v = 0; v < NV; ++v) {
    for (int m = 0; m < MR; ++m) facc[v][m] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    __m512i acc[NV][MR];
    for (int m = 0; m < MR; ++m) {
      const __m512i c = _mm512_set1_epi32(corr[m * dsm + b * dsb]);
      for (int v = 0; v < NV; ++v) acc[v][m] = c;
    }
    const uint8_t* xb = xg + b * kInt8GroupBlockBytes;
    for (int g = 0; g < 8; ++g) {
      __m512i xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_load_si512(xb + v * gstride + g * 64);
      for (int m = 0; m < MR; ++m) {
        const __m512i wb = _mm512_set1_epi32(int(load_u32(w[m] + b * WS + GS * g)));
        for (int v = 0; v < NV; ++v) acc[v][m] = _mm512_dpbusd_epi32(acc[v][m], xv[v], wb);
      }
    }
    for (int v = 0; v < NV; ++v) {
      const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(xb + v * gstride + 8 * 64));
      for (int m = 0; m < MR; ++m) {
        const __m512 s = _mm512_mul_ps(dx, _mm512_set1_ps(dw[m * dsm + b * dsb]));
        facc[v][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[v][m]), s, facc[v][m]);
      }
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + m * (kI8Groups * 16) + v * 16, facc[v][m]);
  }
}

using Int8TileFn = void (*)(const uint8_t* const*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                            const uint8_t*, int64_t, float*);
template <int WS, int GS>
constexpr Int8TileFn kInt8Tiles[kI8Groups][kI8Rows] = {
    {int8_tile<1, 1, WS, GS>, int8_tile<1, 2, WS, GS>, int8_tile<1, 3, WS, GS>, int8_tile<1, 4, WS, GS>},
    {int8_tile<2, 1, WS, GS>, int8_tile<2, 2, WS, GS>, int8_tile<2, 3, WS, GS>, int8_tile<2, 4, WS, GS>},
    {int8_tile<3, 1, WS, GS>, int8_tile<3, 2, WS, GS>, int8_tile<3, 3, WS, GS>, int8_tile<3, 4, WS, GS>}};

// Writes tile results for tokens in [t0, t1) only (pad tokens and other threads' tokens skipped).
inline void store_tile(const float* out, int nv, int mr, int64_t g, int64_t t0, int64_t t1, float* y, int64_t ldy,
                       int64_t r) {
  constexpr int64_t ld = kI8Groups * 16;
  for (int v = 0; v < nv; ++v) {
    const int64_t tg = (g + v) * kPackTokens;
    if (mr == 4 && tg >= t0 && tg + kPackTokens <= t1) {
      // A whole group of a full tile: 4 x 4 transposes, one 16-byte store per token (a quarter
      // of the stores; y's rows are far apart, so each store is a separate cache line).
      for (int i = 0; i < 16; i += 4) {
        __m128 a = _mm_load_ps(out + v * 16 + i), b = _mm_load_ps(out + ld + v * 16 + i);
        __m128 c = _mm_load_ps(out + 2 * ld + v * 16 + i), d = _mm_load_ps(out + 3 * ld + v * 16 + i);
        _MM_TRANSPOSE4_PS(a, b, c, d);
        float* yt = y + (tg + i) * ldy + r;
        _mm_storeu_ps(yt, a);
        _mm_storeu_ps(yt + ldy, b);
        _mm_storeu_ps(yt + 2 * ldy, c);
        _mm_storeu_ps(yt + 3 * ldy, d);
      }
      continue;
    }
    for (int i = 0; i < 16; ++i) {
      const int64_t t = tg + i;
      if (t < t0 || t >= t1) continue;
      for (int m = 0; m < mr; ++m) y[t * ldy + r + m] = out[m * ld + v * 16 + i];
    }
  }
}

template <DType T>
void gemm_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int64_t K = job.w.cols, nb = K / kQBlock, ldy = job.w.rows;
  const int64_t gstride = nb * kInt8GroupBlockBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  const bool q4 = T == DType::Q4_0 || T == DType::Q4_0_R16;
  // Q4_0_R16 panels stay in lanes (prepare_r16_lanes) when they are whole 16-row groups.
  const bool lanes = T == DType::Q4_0_R16 && r0 % kR16Rows == 0 && r1 % kR16Rows == 0;
  // Panel scratch (aligned_alloc: no STL in this file): scales, corrections, Q4_0 bytes.
  auto* dw = static_cast<float*>(std::aligned_alloc(64, size_t(kPanelRows * nb) * sizeof(float)));
  auto* corr = static_cast<int32_t*>(std::aligned_alloc(64, size_t(kPanelRows * nb) * sizeof(int32_t)));
  auto* wq = static_cast<int8_t*>(q4 ? std::aligned_alloc(64, size_t(kPanelRows * K)) : nullptr);
  if (dw == nullptr || corr == nullptr || (q4 && wq == nullptr)) std::abort();  // hot path: no exceptions
  alignas(64) float out[kI8Rows * kI8Groups * 16];
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    if (lanes) {
      prepare_r16_lanes(job, rp, nr, dw, corr, wq);
    } else {
      prepare_int8_panel<T>(job, rp, nr, dw, corr, wq);
    }
    for (int64_t g = ga; g < gb; g += kI8Groups) {
      const int nv = int(imin(kI8Groups, gb - g));
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t m0 = 0; m0 < nr; m0 += kI8Rows) {
        const int mr = int(imin(kI8Rows, nr - m0));
        const uint8_t* w[kI8Rows];
        if (lanes) {  // m0 % 4 == 0: a micro-tile never straddles two 16-row groups
          const int64_t gi = m0 / kR16Rows, l0 = m0 % kR16Rows;
          for (int m = 0; m < mr; ++m) w[m] = reinterpret_cast<const uint8_t*>(wq + (m0 / kI8Rows) * nb * 128 + m * 4);
          kInt8Tiles<128, 16>[nv - 1][mr - 1](w, dw + gi * nb * 16 + l0, corr + gi * nb * 16 + l0, 1, 16, nb, xg,
                                              gstride, out);
        } else {
          for (int m = 0; m < mr; ++m) {
            w[m] = q4 ? reinterpret_cast<const uint8_t*>(wq + (m0 + m) * K)
                      : reinterpret_cast<const uint8_t*>(static_cast<const BlockQ8_0*>(job.w.data) + (rp + m0 + m) * nb) + 2;
          }
          const Int8TileFn fn = q4 ? kInt8Tiles<kQBlock, 4>[nv - 1][mr - 1] : kInt8Tiles<int(sizeof(BlockQ8_0)), 4>[nv - 1][mr - 1];
          fn(w, dw + m0 * nb, corr + m0 * nb, nb, 1, nb, xg, gstride, out);
        }
        store_tile(out, nv, mr, g, t0, t1, job.y, ldy, rp + m0);
      }
    }
  }
  std::free(wq);
  std::free(corr);
  std::free(dw);
}

// ---- Q4_0_R16 decode GEMV (layout in runtime/dtype.h): rows in lanes --------------------------
//
// Per panel of 16 rows and 32-column block: 4 64-byte loads hold the 16 rows' nibbles, low
// nibbles (columns 4k..4k+3 of chunk k) and high nibbles (columns 16+4k..) are masked out, and
// 8 vpdpbusd against 4 activation bytes broadcast to every lane give each row's exact int32 dot
// in its own lane. The int32 sums start from -8 * (sum of the block's activations), so the
// unsigned nibbles n = w + 8 give sum w*y; then acc += float(isum) * (d_w * d_x) per lane, the
// same terms in the same order as scalar::matmul_rows_q8acts (one rounding fewer: an FMA).
// In L2 this runs at ~65 GB/s of Q4_0 on one Zen 4 core against ~22 GB/s for the row-major
// kernel above (which needs byte regrouping and a horizontal reduction per row), so a single
// thread streams Q4_0 from DRAM at the rate of a plain read loop (~32 GB/s) instead of ~20.

// -8 * (sum of each 32-block of activations), the int32 seed of each block's dot.
void block_seeds(const int8_t* xq, int64_t nb, int32_t* seed) {
  const __m256i ones = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQBlock));
    // sign-extend via vpdpbusd with unsigned ones: sum of 4 signed bytes per lane
    const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, y);
    const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    seed[b] = -8 * _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1)));
  }
}

template <int NT>
void gemv_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols, nb = K / kQBlock, ldy = job.w.rows;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  auto* seed = reinterpret_cast<int32_t*>(thread_scratch(size_t(NT * nb) * sizeof(int32_t)));  // [NT, nb]
  if (seed == nullptr) {  // out of memory: the twin needs no scratch
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  for (int t = 0; t < NT; ++t) block_seeds(xq + t * K, nb, seed + t * nb);
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const auto* base = static_cast<const uint8_t*>(job.w.data);
  for (int64_t p = r0 / kR16Rows; p * kR16Rows < r1; ++p) {
    const uint8_t* panel = base + size_t(p * nb) * kR16GroupBytes;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* g = panel + size_t(b) * kR16GroupBytes;
      __m512i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) {
        const __m512i a = _mm512_loadu_si512(g + 2 * kR16Rows + 64 * k);
        lo[k] = _mm512_and_si512(a, low4);
        hi[k] = _mm512_and_si512(_mm512_srli_epi16(a, 4), low4);
      }
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
      for (int t = 0; t < NT; ++t) {
        const uint8_t* y = reinterpret_cast<const uint8_t*>(xq + t * K + b * kQBlock);
        // two chains (low / high nibbles) halve the vpdpbusd latency on the critical path
        __m512i s0 = _mm512_set1_epi32(seed[t * nb + b]), s1 = _mm512_setzero_si512();
        for (int k = 0; k < 4; ++k) {
          s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(int(load_u32(y + 4 * k))));
          s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi32(int(load_u32(y + 16 + 4 * k))));
        }
        const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(xd[t * nb + b]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), s, acc[t]);
      }
    }
    // Only rows [r0, r1) of this panel: callers may split inside a panel.
    const int64_t lo_r = imax(r0, p * kR16Rows), hi_r = imin(r1, (p + 1) * kR16Rows);
    const __mmask16 m = __mmask16(tail_mask(hi_r - p * kR16Rows) & ~tail_mask(lo_r - p * kR16Rows));
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(job.y + (t0 + t) * ldy + p * kR16Rows, m, acc[t]);
  }
}

void matmul_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (job.mode == GemmMode::AmxInt8) {
    amx::gemm_int8(job, r0, r1, t0, t1);
  } else if (job.mode == GemmMode::Int8) {
    gemm_int8<DType::Q4_0_R16>(job, r0, r1, t0, t1);
  } else if (job.xq.qs != nullptr) {
    for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
      switch (imin(kGemvMaxTokens, t1 - t)) {
        case 1: gemv_r16<1>(job, r0, r1, t); break;
        case 2: gemv_r16<2>(job, r0, r1, t); break;
        case 3: gemv_r16<3>(job, r0, r1, t); break;
        default: gemv_r16<4>(job, r0, r1, t); break;
      }
    }
  } else {
    scalar::matmul_rows_job(job, r0, r1, t0, t1);
  }
}

// ---- Bf16 GEMM (F16 / BF16, LONGCTX_FAST_BF16=1): vdpbf16ps, tokens in lanes -----------------
//
// One zmm holds a column pair of 16 tokens as bf16; a pair of one row's weights is broadcast.
// BF16 rows with an even number of columns are read in place; F16 rows are rounded to bf16 per
// panel. Needs AVX512_BF16 (ops.cpp checks the CPU before choosing GemmMode::Bf16).
LCX_ISA_END  // regions do not nest: the outer one resumes after this one
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")

constexpr int kBfRows = 8;    // weight rows per micro-tile
constexpr int kBfGroups = 3;  // token groups of 16: 24 accumulators

inline __m256i to_bf16_rne(__m512 x) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)); }

void pack_acts_bf16(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp) {
  const int64_t np = (cols + 1) / 2;
  for (int64_t g = g0; g < g1; ++g) {
    uint8_t* base = xp + g * np * 64;
    for (int64_t i = 0; i < kPackTokens; ++i) {
      const int64_t t = g * kPackTokens + i;
      for (int64_t c = 0; c < 2 * np; c += 16) {  // 16 values = 8 pairs
        const int64_t n = imin(16, 2 * np - c);
        alignas(32) uint32_t pairs[8];
        if (t < n_tokens) {
          const __m512 v = _mm512_maskz_loadu_ps(tail_mask(imin(16, cols - c)), x + t * cols + c);
          _mm256_store_si256(reinterpret_cast<__m256i*>(pairs), to_bf16_rne(v));
        } else {
          std::memset(pairs, 0, sizeof(pairs));
        }
        for (int64_t j = 0; j < n / 2; ++j) std::memcpy(base + (c / 2 + j) * 64 + i * 4, &pairs[j], 4);
      }
    }
  }
}

// Panel rows as bf16 pairs, [nr][np] dwords (F16, or BF16 with odd cols).
template <DType T>
void prepare_bf16_panel(const MatmulJob& job, int64_t rp, int64_t nr, uint16_t* wb) {
  const int64_t K = job.w.cols, np = (K + 1) / 2;
  const size_t row_bytes = dtype_row_bytes(T, K);
  for (int64_t i = 0; i < nr; ++i) {
    const void* row = static_cast<const uint8_t*>(job.w.data) + size_t(rp + i) * row_bytes;
    for (int64_t c = 0; c < 2 * np; c += 16) {
      const __mmask16 m = tail_mask(K - c < 0 ? 0 : K - c);
      const __mmask16 mo = tail_mask(2 * np - c);
      _mm256_mask_storeu_epi16(wb + i * 2 * np + c, mo, to_bf16_rne(load16<T>(row, c, m)));
    }
  }
}

template <int NV, int MR>
void bf16_tile(const uint8_t* const* w, int64_t np, const uint8_t* xg, int64_t gstride, float* out) {
  __m512 acc[NV][MR];
  for (int v = 0; v < NV; ++v) {
    for (int m = 0; m < MR; ++m) acc[v][m] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < np; ++p) {
    __m512i xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_load_si512(xg + v * gstride + p * 64);
    for (int m = 0; m < MR; ++m) {
      const __m512i wv = _mm512_set1_epi32(int(load_u32(w[m] + 4 * p)));
      for (int v = 0; v < NV; ++v) {
        acc[v][m] = _mm512_dpbf16_ps(acc[v][m], reinterpret_cast<__m512bh>(xv[v]), reinterpret_cast<__m512bh>(wv));
      }
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + m * (kBfGroups * 16) + v * 16, acc[v][m]);
  }
}

using Bf16TileFn = void (*)(const uint8_t* const*, int64_t, const uint8_t*, int64_t, float*);
template <int NV>
constexpr Bf16TileFn kBf16TilesNv[kBfRows] = {bf16_tile<NV, 1>, bf16_tile<NV, 2>, bf16_tile<NV, 3>, bf16_tile<NV, 4>,
                                              bf16_tile<NV, 5>, bf16_tile<NV, 6>, bf16_tile<NV, 7>, bf16_tile<NV, 8>};
constexpr const Bf16TileFn* kBf16Tiles[kBfGroups] = {kBf16TilesNv<1>, kBf16TilesNv<2>, kBf16TilesNv<3>};

template <DType T>
void gemm_bf16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int64_t K = job.w.cols, np = (K + 1) / 2, ldy = job.w.rows;
  const int64_t gstride = np * 64;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  const bool in_place = T == DType::BF16 && K % 2 == 0;
  auto* wb = static_cast<uint16_t*>(in_place ? nullptr : std::malloc(size_t(kPanelRows * 2 * np) * 2));
  if (!in_place && wb == nullptr) std::abort();  // hot path: no exceptions
  const size_t row_bytes = dtype_row_bytes(T, K);
  alignas(64) float out[kBfRows * kBfGroups * 16];
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    if (!in_place) prepare_bf16_panel<T>(job, rp, nr, wb);
    for (int64_t g = ga; g < gb; g += kBfGroups) {
      const int nv = int(imin(kBfGroups, gb - g));
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t m0 = 0; m0 < nr; m0 += kBfRows) {
        const int mr = int(imin(kBfRows, nr - m0));
        const uint8_t* w[kBfRows];
        for (int m = 0; m < mr; ++m) {
          w[m] = in_place ? static_cast<const uint8_t*>(job.w.data) + size_t(rp + m0 + m) * row_bytes
                          : reinterpret_cast<const uint8_t*>(wb + (m0 + m) * 2 * np);
        }
        kBf16Tiles[nv - 1][mr - 1](w, np, xg, gstride, out);
        for (int v = 0; v < nv; ++v) {
          for (int i = 0; i < 16; ++i) {
            const int64_t t = (g + v) * kPackTokens + i;
            if (t < t0 || t >= t1) continue;
            for (int m = 0; m < mr; ++m) job.y[t * ldy + rp + m0 + m] = out[m * (kBfGroups * 16) + v * 16 + i];
          }
        }
      }
    }
  }
  std::free(wb);
}

LCX_ISA_END
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

// ---- GGML block types (Q4_1 ... Q6_K) ----------------------------------------------------------
//
// Decode GEMV with int8 activations (QuantActs), through the unpacked form of quants.h: per
// 64-column chunk, q as 64 unsigned bytes, one vpdpbusd against the activations gives 16 int32
// lanes of 4 products each, lane l inside sub-block l / 4 of the chunk and activation block l / 8.
// A second vpdpbusd against ones gives each lane's activation sum xs. Then
//   zero-point types (Q5_0, Q3_K, Q6_K: z a power of two): lane = S dx (isum - (xs << log2 z)),
//   min types (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K):              lane = S dx isum - M dx xs,
// exact integers up to the float scaling, the same terms as scalar::matmul_rows_q8acts.
// Q4_K / Q5_K / Q6_K unpack with vector code (the layouts in quants.cpp); the other types unpack
// with the scalar unpack_qgroup (correct, slower: Q2_K / Q3_K / Q4_1 / Q5_0 / Q5_1 are rarer).

struct Chunks256 {
  __m512i q[4];  // [4 chunks of 64 columns] unsigned
  __m512 S, M;   // [16 sub-blocks]
};

// Q4_K / Q5_K sub-scales and mins: 8 pairs of 6 bits in 12 bytes (quants.cpp, scale_min_k4),
// decoded four at a time in 32-bit words, each expanded to the two sub-blocks of 16 it covers.
inline void k4_scales(const uint8_t* s, float d, float dmin, __m512& S, __m512& M) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, s, 4);
  std::memcpy(&u1, s + 4, 4);
  std::memcpy(&u2, s + 8, 4);
  const uint32_t sc_lo = u0 & 0x3f3f3f3fu, mn_lo = u1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
  const __m128i sc = _mm_set_epi32(0, 0, int(sc_hi), int(sc_lo)), mn = _mm_set_epi32(0, 0, int(mn_hi), int(mn_lo));
  S = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(sc, sc))));
  M = _mm512_mul_ps(_mm512_set1_ps(dmin), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(mn, mn))));
}

template <DType T>
inline void unpack256(const uint8_t* b, Chunks256& g) {
  const __m512i lo4 = _mm512_set1_epi8(0x0f);
  if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    k4_scales(b + 4, _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b)), _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 2)),
              g.S, g.M);
    const uint8_t* qs = T == DType::Q5_K ? b + 48 : b + 16;
    const __m512i shift4 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    __m512i qh2 = _mm512_setzero_si512();
    if constexpr (T == DType::Q5_K) {
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
    }
    for (int c = 0; c < 4; ++c) {
      // Columns 64c + l: low nibble of qs[32c + l]; 64c + 32 + l: its high nibble.
      const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c)));
      __m512i q = _mm512_and_si512(_mm512_srlv_epi16(v, shift4), lo4);  // [low nibbles | high nibbles]
      if constexpr (T == DType::Q5_K) {  // bit 4: bit 2c (low half) / 2c + 1 (high half) of qh[l]
        const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8(char(1 << (2 * c))),
                                               _mm256_set1_epi8(char(1 << (2 * c + 1))), 1);
        q = _mm512_or_si512(q, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh2, bit), _mm512_set1_epi8(16)));
      }
      g.q[c] = q;
    }
  } else if constexpr (T == DType::Q6_K) {
    const float d = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 208));
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    g.S = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
    g.M = _mm512_setzero_ps();
    const __m512i m30 = _mm512_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      // ql[64h .. 64h + 63] = [a | c]; qh[32h + l] = e. Chunk 2h: [a & 15 | (e & 3) << 4,
      // c & 15 | ((e >> 2) & 3) << 4]; chunk 2h + 1: the high nibbles with e's bits 4-5 and 6-7.
      const __m512i ac = _mm512_loadu_si512(b + 64 * h);
      const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
      const __m512i e_lo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(e, 4)), _mm256_slli_epi16(e, 2), 1);
      const __m512i e_hi = _mm512_inserti64x4(_mm512_castsi256_si512(e), _mm256_srli_epi16(e, 2), 1);
      g.q[2 * h] = _mm512_or_si512(_mm512_and_si512(ac, lo4), _mm512_and_si512(e_lo, m30));
      g.q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ac, 4), lo4), _mm512_and_si512(e_hi, m30));
    }
  } else {  // Q2_K, Q3_K: the scalar unpacking
    QGroup u;
    unpack_qgroup(T, b, u);
    for (int c = 0; c < 4; ++c) g.q[c] = _mm512_loadu_si512(u.q + 64 * c);
    g.S = _mm512_loadu_ps(u.S);
    g.M = _mm512_loadu_ps(u.M);
  }
}

// log2 of the zero point z of a block type (-1: none, the type has a min M instead).
constexpr int zero_shift(DType t) {
  return t == DType::Q6_K ? 5 : t == DType::Q5_0 || t == DType::Q5_0_R16 ? 4 : t == DType::Q3_K ? 2 : -1;
}

// One 64-column chunk of one token: lanes of S dx (isum - z xs) - M dx xs into acc.
template <int ZSH>
inline __m512 chunk_dot(__m512i q, const int8_t* xq, __m512 s_lane, __m512 m_lane, __m512 dx_lane, __m512 acc,
                        __mmask64 cm) {
  const __m512i y = _mm512_maskz_loadu_epi8(cm, xq);
  __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
  const __m512i xs = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), y);
  if constexpr (ZSH >= 0) {
    is = _mm512_sub_epi32(is, _mm512_slli_epi32(xs, ZSH));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(s_lane, dx_lane), acc);
  } else {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(s_lane, dx_lane), acc);
    return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(xs), _mm512_mul_ps(m_lane, dx_lane), acc);
  }
}

// dx of activation blocks b, b + 1 as lanes 0-7 / 8-15.
inline __m512 dx_pair(const float* xd, int64_t b) {
  return _mm512_insertf32x8(_mm512_set1_ps(xd[b]), _mm256_set1_ps(xd[b + 1]), 1);
}

// Activation terms of gemv_k shared by all rows of one call, per token: dx of each 4-column lane
// ([K / 4]) and dx * (sum of xq) of each 16-column sub-block ([K / 16]). With them a row costs
// per 64 columns one vpdpbusd, a permute, a convert, a multiply and an FMA, and per 256 columns
// one FMA for the zero-point and min terms: sum_j (S_j z_j + M_j) dx_j xsum_j.
constexpr int64_t kMaxGemvCols = 32768;  // wider rows (none in LLaMA models) take the dequantizing path

// LONGCTX_KQ_PF=bytes: software prefetch distance of the block-type GEMVs (0: off).
inline int64_t kq_pf_dist() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_KQ_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(3072);
  }();
  return d;
}

template <int NT>
void prep_k_acts(const int8_t* xq, const float* xd, int64_t K, float* dxl, float* xsd) {
  for (int t = 0; t < NT; ++t) {
    const int8_t* y = xq + t * K;
    const float* d = xd + t * (K / kQBlock);
    for (int64_t c = 0; c < K; c += 64) {
      _mm512_storeu_ps(dxl + t * (K / 4) + c / 4, dx_pair(d, c / kQBlock));
      for (int k = 0; k < 4; ++k) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + c + 16 * k));
        const __m512i w = _mm512_cvtepi8_epi32(v);
        xsd[t * (K / 16) + c / 16 + k] = d[(c + 16 * k) / kQBlock] * float(_mm512_reduce_add_epi32(w));
      }
    }
  }
}

template <DType T, int NT>
void gemv_k(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  constexpr int zsh = zero_shift(T);
  const int64_t K = job.w.cols, ng = K / 256;
  const size_t gb = dtype_block_bytes(T), rb = dtype_row_bytes(T, K);
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  // Per-thread heap scratch, not thread_local arrays: static TLS sits on every thread's stack.
  auto* dxl = reinterpret_cast<float*>(thread_scratch(size_t(NT) * size_t(K / 4 + K / 16) * sizeof(float)));
  if (dxl == nullptr) {  // out of memory: the twin needs no scratch
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  float* xsd = dxl + NT * (K / 4);
  prep_k_acts<NT>(xq, job.xq.d + t0 * (K / kQBlock), K, dxl, xsd);
  const __m512 zf = _mm512_set1_ps(zsh >= 0 ? float(1 << zsh) : 0.0f);
  const int64_t pf = kq_pf_dist();
  const __m512i lane_sub = _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 2);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m512 acc[NT], corr[NT];
    for (int t = 0; t < NT; ++t) acc[t] = corr[t] = _mm512_setzero_ps();
    for (int64_t ig = 0; ig < ng; ++ig) {
      const uint8_t* blk = row + size_t(ig) * gb;
      if (pf > 0) {  // as the Q4_0 GEMV: a few KiB ahead into L1 (rows are contiguous)
        const char* p = reinterpret_cast<const char*>(blk) + pf;
        for (size_t o = 0; o < gb; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
      }
      Chunks256 g;
      unpack256<T>(blk, g);
      const __m512 zm = zsh >= 0 ? _mm512_mul_ps(g.S, zf) : g.M;  // S z + M (one of them is 0)
      for (int t = 0; t < NT; ++t) corr[t] = _mm512_fmadd_ps(zm, _mm512_loadu_ps(xsd + t * (K / 16) + ig * 16), corr[t]);
      for (int c = 0; c < 4; ++c) {
        // lane l belongs to sub-block 4c + l / 4
        const __m512 s_lane = _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_set1_epi32(4 * c), lane_sub), g.S);
        const int64_t col = ig * 256 + 64 * c;
        for (int t = 0; t < NT; ++t) {
          const __m512i y = _mm512_loadu_si512(xq + t * K + col);
          const __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), g.q[c], y);
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(s_lane, _mm512_loadu_ps(dxl + t * (K / 4) + col / 4)),
                                   acc[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[t], corr[t]));
  }
}

// One Q4_1 / Q5_0 / Q5_1 block as 32 unsigned bytes (value order), its scale and min (quants.cpp):
// byte j's nibbles are values j and j + 16, bit i of qh is bit 4 of value i.
template <DType T>
inline __m256i unpack32(const uint8_t* b, float* s, float* m) {
  *s = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b));
  *m = T == DType::Q5_0 ? 0.0f : -_cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 2));
  const uint8_t* qs = T == DType::Q4_1 ? b + 4 : T == DType::Q5_0 ? b + 6 : b + 8;
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  __m256i q = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
                               _mm256_set1_epi8(0x0f));
  if constexpr (T != DType::Q4_1) {
    uint32_t qh;
    std::memcpy(&qh, T == DType::Q5_0 ? b + 2 : b + 4, 4);
    q = _mm256_mask_or_epi32(q, 0xff, q, _mm256_maskz_mov_epi8(__mmask32(qh), _mm256_set1_epi8(16)));
  }
  return q;
}

// Q4_1 / Q5_0 / Q5_1 (blocks of 32): two blocks per 64-column chunk, a lone last block masked.
// The activation terms are shared by all rows of the call (as gemv_k): dx per 4-column lane and
// dx * (sum of xq) per 32-block; a row then costs per 64 columns one vpdpbusd, a convert, a
// multiply and an FMA, and per block one scalar FMA for S z + M.
template <DType T, int NT>
void gemv_q32(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  constexpr float zf = T == DType::Q5_0 ? 16.0f : 0.0f;  // zero point (Q4_1 / Q5_1: a min instead)
  const int64_t K = job.w.cols, nb = K / kQBlock, ldx = K / 4 + 8;
  const size_t bb = dtype_block_bytes(T), rb = dtype_row_bytes(T, K);
  const int8_t* xq = job.xq.qs + t0 * K;
  const float* xd = job.xq.d + t0 * nb;
  auto* dxl = reinterpret_cast<float*>(thread_scratch(size_t(NT) * size_t(ldx + nb) * sizeof(float)));
  if (dxl == nullptr) {
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  float* xsd = dxl + NT * ldx;  // [NT, nb]
  for (int t = 0; t < NT; ++t) {
    for (int64_t ib = 0; ib < nb; ++ib) {
      _mm256_storeu_ps(dxl + t * ldx + ib * 8, _mm256_set1_ps(xd[t * nb + ib]));
      const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + ib * kQBlock));
      const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), y);
      const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
      xsd[t * nb + ib] = xd[t * nb + ib] * float(_mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1))));
    }
    _mm256_storeu_ps(dxl + t * ldx + nb * 8, _mm256_setzero_ps());  // the lone last block's other half
  }
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m512 acc[NT];
    float corr[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm512_setzero_ps();
      corr[t] = 0.0f;
    }
    for (int64_t ib = 0; ib < nb; ib += 2) {
      const bool pair = ib + 1 < nb;
      float s0, m0, s1 = 0.0f, m1 = 0.0f;
      const __m256i q0 = unpack32<T>(row + size_t(ib) * bb, &s0, &m0);
      const __m256i q1 = pair ? unpack32<T>(row + size_t(ib + 1) * bb, &s1, &m1) : _mm256_setzero_si256();
      const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
      const __m512 s_lane = _mm512_insertf32x8(_mm512_set1_ps(s0), _mm256_set1_ps(s1), 1);
      const __mmask64 cm = pair ? ~__mmask64(0) : __mmask64(0xffffffffu);
      const float c0 = s0 * zf + m0, c1 = s1 * zf + m1;  // S z + M of the two blocks
      for (int t = 0; t < NT; ++t) {
        const __m512i y = _mm512_maskz_loadu_epi8(cm, xq + t * K + ib * kQBlock);
        const __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(s_lane, _mm512_loadu_ps(dxl + t * ldx + ib * 8)), acc[t]);
        corr[t] += c0 * xsd[t * nb + ib] + (pair ? c1 * xsd[t * nb + ib + 1] : 0.0f);
      }
    }
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = _mm512_reduce_add_ps(acc[t]) - corr[t];
  }
}

// Prompt GEMM of the block types: gemm_int8's scheme (packed int8 activations, weights broadcast
// 4 bytes at a time, vpdpbusd into int32 per token lane) with 16-column sub-blocks, each with its
// own float scale. Weights are unpacked once per panel into signed bytes w = q - z (|w| <= 63),
// so sum_c w x = sum (x + 128) w - 128 sum w exactly (corr), then
//   y += S_j dx (sum over sub-block j)  and, for the types with a min,  y -= M_j dx xsum_j,
// the terms of scalar::matmul_rows_q8acts. xsum_j dx (per token lane) is computed once per call
// from the packed activations.
template <DType T>
void prepare_kq_panel(const MatmulJob& job, int64_t rp, int64_t nr, int8_t* wq, float* S, float* M, int32_t* corr) {
  constexpr DType src = T == DType::Q4_K_R16 ? DType::Q4_K : T == DType::Q5_0_R16 ? DType::Q5_0 : T;
  const int64_t K = job.w.cols, gv = qgroup_values(src), ns = K / kQSub;
  const size_t gb = dtype_block_bytes(src), rb = dtype_row_bytes(src, K);
  QGroup u;
  uint8_t gathered[kQ4KBlockBytes];
  for (int64_t i = 0; i < nr; ++i) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(rp + i) * rb;
    for (int64_t ig = 0; ig < K / gv; ++ig) {
      const uint8_t* blk = row + size_t(ig) * gb;
      if constexpr (src != T) {
        r16_block(T, job.w.data, K, rp + i, ig, gathered);
        blk = gathered;
      }
      if constexpr (src == DType::Q4_K || src == DType::Q5_K || src == DType::Q6_K) {
        // vector unpacking (as the GEMV): w = q - z, per-16 sums of w from sad of w + 128
        Chunks256 g;
        unpack256<src>(blk, g);
        const __m512i z = _mm512_set1_epi8(char(src == DType::Q6_K ? 32 : 0));
        alignas(64) uint64_t sad[8];
        for (int c = 0; c < 4; ++c) {
          const __m512i w = _mm512_sub_epi8(g.q[c], z);
          _mm512_storeu_si512(wq + i * K + ig * 256 + 64 * c, w);
          _mm512_store_si512(sad, _mm512_sad_epu8(_mm512_xor_si512(w, _mm512_set1_epi8(char(0x80))), _mm512_setzero_si512()));
          for (int k = 0; k < 4; ++k)
            corr[i * ns + ig * 16 + 4 * c + k] = -128 * (int32_t(sad[2 * k] + sad[2 * k + 1]) - kQSub * 128);
        }
        _mm512_storeu_ps(S + i * ns + ig * 16, g.S);
        _mm512_storeu_ps(M + i * ns + ig * 16, g.M);
        continue;
      }
      if constexpr (src == DType::Q4_1 || src == DType::Q5_0 || src == DType::Q5_1) {
        float sc, mn;
        const __m256i w = _mm256_sub_epi8(unpack32<src>(blk, &sc, &mn), _mm256_set1_epi8(char(src == DType::Q5_0 ? 16 : 0)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(wq + i * K + ig * 32), w);
        alignas(32) uint64_t sad[4];
        _mm256_store_si256(reinterpret_cast<__m256i*>(sad),
                           _mm256_sad_epu8(_mm256_xor_si256(w, _mm256_set1_epi8(char(0x80))), _mm256_setzero_si256()));
        for (int k = 0; k < 2; ++k) {
          corr[i * ns + ig * 2 + k] = -128 * (int32_t(sad[2 * k] + sad[2 * k + 1]) - kQSub * 128);
          S[i * ns + ig * 2 + k] = sc;
          M[i * ns + ig * 2 + k] = mn;
        }
        continue;
      }
      unpack_qgroup(src, blk, u);
      for (int64_t j = 0; j < gv / kQSub; ++j) {
        const int64_t sj = ig * (gv / kQSub) + j;
        int32_t sum = 0;
        for (int l = 0; l < kQSub; ++l) {
          const int w = int(u.q[j * kQSub + l]) - u.z[j];
          wq[i * K + sj * kQSub + l] = int8_t(w);
          sum += w;
        }
        S[i * ns + sj] = u.S[j];
        M[i * ns + sj] = u.M[j];
        corr[i * ns + sj] = -128 * sum;
      }
    }
  }
}

// dx * (sum of the SUB activations) per token lane, for every sub-block of token groups [ga, gb):
// xsd[(g - ga) * ns + j] is 16 floats.
template <int SUB>
void kq_xsd(const uint8_t* xp, int64_t K, int64_t ga, int64_t gb, float* xsd) {
  const int64_t nb = K / kQBlock, ns = K / SUB, gstride = nb * kInt8GroupBlockBytes;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t g = ga; g < gb; ++g) {
    for (int64_t j = 0; j < ns; ++j) {
      const uint8_t* xb = xp + g * gstride + (j * SUB / kQBlock) * kInt8GroupBlockBytes;
      const int slot0 = SUB == kQSub ? 4 * int(j % 2) : 0;
      __m512i s = _mm512_set1_epi32(-SUB * 128);  // the packed bytes are x + 128
      for (int k = 0; k < SUB / 4; ++k) s = _mm512_dpbusd_epi32(s, _mm512_load_si512(xb + (slot0 + k) * 64), ones);
      const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(xb + 8 * 64));
      _mm512_storeu_ps(xsd + ((g - ga) * ns + j) * 16, _mm512_mul_ps(dx, _mm512_cvtepi32_ps(s)));
    }
  }
}

// SUB: columns per scale, 16 (Q2_K, Q3_K, Q6_K) or 32 (the others: half the float work).
template <int NV, int MR, bool MIN, int SUB>
void kq_tile(const int8_t* const* w, const float* S, const float* M, const int32_t* corr, int64_t ns, const uint8_t* xg,
             int64_t gstride, const float* xsd, float* out) {
  __m512 facc[NV][MR];
  for (int v = 0; v < NV; ++v)
    for (int m = 0; m < MR; ++m) facc[v][m] = _mm512_setzero_ps();
  for (int64_t j = 0; j < ns; ++j) {
    const uint8_t* xb = xg + (j * SUB / kQBlock) * kInt8GroupBlockBytes;
    const int slot0 = SUB == kQSub ? 4 * int(j % 2) : 0;
    __m512i acc[NV][MR];
    for (int m = 0; m < MR; ++m) {
      const __m512i c = _mm512_set1_epi32(corr[m * ns + j]);
      for (int v = 0; v < NV; ++v) acc[v][m] = c;
    }
    for (int k = 0; k < SUB / 4; ++k) {
      __m512i xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_load_si512(xb + v * gstride + (slot0 + k) * 64);
      for (int m = 0; m < MR; ++m) {
        const __m512i wb = _mm512_set1_epi32(int(load_u32(reinterpret_cast<const uint8_t*>(w[m]) + j * SUB + 4 * k)));
        for (int v = 0; v < NV; ++v) acc[v][m] = _mm512_dpbusd_epi32(acc[v][m], xv[v], wb);
      }
    }
    for (int v = 0; v < NV; ++v) {
      const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(xb + v * gstride + 8 * 64));
      for (int m = 0; m < MR; ++m) {
        facc[v][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[v][m]), _mm512_mul_ps(dx, _mm512_set1_ps(S[m * ns + j])), facc[v][m]);
        if constexpr (MIN) {
          facc[v][m] = _mm512_fnmadd_ps(_mm512_set1_ps(M[m * ns + j]), _mm512_loadu_ps(xsd + (v * ns + j) * 16), facc[v][m]);
        }
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + m * (kI8Groups * 16) + v * 16, facc[v][m]);
}

using KqTileFn = void (*)(const int8_t* const*, const float*, const float*, const int32_t*, int64_t, const uint8_t*,
                          int64_t, const float*, float*);
template <bool MIN, int SUB>
constexpr KqTileFn kKqTiles[kI8Groups][kI8Rows] = {
    {kq_tile<1, 1, MIN, SUB>, kq_tile<1, 2, MIN, SUB>, kq_tile<1, 3, MIN, SUB>, kq_tile<1, 4, MIN, SUB>},
    {kq_tile<2, 1, MIN, SUB>, kq_tile<2, 2, MIN, SUB>, kq_tile<2, 3, MIN, SUB>, kq_tile<2, 4, MIN, SUB>},
    {kq_tile<3, 1, MIN, SUB>, kq_tile<3, 2, MIN, SUB>, kq_tile<3, 3, MIN, SUB>, kq_tile<3, 4, MIN, SUB>}};

template <DType T>
void gemm_kq(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  constexpr bool has_min = zero_shift(T) < 0;
  // One scale per 32 columns except for the 16-column sub-blocks of Q2_K, Q3_K, Q6_K.
  constexpr int SUB = T == DType::Q2_K || T == DType::Q3_K || T == DType::Q6_K ? kQSub : 2 * kQSub;
  const int64_t K = job.w.cols, nb = K / kQBlock, ns16 = K / kQSub, ns = K / SUB, ldy = job.w.rows;
  const int64_t gstride = nb * kInt8GroupBlockBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  // Scratch (malloc: no STL in this file): panel bytes, scales, mins, corrections, xsum terms.
  auto* wq = static_cast<int8_t*>(std::malloc(size_t(kPanelRows * K)));
  auto* S = static_cast<float*>(std::malloc(size_t(kPanelRows * ns16) * sizeof(float)));
  auto* M = static_cast<float*>(std::malloc(size_t(kPanelRows * ns16) * sizeof(float)));
  auto* corr = static_cast<int32_t*>(std::malloc(size_t(kPanelRows * ns16) * sizeof(int32_t)));
  auto* xsd = static_cast<float*>(has_min ? std::aligned_alloc(64, size_t((gb - ga) * ns * 16) * sizeof(float)) : nullptr);
  if (!wq || !S || !M || !corr || (has_min && !xsd)) std::abort();  // hot path: no exceptions
  if (has_min) kq_xsd<SUB>(job.xp, K, ga, gb, xsd);
  alignas(64) float out[kI8Rows * kI8Groups * 16];
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    prepare_kq_panel<T>(job, rp, nr, wq, S, M, corr);  // per 16 columns
    if constexpr (SUB == 2 * kQSub) {  // both halves share S and M: merge in place
      for (int64_t i = 0; i < nr * ns; ++i) {
        S[i] = S[2 * i];
        M[i] = M[2 * i];
        corr[i] = corr[2 * i] + corr[2 * i + 1];
      }
    }
    for (int64_t g = ga; g < gb; g += kI8Groups) {
      const int nv = int(imin(kI8Groups, gb - g));
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t m0 = 0; m0 < nr; m0 += kI8Rows) {
        const int mr = int(imin(kI8Rows, nr - m0));
        const int8_t* w[kI8Rows];
        for (int m = 0; m < mr; ++m) w[m] = wq + (m0 + m) * K;
        kKqTiles<has_min, SUB>[nv - 1][mr - 1](w, S + m0 * ns, M + m0 * ns, corr + m0 * ns, ns, xg, gstride,
                                               has_min ? xsd + (g - ga) * ns * 16 : nullptr, out);
        store_tile(out, nv, mr, g, t0, t1, job.y, ldy, rp + m0);
      }
    }
  }
  std::free(xsd);
  std::free(corr);
  std::free(M);
  std::free(S);
  std::free(wq);
}

// ---- Q4_K_R16 decode GEMV (layout in runtime/dtype.h): rows in lanes ---------------------------
//
// As gemv_r16 for Q4_0: per panel of 16 rows and 64-column chunk, 8 64-byte loads hold the 16
// rows' nibbles of two 32-value sub-blocks (low nibbles: sub-block 2c, high: 2c + 1), and 16
// vpdpbusd against 4 broadcast activation bytes give each row's exact int32 sums in its own lane.
// The 6-bit scales and mins of the 16 rows decode in parallel (one lane per row). Per lane
//   y += d sc_j dx_j isum_j - dmin m_j dx_j xsum_j,
// the terms of scalar::matmul_rows_q8acts. No permutes and no horizontal sums: ~11 values per
// instruction against ~3 for the row-major gemv_k.
template <int NT>
void gemv_q4k_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols, ng = K / 256, nb = K / kQBlock, ldy = job.w.rows;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  auto* xsd = reinterpret_cast<float*>(thread_scratch(size_t(NT * nb) * sizeof(float)));  // [NT, nb]: dx * sum(xq)
  if (xsd == nullptr) {
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  for (int t = 0; t < NT; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + b * kQBlock));
      const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), y);
      const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
      xsd[t * nb + b] = xd[t * nb + b] * float(_mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1))));
    }
  }
  const __m512i low4 = _mm512_set1_epi8(0x0f), m3f = _mm512_set1_epi32(0x3f3f3f3f), m0f = _mm512_set1_epi32(0x0f0f0f0f);
  const __m512i m03 = _mm512_set1_epi32(0x03030303), mff = _mm512_set1_epi32(0xff);
  const int64_t pf = kq_pf_dist();
  const auto* base = static_cast<const uint8_t*>(job.w.data);
  for (int64_t p = r0 / kR16Rows; p * kR16Rows < r1; ++p) {
    const uint8_t* panel = base + size_t(p * ng) * kQ4KR16GroupBytes;
    __m512 acc[NT], macc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = macc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* gp = panel + size_t(g) * kQ4KR16GroupBytes;
      const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp)));
      const __m512 mv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + 32)));
      const __m512i u0 = _mm512_loadu_si512(gp + 64), u1 = _mm512_loadu_si512(gp + 128), u2 = _mm512_loadu_si512(gp + 192);
      // the 8 (scale, min) pairs of each row (quants.cpp, scale_min_k4), bytes 0-3 and 4-7
      const __m512i sc_lo = _mm512_and_si512(u0, m3f), mn_lo = _mm512_and_si512(u1, m3f);
      const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(u2, m0f),
                                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m03), 4));
      const __m512i mn_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m0f),
                                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m03), 4));
      for (int c = 0; c < 4; ++c) {
        const char* pq = reinterpret_cast<const char*>(gp) + 256 + 512 * c;
        if (pf > 0)
          for (int l = 0; l < 8; ++l) _mm_prefetch(pq + pf + 64 * l, _MM_HINT_T0);
        const __m512i scw = c < 2 ? sc_lo : sc_hi, mnw = c < 2 ? mn_lo : mn_hi;
        const int sh = (c % 2) * 16;
        const __m512 S0 = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(scw, sh), mff)));
        const __m512 S1 = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(scw, sh + 8), mff)));
        const __m512 M0 = _mm512_mul_ps(mv, _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(mnw, sh), mff)));
        const __m512 M1 = _mm512_mul_ps(mv, _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(mnw, sh + 8), mff)));
        __m512i lo[8], hi[8];
        for (int k = 0; k < 8; ++k) {
          const __m512i a = _mm512_loadu_si512(pq + 64 * k);
          lo[k] = _mm512_and_si512(a, low4);
          hi[k] = _mm512_and_si512(_mm512_srli_epi16(a, 4), low4);
        }
        const int64_t b0 = (g * 256 + 64 * c) / kQBlock;
        for (int t = 0; t < NT; ++t) {
          const uint8_t* y = reinterpret_cast<const uint8_t*>(xq + t * K + g * 256 + 64 * c);
          __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;  // four chains: latency
          for (int k = 0; k < 8; k += 2) {
            s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(int(load_u32(y + 4 * k))));
            s1 = _mm512_dpbusd_epi32(s1, lo[k + 1], _mm512_set1_epi32(int(load_u32(y + 4 * k + 4))));
            s2 = _mm512_dpbusd_epi32(s2, hi[k], _mm512_set1_epi32(int(load_u32(y + 32 + 4 * k))));
            s3 = _mm512_dpbusd_epi32(s3, hi[k + 1], _mm512_set1_epi32(int(load_u32(y + 32 + 4 * k + 4))));
          }
          const float* d = xd + t * nb;
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(S0, _mm512_set1_ps(d[b0])), acc[t]);
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s2, s3)), _mm512_mul_ps(S1, _mm512_set1_ps(d[b0 + 1])), acc[t]);
          macc[t] = _mm512_fmadd_ps(M0, _mm512_set1_ps(xsd[t * nb + b0]), macc[t]);
          macc[t] = _mm512_fmadd_ps(M1, _mm512_set1_ps(xsd[t * nb + b0 + 1]), macc[t]);
        }
      }
    }
    const int64_t lo_r = imax(r0, p * kR16Rows), hi_r = imin(r1, (p + 1) * kR16Rows);
    const __mmask16 m = __mmask16(tail_mask(hi_r - p * kR16Rows) & ~tail_mask(lo_r - p * kR16Rows));
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(job.y + (t0 + t) * ldy + p * kR16Rows, m, _mm512_sub_ps(acc[t], macc[t]));
  }
}

// ---- Q5_0_R16 decode GEMV (layout in runtime/dtype.h): rows in lanes ---------------------------
//
// gemv_r16's scheme for Q4_0 plus the 5th bits: per panel and block, 4 64-byte loads hold the
// 16 rows' nibbles and each load's 5th bits are one stored 64-bit mask, added as 16 with one
// masked byte add. Per lane: y += d dx (isum - 16 xsum), the terms of scalar::matmul_rows_q8acts.
template <int NT>
void gemv_q50_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols, nb = K / kQBlock, ldy = job.w.rows;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  auto* xsd = reinterpret_cast<float*>(thread_scratch(size_t(NT * nb) * sizeof(float)));  // [NT, nb]: 16 dx sum(xq)
  if (xsd == nullptr) {
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  for (int t = 0; t < NT; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + b * kQBlock));
      const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), y);
      const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
      xsd[t * nb + b] = 16.0f * xd[t * nb + b] * float(_mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1))));
    }
  }
  const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
  const int64_t pf = kq_pf_dist();
  const auto* base = static_cast<const uint8_t*>(job.w.data);
  for (int64_t p = r0 / kR16Rows; p * kR16Rows < r1; ++p) {
    const uint8_t* panel = base + size_t(p * nb) * kQ5_0R16GroupBytes;
    __m512 acc[NT], corr[NT];
    for (int t = 0; t < NT; ++t) acc[t] = corr[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* g = panel + size_t(b) * kQ5_0R16GroupBytes;
      if (pf > 0)
        for (int l = 0; l < 6; ++l) _mm_prefetch(reinterpret_cast<const char*>(g) + pf + 64 * l, _MM_HINT_T0);
      const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
      __m512i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) {
        const __m512i a = _mm512_loadu_si512(g + 96 + 64 * k);
        __mmask64 mlo, mhi;
        std::memcpy(&mlo, g + 32 + 8 * k, 8);
        std::memcpy(&mhi, g + 64 + 8 * k, 8);
        lo[k] = _mm512_mask_add_epi8(_mm512_and_si512(a, low4), mlo, _mm512_and_si512(a, low4), sixteen);
        const __m512i h4 = _mm512_and_si512(_mm512_srli_epi16(a, 4), low4);
        hi[k] = _mm512_mask_add_epi8(h4, mhi, h4, sixteen);
      }
      for (int t = 0; t < NT; ++t) {
        const uint8_t* y = reinterpret_cast<const uint8_t*>(xq + t * K + b * kQBlock);
        __m512i s0 = _mm512_setzero_si512(), s1 = s0;
        for (int k = 0; k < 4; ++k) {
          s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(int(load_u32(y + 4 * k))));
          s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi32(int(load_u32(y + 16 + 4 * k))));
        }
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dv, _mm512_set1_ps(xd[t * nb + b])),
                                 acc[t]);
        corr[t] = _mm512_fmadd_ps(dv, _mm512_set1_ps(xsd[t * nb + b]), corr[t]);
      }
    }
    const int64_t lo_r = imax(r0, p * kR16Rows), hi_r = imin(r1, (p + 1) * kR16Rows);
    const __mmask16 m = __mmask16(tail_mask(hi_r - p * kR16Rows) & ~tail_mask(lo_r - p * kR16Rows));
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(job.y + (t0 + t) * ldy + p * kR16Rows, m, _mm512_sub_ps(acc[t], corr[t]));
  }
}

void matmul_q50_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (job.mode == GemmMode::Int8) {
    gemm_kq<DType::Q5_0_R16>(job, r0, r1, t0, t1);
    return;
  }
  if (job.xq.qs == nullptr || job.w.cols > kMaxGemvCols) {
    matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
    return;
  }
  for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
    switch (imin(kGemvMaxTokens, t1 - t)) {
      case 1: gemv_q50_r16<1>(job, r0, r1, t); break;
      case 2: gemv_q50_r16<2>(job, r0, r1, t); break;
      case 3: gemv_q50_r16<3>(job, r0, r1, t); break;
      default: gemv_q50_r16<4>(job, r0, r1, t); break;
    }
  }
}

void matmul_q4k_r16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (job.mode == GemmMode::Int8) {
    gemm_kq<DType::Q4_K_R16>(job, r0, r1, t0, t1);
    return;
  }
  if (job.xq.qs == nullptr || job.w.cols > kMaxGemvCols) {
    matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
    return;
  }
  for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
    switch (imin(kGemvMaxTokens, t1 - t)) {
      case 1: gemv_q4k_r16<1>(job, r0, r1, t); break;
      case 2: gemv_q4k_r16<2>(job, r0, r1, t); break;
      case 3: gemv_q4k_r16<3>(job, r0, r1, t); break;
      default: gemv_q4k_r16<4>(job, r0, r1, t); break;
    }
  }
}

template <DType T>
void matmul_blocks(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (job.mode == GemmMode::Int8) {
    gemm_kq<T>(job, r0, r1, t0, t1);
    return;
  }
  if (job.xq.qs == nullptr) {  // no int8 activations (callers of matmul_rows): the F32 kernels
    matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
    return;
  }
  constexpr bool k256 = T == DType::Q2_K || T == DType::Q3_K || T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K;
  if (job.w.cols > kMaxGemvCols) {
    matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
    return;
  }
  for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
    switch (imin(kGemvMaxTokens, t1 - t)) {
      case 1: k256 ? gemv_k<T, 1>(job, r0, r1, t) : gemv_q32<T, 1>(job, r0, r1, t); break;
      case 2: k256 ? gemv_k<T, 2>(job, r0, r1, t) : gemv_q32<T, 2>(job, r0, r1, t); break;
      case 3: k256 ? gemv_k<T, 3>(job, r0, r1, t) : gemv_q32<T, 3>(job, r0, r1, t); break;
      default: k256 ? gemv_k<T, 4>(job, r0, r1, t) : gemv_q32<T, 4>(job, r0, r1, t); break;
    }
  }
}

template <DType T>
void matmul_typed(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  constexpr bool quant = T == DType::Q8_0 || T == DType::Q4_0;
  if constexpr (quant) {
    if (job.mode == GemmMode::AmxInt8) {
      amx::gemm_int8(job, r0, r1, t0, t1);
      return;
    }
    if (job.mode == GemmMode::Int8) {
      gemm_int8<T>(job, r0, r1, t0, t1);
      return;
    }
    if (job.xq.qs != nullptr) {
      for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
        switch (imin(kGemvMaxTokens, t1 - t)) {
          case 1: gemv_int8<T, 1>(job, r0, r1, t); break;
          case 2: gemv_int8<T, 2>(job, r0, r1, t); break;
          case 3: gemv_int8<T, 3>(job, r0, r1, t); break;
          default: gemv_int8<T, 4>(job, r0, r1, t); break;
        }
      }
      return;
    }
  } else {
    if constexpr (T == DType::F16 || T == DType::BF16) {
      if (job.mode == GemmMode::Bf16) {
        gemm_bf16<T>(job, r0, r1, t0, t1);
        return;
      }
      if (job.mode == GemmMode::Amx) {
        amx::gemm(job, r0, r1, t0, t1);
        return;
      }
    }
    if (t1 - t0 <= kGemvMaxTokens) {
      if constexpr (T == DType::F16 || T == DType::BF16) {
        if (t1 - t0 == 1 && f16_rows() == 2) return gemv_f_rows<T, 2>(job, r0, r1, t0);
        if (t1 - t0 == 1 && f16_rows() == 4) return gemv_f_rows<T, 4>(job, r0, r1, t0);
      }
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
    case DType::Q4_0_R16: matmul_r16(job, r0, r1, t0, t1); return;
    case DType::Q4_1: matmul_blocks<DType::Q4_1>(job, r0, r1, t0, t1); return;
    case DType::Q5_0: matmul_blocks<DType::Q5_0>(job, r0, r1, t0, t1); return;
    case DType::Q5_1: matmul_blocks<DType::Q5_1>(job, r0, r1, t0, t1); return;
    case DType::Q2_K: matmul_blocks<DType::Q2_K>(job, r0, r1, t0, t1); return;
    case DType::Q3_K: matmul_blocks<DType::Q3_K>(job, r0, r1, t0, t1); return;
    case DType::Q4_K: matmul_blocks<DType::Q4_K>(job, r0, r1, t0, t1); return;
    case DType::Q5_K: matmul_blocks<DType::Q5_K>(job, r0, r1, t0, t1); return;
    case DType::Q6_K: matmul_blocks<DType::Q6_K>(job, r0, r1, t0, t1); return;
    case DType::Q4_K_R16: matmul_q4k_r16(job, r0, r1, t0, t1); return;
    case DType::Q5_0_R16: matmul_q50_r16(job, r0, r1, t0, t1); return;
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
                            dot_f32, rmsnorm, swiglu, softmax, axpy, pack_acts_int8, pack_acts_bf16,
                            amx::pack_acts, amx::pack_acts_int8};

}  // namespace lcx::kernels::avx512

#pragma GCC diagnostic pop
LCX_ISA_END

#endif  // x86-64
