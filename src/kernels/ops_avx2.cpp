// AVX2 + FMA + F16C kernels, chosen at run time by ops.cpp on CPUs without AVX-512. The scalar
// twins in ops_scalar.cpp are the test oracle. Same structure as ops_avx512.cpp (read its header
// comment for why the instruction set comes from a pragma and headers precede it).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include <cstring>

#include "kernels/ops_internal.h"
#include "kernels/isa_region.h"
#include "kernels/quants.h"

#if defined(__x86_64__) && defined(__GNUC__)

LCX_ISA_BEGIN("avx2,fma,f16c,bmi2")

namespace lcx::kernels::avx2 {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes [0, n) set, for maskload/maskstore.
inline __m256i lane_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(imin(n, 8))), idx);
}

// ---- loads and dequantization ---------------------------------------------------------------

template <DType T>
inline __m256 load8(const void* row, int64_t c) {
  if constexpr (T == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + c);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + c));
    if constexpr (T == DType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType T>
inline float load1(const void* row, int64_t c) {
  if constexpr (T == DType::F32) return static_cast<const float*>(row)[c];
  if constexpr (T == DType::F16) return _cvtsh_ss(static_cast<const uint16_t*>(row)[c]);
  return bf16_to_f32(static_cast<const uint16_t*>(row)[c]);
}

// The 32 values of a block as float32 (exactly d * q) into dst[32].
inline void dequant_block(const BlockQ8_0& b, float* dst) {
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(b.d));
  for (int j = 0; j < kQBlock; j += 8) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + j));
    _mm256_storeu_ps(dst + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
  }
}
inline void dequant_block(const BlockQ4_0& b, float* dst) {
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(b.d));
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i ql = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
  const __m128i qh = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
  const __m128i parts[4] = {ql, _mm_srli_si128(ql, 8), qh, _mm_srli_si128(qh, 8)};
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j]))));
  }
}

template <DType T>
void dequant_groups(const void* src, float* dst, int64_t n);  // Q4_K / Q5_K / Q6_K, below

// Columns [c0, c0 + n) of a row as float32. Block types: c0 and n are multiples of the block
// (the GEMM's 256-column spans of rows whose length is a multiple of the block).
template <DType T>
inline void dequant_span(const void* row, int64_t c0, int64_t n, float* dst) {
  if constexpr (T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K) {
    dequant_groups<T>(static_cast<const uint8_t*>(row) + size_t(c0 / 256) * dtype_block_bytes(T), dst, n);
  } else if constexpr (T == DType::Q4_1 || T == DType::Q5_0 || T == DType::Q5_1 || T == DType::Q2_K ||
                       T == DType::Q3_K) {
    const int64_t bv = dtype_block_values(T);
    scalar::dequantize_row(T, static_cast<const uint8_t*>(row) + size_t(c0 / bv) * dtype_block_bytes(T), dst, n);
  } else if constexpr (T == DType::Q8_0 || T == DType::Q4_0) {
    using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
    const Block* b = static_cast<const Block*>(row) + c0 / kQBlock;
    for (int64_t ib = 0; ib < n / kQBlock; ++ib) dequant_block(b[ib], dst + ib * kQBlock);
  } else {
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(dst + c, load8<T>(row, c0 + c));
    for (; c < n; ++c) dst[c] = load1<T>(row, c0 + c);
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::Q4_K: dequant_groups<DType::Q4_K>(src, dst, n); return;
    case DType::Q5_K: dequant_groups<DType::Q5_K>(src, dst, n); return;
    case DType::Q6_K: dequant_groups<DType::Q6_K>(src, dst, n); return;
    case DType::F16: dequant_span<DType::F16>(src, 0, n, dst); return;
    case DType::BF16: dequant_span<DType::BF16>(src, 0, n, dst); return;
    case DType::Q8_0: dequant_span<DType::Q8_0>(src, 0, n, dst); return;
    case DType::Q4_0: dequant_span<DType::Q4_0>(src, 0, n, dst); return;
    default: scalar::dequantize_row(t, src, dst, n); return;
  }
}

// Bit-exact with scalar::quantize_acts (nearest-even conversion, same divisions).
void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
    const float* xb = x + ib * kQBlock;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(xb + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float a = _mm_cvtss_f32(m);
    d[ib] = a / 127.0f;
    const __m256 id = _mm256_set1_ps(a != 0.0f ? 127.0f / a : 0.0f);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));
    // packs work within 128-bit lanes; the permute restores the order of the 32 values.
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + ib * kQBlock), ordered);
  }
}

// ---- GEMV ---------------------------------------------------------------------------------------

template <DType T, int NT>
void gemv_f(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  const int64_t K = job.w.cols;
  const size_t rb = dtype_row_bytes(T, K);
  const float* x = job.x + t0 * K;  // [NT, K]
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= K; c += 16) {
      const __m256 w0 = load8<T>(row, c), w1 = load8<T>(row, c + 8);
      for (int t = 0; t < NT; ++t) {
        acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * K + c), acc0[t]);
        acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * K + c + 8), acc1[t]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      float s = hsum(_mm256_add_ps(acc0[t], acc1[t]));
      for (int64_t k = c; k < K; ++k) s += load1<T>(row, k) * x[t * K + k];
      job.y[(t0 + t) * job.w.rows + r] = s;
    }
  }
}

// Integer block dots with maddubs (unsigned x signed bytes -> pairs of int16). For Q8_0, |w| and
// w's sign moved onto y keep each pair sum within 2 * 128 * 127 < 32767 (no saturation).
struct Q8Weights {
  __m256i absw, w;
};
inline Q8Weights prep_weights(const BlockQ8_0& b) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return {_mm256_sign_epi8(w, w), w};
}
inline __m256i block_dot(const Q8Weights& w, __m256i y) {
  const __m256i p = _mm256_maddubs_epi16(w.absw, _mm256_sign_epi8(y, w.w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
// Q4_0: sum (n - 8) y = sum n y - sum 8 y; both pair sums are small (|.| <= 2 * 15 * 127).
inline __m256i prep_weights(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
inline __m256i block_dot(__m256i nib, __m256i y) {
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(nib, y), _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// LONGCTX_Q4_PF=bytes: software prefetch distance of the Q4_0 GEMV into L1 (0: off). 3072:
// 3-5% faster than none from DRAM on 1 and 2 threads (bench_kernels, A/B); Q8_0 showed no
// consistent change, so it has none.
inline int64_t q_pf_dist() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_Q4_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(3072);
  }();
  return d;
}

template <DType T, int NT>
void gemv_q(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
  const int64_t K = job.w.cols, nb = K / kQBlock;
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  for (int64_t r = r0; r < r1; ++r) {
    const Block* row = static_cast<const Block*>(job.w.data) + r * nb;
    // Two accumulators per token (even and odd blocks) for FMA latency; named, not indexed by
    // the block parity, so that they stay in registers.
    __m256 acc0[NT], acc1[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
    const auto step = [&](int64_t ib, __m256* acc) {
      const auto w = prep_weights(row[ib]);
      const float dw = _cvtsh_ss(row[ib].d);
#pragma GCC unroll 4
      for (int t = 0; t < NT; ++t) {
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + ib * kQBlock));
        const __m256 s = _mm256_set1_ps(dw * xd[t * nb + ib]);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot(w, y)), s, acc[t]);
      }
    };
    int64_t ib = 0;
    const int64_t pf = T == DType::Q4_0 ? q_pf_dist() : 0;
    for (; ib + 2 <= nb; ib += 2) {
      if (pf > 0) _mm_prefetch(reinterpret_cast<const char*>(row + ib) + pf, _MM_HINT_T0);
      step(ib, acc0);
      step(ib + 1, acc1);
    }
    if (ib < nb) step(ib, acc0);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = hsum(_mm256_add_ps(acc0[t], acc1[t]));
  }
}

// ---- GGML block types (Q4_1 ... Q6_K; kernels/quants.h): decode GEMV ------------------------------
//
// Each group is unpacked to unsigned bytes q (vector code for Q4_K / Q5_K / Q6_K, the scalar
// unpack_qgroup for the rarer types), then per 32 columns maddubs (q u8 x activations s8; pair
// sums <= 2 * 63 * 127, no saturation) and madd give 8 int32 lanes, lanes 0-3 in sub-block 2p and
// 4-7 in 2p + 1; they are scaled by S_sub * dx. The zero point and min terms,
// sum_j (S_j z_j + M_j) dx_j xsum_j, use dx * (sum of xq) per 16 columns, made once per call.
// Same terms as scalar::matmul_rows_q8acts, so only float summation order differs.
// Per-thread scratch that only grows (as in ops_avx512.cpp), freed when the thread ends.
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

struct UnpackedGroup {
  alignas(32) uint8_t q[256];
  alignas(32) float S[16];
  alignas(32) float C[16];  // S z + M
};

constexpr int64_t kMaxBlockCols = 32768;  // wider rows take the dequantizing path

template <DType T>
inline void unpack_group(const uint8_t* b, UnpackedGroup& u) {
  const __m256i lo4 = _mm256_set1_epi8(0x0f);
  if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    const float d = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b)), dmin = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 2));
    const uint8_t* s = b + 4;
    for (int k = 0; k < 8; ++k) {  // quants.cpp scale_min_k4
      const int sc = k < 4 ? (s[k] & 63) : ((s[k + 4] & 0x0f) | ((s[k - 4] >> 6) << 4));
      const int mn = k < 4 ? (s[k + 4] & 63) : ((s[k + 4] >> 4) | ((s[k] >> 6) << 4));
      u.S[2 * k] = u.S[2 * k + 1] = d * float(sc);
      u.C[2 * k] = u.C[2 * k + 1] = dmin * float(mn);
    }
    const uint8_t* qs = T == DType::Q5_K ? b + 48 : b + 16;
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
      __m256i lo = _mm256_and_si256(v, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
      if constexpr (T == DType::Q5_K) {  // bit 4: bit 2c (low nibbles) / 2c + 1 (high) of qh[l]
        const __m256i one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(u.q + 64 * c), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(u.q + 64 * c + 32), hi);
    }
  } else if constexpr (T == DType::Q6_K) {
    const float d = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 208));
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    for (int j = 0; j < 16; ++j) {
      u.S[j] = d * float(sc[j]);
      u.C[j] = u.S[j] * 32.0f;
    }
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
      const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
      const auto hb = [&](int sh) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(e, sh), m3), 4); };
      uint8_t* q = u.q + 128 * h;
      _mm256_store_si256(reinterpret_cast<__m256i*>(q), _mm256_or_si256(_mm256_and_si256(a, lo4), hb(0)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(q + 32), _mm256_or_si256(_mm256_and_si256(c, lo4), hb(2)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(q + 64),
                         _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), lo4), hb(4)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(q + 96),
                         _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), lo4), hb(6)));
    }
  } else {
    QGroup g;
    unpack_qgroup(T, b, g);
    const int64_t nv = T == DType::Q2_K || T == DType::Q3_K ? 256 : 32;
    std::memcpy(u.q, g.q, size_t(nv));
    for (int j = 0; j < int(nv / kQSub); ++j) {
      u.S[j] = g.S[j];
      u.C[j] = g.S[j] * float(g.z[j]) + g.M[j];
    }
  }
}

// Vector unpacking, then value = S (q - z) - M with the reference's operations and order (a
// multiply, then a subtraction; this file does not contract them), so bit-identical to
// scalar::dequantize_row. Q6_K: z = 32, M = 0; Q4_K / Q5_K: z = 0, M = C.
template <DType T>
void dequant_groups(const void* src, float* dst, int64_t n) {
  UnpackedGroup u;
  const float z = T == DType::Q6_K ? 32.0f : 0.0f;
  for (int64_t g = 0; g < n / 256; ++g) {
    unpack_group<T>(static_cast<const uint8_t*>(src) + size_t(g) * dtype_block_bytes(T), u);
    for (int j = 0; j < 16; ++j) {
      const __m256 S = _mm256_set1_ps(u.S[j]), M = _mm256_set1_ps(T == DType::Q6_K ? 0.0f : u.C[j]);
      for (int h = 0; h < 2; ++h) {
        const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(u.q + 16 * j + 8 * h));
        const __m256 q = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b8)), _mm256_set1_ps(z));  // exact
        _mm256_storeu_ps(dst + g * 256 + 16 * j + 8 * h, _mm256_sub_ps(_mm256_mul_ps(S, q), M));
      }
    }
  }
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- Q4_0_R16 decode GEMV (layout in runtime/dtype.h): rows in lanes ------------------------------
//
// The AVX-512 kernel's scheme on 8-lane vectors: per panel of 16 rows, half h (rows 8h..8h+7) and
// block, the 4 chunks of the panel group hold 4 bytes of each row per 32-bit lane; their low and
// high nibbles (values 4k..4k+3 and 16+4k..16+4k+3) meet 4 broadcast activation bytes in
// maddubs, so each row's sum stays in its own lane: no horizontal sums. The 8 maddubs results of
// a block add up in int16 (each pair sum <= 2 * 15 * 127, eight of them <= 30480), one madd
// widens to int32, and the -8 of the nibbles comes in as -8 * sum(y) per block (seed). Exact
// integer block sums scaled as scalar::matmul_rows_q8acts. About 4 instructions per row and block
// against ~15 for the row-major gemv_q: Q4_0 decode then streams at the memory's rate.
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
  for (int64_t i = 0; i < NT * nb; ++i) {
    int32_t sum = 0;
    for (int j = 0; j < kQBlock; ++j) sum += xq[i * kQBlock + j];
    seed[i] = -8 * sum;
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const auto* base = static_cast<const uint8_t*>(job.w.data);
  const int64_t pf = q_pf_dist();
  for (int64_t p = r0 / kR16Rows; p * kR16Rows < r1; ++p) {
    const uint8_t* panel = base + size_t(p * nb) * kR16GroupBytes;
    __m256 acc[2][NT];  // [half][token]
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* g = panel + size_t(b) * kR16GroupBytes;
      if (pf > 0) {
        for (size_t o = 0; o < kR16GroupBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(g) + pf + o, _MM_HINT_T0);
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {  // rows 8h..8h+7: bytes 32h..32h+31 of each 64-byte chunk
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 2 * kR16Rows + 64 * k + 32 * h));
          lo[k] = _mm256_and_si256(a, low4);
          hi[k] = _mm256_and_si256(_mm256_srli_epi16(a, 4), low4);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
          const uint8_t* y = reinterpret_cast<const uint8_t*>(xq + t * K + b * kQBlock);
          __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[k], _mm256_set1_epi32(int(load_u32(y + 4 * k)))));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[k], _mm256_set1_epi32(int(load_u32(y + 16 + 4 * k)))));
          }
          const __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(seed[t * nb + b]));
          acc[h][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(xd[t * nb + b])), acc[h][t]);
        }
      }
    }
    // Only rows [r0, r1) of this panel: callers may split inside a panel.
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int64_t row0 = p * kR16Rows + 8 * h;
#pragma GCC unroll 4
      for (int t = 0; t < NT; ++t) {
        alignas(32) float v[8];
        _mm256_store_ps(v, acc[h][t]);
        for (int i = 0; i < 8; ++i)
          if (row0 + i >= r0 && row0 + i < r1) job.y[(t0 + t) * ldy + row0 + i] = v[i];
      }
    }
  }
}

template <DType T, int NT>
void gemv_blocks(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  constexpr int64_t gv = T == DType::Q4_1 || T == DType::Q5_0 || T == DType::Q5_1 ? 32 : 256;
  const int64_t K = job.w.cols, nb = K / kQBlock, ns = K / kQSub;
  const size_t gb = dtype_block_bytes(T), rb = dtype_row_bytes(T, K);
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  // Per-thread heap scratch, not a thread_local array: static TLS sits on every thread's stack.
  auto* xsd = reinterpret_cast<float*>(thread_scratch(size_t(NT * ns) * sizeof(float)));  // [NT, ns]: dx * sum(xq)
  if (xsd == nullptr) {  // out of memory: the twin needs no scratch
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  for (int t = 0; t < NT; ++t)
    for (int64_t j = 0; j < ns; ++j) {
      int32_t sum = 0;
      for (int i = 0; i < kQSub; ++i) sum += xq[t * K + j * kQSub + i];
      xsd[t * ns + j] = xd[t * nb + j / 2] * float(sum);
    }
  const __m256i ones = _mm256_set1_epi16(1);
  UnpackedGroup u;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m256 acc[NT];
    float corr[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm256_setzero_ps();
      corr[t] = 0.0f;
    }
    for (int64_t ig = 0; ig < K / gv; ++ig) {
      unpack_group<T>(row + size_t(ig) * gb, u);
      for (int64_t p = 0; p < gv / 32; ++p) {
        const __m256i q = _mm256_load_si256(reinterpret_cast<const __m256i*>(u.q + 32 * p));
        const __m256 sv = _mm256_set_m128(_mm_set1_ps(u.S[2 * p + 1]), _mm_set1_ps(u.S[2 * p]));
        const int64_t col = ig * gv + 32 * p;
        for (int t = 0; t < NT; ++t) {
          const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * K + col));
          const __m256i is = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(sv, _mm256_set1_ps(xd[t * nb + col / kQBlock])), acc[t]);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const float* xs = xsd + t * ns + ig * (gv / kQSub);
        if constexpr (gv == 256) {
          const __m256 c0 = _mm256_mul_ps(_mm256_load_ps(u.C), _mm256_loadu_ps(xs));
          const __m256 c1 = _mm256_mul_ps(_mm256_load_ps(u.C + 8), _mm256_loadu_ps(xs + 8));
          corr[t] += hsum(_mm256_add_ps(c0, c1));
        } else {
          corr[t] += u.C[0] * xs[0] + u.C[1] * xs[1];
        }
      }
    }
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = hsum(acc[t]) - corr[t];
  }
}

// ---- Q4_K / Q5_K / Q6_K decode GEMV without the unpacked group ---------------------------------
//
// gemv_blocks unpacks each group to memory and scales every 32-column integer sum separately
// (about 130 instructions per 256 values: half the DRAM rate on one core). Here the quants are
// split from the loaded bytes in registers, and the eight 32-column madd results of a group are
// reduced horizontally to one vector of sub-block sums (exact int32), so a group costs one
// conversion and one FMA per token against a vector of S_j * dx_j. The zero point / min terms
// use dx * sum(xq) per sub-block as in gemv_blocks. Terms as scalar::matmul_rows_q8acts; only the
// float summation order differs.

// Sum of each 32-bit lane quarter: [sum(a lanes 0-3), sum(b 0-3), sum(c 0-3), sum(d 0-3) |
// sum(a 4-7), sum(b 4-7), sum(c 4-7), sum(d 4-7)].
inline __m256i hsum4x(__m256i a, __m256i b, __m256i c, __m256i d) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
}

// The 6-bit scales and mins of a Q4_K / Q5_K group (12 bytes at s), as bytes sc[0..7], m[0..7]:
// pairs 0-3 are the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 take their low 4
// bits from the nibbles of bytes 8-11 and their high 2 bits from the top bits of bytes 0-7.
inline void k4_scale_bytes(const uint8_t* s, uint64_t& sc, uint64_t& mn) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, s, 4);
  std::memcpy(&w1, s + 4, 4);
  std::memcpy(&w2, s + 8, 4);
  const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
  const uint32_t sc_hi = (w2 & low4) | (((w0 >> 6) & low2) << 4);
  const uint32_t mn_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & low2) << 4);
  sc = uint64_t(w0 & low6) | (uint64_t(sc_hi) << 32);
  mn = uint64_t(w1 & low6) | (uint64_t(mn_hi) << 32);
}

inline __m256 u8x8_to_ps(uint64_t v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(v)))); }

template <DType T, int NT>
void gemv_kq(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0) {
  constexpr bool q6 = T == DType::Q6_K;
  const int64_t K = job.w.cols, nb = K / kQBlock, ns = K / kQSub, ng = K / 256;
  const size_t gb = dtype_block_bytes(T), rb = dtype_row_bytes(T, K);
  const int8_t* xq = job.xq.qs + t0 * K;  // [NT, K]
  const float* xd = job.xq.d + t0 * nb;   // [NT, nb]
  // dx * sum(xq) per sub-block of the zero point / min terms: per 16 columns for Q6_K (its scale
  // blocks), per 32 for Q4_K / Q5_K (whose pairs of 16-column sub-blocks share S and M).
  const int64_t nsub = q6 ? ns : nb;
  auto* xs = reinterpret_cast<float*>(thread_scratch(size_t(NT * nsub) * sizeof(float)));  // [NT, nsub]
  if (xs == nullptr) {  // out of memory: the twin needs no scratch
    scalar::matmul_rows_q8acts(job, r0, r1, t0, t0 + NT);
    return;
  }
  const int64_t span = K / nsub;
  for (int t = 0; t < NT; ++t)
    for (int64_t j = 0; j < nsub; ++j) {
      int32_t sum = 0;
      for (int64_t i = 0; i < span; ++i) sum += xq[t * K + j * span + i];
      xs[t * nsub + j] = xd[t * nb + j * span / kQBlock] * float(sum);
    }
  const __m256i lo4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(r) * rb;
    __m256 acc[NT], cacc[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) acc[t] = cacc[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* b = row + size_t(g) * gb;
      // The 8 quant vectors of 32 values each, in column order, as unsigned bytes.
      __m256i q[8];
      __m256 S_a, S_b, C_a, C_b;  // scale (and zero/min) vectors in the lane order used below
      if constexpr (q6) {
        const float d = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 208));
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int h = 0; h < 2; ++h) {
          const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
          const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
          const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
          const auto hb = [&](int sh) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(e, sh), m3), 4); };
          q[4 * h] = _mm256_or_si256(_mm256_and_si256(a, lo4), hb(0));
          q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(c, lo4), hb(2));
          q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), lo4), hb(4));
          q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), lo4), hb(6));
        }
        // hsum4x leaves sub-blocks in the order [0 2 4 6 1 3 5 7] and [8 10 12 14 9 11 13 15].
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
        const __m128i perm = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
        const __m128i scp = _mm_shuffle_epi8(sc, perm);
        const __m256 vd = _mm256_set1_ps(d);
        S_a = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scp)));
        S_b = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(scp, scp))));
        // zero point 32 per 16 columns, natural order (C * xs summed lane-wise)
        const __m256 S_lo = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
        const __m256 S_hi = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc))));
        C_a = _mm256_mul_ps(S_lo, _mm256_set1_ps(32.0f));
        C_b = _mm256_mul_ps(S_hi, _mm256_set1_ps(32.0f));
      } else {
        const float d = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b));
        const float dmin = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(b + 2));
        uint64_t scb, mnb;
        k4_scale_bytes(b + 4, scb, mnb);
        S_a = _mm256_mul_ps(_mm256_set1_ps(d), u8x8_to_ps(scb));  // natural order, one per 32 columns
        C_a = _mm256_mul_ps(_mm256_set1_ps(dmin), u8x8_to_ps(mnb));
        S_b = C_b = _mm256_setzero_ps();
        const uint8_t* qs = T == DType::Q5_K ? b + 48 : b + 16;
        __m256i qh = _mm256_setzero_si256();
        if constexpr (T == DType::Q5_K) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
          q[2 * c] = _mm256_and_si256(v, lo4);
          q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
          if constexpr (T == DType::Q5_K) {  // bit 4: bit 2c (low nibbles) / 2c + 1 (high) of qh[l]
            const __m256i one = _mm256_set1_epi8(1);
            q[2 * c] = _mm256_or_si256(q[2 * c], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
            q[2 * c + 1] =
                _mm256_or_si256(q[2 * c + 1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
          }
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < NT; ++t) {
        const int8_t* y = xq + t * K + g * 256;
        __m256i is[8];
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v)
          is[v] = _mm256_madd_epi16(
              _mm256_maddubs_epi16(q[v], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * v))), ones);
        const __m256i h0 = hsum4x(is[0], is[1], is[2], is[3]), h1 = hsum4x(is[4], is[5], is[6], is[7]);
        const __m256 dx = _mm256_loadu_ps(xd + t * nb + g * 8);  // [8]: one per 32 columns
        const float* xst = xs + t * nsub + g * (256 / span);
        if constexpr (q6) {
          // h0: sub-blocks [0 2 4 6 | 1 3 5 7] use dx blocks [0 1 2 3 | 0 1 2 3]; h1 the next four.
          const __m256 dx_a = _mm256_permute2f128_ps(dx, dx, 0x00), dx_b = _mm256_permute2f128_ps(dx, dx, 0x11);
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h0), _mm256_mul_ps(S_a, dx_a), acc[t]);
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h1), _mm256_mul_ps(S_b, dx_b), acc[t]);
          cacc[t] = _mm256_fmadd_ps(C_a, _mm256_loadu_ps(xst), cacc[t]);
          cacc[t] = _mm256_fmadd_ps(C_b, _mm256_loadu_ps(xst + 8), cacc[t]);
        } else {
          // h0 = [s0 s1 s2 s3 (lanes 0-3) | s0 s1 s2 s3 (lanes 4-7)], h1 the same for s4..s7.
          const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(S_a, dx), acc[t]);
          cacc[t] = _mm256_fmadd_ps(C_a, _mm256_loadu_ps(xst), cacc[t]);
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) job.y[(t0 + t) * job.w.rows + r] = hsum(acc[t]) - hsum(cacc[t]);
  }
}

template <DType T>
void gemm(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);  // below
template <DType T>
void gemm_kq(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);  // below

template <DType T>
void matmul_blocks(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (job.mode == GemmMode::Int8) {  // prompts: the int8 GEMM with per-sub-block scales
    gemm_kq<T>(job, r0, r1, t0, t1);
    return;
  }
  if (job.xq.qs == nullptr) {  // the F32 GEMM, its weight panels dequantized span by span
    gemm<T>(job, r0, r1, t0, t1);
    return;
  }
  if (job.w.cols > kMaxBlockCols) {
    matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
    return;
  }
  if constexpr (T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K) {
    for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
      switch (imin(kGemvMaxTokens, t1 - t)) {
        case 1: gemv_kq<T, 1>(job, r0, r1, t); break;
        case 2: gemv_kq<T, 2>(job, r0, r1, t); break;
        case 3: gemv_kq<T, 3>(job, r0, r1, t); break;
        default: gemv_kq<T, 4>(job, r0, r1, t); break;
      }
    }
    return;
  }
  for (int64_t t = t0; t < t1; t += kGemvMaxTokens) {
    switch (imin(kGemvMaxTokens, t1 - t)) {
      case 1: gemv_blocks<T, 1>(job, r0, r1, t); break;
      case 2: gemv_blocks<T, 2>(job, r0, r1, t); break;
      case 3: gemv_blocks<T, 3>(job, r0, r1, t); break;
      default: gemv_blocks<T, 4>(job, r0, r1, t); break;
    }
  }
}

// ---- GEMM ---------------------------------------------------------------------------------------

constexpr int kMR = 16;       // weight rows per micro-panel (two ymm)
constexpr int kNR = 6;        // tokens per micro-kernel call: 12 accumulators
constexpr int64_t kKC = 256;  // 16 KiB of packed weights

template <int NT>
void micro_kernel(const float* wp, const float* xp, int64_t kc, float* y, int64_t ldy,
                  __m256i m0, __m256i m1, bool first) {
  // Every loop over t fully unrolled: GCC 12 otherwise keeps the accumulator arrays in memory
  // and stores all 12 to the stack on every k step (store-bound at ~40% of the FMA peak).
  __m256 a0[NT], a1[NT];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    a0[t] = a1[t] = _mm256_setzero_ps();
    // y's rows are far apart and were last touched a whole column block ago (L3 or DRAM):
    // fetch them now so that the read-modify-write below does not stall (25% of the time).
    if (!first) _mm_prefetch(reinterpret_cast<const char*>(y + t * ldy), _MM_HINT_T0);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_load_ps(wp + k * kMR), w1 = _mm256_load_ps(wp + k * kMR + 8);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m256 b = _mm256_broadcast_ss(xp + k * kNR + t);
      a0[t] = _mm256_fmadd_ps(w0, b, a0[t]);
      a1[t] = _mm256_fmadd_ps(w1, b, a1[t]);
    }
  }
  // Full panels (all but a matrix's last one) use plain loads and stores: vmaskmovps stores
  // are microcoded on AMD cores (about ten times the cost of a store).
  const bool full = _mm256_testc_si256(m1, _mm256_set1_epi32(-1)) != 0;
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    float* yt = y + t * ldy;
    if (full) {
      if (!first) {
        a0[t] = _mm256_add_ps(a0[t], _mm256_loadu_ps(yt));
        a1[t] = _mm256_add_ps(a1[t], _mm256_loadu_ps(yt + 8));
      }
      _mm256_storeu_ps(yt, a0[t]);
      _mm256_storeu_ps(yt + 8, a1[t]);
      continue;
    }
    if (!first) {
      a0[t] = _mm256_add_ps(a0[t], _mm256_maskload_ps(yt, m0));
      a1[t] = _mm256_add_ps(a1[t], _mm256_maskload_ps(yt + 8, m1));
    }
    _mm256_maskstore_ps(yt, m0, a0[t]);
    _mm256_maskstore_ps(yt + 8, m1, a1[t]);
  }
}

using MicroFn = void (*)(const float*, const float*, int64_t, float*, int64_t, __m256i, __m256i, bool);
constexpr MicroFn kMicro[kNR + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>, micro_kernel<3>,
                                     micro_kernel<4>, micro_kernel<5>, micro_kernel<6>};

// In-register transpose of an 8 x 8 block: r[i] lane j -> r[j] lane i (24 shuffles).
inline void transpose8x8(__m256* r) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m256 u[2][4];  // u[g][c] lane half L: column 4L + c of rows 4g..4g+3
  for (int g = 0; g < 2; ++g) {
    u[g][0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[g][1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
    u[g][2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[g][3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[0][c], u[1][c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[0][c], u[1][c], 0x31);
  }
}

// Rows [rb, rb + nr) x columns [k0, k0 + kc) -> wp[kc, 16] (rows beyond nr are zero): eight
// rows at a time dequantized row-major and transposed in registers.
template <DType T>
void pack_panel(const MatmulJob& job, int64_t rb, int nr, int64_t k0, int64_t kc, float* wp) {
  alignas(32) float tmp[8 * kKC];  // [8, kc] with row stride kKC
  const size_t row_bytes = dtype_row_bytes(T, job.w.cols);
  for (int h = 0; h < kMR; h += 8) {
    const int n = nr - h < 0 ? 0 : (nr - h > 8 ? 8 : nr - h);
    for (int i = 0; i < n; ++i)
      dequant_span<T>(static_cast<const uint8_t*>(job.w.data) + size_t(rb + h + i) * row_bytes, k0, kc, tmp + i * kKC);
    for (int i = n; i < 8; ++i) std::memset(tmp + i * kKC, 0, size_t(kc) * sizeof(float));
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_load_ps(tmp + i * kKC + k);
      transpose8x8(r);
      for (int j = 0; j < 8; ++j) _mm256_store_ps(wp + (k + j) * kMR + h, r[j]);
    }
    for (; k < kc; ++k)
      for (int i = 0; i < 8; ++i) wp[k * kMR + h + i] = tmp[i * kKC + k];
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
  alignas(32) float wp[kKC * kMR];
  const int64_t K = job.w.cols, ldy = job.w.rows;
  // Packed activations for all tokens of one column block (malloc: no STL in this file).
  const int64_t n_tblocks = (t1 - t0 + kNR - 1) / kNR;
  float* xp = static_cast<float*>(std::malloc(size_t(n_tblocks * kNR * kKC) * sizeof(float)));
  if (xp == nullptr) std::abort();  // hot path: no exceptions; a few hundred KiB
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = imin(kKC, K - k0);
    pack_acts(job.x, K, t0, t1, k0, kc, xp);
    for (int64_t rb = r0; rb < r1; rb += kMR) {
      const int nr = int(imin(kMR, r1 - rb));
      pack_panel<T>(job, rb, nr, k0, kc, wp);
      const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr > 8 ? nr - 8 : 0);
      for (int64_t t = t0; t < t1; t += kNR) {
        const int nt = int(imin(kNR, t1 - t));
        kMicro[nt](wp, xp + (t - t0) * kc, kc, job.y + t * ldy + rb, ldy, m0, m1, k0 == 0);
      }
    }
  }
  std::free(xp);
}

template <DType T>
void gemm_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1);  // below

template <DType T>
void matmul_typed(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  constexpr bool quant = T == DType::Q8_0 || T == DType::Q4_0;
  if constexpr (quant) {
    if (job.mode == GemmMode::Int8) {
      gemm_int8<T>(job, r0, r1, t0, t1);
      return;
    }
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
    case DType::Q4_0_R16:  // 16-row panels (runtime/dtype.h)
      if (job.mode == GemmMode::Int8) {
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
      return;
    case DType::Q4_1: matmul_blocks<DType::Q4_1>(job, r0, r1, t0, t1); return;
    case DType::Q5_0: matmul_blocks<DType::Q5_0>(job, r0, r1, t0, t1); return;
    case DType::Q5_1: matmul_blocks<DType::Q5_1>(job, r0, r1, t0, t1); return;
    case DType::Q2_K: matmul_blocks<DType::Q2_K>(job, r0, r1, t0, t1); return;
    case DType::Q3_K: matmul_blocks<DType::Q3_K>(job, r0, r1, t0, t1); return;
    case DType::Q4_K: matmul_blocks<DType::Q4_K>(job, r0, r1, t0, t1); return;
    case DType::Q5_K: matmul_blocks<DType::Q5_K>(job, r0, r1, t0, t1); return;
    case DType::Q6_K: matmul_blocks<DType::Q6_K>(job, r0, r1, t0, t1); return;
    default:  // Q4_K_R16 (AVX-512 layout; never made for these kernels): dequantized rows
      matmul_rows_via_f32(kTable, job, r0, r1, t0, t1);
      return;
  }
}

// ---- Int8 GEMM (Q8_0 / Q4_0 prompts): maddubs, tokens in lanes -----------------------------------
//
// The numerics of GemmMode::Int8 (ops_internal.h) without VNNI, on the same packed activations
// (q + 128): one ymm holds 4 columns of 8 tokens, and 4 weight bytes of a row are broadcast.
// maddubs multiplies unsigned by signed bytes into saturating int16 pair sums, so:
//  - Q4_0 (w = nibble - 8 in [-8, 7]): the biased activations times w directly (pair sums at most
//    2 * 255 * 8), the bias removed by a per-(row, block) correction -128 * sum(w), as the AVX-512
//    kernel does. Three instructions per 32 products.
//  - Q8_0 (w in [-128, 127]): (q + 128) * w could saturate, so the activations are unbiased (one
//    xor per vector, shared by the tile's rows) and multiplied as |w| * (q with w's sign), pair
//    sums at most 2 * 128 * 127 (|q| <= 127). Four instructions per 32 products; |w| comes
//    precomputed with the panel.
// madd with ones widens to int32; each 32-block's integer sum is exact and is scaled once:
// acc += float(isum) * (d_x * d_w), as the scalar twin.

constexpr int kI8Rows = 3;          // weight rows per micro-tile: 6 int32 accumulators, in registers
constexpr int64_t kPanelRows = 32;  // rows whose scales (and bytes) are prepared together

void pack_acts_int8(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp) {
  const int64_t nb = cols / kQBlock;
  const __m256i bias = _mm256_set1_epi8(char(0x80));
  for (int64_t g = g0; g < g1; ++g) {
    uint8_t* base = xp + g * nb * kInt8GroupBlockBytes;
    for (int64_t i = 0; i < kPackTokens; ++i) {
      const int64_t t = g * kPackTokens + i;
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* blk = base + b * kInt8GroupBlockBytes;
        alignas(32) int8_t q[kQBlock];
        float d = 0.0f;
        if (t < n_tokens) {
          quantize_acts(x + t * cols + b * kQBlock, kQBlock, q, &d);
        } else {
          std::memset(q, 0, sizeof(q));
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(q),
                           _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(q)), bias));
        for (int j = 0; j < 8; ++j) std::memcpy(blk + j * 64 + i * 4, q + 4 * j, 4);
        std::memcpy(blk + 8 * 64 + i * 4, &d, 4);
      }
    }
  }
}

// Panel rows' scales dw[nr][nb], and bytes wb[nr][cols]: Q8_0 |w|, Q4_0 w = nibble - 8 with
// corr[nr][nb] = -128 * sum(w) (value order as in dequantization).
template <DType T>
void prepare_int8_panel(const MatmulJob& job, int64_t rp, int64_t nr, float* dw, int32_t* corr, int8_t* wb) {
  const int64_t K = job.w.cols, nb = K / kQBlock;
  for (int64_t i = 0; i < nr; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* dst = wb + i * K + b * kQBlock;
      if constexpr (T == DType::Q8_0) {
        const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(job.w.data)[(rp + i) * nb + b];
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_sign_epi8(w, w));
        dw[i * nb + b] = _cvtsh_ss(blk.d);
      } else {
        const BlockQ4_0 blk = T == DType::Q4_0_R16 ? q4_0_r16_block(job.w.data, K, rp + i, b)
                                                   : static_cast<const BlockQ4_0*>(job.w.data)[(rp + i) * nb + b];
        const __m256i q = _mm256_sub_epi8(prep_weights(blk), _mm256_set1_epi8(8));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), q);
        // sum of the signed bytes: sad of the biased bytes, minus 32 * 128
        const __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(q, _mm256_set1_epi8(char(0x80))), _mm256_setzero_si256());
        const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
        corr[i * nb + b] = -128 * (int32_t(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1)) - 32 * 128);
        dw[i * nb + b] = _cvtsh_ss(blk.d);
      }
    }
  }
}

// out[m * 16 + i] = y of row m and token i of the group, for MR rows; out also holds the float
// accumulators between blocks. Row m's bytes: wb[m] (panel bytes, 32 per block); Q8_0 also reads
// the signed weights in place, ws[m] + 34 * b. Three rows: 6 int32 accumulators, 2 activation
// vectors and the broadcasts fit the 16 registers (at four GCC kept accumulators on the stack).
template <int MR, bool Q8>
void int8_tile(const int8_t* const* wb, const uint8_t* const* ws, const float* dw, const int32_t* corr, int64_t nb,
               const uint8_t* xg, float* out) {
  const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8(char(0x80));
  const int8_t* wr[MR];
  const uint8_t* sr[MR];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m) {
    wr[m] = wb[m];
    sr[m] = Q8 ? ws[m] : nullptr;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR * 2; ++i) _mm256_store_ps(out + 8 * i, _mm256_setzero_ps());
  for (int64_t b = 0; b < nb; ++b) {
    __m256i acc[MR][2];
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = Q8 ? _mm256_setzero_si256() : _mm256_set1_epi32(corr[m * nb + b]);
    const uint8_t* xb = xg + b * kInt8GroupBlockBytes;
    for (int g = 0; g < 8; ++g) {
      __m256i x0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb + g * 64));
      __m256i x1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb + g * 64 + 32));
      if constexpr (Q8) {
        x0 = _mm256_xor_si256(x0, bias);
        x1 = _mm256_xor_si256(x1, bias);
      }
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const __m256i w = _mm256_set1_epi32(int(load_u32(reinterpret_cast<const uint8_t*>(wr[m]) + b * kQBlock + 4 * g)));
        __m256i p0, p1;
        if constexpr (Q8) {
          const __m256i sgn = _mm256_set1_epi32(int(load_u32(sr[m] + b * int64_t(sizeof(BlockQ8_0)) + 4 * g)));
          p0 = _mm256_maddubs_epi16(w, _mm256_sign_epi8(x0, sgn));
          p1 = _mm256_maddubs_epi16(w, _mm256_sign_epi8(x1, sgn));
        } else {
          p0 = _mm256_maddubs_epi16(x0, w);
          p1 = _mm256_maddubs_epi16(x1, w);
        }
        acc[m][0] = _mm256_add_epi32(acc[m][0], _mm256_madd_epi16(p0, ones));
        acc[m][1] = _mm256_add_epi32(acc[m][1], _mm256_madd_epi16(p1, ones));
      }
    }
    const __m256 dx0 = _mm256_load_ps(reinterpret_cast<const float*>(xb + 8 * 64));
    const __m256 dx1 = _mm256_load_ps(reinterpret_cast<const float*>(xb + 8 * 64 + 32));
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      const __m256 sc = _mm256_set1_ps(dw[m * nb + b]);
      float* o = out + m * 16;
      _mm256_store_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][0]), _mm256_mul_ps(dx0, sc), _mm256_load_ps(o)));
      _mm256_store_ps(o + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][1]), _mm256_mul_ps(dx1, sc), _mm256_load_ps(o + 8)));
    }
  }
}

using Int8TileFn = void (*)(const int8_t* const*, const uint8_t* const*, const float*, const int32_t*, int64_t,
                            const uint8_t*, float*);
template <bool Q8>
constexpr Int8TileFn kInt8Tiles[kI8Rows] = {int8_tile<1, Q8>, int8_tile<2, Q8>, int8_tile<3, Q8>};

template <DType T>
void gemm_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int64_t K = job.w.cols, nb = K / kQBlock, ldy = job.w.rows;
  const int64_t gstride = nb * kInt8GroupBlockBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  constexpr bool q8 = T == DType::Q8_0;
  // Panel scratch (malloc: no STL in this file): scales, corrections, bytes.
  auto* dw = static_cast<float*>(std::malloc(size_t(kPanelRows * nb) * sizeof(float)));
  auto* corr = static_cast<int32_t*>(std::malloc(size_t(kPanelRows * nb) * sizeof(int32_t)));
  auto* wb = static_cast<int8_t*>(std::malloc(size_t(kPanelRows * K)));
  if (dw == nullptr || corr == nullptr || wb == nullptr) std::abort();  // hot path: no exceptions
  alignas(32) float out[kI8Rows * 16];
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    prepare_int8_panel<T>(job, rp, nr, dw, corr, wb);
    for (int64_t g = ga; g < gb; ++g) {
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t m0 = 0; m0 < nr; m0 += kI8Rows) {
        const int mr = int(imin(kI8Rows, nr - m0));
        const int8_t* w[kI8Rows];
        const uint8_t* ws[kI8Rows] = {};
        for (int m = 0; m < mr; ++m) {
          w[m] = wb + (m0 + m) * K;
          if (q8) ws[m] = reinterpret_cast<const uint8_t*>(static_cast<const BlockQ8_0*>(job.w.data) + (rp + m0 + m) * nb) + 2;
        }
        kInt8Tiles<q8>[mr - 1](w, ws, dw + m0 * nb, corr + m0 * nb, nb, xg, out);
        // Results for tokens in [t0, t1) only (pad tokens and other threads' tokens skipped).
        for (int i = 0; i < kPackTokens; ++i) {
          const int64_t t = g * kPackTokens + i;
          if (t < t0 || t >= t1) continue;
          for (int m = 0; m < mr; ++m) job.y[t * ldy + rp + m0 + m] = out[m * 16 + i];
        }
      }
    }
  }
  std::free(wb);
  std::free(corr);
  std::free(dw);
}

// ---- Int8 GEMM of the GGML block types (Q4_1 ... Q6_K prompts) ---------------------------------
//
// gemm_int8's tiles with a float scale per sub-block (16 columns; 32 where pairs share S and
// C, as Q4_K/Q5_K/Q4_1/Q5_0/Q5_1): weights unpacked once per panel to unsigned bytes q (at most
// 63) times the unbiased activations (one xor per vector, shared by the tile's rows), so maddubs
// pair sums stay within 2 * 63 * 127 and need no sign trick; then per sub-block j
//   y += S_j dx isum_j - C_j dx xsum_j   (C = S z + M),
// the terms of scalar::matmul_rows_q8acts, with dx xsum_j per token lane made once per call.

template <int SUB>
void kq_xsd(const uint8_t* xp, int64_t K, int64_t ga, int64_t gb, float* xsd) {  // [(g - ga) * ns + j][16]
  const int64_t nb = K / kQBlock, ns = K / SUB, gstride = nb * kInt8GroupBlockBytes;
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t g = ga; g < gb; ++g) {
    for (int64_t j = 0; j < ns; ++j) {
      const uint8_t* xb = xp + g * gstride + (j * SUB / kQBlock) * kInt8GroupBlockBytes;
      const int slot0 = SUB == kQSub ? 4 * int(j % 2) : 0;
      for (int h = 0; h < 2; ++h) {  // tokens 0-7, 8-15
        __m256i s = _mm256_set1_epi32(-SUB * 128);  // the packed bytes are x + 128
        for (int k = 0; k < SUB / 4; ++k) {
          const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb + (slot0 + k) * 64 + 32 * h));
          s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(v, ones8), ones16));
        }
        const __m256 dx = _mm256_load_ps(reinterpret_cast<const float*>(xb + 8 * 64 + 32 * h));
        _mm256_storeu_ps(xsd + ((g - ga) * ns + j) * 16 + 8 * h, _mm256_mul_ps(dx, _mm256_cvtepi32_ps(s)));
      }
    }
  }
}

// Panel rows as unsigned bytes wq[nr][K] and per-16-column S and C [nr][K / 16].
template <DType T>
void prepare_kq_panel(const MatmulJob& job, int64_t rp, int64_t nr, uint8_t* wq, float* S, float* C) {
  constexpr int64_t gv = T == DType::Q4_1 || T == DType::Q5_0 || T == DType::Q5_1 ? 32 : 256;
  const int64_t K = job.w.cols, ns = K / kQSub;
  const size_t gb = dtype_block_bytes(T), rb = dtype_row_bytes(T, K);
  UnpackedGroup u;
  for (int64_t i = 0; i < nr; ++i) {
    const uint8_t* row = static_cast<const uint8_t*>(job.w.data) + size_t(rp + i) * rb;
    for (int64_t ig = 0; ig < K / gv; ++ig) {
      unpack_group<T>(row + size_t(ig) * gb, u);
      std::memcpy(wq + i * K + ig * gv, u.q, size_t(gv));
      std::memcpy(S + i * ns + ig * (gv / kQSub), u.S, sizeof(float) * size_t(gv / kQSub));
      std::memcpy(C + i * ns + ig * (gv / kQSub), u.C, sizeof(float) * size_t(gv / kQSub));
    }
  }
}

// out[m * 16 + i] = y of row m, token i of the group (out holds the float accumulators).
template <int MR, int SUB>
void kq_tile(const uint8_t* const* w, const float* S, const float* C, int64_t ns, const uint8_t* xg, const float* xsd,
             float* out) {
  const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8(char(0x80));
  const uint8_t* wr[MR];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m) wr[m] = w[m];
#pragma GCC unroll 8
  for (int i = 0; i < MR * 2; ++i) _mm256_store_ps(out + 8 * i, _mm256_setzero_ps());
  for (int64_t j = 0; j < ns; ++j) {
    const uint8_t* xb = xg + (j * SUB / kQBlock) * kInt8GroupBlockBytes;
    const int slot0 = SUB == kQSub ? 4 * int(j % 2) : 0;
    __m256i acc[MR][2];
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
    for (int k = 0; k < SUB / 4; ++k) {
      const __m256i x0 = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(xb + (slot0 + k) * 64)), bias);
      const __m256i x1 =
          _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(xb + (slot0 + k) * 64 + 32)), bias);
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const __m256i wb = _mm256_set1_epi32(int(load_u32(wr[m] + j * SUB + 4 * k)));
        acc[m][0] = _mm256_add_epi32(acc[m][0], _mm256_madd_epi16(_mm256_maddubs_epi16(wb, x0), ones));
        acc[m][1] = _mm256_add_epi32(acc[m][1], _mm256_madd_epi16(_mm256_maddubs_epi16(wb, x1), ones));
      }
    }
    const __m256 dx0 = _mm256_load_ps(reinterpret_cast<const float*>(xb + 8 * 64));
    const __m256 dx1 = _mm256_load_ps(reinterpret_cast<const float*>(xb + 8 * 64 + 32));
    const __m256 xs0 = _mm256_loadu_ps(xsd + j * 16), xs1 = _mm256_loadu_ps(xsd + j * 16 + 8);
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      const __m256 sc = _mm256_set1_ps(S[m * ns + j]), cc = _mm256_set1_ps(C[m * ns + j]);
      float* o = out + m * 16;
      __m256 f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][0]), _mm256_mul_ps(dx0, sc), _mm256_load_ps(o));
      __m256 f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][1]), _mm256_mul_ps(dx1, sc), _mm256_load_ps(o + 8));
      _mm256_store_ps(o, _mm256_fnmadd_ps(cc, xs0, f0));
      _mm256_store_ps(o + 8, _mm256_fnmadd_ps(cc, xs1, f1));
    }
  }
}

using KqTileFn = void (*)(const uint8_t* const*, const float*, const float*, int64_t, const uint8_t*, const float*,
                          float*);
template <int SUB>
constexpr KqTileFn kKqTiles[kI8Rows] = {kq_tile<1, SUB>, kq_tile<2, SUB>, kq_tile<3, SUB>};

template <DType T>
void gemm_kq(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  // One scale per 32 columns except for the 16-column sub-blocks of Q2_K, Q3_K, Q6_K.
  constexpr int SUB = T == DType::Q2_K || T == DType::Q3_K || T == DType::Q6_K ? kQSub : 2 * kQSub;
  const int64_t K = job.w.cols, nb = K / kQBlock, ns16 = K / kQSub, ns = K / SUB, ldy = job.w.rows;
  const int64_t gstride = nb * kInt8GroupBlockBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  // Scratch (malloc: no STL in this file): panel bytes, scales, zero/min terms, xsum terms.
  auto* wq = static_cast<uint8_t*>(std::malloc(size_t(kPanelRows * K)));
  auto* S = static_cast<float*>(std::malloc(size_t(kPanelRows * ns16) * sizeof(float)));
  auto* C = static_cast<float*>(std::malloc(size_t(kPanelRows * ns16) * sizeof(float)));
  auto* xsd = static_cast<float*>(std::malloc(size_t((gb - ga) * ns * 16) * sizeof(float)));
  if (!wq || !S || !C || !xsd) std::abort();  // hot path: no exceptions
  kq_xsd<SUB>(job.xp, K, ga, gb, xsd);
  alignas(32) float out[kI8Rows * 16];
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    prepare_kq_panel<T>(job, rp, nr, wq, S, C);  // per 16 columns
    if constexpr (SUB == 2 * kQSub) {  // both halves share S and C: merge in place
      for (int64_t i = 0; i < nr * ns; ++i) {
        S[i] = S[2 * i];
        C[i] = C[2 * i];
      }
    }
    for (int64_t g = ga; g < gb; ++g) {
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t m0 = 0; m0 < nr; m0 += kI8Rows) {
        const int mr = int(imin(kI8Rows, nr - m0));
        const uint8_t* w[kI8Rows];
        for (int m = 0; m < mr; ++m) w[m] = wq + (m0 + m) * K;
        kKqTiles<SUB>[mr - 1](w, S + m0 * ns, C + m0 * ns, ns, xg, xsd + (g - ga) * ns * 16, out);
        for (int i = 0; i < kPackTokens; ++i) {
          const int64_t t = g * kPackTokens + i;
          if (t < t0 || t >= t1) continue;
          for (int m = 0; m < mr; ++m) job.y[t * ldy + rp + m0 + m] = out[m * 16 + i];
        }
      }
    }
  }
  std::free(xsd);
  std::free(C);
  std::free(S);
  std::free(wq);
}

// ---- vector ops -------------------------------------------------------------------------------

// exp(x) to ~1 ulp (see exp512 in ops_avx512.cpp). Without scalef, 2^n is built in the exponent
// field, so x is clamped to where that is a normal number and the ends are patched afterwards:
// below -87.33654 (results under FLT_MIN, which std::exp returns as subnormals) gives 0.
inline __m256 exp256(__m256 x) {
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-87.33654f), _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  res = _mm256_blendv_ps(res, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ));
  res = _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(88.72283935546875f), _CMP_GT_OQ));
  return _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // NaN stays NaN
}

float dot_f32(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  __m256 ss = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  float s = hsum(ss);
  for (; i < n; ++i) s += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(s / float(n) + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv)));
  }
  for (; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = -INFINITY;
  int64_t i = 0;
  if (n >= 8) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    mx = _mm_cvtss_f32(m);
  }
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 vmax = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
    vs = _mm256_add_ps(vs, e);
    _mm256_storeu_ps(x + i, e);
  }
  float sum = hsum(vs);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
  for (; i < n; ++i) x[i] *= inv;
}

}  // namespace

// Int8 GEMM for Q8_0 / Q4_0 prompts (maddubs; no VNNI needed); no bf16 GEMM.
const KernelTable kTable = {KernelIsa::Avx2, matmul_rows, quantize_acts, dequantize_row, scalar::quantize_row,
                            dot_f32, rmsnorm, swiglu, softmax, axpy, pack_acts_int8, nullptr, nullptr, nullptr};

}  // namespace lcx::kernels::avx2

LCX_ISA_END

#endif  // x86-64
