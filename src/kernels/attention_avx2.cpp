// AVX2 + FMA + F16C flash attention: the vector primitives and row decoders of this instruction
// set around the shared algorithm in attention_simd.inc. Chosen at run time by attention.cpp;
// the scalar oracle (scalar::attention_items) is the test reference.
//
// As in ops_avx2.cpp, the instruction set comes from `LCX_ISA_BEGIN` (kernels/isa_region.h), headers are included
// before it and no STL templates are used after it.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
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

}  // namespace

#include "kernels/attention_simd.inc"

}  // namespace lcx::kernels::attn_avx2

LCX_ISA_END

#endif  // x86-64
