// AVX-512 flash attention: the vector primitives and row decoders of this instruction set around
// the shared algorithm in attention_simd.inc. Chosen at run time by attention.cpp; the scalar
// oracle (scalar::attention_items) is the test reference.
//
// As in ops_avx512.cpp, the instruction set comes from `LCX_ISA_BEGIN` (kernels/isa_region.h), headers are
// included before it and no STL templates are used after it.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/attention_internal.h"
#include "runtime/dtype.h"
#include "kernels/isa_region.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // a GCC-only warning group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

namespace lcx::kernels::attn_avx512 {
namespace {

constexpr KernelIsa kIsa = KernelIsa::Avx512;
constexpr int kNR = 12;  // 12 rows x 2 vectors = 24 of the 32 zmm registers accumulate

struct V {
  using T = __m512;
  static constexpr int L = 16;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T zero() { return _mm512_setzero_ps(); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  // x <= y ? a : b
  static T select_le(T x, T y, T a, T b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_LE_OQ), b, a); }
  // x == y ? a : b
  static T select_eq(T x, T y, T a, T b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_EQ_OQ), b, a); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
  static float hmax(T v) { return _mm512_reduce_max_ps(v); }
  // exp(x) for x <= 0 to ~1 ulp (Cody-Waite reduction, degree-7 Taylor polynomial, as exp512 in
  // ops_avx512.cpp); exactly 0 below -87.3 (where expf is subnormal) and for -inf, as the
  // oracle's exp(-inf) gives for masked keys.
  static T exp(T x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
    const T xc = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const T n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    T p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    // p * 2^n in one vscalef (n is integral and >= -126 here), in place of building 2^n in the
    // exponent field (convert, add, shift, multiply): the softmax runs once per score.
    return _mm512_maskz_scalef_ps(live, p, n);
  }
};

// One key/value row to float32; exact (the same values kv_decode gives).
void decode_row(KvFormat f, const uint8_t* src, int64_t hd, float* dst) {
  int64_t i = 0;
  switch (f) {
    case KvFormat::F32: std::memcpy(dst, src, size_t(hd) * 4); return;
    case KvFormat::F16: {
      const auto* s = reinterpret_cast<const uint16_t*>(src);
      for (; i + 16 <= hd; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
      if (i < hd) {
        const __mmask16 m = __mmask16((1u << (hd - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + i)));
      }
      return;
    }
    case KvFormat::BF16: {
      const auto* s = reinterpret_cast<const uint16_t*>(src);
      for (; i < hd; i += 16) {
        const __mmask16 m = hd - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (hd - i)) - 1u);
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
      return;
    }
    case KvFormat::Q8Row: {
      float d;
      std::memcpy(&d, src, sizeof d);
      const auto* q = reinterpret_cast<const int8_t*>(src + sizeof d);
      const __m512 vd = _mm512_set1_ps(d);
      for (; i < hd; i += 16) {
        const __mmask16 m = hd - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (hd - i)) - 1u);
        const __m512i w = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_mul_ps(vd, _mm512_cvtepi32_ps(w)));
      }
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
// Memory tiles as bf16 dot products (mem_bf16_dot), defined below with the avx512bf16 target.
namespace {
struct Wide;
LCX_ISA_END  // regions do not nest: the outer one resumes after this one
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")
bool wide_mem_tile_bf16(const AttentionArgs& a, const AttnBlock& b, Wide& w, const KvSpan& span, int64_t t0,
                        int64_t nt);
LCX_ISA_END
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
}  // namespace
#define LCX_ATTN_WIDE_MEM_TILE wide_mem_tile_bf16

#include "kernels/attention_simd.inc"

// ---- bf16 memory tiles (LONGCTX_FAST_BF16=1, BF16 memory, prompt blocks) --------------------------
//
// vdpbf16ps multiplies pairs of bf16 and adds both products to a float32 lane: 32 MACs per
// instruction against 16 for vfmadd231ps, on this core's one 512-bit multiply pipe. BF16 memory
// keys are read in place (a 32-bit broadcast is the pair (k[d], k[d+1]) of one key), queries are
// packed once per block as pairs along head_dim, probabilities as pairs along keys and values as
// pairs of two keys' rows. Scores and the softmax stay float32. Not exact: queries and
// probabilities are rounded to bf16 (relative 2^-9), as a bf16 inference would compute them.
LCX_ISA_END  // regions do not nest: the outer one resumes after this one
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")
namespace {

// Lane i of the result: bf16(lo[i]) | bf16(hi[i]) << 16 (round to nearest even).
inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
  const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));  // [lo 0..15, hi 0..15]
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                       21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, both);
}

// C[r, lanes] (=|+=) sum_x B[r * sa + x * sx] . A[x, lanes] over bf16 pairs (as micro, bf16).
template <int NR, int NV>
void micro_bf16(const uint32_t* A, int64_t lda, const uint32_t* B, int64_t sa, int64_t sx, int64_t nx, float* C,
                int64_t ldc, const float* alpha) {
  __m512 acc[NR][NV];
  if (alpha != nullptr) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m512 al = _mm512_load_ps(alpha + v * 16);
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) acc[r][v] = _mm512_mul_ps(_mm512_load_ps(C + r * ldc + v * 16), al);
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t x = 0; x < nx; ++x) {
    __m512i av[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) av[v] = _mm512_load_si512(A + x * lda + v * 16);
    const uint32_t* bx = B + x * sx;
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m512i br = _mm512_set1_epi32(int(bx[r * sa]));
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], reinterpret_cast<__m512bh>(br), reinterpret_cast<__m512bh>(av[v]));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm512_store_ps(C + r * ldc + v * 16, acc[r][v]);
}

template <int NV>
void micro_bf16_rows(int nr, const uint32_t* A, int64_t lda, const uint32_t* B, int64_t sa, int64_t sx, int64_t nx,
                     float* C, int64_t ldc, const float* alpha) {
  switch (nr) {
#define LCX_MICRO_CASE(n) \
  case n: micro_bf16<(n <= kNR ? n : 1), NV>(A, lda, B, sa, sx, nx, C, ldc, alpha); return;
    LCX_MICRO_CASE(1) LCX_MICRO_CASE(2) LCX_MICRO_CASE(3) LCX_MICRO_CASE(4) LCX_MICRO_CASE(5) LCX_MICRO_CASE(6)
    LCX_MICRO_CASE(7) LCX_MICRO_CASE(8) LCX_MICRO_CASE(9) LCX_MICRO_CASE(10) LCX_MICRO_CASE(11) LCX_MICRO_CASE(12)
#undef LCX_MICRO_CASE
    default: return;
  }
}

void gemm_lanes_bf16(int64_t rows, int64_t mp, const uint32_t* A, const uint32_t* B, int64_t sa, int64_t sx,
                     int64_t nx, float* C, const float* alpha) {
  for (int64_t r0 = 0; r0 < rows; r0 += kNR) {
    const int nr = int(imin(kNR, rows - r0));
    int64_t v0 = 0;
    for (; v0 + 32 <= mp; v0 += 32)
      micro_bf16_rows<2>(nr, A + v0, mp, B + r0 * sa, sa, sx, nx, C + r0 * mp + v0, mp, alpha ? alpha + v0 : nullptr);
    if (v0 < mp)
      micro_bf16_rows<1>(nr, A + v0, mp, B + r0 * sa, sa, sx, nx, C + r0 * mp + v0, mp, alpha ? alpha + v0 : nullptr);
  }
}

// One memory tile [t0, t0 + nt) of kv head b.g; false (the float32 path runs) unless BF16 rows
// of even head_dim.
bool wide_mem_tile_bf16(const AttentionArgs& a, const AttnBlock& b, Wide& w, const KvSpan& span, int64_t t0,
                        int64_t nt) {
  if (span.fmt != KvFormat::BF16 || w.hd % 2 != 0 || span.token_stride % 4 != 0 || span.head_stride % 4 != 0)
    return false;
  const int64_t hd2 = w.hd / 2, mp = w.mp, np = (nt + 1) / 2;
  uint32_t* qp = reinterpret_cast<uint32_t*>(w.qp);
  if (t0 == 0) {  // first memory tile of the block: queries (already scaled) as pairs along head_dim
    for (int64_t x = 0; x < hd2; ++x)
      for (int64_t v = 0; v < mp; v += 16)
        _mm512_store_si512(qp + x * mp + v,
                           bf16_pairs(_mm512_load_ps(w.qt + 2 * x * mp + v), _mm512_load_ps(w.qt + (2 * x + 1) * mp + v)));
  }
  // S^T[j, lanes] = K[t0 + j] . Q, keys read in place.
  const size_t ts = span.token_stride / 4;
  const uint32_t* kb = reinterpret_cast<const uint32_t*>(span.k + size_t(t0) * span.token_stride + size_t(b.g) * span.head_stride);
  gemm_lanes_bf16(nt, mp, qp, kb, int64_t(ts), 1, hd2, w.s, nullptr);
  wide_softmax(w, nt, 2, t0, a.mem_score_floor);
  // P^T as pairs of keys, in place over S (pair x overwrites row x after reading rows 2x, 2x + 1).
  uint32_t* pp = reinterpret_cast<uint32_t*>(w.s);
  for (int64_t x = 0; x < np; ++x)
    for (int64_t v = 0; v < mp; v += 16) {
      const __m512 lo = _mm512_load_ps(w.s + 2 * x * mp + v);
      const __m512 hi = 2 * x + 1 < nt ? _mm512_load_ps(w.s + (2 * x + 1) * mp + v) : _mm512_setzero_ps();
      _mm512_store_si512(pp + x * mp + v, bf16_pairs(lo, hi));
    }
  // V as pairs of two keys' rows: vp[x, d] = (v[t0 + 2x, d], v[t0 + 2x + 1, d]).
  uint32_t* vp = reinterpret_cast<uint32_t*>(w.kt);
  const uint8_t* vb = span.v + size_t(b.g) * span.head_stride;
  for (int64_t x = 0; x < np; ++x) {
    const uint16_t* r0 = reinterpret_cast<const uint16_t*>(vb + size_t(t0 + 2 * x) * span.token_stride);
    const uint16_t* r1 = 2 * x + 1 < nt ? reinterpret_cast<const uint16_t*>(vb + size_t(t0 + 2 * x + 1) * span.token_stride) : nullptr;
    for (int64_t d = 0; d < w.hd; d += 16) {
      const __mmask16 m = w.hd - d >= 16 ? __mmask16(0xffff) : __mmask16((1u << (w.hd - d)) - 1u);
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r0 + d));
      const __m512i hi = r1 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r1 + d)) : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + x * w.hdp + d, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
  // O^T = alpha * O^T + V^T P^T.
  gemm_lanes_bf16(w.hd, mp, pp, vp, 1, w.hdp, np, w.o, w.alpha);
  return true;
}

}  // namespace
LCX_ISA_END
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

namespace {

// ---- fused decode ---------------------------------------------------------------------------------
//
// Decode reads every key and value row of the span once and does a few flops per byte, so it is
// bound by memory bandwidth only if the per-row work is small. The shared narrow path first
// decodes a 64-token tile of every head to float32 (a store and a reload per element) and then
// reduces each score with its own horizontal sum; this path instead converts rows in registers
// right after loading them and reduces 16 scores at once with one transpose-add tree.
//
// Rows live in registers as NCH vectors of 16 floats ("row layout"): F32/F16/Q8Row in column
// order, BF16 as pairs [even columns, odd columns] of each 32-column run, because a bf16 pair
// widens to two float32 with one shift and one and. Queries and the accumulators use the same
// layout, so dot products and P.V need no permutation until the final write-out.

constexpr int kFusedMaxCh = 8;    // head_dim <= 128
constexpr int64_t kFusedTile = 16;  // keys per online-softmax step: one vector of scores per row

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u); }
inline __mmask32 mask32(int64_t n) { return n >= 32 ? __mmask32(0xffffffffu) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1u); }

// BF16 rows: pairs layout for every full 32-column run; a last partial run of at most 16
// columns is one plain vector instead of a pair (head_dim 100, LongLLaMA-3B: 7 vectors, not 8 —
// an eighth less widening and FMA work per key in Q.K and P.V).
inline int fused_chunks(KvFormat f, int64_t hd) {
  if (f != KvFormat::BF16) return int((hd + 15) / 16);
  const int64_t tail = hd % 32;
  return 2 * int(hd / 32) + (tail == 0 ? 0 : tail <= 16 ? 1 : 2);
}

// Position in the row layout of column c (of a row of hd columns).
inline int64_t layout_pos(KvFormat f, int64_t c, int64_t hd) {
  if (f != KvFormat::BF16) return c;
  const int64_t run = c / 32, i = c % 32;
  if (run == hd / 32 && hd % 32 <= 16) return c;  // the plain tail vector
  return run * 32 + (i % 2) * 16 + i / 2;
}

template <KvFormat F, int NCH>
inline void load_row(const uint8_t* src, int64_t hd, __m512 (&x)[NCH]) {
  if constexpr (F == KvFormat::F32) {
    const float* s = reinterpret_cast<const float*>(src);
    for (int c = 0; c < NCH; ++c) x[c] = _mm512_maskz_loadu_ps(mask16(hd - 16 * c), s + 16 * c);
  } else if constexpr (F == KvFormat::F16) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    for (int c = 0; c < NCH; ++c) x[c] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask16(hd - 16 * c), s + 16 * c));
  } else if constexpr (F == KvFormat::BF16) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    const __m512i hi = _mm512_set1_epi32(int(0xffff0000u));
    for (int c = 0; c < NCH / 2; ++c) {
      const __m512i w = 32 * (c + 1) <= hd ? _mm512_loadu_si512(s + 32 * c) : _mm512_maskz_loadu_epi16(mask32(hd - 32 * c), s + 32 * c);
      x[2 * c] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
      x[2 * c + 1] = _mm512_castsi512_ps(_mm512_and_si512(w, hi));
    }
    if constexpr (NCH % 2 == 1) {  // plain tail of <= 16 columns (see fused_chunks)
      constexpr int c = NCH / 2;
      const __m256i w = _mm256_maskz_loadu_epi16(mask16(hd - 32 * c), s + 32 * c);
      x[NCH - 1] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16));
    }
  } else {  // Q8Row: float scale, then int8 values
    float d;
    std::memcpy(&d, src, sizeof d);
    const int8_t* q = reinterpret_cast<const int8_t*>(src + sizeof d);
    const __m512 vd = _mm512_set1_ps(d);
    for (int c = 0; c < NCH; ++c) {
      const __m512i w = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask16(hd - 16 * c), q + 16 * c));
      x[c] = _mm512_mul_ps(vd, _mm512_cvtepi32_ps(w));
    }
  }
}

// Query rows (pre-scaled) and accumulators [m][16 * NCH] of one kv head in row layout, mx, l.
struct FusedHead {
  float *q, *o, *mx, *l;
};

// 16 scores from 16 vectors of partial products (one per key) by a transpose-add tree, in two
// halves. reduce4, stages 1 and 2 for 4 keys: 128-bit lane group L of the result holds
// [key 0, key 1, key 2, key 3] summed over the lanes of L.
inline __m512 reduce4(__m512 x0, __m512 x1, __m512 x2, __m512 x3) {
  const __m512 u0 = _mm512_add_ps(_mm512_unpacklo_ps(x0, x1), _mm512_unpackhi_ps(x0, x1));
  const __m512 u1 = _mm512_add_ps(_mm512_unpacklo_ps(x2, x3), _mm512_unpackhi_ps(x2, x3));
  const __m512d a = _mm512_castps_pd(u0), b = _mm512_castps_pd(u1);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
}

// hsum_groups, stages 3 and 4: lane j = score of key j, from reduce4 of keys 0-3, 4-7, 8-11,
// 12-15 (v: 4 vectors).
inline __m512 hsum_groups(const float* v) {
  const __m512 v0 = _mm512_load_ps(v), v1 = _mm512_load_ps(v + 16), v2 = _mm512_load_ps(v + 32),
               v3 = _mm512_load_ps(v + 48);
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x88), _mm512_shuffle_f32x4(v0, v1, 0xdd));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(v2, v3, 0x88), _mm512_shuffle_f32x4(v2, v3, 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, 0x88), _mm512_shuffle_f32x4(w0, w1, 0xdd));
}

// Q.K of R query rows (W = 16 * NCH floats apart) against the rows of nj <= 4 consecutive keys
// of one kv head (kg: the first, token_stride apart; keys >= nj count as zero rows), reduced by
// reduce4 to one vector per query row (out, 64 floats apart). One query row (MHA decode) keeps
// the query in registers across the 4 keys.
template <KvFormat F, int NCH, int R>
inline void group_products(const uint8_t* kg, size_t token_stride, int64_t nj, int64_t hd, const float* q, float* out) {
  constexpr int W = 16 * NCH;
  __m512 x[R][4];
  __m512 qr[R == 1 ? NCH : 1];
  if constexpr (R == 1)
    for (int c = 0; c < NCH; ++c) qr[c] = _mm512_load_ps(q + 16 * c);
  for (int i = 0; i < 4; ++i) {
    if (i >= nj) {
      for (int r = 0; r < R; ++r) x[r][i] = _mm512_setzero_ps();
      continue;
    }
    __m512 k[NCH];
    load_row<F, NCH>(kg + size_t(i) * token_stride, hd, k);
    for (int r = 0; r < R; ++r) {
      const auto qv = [&](int c) { return R == 1 ? qr[c] : _mm512_load_ps(q + r * W + 16 * c); };
      __m512 s0 = _mm512_mul_ps(qv(0), k[0]), s1 = _mm512_setzero_ps();
      for (int c = 1; c < NCH; ++c) {
        if (c % 2) s1 = _mm512_fmadd_ps(qv(c), k[c], s1);
        else s0 = _mm512_fmadd_ps(qv(c), k[c], s0);
      }
      x[r][i] = _mm512_add_ps(s0, s1);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_store_ps(out + r * 64, reduce4(x[r][0], x[r][1], x[r][2], x[r][3]));
}

template <KvFormat F, int NCH, int R>
inline void group_products_n(int64_t rows, const uint8_t* kg, size_t token_stride, int64_t nj, int64_t hd,
                             const float* q, float* out) {
  if (rows == R) return group_products<F, NCH, R>(kg, token_stride, nj, hd, q, out);
  if constexpr (R > 1) group_products_n<F, NCH, R - 1>(rows, kg, token_stride, nj, hd, q, out);
}

// Scores step of a tile: acc[(g * m + r) * 4 + j / 4] = reduce4 of the partial products of head
// g's query row r with keys t0 + j .. t0 + j + 3 (zero rows past nt), keys in groups of 4 in
// storage order. The partial sums stay in registers until reduce4; the earlier layout stored a
// vector per (head, row, key) - 32 KiB per tile for LongLLaMA-3B's 32 heads, all of L1D -
// and reloaded every query vector per key.
//
// Software prefetch of the K and V rows kPrefetchTokens ahead into L2, issued a head row at a
// time between the key products, so that DRAM sees a steady stream of requests. Decode does
// ~20 cycles of work per key row and query row, which leaves the hardware prefetchers behind on
// two DRAM streams; prefetching whole 16-token tiles at once (3,200 lines per LongLLaMA-3B tile)
// came in bursts that the miss queues could not hold. 2 threads, alternated: LongLLaMA-3B
// memory layer over 32k bf16 keys 18.8-19.7 -> 16.0-16.8 ms, q8row memory 14.6-17.2 -> 9.8 ms,
// TinyLlama at depth 16k 2.3-3.0 -> 1.6 ms. LONGCTX_ATTN_PF=tokens overrides (0: off).
inline int64_t prefetch_tokens() {
  static const int64_t d = [] {
    const char* e = std::getenv("LONGCTX_ATTN_PF");
    return e ? int64_t(std::atoll(e)) : int64_t(32);
  }();
  return d;
}

constexpr int kGroupRows = 4;  // query rows per group_products call: 4 x 4 partial vectors

template <KvFormat F, int NCH>
inline void key_products(const AttentionArgs& a, const KvSpan& span, int64_t t0, int64_t nt, int64_t m,
                         const FusedHead* heads, float* acc, int64_t pf_end = 0) {
  constexpr int W = 16 * NCH;
  const int64_t hd = a.head_dim, n_kv = a.n_head_kv;
  const int64_t pfd = prefetch_tokens();
  for (int64_t j0 = 0; j0 < kFusedTile; j0 += 4) {
    const int64_t nj = imin(4, nt - j0);
    if (nj <= 0) {
      for (int64_t i = 0; i < n_kv * m; ++i) _mm512_store_ps(acc + (i * 4 + j0 / 4) * 16, _mm512_setzero_ps());
      continue;
    }
    const uint8_t* kt = span.k + size_t(t0 + j0) * span.token_stride;
    // Tokens of this group whose rows pfd ahead get prefetched (pf_end 0: none).
    const int64_t npf = pfd > 0 ? imin(nj, pf_end - (t0 + j0 + pfd)) : 0;
    for (int64_t g = 0; g < n_kv; ++g) {
      for (int64_t i = 0; i < npf; ++i) {
        const size_t base = size_t(t0 + j0 + i + pfd) * span.token_stride + size_t(g) * span.head_stride;
        for (size_t off = 0; off < span.head_stride; off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(span.k + base + off), _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(span.v + base + off), _MM_HINT_T1);
        }
      }
      const uint8_t* kg = kt + size_t(g) * span.head_stride;
      for (int64_t r0 = 0; r0 < m; r0 += kGroupRows)
        group_products_n<F, NCH, kGroupRows>(imin(kGroupRows, m - r0), kg, span.token_stride, nj, hd,
                                             heads[g].q + r0 * W, acc + ((g * m + r0) * 4 + j0 / 4) * 16);
    }
  }
}

// P.V of one tile for `R` query rows of one kv head with their accumulators in registers: each
// value row is loaded (and widened) once per R rows and the accumulators are loaded and stored
// once per tile, not once per key. With GQA (TinyLlama: 8 query rows per kv head at decode) the
// per-key loop of the storage-order path was bound by its accumulator loads and stores (NCH of
// each per key and row); here it is bound by the FMAs. (TinyLlama layer at depth 16k, 2
// threads: f32 cache 3.5 -> 2.8 ms, f16 cache 2.9 -> 1.6 ms.) With one row per kv head (MHA
// decode: LongLLaMA-3B) it also beats the storage-order walk now that the tile is prefetched
// into L2: LongLLaMA3B_decode_mem32k, 2 threads, alternated, 17.4 vs 19.1 ms.
template <KvFormat F, int NCH, int R>
inline void pv_rows(const uint8_t* vb, size_t token_stride, int64_t nt, int64_t hd, const float* p, float* o) {
  constexpr int W = 16 * NCH;
  __m512 acc[R][NCH];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NCH; ++c) acc[r][c] = _mm512_load_ps(o + r * W + 16 * c);
  for (int64_t j = 0; j < nt; ++j) {
    __m512 v[NCH];
    load_row<F, NCH>(vb + size_t(j) * token_stride, hd, v);
    for (int r = 0; r < R; ++r) {
      const __m512 pj = _mm512_set1_ps(p[r * 16 + j]);
      for (int c = 0; c < NCH; ++c) acc[r][c] = _mm512_fmadd_ps(pj, v[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NCH; ++c) _mm512_store_ps(o + r * W + 16 * c, acc[r][c]);
}

template <KvFormat F, int NCH, int R>
inline void pv_rows_n(int64_t rows, const uint8_t* vb, size_t token_stride, int64_t nt, int64_t hd, const float* p,
                      float* o) {
  if (rows == R) return pv_rows<F, NCH, R>(vb, token_stride, nt, hd, p, o);
  if constexpr (R > 1) pv_rows_n<F, NCH, R - 1>(rows, vb, token_stride, nt, hd, p, o);
}

// Rows per register block: R * NCH accumulators plus NCH value vectors within 32 registers.
constexpr int pv_block_rows(int nch) { return nch <= 2 ? 8 : nch <= 4 ? 6 : nch <= 6 ? 4 : 3; }

template <KvFormat F, int NCH>
void pv_tile_blocked(const KvSpan& span, int64_t t0, int64_t nt, int64_t hd, int64_t m, int64_t n_kv,
                     const FusedHead* heads, const float* pbuf) {
  constexpr int RB = pv_block_rows(NCH), W = 16 * NCH;
  for (int64_t g = 0; g < n_kv; ++g) {
    const uint8_t* vb = span.v + size_t(t0) * span.token_stride + size_t(g) * span.head_stride;
    for (int64_t r0 = 0; r0 < m; r0 += RB)
      pv_rows_n<F, NCH, RB>(imin(RB, m - r0), vb, span.token_stride, nt, hd, pbuf + (g * m + r0) * 16,
                            heads[g].o + r0 * W);
  }
}

// Query rows of every kv head in row layout, pre-scaled (heads[g].q; o, mx, l zeroed).
template <KvFormat F, int NCH>
float* fused_setup(const AttentionArgs& a, float* scratch, FusedHead* heads, float** pbuf_out) {
  constexpr int W = 16 * NCH;
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim, n_kv = a.n_head_kv;
  const int64_t nh = n_kv * m;
  float* acc = align64(scratch);         // [nh, 4 key groups, 16 lanes] (key_products)
  float* pbuf = align64(acc + nh * 64);  // [nh, 16]
  float* per_g = align64(pbuf + nh * 16);
  const int64_t g_stride = round_up(2 * m * W + 2 * m, 16);
  for (int64_t g = 0; g < n_kv; ++g) {
    float* base = per_g + g * g_stride;
    FusedHead& h = heads[g];
    h = {base, base + m * W, base + 2 * m * W, base + 2 * m * W + m};
    for (int64_t r = 0; r < m; ++r) {
      const float* src = a.q + ((r / group) * a.n_head + g * group + r % group) * hd;
      for (int64_t k = 0; k < W; ++k) h.q[r * W + k] = 0.0f;
      for (int64_t k = 0; k < hd; ++k) h.q[r * W + layout_pos(F, k, hd)] = src[k] * a.scale;
      for (int64_t k = 0; k < W; ++k) h.o[r * W + k] = 0.0f;
      h.mx[r] = -INFINITY;
      h.l[r] = 0.0f;
    }
  }
  *pbuf_out = pbuf;
  return acc;
}

// Keys [t_begin, t_end) of the span for all kv heads and their m query rows each, in tiles of
// 16 tokens. Memory is read in storage order (token-major, all heads of a token adjacent), so the
// hardware prefetchers see two plain sequential streams, K and V: a head-by-head walk would read
// 100-200 byte rows a token_stride apart and wait on DRAM latency instead (LongLLaMA-3B layer, 32k bf16 memory
// keys, 2 threads: 37 ms per decode step with the shared path, ~20 ms with this one).
// Per tile: every (head, row, key) partial dot product into acc, one transpose-add tree per
// (head, row) gives 16 scores, the online softmax update (running max, sum, rescale), then P.V
// head by head with the accumulators in registers (pv_tile_blocked; the tile is in L2 by then).
template <KvFormat F, int NCH>
void fused_range(const AttentionArgs& a, const KvSpan& span, bool mem, int64_t t_begin, int64_t t_end, float* states,
                 float* scratch) {
  constexpr int W = 16 * NCH;
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim, n_kv = a.n_head_kv;
  FusedHead heads[256];
  float* pbuf = nullptr;
  float* acc = fused_setup<F, NCH>(a, scratch, heads, &pbuf);
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kFusedTile) {
    const int64_t nt = imin(kFusedTile, t_end - t0);
    key_products<F, NCH>(a, span, t0, nt, m, heads, acc, t_end);
    // Online softmax per (head, row); accumulators rescaled by exp(mx_old - mx_new).
    const __mmask16 live = mask16(nt);
    for (int64_t g = 0; g < n_kv; ++g) {
      FusedHead& h = heads[g];
      for (int64_t r = 0; r < m; ++r) {
        __m512 s = _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), hsum_groups(acc + (g * m + r) * 64));
        if (mem) {
          s = _mm512_mask_max_ps(s, live, s, _mm512_set1_ps(a.mem_score_floor));  // LongLLaMA's floor
        } else if (t0 + nt - 1 > a.n_past) {
          // Causal: row r (query r / group) sees local keys up to n_past + its index.
          const int64_t lim = a.n_past + r / group - t0;  // last visible lane
          s = _mm512_mask_blend_ps(mask16(lim + 1), _mm512_set1_ps(-INFINITY), s);
        }
        const float mo = h.mx[r], tmax = _mm512_reduce_max_ps(s);
        const float mn = tmax > mo ? tmax : mo;
        const float mu = mn == -INFINITY ? 0.0f : mn;
        const __m512 pv = V::exp(_mm512_sub_ps(s, _mm512_set1_ps(mu)));
        _mm512_store_ps(pbuf + (g * m + r) * 16, pv);
        // exp(mo - mu) is exactly 1 when the running max did not move (most tiles once the
        // largest scores have been seen): skip the vector exp then.
        float al = 1.0f;
        if (mn != mo) {
          float al_arr[16];
          _mm512_storeu_ps(al_arr, V::exp(_mm512_set1_ps(mo - mu)));
          al = al_arr[0];
        }
        h.l[r] = h.l[r] * al + _mm512_reduce_add_ps(pv);
        h.mx[r] = mn;
        if (al != 1.0f) {
          float* o = h.o + r * W;
          const __m512 va = _mm512_set1_ps(al);
          for (int c = 0; c < NCH; ++c) _mm512_store_ps(o + 16 * c, _mm512_mul_ps(_mm512_load_ps(o + 16 * c), va));
        }
      }
    }
    pv_tile_blocked<F, NCH>(span, t0, nt, hd, m, n_kv, heads, pbuf);
  }
  for (int64_t g = 0; g < n_kv; ++g) {
    const FusedHead& h = heads[g];
    float* dst = states + g * m * (hd + 2);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t k = 0; k < hd; ++k) dst[r * hd + k] = h.o[r * W + layout_pos(F, k, hd)];
    for (int64_t r = 0; r < m; ++r) {
      dst[m * hd + r] = h.mx[r];
      dst[m * hd + m + r] = h.l[r];
    }
  }
}

template <KvFormat F, int NCH>
void fused_scores(const AttentionArgs& a, int64_t t_begin, int64_t t_end, float* out, int64_t ld, float* scratch) {
  const int64_t m = a.n_q * (a.n_head / a.n_head_kv), n_kv = a.n_head_kv;
  FusedHead heads[256];
  float* pbuf = nullptr;
  float* acc = fused_setup<F, NCH>(a, scratch, heads, &pbuf);
  const __m512 floor = _mm512_set1_ps(a.mem_score_floor);
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kFusedTile) {
    const int64_t nt = imin(kFusedTile, t_end - t0);
    key_products<F, NCH>(a, a.mem, t0, nt, m, heads, acc);
    for (int64_t i = 0; i < n_kv * m; ++i) {
      _mm512_mask_storeu_ps(out + i * ld + t0, mask16(nt), _mm512_max_ps(hsum_groups(acc + i * 64), floor));
    }
  }
}

template <KvFormat F>
bool scores_dispatch(const AttentionArgs& a, int64_t t0, int64_t t1, float* s, int64_t ld, float* scratch) {
  switch (fused_chunks(F, a.head_dim)) {
    case 1: fused_scores<F, 1>(a, t0, t1, s, ld, scratch); return true;
    case 2: fused_scores<F, 2>(a, t0, t1, s, ld, scratch); return true;
    case 3: fused_scores<F, 3>(a, t0, t1, s, ld, scratch); return true;
    case 4: fused_scores<F, 4>(a, t0, t1, s, ld, scratch); return true;
    case 5: fused_scores<F, 5>(a, t0, t1, s, ld, scratch); return true;
    case 6: fused_scores<F, 6>(a, t0, t1, s, ld, scratch); return true;
    case 7: fused_scores<F, 7>(a, t0, t1, s, ld, scratch); return true;
    case 8: fused_scores<F, 8>(a, t0, t1, s, ld, scratch); return true;
    default: return false;
  }
}

template <KvFormat F>
bool fused_dispatch(const AttentionArgs& a, const KvSpan& span, bool mem, int64_t t0, int64_t t1, float* states,
                    float* scratch) {
  switch (fused_chunks(F, a.head_dim)) {
    case 1: fused_range<F, 1>(a, span, mem, t0, t1, states, scratch); return true;
    case 2: fused_range<F, 2>(a, span, mem, t0, t1, states, scratch); return true;
    case 3: fused_range<F, 3>(a, span, mem, t0, t1, states, scratch); return true;
    case 4: fused_range<F, 4>(a, span, mem, t0, t1, states, scratch); return true;
    case 5: fused_range<F, 5>(a, span, mem, t0, t1, states, scratch); return true;
    case 6: fused_range<F, 6>(a, span, mem, t0, t1, states, scratch); return true;
    case 7: fused_range<F, 7>(a, span, mem, t0, t1, states, scratch); return true;
    case 8: fused_range<F, 8>(a, span, mem, t0, t1, states, scratch); return true;
    default: return false;
  }
}

void fused_narrow_range(const AttentionArgs& a, bool mem, int64_t t_begin, int64_t t_end, float* states,
                        float* scratch) {
  const KvSpan& span = mem ? a.mem : a.local;
  if (!mem) t_end = imin(t_end, a.n_past + a.n_q);
  const int64_t m = a.n_q * (a.n_head / a.n_head_kv);
  bool done = false;
  if (a.head_dim <= 16 * kFusedMaxCh && m <= 15 && a.n_head_kv <= 256 && a.n_head_kv * m <= 256) {
    switch (span.fmt) {
      case KvFormat::F32: done = fused_dispatch<KvFormat::F32>(a, span, mem, t_begin, t_end, states, scratch); break;
      case KvFormat::F16: done = fused_dispatch<KvFormat::F16>(a, span, mem, t_begin, t_end, states, scratch); break;
      case KvFormat::BF16: done = fused_dispatch<KvFormat::BF16>(a, span, mem, t_begin, t_end, states, scratch); break;
      case KvFormat::Q8Row: done = fused_dispatch<KvFormat::Q8Row>(a, span, mem, t_begin, t_end, states, scratch); break;
    }
  }
  if (!done) narrow_range(a, mem, t_begin, t_end, states, scratch);
}

// Callers check fused_scores_supported first (head_dim <= 128, few rows, n_head_kv <= 256).
void fused_mem_scores_range(const AttentionArgs& a, int64_t t0, int64_t t1, float* s, int64_t ld, float* scratch) {
  switch (a.mem.fmt) {
    case KvFormat::F32: scores_dispatch<KvFormat::F32>(a, t0, t1, s, ld, scratch); return;
    case KvFormat::F16: scores_dispatch<KvFormat::F16>(a, t0, t1, s, ld, scratch); return;
    case KvFormat::BF16: scores_dispatch<KvFormat::BF16>(a, t0, t1, s, ld, scratch); return;
    case KvFormat::Q8Row: scores_dispatch<KvFormat::Q8Row>(a, t0, t1, s, ld, scratch); return;
  }
}

}  // namespace

}  // namespace lcx::kernels::attn_avx512

#pragma GCC diagnostic pop
LCX_ISA_END

#endif  // x86-64
