// AVX-512 flash attention: the vector primitives and row decoders of this instruction set around
// the shared algorithm in attention_simd.inc. Chosen at run time by attention.cpp; the scalar
// oracle (scalar::attention_items) is the test reference.
//
// As in ops_avx512.cpp, the instruction set comes from `#pragma GCC target`, headers are
// included before it and no STL templates are used after it.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/attention_internal.h"
#include "runtime/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")

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
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(live, p, _mm512_castsi512_ps(e));
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

}  // namespace

#include "kernels/attention_simd.inc"

}  // namespace lcx::kernels::attn_avx512

#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // x86-64
