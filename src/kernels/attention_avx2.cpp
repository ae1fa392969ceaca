// AVX2 + FMA + F16C flash attention: the vector primitives and row decoders of this instruction
// set around the shared algorithm in attention_simd.inc. Chosen at run time by attention.cpp;
// the scalar oracle (scalar::attention_items) is the test reference.
//
// As in ops_avx2.cpp, the instruction set comes from `LCX_ISA_BEGIN` (kernels/isa_region.h), headers are included
// before it and no STL templates are used after it.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/attention_internal.h"
#include "runtime/dtype.h"
#include "kernels/isa_region.h"

#if defined(__x86_64__) && defined(__GNUC__)

LCX_ISA_BEGIN("avx2,fma,f16c")

namespace lcx::kernels::attn_avx2 {
namespace {

constexpr KernelIsa kIsa = KernelIsa::Avx2;
constexpr int kNR = 6;  // 6 rows x 2 vectors = 12 of the 16 ymm registers accumulate

struct V {
  using T = __m256;
  static constexpr int L = 8;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T zero() { return _mm256_setzero_ps(); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static T select_le(T x, T y, T a, T b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, y, _CMP_LE_OQ)); }
  static T select_eq(T x, T y, T a, T b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, y, _CMP_EQ_OQ)); }
  static float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(T v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // exp(x) for x <= 0, as in attention_avx512.cpp: exactly 0 below -87.3 and for -inf.
  static T exp(T x) {
    const T live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
    const T xc = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const T n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    T p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
  }
};

// One key/value row to float32; exact (the same values kv_decode gives).
void decode_row(KvFormat f, const uint8_t* src, int64_t hd, float* dst) {
  int64_t i = 0;
  switch (f) {
    case KvFormat::F32: std::memcpy(dst, src, size_t(hd) * 4); return;
    case KvFormat::F16: {
      const auto* s = reinterpret_cast<const uint16_t*>(src);
      for (; i + 8 <= hd; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
      for (; i < hd; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case KvFormat::BF16: {
      const auto* s = reinterpret_cast<const uint16_t*>(src);
      for (; i + 8 <= hd; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
      for (; i < hd; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case KvFormat::Q8Row: {
      float d;
      std::memcpy(&d, src, sizeof d);
      const auto* q = reinterpret_cast<const int8_t*>(src + sizeof d);
      const __m256 vd = _mm256_set1_ps(d);
      for (; i + 8 <= hd; i += 8) {
        int64_t raw;
        std::memcpy(&raw, q + i, 8);
        const __m256i w = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(raw));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(w)));
      }
      for (; i < hd; ++i) dst[i] = d * float(q[i]);
      return;
    }
  }
}

// Decode over a span of keys straight from the stored rows (defined below the shared code).
void fused_narrow_range(const AttentionArgs& a, bool mem, int64_t t_begin, int64_t t_end, float* states,
                        float* scratch);
// Decode top-k: memory scores of all heads in storage order (defined below the shared code).
void fused_mem_scores_range(const AttentionArgs& a, int64_t t0, int64_t t1, float* s, int64_t ld, float* scratch);

}  // namespace

#define LCX_ATTN_NARROW_RANGE fused_narrow_range
#define LCX_ATTN_MEM_SCORES_RANGE fused_mem_scores_range
#include "kernels/attention_simd.inc"

namespace {

// ---- fused decode ---------------------------------------------------------------------------------
//
// The AVX2 twin of attention_avx512.cpp's fused decode (see there for why: decode reads every key
// and value row once and must not spend more than a few instructions per byte). The shared
// narrow path converts each tile to float32 in scratch, pads rows to 128 columns and reduces
// every score with its own horizontal sum; this one widens rows in registers as it loads them
// and reduces 8 (one query row) or 4 (GQA) scores with one hadd tree.
//
// 16 ymm registers cannot hold a 100-column row (13 vectors), so unlike the AVX-512 path nothing
// keeps a whole row in registers: Q.K walks the columns with the query vector loaded once per
// column vector and used against 8 (or 4 x 2 rows of) keys, and P.V walks blocks of columns with
// the accumulators of a block of rows in registers across the tile's keys.
//
// Used for fewer than 8 query rows per kv head (attention.cpp: the lanes of a vector), the
// decode of MHA models (LongLLaMA) and of GQA with up to 7 query heads per kv head. With 8 or
// more rows the wide (GEMM-like) path wins: per 8-key tile every row pays its own softmax update
// and hadd tree here, and the wide path shares both across the rows of a vector (TinyLlama,
// bench_attention Tiny_decode_depth16k, 2 threads: 2.7-2.9 ms wide, 3.6-3.9 ms this way).
//
// Rows are vectors of 8 floats in "row layout": F32/F16/Q8Row in column order, BF16 as pairs
// [even columns, odd columns] of each 16-column run (one shift or one and widens a half), with a
// last partial run of at most 8 columns as one plain vector. Queries and accumulators use the
// same layout; the write-out permutes back.

// The per-key helpers must inline into the loops (g++ 12 keeps load_vec out of line otherwise,
// and a call per vector costs more than the work); the partial loads of odd head sizes stay out.
#define LCX_F2_INLINE inline __attribute__((always_inline))

constexpr int kF2MaxCh = 16;    // head_dim <= 128
constexpr int64_t kF2Tile = 8;  // keys per online-softmax step: one vector of scores per row

inline int f2_chunks(KvFormat f, int64_t hd) {
  if (f != KvFormat::BF16) return int((hd + 7) / 8);
  const int64_t tail = hd % 16;
  return 2 * int(hd / 16) + (tail == 0 ? 0 : tail <= 8 ? 1 : 2);
}

inline int64_t f2_layout_pos(KvFormat f, int64_t c, int64_t hd) {
  if (f != KvFormat::BF16) return c;
  const int64_t run = c / 16, i = c % 16;
  if (run == hd / 16 && hd % 16 <= 8) return c;  // the plain tail vector
  return run * 16 + (i % 2) * 8 + i / 2;
}

// The last vector of a row (the last pair for BF16 rows with an even number of vectors) is read
// with a dword mask, so that a row that ends at the end of its allocation is never read past and
// no branch on the head size sits in the loops (branches there made g++ spill the accumulators).
// Dword granularity: 16-bit rows need an even head size, Q8Row rows a multiple of 4 (every real
// model; RoPE needs even head sizes); other sizes take the shared path.
inline bool f2_tail_ok(KvFormat f, int64_t hd) {
  switch (f) {
    case KvFormat::F32: return true;
    case KvFormat::F16:
    case KvFormat::BF16: return hd % 2 == 0;
    case KvFormat::Q8Row: return hd % 4 == 0;
  }
  return false;
}

// Dword lanes of the last unit that hold row data.
inline __m256i f2_tail_mask(KvFormat f, int nch, int64_t hd) {
  int64_t n = 0;
  switch (f) {
    case KvFormat::F32: n = hd - 8 * (nch - 1); break;
    case KvFormat::F16: n = (hd - 8 * (nch - 1)) / 2; break;
    case KvFormat::Q8Row: n = (hd - 8 * (nch - 1)) / 4; break;
    case KvFormat::BF16: n = (hd - 16 * ((nch - 1) / 2)) / 2; break;  // plain tail or last pair
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane);
}

// Vector c (row layout) of a stored row of NCH vectors, widened to float32 exactly as decode_row.
// tm: f2_tail_mask of the row shape.
template <KvFormat F, int NCH>
LCX_F2_INLINE __m256 load_vec(const uint8_t* src, int c, __m256i tm) {
  if constexpr (F == KvFormat::F32) {
    const float* s = reinterpret_cast<const float*>(src) + 8 * c;
    return c == NCH - 1 ? _mm256_maskload_ps(s, tm) : _mm256_loadu_ps(s);
  } else if constexpr (F == KvFormat::F16) {
    const auto* s = reinterpret_cast<const int*>(src + 16 * c);
    const __m128i w = c == NCH - 1 ? _mm_maskload_epi32(s, _mm256_castsi256_si128(tm))
                                   : _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    return _mm256_cvtph_ps(w);
  } else if constexpr (F == KvFormat::BF16) {
    const auto* s = reinterpret_cast<const int*>(src + 32 * (c / 2));
    if (NCH % 2 == 1 && c == NCH - 1) {  // the plain tail vector of <= 8 columns
      const __m128i w = _mm_maskload_epi32(s, _mm256_castsi256_si128(tm));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(w), 16));
    }
    const __m256i w = NCH % 2 == 0 && c / 2 == NCH / 2 - 1 ? _mm256_maskload_epi32(s, tm)
                                                          : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
    // Even columns: the low half of each 32-bit pair shifted up; odd: the high half in place.
    if (c % 2 == 0) return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    return _mm256_castsi256_ps(_mm256_blend_epi16(w, _mm256_setzero_si256(), 0x55));
  } else {  // Q8Row: float scale, then int8 values
    float d;
    std::memcpy(&d, src, sizeof d);
    const int8_t* q = reinterpret_cast<const int8_t*>(src + sizeof d) + 8 * c;
    const __m128i w = c == NCH - 1 ? _mm_maskload_epi32(reinterpret_cast<const int*>(q), _mm256_castsi256_si128(tm))
                                   : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q));
    return _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w)));
  }
}

// Sums of 8 vectors: lane i = sum of the lanes of x[i].
LCX_F2_INLINE __m256 reduce8(const __m256 (&x)[8]) {
  const __m256 h01 = _mm256_hadd_ps(x[0], x[1]), h23 = _mm256_hadd_ps(x[2], x[3]);
  const __m256 h45 = _mm256_hadd_ps(x[4], x[5]), h67 = _mm256_hadd_ps(x[6], x[7]);
  const __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Sums of 4 vectors: lane i = sum of the lanes of x[i].
LCX_F2_INLINE __m128 reduce4(__m256 x0, __m256 x1, __m256 x2, __m256 x3) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(x0, x1), _mm256_hadd_ps(x2, x3));
  return _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
}

// Query rows (pre-scaled) and accumulators [m][8 * NCH] of one kv head in row layout, mx, l.
struct F2Head {
  float *q, *o, *mx, *l;
};

// Scores of one query row against 8 keys (rows k[0..7]): q.k for each, into s[0..7].
template <KvFormat F, int NCH>
LCX_F2_INLINE void scores_1x8(const uint8_t* const (&k)[8], __m256i tm, const float* q, float* s) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int c = 0; c < NCH; ++c) {
    const __m256 qv = _mm256_load_ps(q + 8 * c);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qv, load_vec<F, NCH>(k[i], c, tm), acc[i]);
  }
  _mm256_store_ps(s, reduce8(acc));
}

// Scores of R query rows (W floats apart) against 4 keys: each key vector loaded once for R rows.
template <KvFormat F, int NCH, int R>
LCX_F2_INLINE void scores_rx4(const uint8_t* const* k, __m256i tm, const float* q, int64_t W, float* s, int64_t ls) {
  __m256 acc[R][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int c = 0; c < NCH; ++c) {
    __m256 kv[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) kv[i] = load_vec<F, NCH>(k[i], c, tm);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 qv = _mm256_load_ps(q + r * W + 8 * c);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_fmadd_ps(qv, kv[i], acc[r][i]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) _mm_store_ps(s + r * ls, reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
}

template <KvFormat F, int NCH, int R>
LCX_F2_INLINE void scores_rx4_n(int64_t rows, const uint8_t* const* k, __m256i tm, const float* q, int64_t W, float* s,
                         int64_t ls) {
  if (rows == R) return scores_rx4<F, NCH, R>(k, tm, q, W, s, ls);
  if constexpr (R > 1) scores_rx4_n<F, NCH, R - 1>(rows, k, tm, q, W, s, ls);
}

// Scores [m][8] of one kv head's m query rows against the 8 keys k (the tile's rows of head g).
template <KvFormat F, int NCH>
LCX_F2_INLINE void tile_scores(const uint8_t* const (&k)[8], __m256i tm, const F2Head& h, int64_t m, float* s) {
  constexpr int W = 8 * NCH;
  if (m == 1) return scores_1x8<F, NCH>(k, tm, h.q, s);
  for (int64_t r0 = 0; r0 < m; r0 += 2) {
    const int64_t rows = imin(2, m - r0);
    scores_rx4_n<F, NCH, 2>(rows, k, tm, h.q + r0 * W, W, s + r0 * 8, 8);
    scores_rx4_n<F, NCH, 2>(rows, k + 4, tm, h.q + r0 * W, W, s + r0 * 8 + 4, 8);
  }
}

// P.V for R rows and the column vectors [C0, C0 + CB) of the row layout: accumulators in
// registers across the tile's nt keys, each value vector loaded (and widened) once for R rows.
template <KvFormat F, int NCH, int R, int C0, int CB>
LCX_F2_INLINE void pv_block(const uint8_t* const (&v)[8], int64_t nt, __m256i tm, const float* p, float* o) {
  constexpr int W = 8 * NCH;
  __m256 acc[R][CB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CB; ++c) acc[r][c] = _mm256_load_ps(o + r * W + 8 * (C0 + c));
  for (int64_t j = 0; j < nt; ++j) {
    __m256 pj[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) pj[r] = _mm256_broadcast_ss(p + r * 8 + j);
#pragma GCC unroll 8
    for (int c = 0; c < CB; ++c) {
      const __m256 x = load_vec<F, NCH>(v[j], C0 + c, tm);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(pj[r], x, acc[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CB; ++c) _mm256_store_ps(o + r * W + 8 * (C0 + c), acc[r][c]);
}

// All NCH column vectors in blocks of CB (R * CB accumulators, R broadcasts and a value vector
// within the 16 registers). CB is even so that BF16 pairs never straddle two blocks.
template <KvFormat F, int NCH, int R, int CB, int C0 = 0>
LCX_F2_INLINE void pv_cols(const uint8_t* const (&v)[8], int64_t nt, __m256i tm, const float* p, float* o) {
  constexpr int n = NCH - C0 < CB ? NCH - C0 : CB;
  pv_block<F, NCH, R, C0, n>(v, nt, tm, p, o);
  if constexpr (C0 + n < NCH) pv_cols<F, NCH, R, CB, C0 + n>(v, nt, tm, p, o);
}

template <KvFormat F, int NCH, int R>
LCX_F2_INLINE void pv_rows_n(int64_t rows, const uint8_t* const (&v)[8], int64_t nt, __m256i tm, const float* p, float* o) {
  if (rows == R) return pv_cols<F, NCH, R, R == 1 ? 8 : 4>(v, nt, tm, p, o);
  if constexpr (R > 1) pv_rows_n<F, NCH, R - 1>(rows, v, nt, tm, p, o);
}

// Software prefetch (into L2) of rows of tokens [t0, t1) of kv head g, K and V, every cache line
// of each row: as on AVX-512, a head row at a time between the key products keeps a steady
// stream of requests in flight (the rows of a tile are read head by head, token_stride apart).
inline int64_t f2_prefetch_tokens() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_ATTN_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(32);
  }();
  return d;
}

inline void prefetch_row(const uint8_t* row, size_t bytes) {
  const uintptr_t end = reinterpret_cast<uintptr_t>(row + bytes);
  for (uintptr_t a = reinterpret_cast<uintptr_t>(row) & ~uintptr_t(63); a < end; a += 64)
    _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T1);
}

// Rows of kv head g for tokens [t0, t1): keys, and values unless keys_only.
inline void prefetch_rows(const KvSpan& span, int64_t g, int64_t t0, int64_t t1, bool keys_only) {
  for (int64_t t = t0; t < t1; ++t) {
    const size_t at = size_t(t) * span.token_stride + size_t(g) * span.head_stride;
    prefetch_row(span.k + at, span.head_stride);
    if (!keys_only) prefetch_row(span.v + at, span.head_stride);
  }
}

// Query rows of every kv head in row layout, pre-scaled (o, mx, l zeroed). Returns the score
// buffer [n_kv * m, 8].
template <KvFormat F, int NCH>
float* f2_setup(const AttentionArgs& a, float* scratch, F2Head* heads) {
  constexpr int W = 8 * NCH;
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim, n_kv = a.n_head_kv;
  float* sbuf = align64(scratch);  // [n_kv * m, 8]
  float* per_g = align64(sbuf + n_kv * m * 8);
  const int64_t g_stride = round_up(2 * m * W + 2 * m, 16);
  for (int64_t g = 0; g < n_kv; ++g) {
    float* base = per_g + g * g_stride;
    F2Head& h = heads[g];
    h = {base, base + m * W, base + 2 * m * W, base + 2 * m * W + m};
    for (int64_t r = 0; r < m; ++r) {
      const float* src = a.q + ((r / group) * a.n_head + g * group + r % group) * hd;
      for (int64_t k = 0; k < W; ++k) h.q[r * W + k] = 0.0f;
      for (int64_t k = 0; k < hd; ++k) h.q[r * W + f2_layout_pos(F, k, hd)] = src[k] * a.scale;
      for (int64_t k = 0; k < W; ++k) h.o[r * W + k] = 0.0f;
      h.mx[r] = -INFINITY;
      h.l[r] = 0.0f;
    }
  }
  return sbuf;
}

// Rows of kv head g for the 8 keys of the tile at t0 (keys past nt repeat the first: their
// scores are masked to -inf, so their probabilities are exactly 0 and P.V skips them anyway).
inline void tile_rows(const uint8_t* base, const KvSpan& span, int64_t g, int64_t t0, int64_t nt,
                      const uint8_t* (&rows)[8]) {
  const uint8_t* r0 = base + size_t(t0) * span.token_stride + size_t(g) * span.head_stride;
  for (int64_t j = 0; j < 8; ++j) rows[j] = r0 + size_t(j < nt ? j : 0) * span.token_stride;
}

// Keys [t_begin, t_end) of the span for all kv heads and their m query rows, in tiles of 8 tokens,
// head by head within a tile: scores, online softmax update, P.V.
template <KvFormat F, int NCH>
void f2_range(const AttentionArgs& a, const KvSpan& span, bool mem, int64_t t_begin, int64_t t_end, float* states,
              float* scratch) {
  constexpr int W = 8 * NCH;
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim, n_kv = a.n_head_kv;
  F2Head heads[256];
  float* sbuf = f2_setup<F, NCH>(a, scratch, heads);
  const __m256i tm = f2_tail_mask(F, NCH, hd);
  const int64_t pfd = f2_prefetch_tokens();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kF2Tile) {
    const int64_t nt = imin(kF2Tile, t_end - t0);
    const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(nt)), lane));
    const int64_t pf0 = t0 + pfd, pf1 = imin(t0 + nt + pfd, t_end);
    for (int64_t g = 0; g < n_kv; ++g) {
      if (pfd > 0 && pf0 < pf1) prefetch_rows(span, g, pf0, pf1, false);
      F2Head& h = heads[g];
      const uint8_t* krows[8];
      const uint8_t* vrows[8];
      tile_rows(span.k, span, g, t0, nt, krows);
      tile_rows(span.v, span, g, t0, nt, vrows);
      float* s = sbuf + g * m * 8;
      tile_scores<F, NCH>(krows, tm, h, m, s);
      // Online softmax per row; accumulators rescaled by exp(mx_old - mx_new).
      for (int64_t r = 0; r < m; ++r) {
        __m256 sv = _mm256_blendv_ps(ninf, _mm256_load_ps(s + r * 8), live);
        if (mem) {
          // LongLLaMA's floor on memory scores (masked lanes stay -inf: max(-inf, floor) would not)
          sv = _mm256_blendv_ps(sv, _mm256_max_ps(sv, _mm256_set1_ps(a.mem_score_floor)), live);
        } else if (t0 + nt - 1 > a.n_past) {
          // Causal: row r (query r / group) sees local keys up to n_past + its index.
          const int64_t lim = a.n_past + r / group - t0;  // last visible lane
          const __m256 vis = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(imin(lim + 1, 8))), lane));
          sv = _mm256_blendv_ps(ninf, sv, vis);
        }
        const float mo = h.mx[r], tmax = V::hmax(sv);
        const float mn = tmax > mo ? tmax : mo;
        const float mu = mn == -INFINITY ? 0.0f : mn;
        const __m256 pv = V::exp(_mm256_sub_ps(sv, _mm256_set1_ps(mu)));
        _mm256_store_ps(s + r * 8, pv);
        // exp(mo - mu) is exactly 1 when the running max did not move: skip the exp then.
        float al = 1.0f;
        if (mn != mo) al = _mm256_cvtss_f32(V::exp(_mm256_set1_ps(mo - mu)));
        h.l[r] = h.l[r] * al + V::hsum(pv);
        h.mx[r] = mn;
        if (al != 1.0f) {
          float* o = h.o + r * W;
          const __m256 va = _mm256_set1_ps(al);
          for (int c = 0; c < NCH; ++c) _mm256_store_ps(o + 8 * c, _mm256_mul_ps(_mm256_load_ps(o + 8 * c), va));
        }
      }
      for (int64_t r0 = 0; r0 < m; r0 += 2)
        pv_rows_n<F, NCH, 2>(imin(2, m - r0), vrows, nt, tm, s + r0 * 8, h.o + r0 * W);
    }
  }
  for (int64_t g = 0; g < n_kv; ++g) {
    const F2Head& h = heads[g];
    float* dst = states + g * m * (hd + 2);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t k = 0; k < hd; ++k) dst[r * hd + k] = h.o[r * W + f2_layout_pos(F, k, hd)];
    for (int64_t r = 0; r < m; ++r) {
      dst[m * hd + r] = h.mx[r];
      dst[m * hd + m + r] = h.l[r];
    }
  }
}

template <KvFormat F, int NCH>
void f2_scores(const AttentionArgs& a, int64_t t_begin, int64_t t_end, float* out, int64_t ld, float* scratch) {
  const int64_t m = a.n_q * (a.n_head / a.n_head_kv), n_kv = a.n_head_kv, hd = a.head_dim;
  F2Head heads[256];
  float* sbuf = f2_setup<F, NCH>(a, scratch, heads);
  const __m256i tm = f2_tail_mask(F, NCH, hd);
  const int64_t pfd = f2_prefetch_tokens();
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kF2Tile) {
    const int64_t nt = imin(kF2Tile, t_end - t0);
    for (int64_t g = 0; g < n_kv; ++g) {
      if (pfd > 0 && t0 + pfd < t_end) prefetch_rows(a.mem, g, t0 + pfd, imin(t0 + nt + pfd, t_end), true);
      const uint8_t* krows[8];
      tile_rows(a.mem.k, a.mem, g, t0, nt, krows);
      float* s = sbuf + g * m * 8;
      tile_scores<F, NCH>(krows, tm, heads[g], m, s);
      for (int64_t r = 0; r < m; ++r) {
        float* dst = out + (g * m + r) * ld + t0;
        for (int64_t j = 0; j < nt; ++j) dst[j] = s[r * 8 + j] < a.mem_score_floor ? a.mem_score_floor : s[r * 8 + j];
      }
    }
  }
}

template <KvFormat F>
bool f2_dispatch(const AttentionArgs& a, const KvSpan& span, bool mem, int64_t t0, int64_t t1, float* states,
                 float* scratch, float* out, int64_t ld) {
  // out != nullptr: memory scores (top-k) instead of the softmax state.
#define LCX_F2_CASE(n)                                      \
  case n:                                                   \
    if (out != nullptr)                                     \
      f2_scores<F, n>(a, t0, t1, out, ld, scratch);         \
    else                                                    \
      f2_range<F, n>(a, span, mem, t0, t1, states, scratch); \
    return true;
  switch (f2_chunks(F, a.head_dim)) {
    LCX_F2_CASE(1) LCX_F2_CASE(2) LCX_F2_CASE(3) LCX_F2_CASE(4) LCX_F2_CASE(5) LCX_F2_CASE(6) LCX_F2_CASE(7)
    LCX_F2_CASE(8) LCX_F2_CASE(9) LCX_F2_CASE(10) LCX_F2_CASE(11) LCX_F2_CASE(12) LCX_F2_CASE(13) LCX_F2_CASE(14)
    LCX_F2_CASE(15) LCX_F2_CASE(16)
    default: return false;
  }
#undef LCX_F2_CASE
}

bool f2_any(const AttentionArgs& a, const KvSpan& span, bool mem, int64_t t0, int64_t t1, float* states,
            float* scratch, float* out, int64_t ld) {
  if (!f2_tail_ok(span.fmt, a.head_dim)) return false;
  switch (span.fmt) {
    case KvFormat::F32: return f2_dispatch<KvFormat::F32>(a, span, mem, t0, t1, states, scratch, out, ld);
    case KvFormat::F16: return f2_dispatch<KvFormat::F16>(a, span, mem, t0, t1, states, scratch, out, ld);
    case KvFormat::BF16: return f2_dispatch<KvFormat::BF16>(a, span, mem, t0, t1, states, scratch, out, ld);
    case KvFormat::Q8Row: return f2_dispatch<KvFormat::Q8Row>(a, span, mem, t0, t1, states, scratch, out, ld);
  }
  return false;
}

void fused_narrow_range(const AttentionArgs& a, bool mem, int64_t t_begin, int64_t t_end, float* states,
                        float* scratch) {
  const KvSpan& span = mem ? a.mem : a.local;
  if (!mem) t_end = imin(t_end, a.n_past + a.n_q);
  const int64_t m = a.n_q * (a.n_head / a.n_head_kv);
  const bool fits = a.head_dim <= 8 * kF2MaxCh && m <= 15 && a.n_head_kv <= 256 && a.n_head_kv * m <= 256;
  if (!(fits && f2_any(a, span, mem, t_begin, t_end, states, scratch, nullptr, 0)))
    narrow_range(a, mem, t_begin, t_end, states, scratch);
}

// Callers check the shape first (head_dim <= 128, few rows, n_head_kv <= 256).
void fused_mem_scores_range(const AttentionArgs& a, int64_t t0, int64_t t1, float* s, int64_t ld, float* scratch) {
  if (f2_any(a, a.mem, true, t0, t1, nullptr, scratch, s, ld)) return;
  // Odd head sizes: decode each tile and take the dot products from float rows.
  const int64_t m = a.n_q * (a.n_head / a.n_head_kv), hd = a.head_dim, group = a.n_head / a.n_head_kv;
  float* row = align64(scratch);
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t g = 0; g < a.n_head_kv; ++g) {
      decode_row(a.mem.fmt, a.mem.k + size_t(t) * a.mem.token_stride + size_t(g) * a.mem.head_stride, hd, row);
      for (int64_t r = 0; r < m; ++r) {
        const float* q = a.q + ((r / group) * a.n_head + g * group + r % group) * hd;
        float d = 0.0f;
        for (int64_t k = 0; k < hd; ++k) d += q[k] * a.scale * row[k];
        s[(g * m + r) * ld + t] = d < a.mem_score_floor ? a.mem_score_floor : d;
      }
    }
  }
}

}  // namespace

}  // namespace lcx::kernels::attn_avx2

LCX_ISA_END

#endif  // x86-64
