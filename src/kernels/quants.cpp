// Unpacking of GGML block formats (see quants.h). Byte layouts are ggml-common.h's block_*
// structs; each case cites the fields in their order.
#include "kernels/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lcx::kernels {

namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q4_K / Q5_K sub-scales: 8 pairs of 6-bit (scale, min) packed in 12 bytes. Pairs 0-3 are the
// low 6 bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 take their low 4 bits from bytes
// 8-11 (scale: low nibble, min: high nibble) and their top 2 bits from the spare top bits of
// bytes 0-3 (scales) and 4-7 (mins). (get_scale_min_k4 in ggml-quants.c.)
void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// 32-value blocks with nibbles: byte j holds value j (low nibble) and j + 16 (high nibble); hb
// (Q5_0/Q5_1's qh as a 32-bit word) gives bit 4 of value i at bit i.
void nibbles32(const uint8_t* qs, uint32_t hb, bool high_bits, uint8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = uint8_t(qs[j] & 0x0f);
    q[j + 16] = uint8_t(qs[j] >> 4);
    if (high_bits) {
      q[j] = uint8_t(q[j] | (((hb >> j) & 1u) << 4));
      q[j + 16] = uint8_t(q[j + 16] | (((hb >> (j + 16)) & 1u) << 4));
    }
  }
}

void fill_sub(QGroup& g, int j, float S, int z, float M) {
  g.S[j] = S;
  g.z[j] = z;
  g.M[j] = M;
}

}  // namespace

bool qgroup_supported(DType t) { return dtype_is_quantized(t) && t != DType::Q4_0_R16; }

void unpack_qgroup(DType t, const uint8_t* b, QGroup& g) {
  switch (t) {
    case DType::Q8_0: {  // d, qs[32] (int8): q + 128 with zero point 128
      const float d = half_at(b);
      for (int i = 0; i < 32; ++i) g.q[i] = uint8_t(int(int8_t(b[2 + i])) + 128);
      for (int j = 0; j < 2; ++j) fill_sub(g, j, d, 128, 0.0f);
      return;
    }
    case DType::Q4_0: {  // d, qs[16]
      const float d = half_at(b);
      nibbles32(b + 2, 0, false, g.q);
      for (int j = 0; j < 2; ++j) fill_sub(g, j, d, 8, 0.0f);
      return;
    }
    case DType::Q4_1: {  // d, m, qs[16]: x = d q + m
      const float d = half_at(b), m = half_at(b + 2);
      nibbles32(b + 4, 0, false, g.q);
      for (int j = 0; j < 2; ++j) fill_sub(g, j, d, 0, -m);
      return;
    }
    case DType::Q5_0: {  // d, qh[4], qs[16]: x = d (q - 16)
      const float d = half_at(b);
      uint32_t qh;
      std::memcpy(&qh, b + 2, 4);
      nibbles32(b + 6, qh, true, g.q);
      for (int j = 0; j < 2; ++j) fill_sub(g, j, d, 16, 0.0f);
      return;
    }
    case DType::Q5_1: {  // d, m, qh[4], qs[16]: x = d q + m
      const float d = half_at(b), m = half_at(b + 2);
      uint32_t qh;
      std::memcpy(&qh, b + 4, 4);
      nibbles32(b + 8, qh, true, g.q);
      for (int j = 0; j < 2; ++j) fill_sub(g, j, d, 0, -m);
      return;
    }
    case DType::Q2_K: {  // scales[16], qs[64], d, dmin: x = d (sc & 15) q - dmin (sc >> 4)
      const uint8_t* sc = b;
      const uint8_t* qs = b + 16;
      const float d = half_at(b + 80), dmin = half_at(b + 82);
      // Values 128h + 32s + l (l < 32) are bits 2s..2s+1 of qs[32h + l]; sub-block = value / 16.
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
          for (int l = 0; l < 32; ++l) g.q[128 * h + 32 * s + l] = uint8_t((qs[32 * h + l] >> (2 * s)) & 3);
      for (int j = 0; j < 16; ++j) fill_sub(g, j, d * float(sc[j] & 0x0f), 0, dmin * float(sc[j] >> 4));
      return;
    }
    case DType::Q3_K: {  // hmask[32], qs[64], scales[12], d: x = d (sc - 32) (q - 4)
      const uint8_t* hm = b;
      const uint8_t* qs = b + 32;
      const uint8_t* s = b + 96;
      const float d = half_at(b + 108);
      // Value 128h + 32s + l: low 2 bits as Q2_K, bit 2 from bit (4h + s) of hmask[l].
      for (int h = 0; h < 2; ++h)
        for (int s2 = 0; s2 < 4; ++s2)
          for (int l = 0; l < 32; ++l) {
            const int lo = (qs[32 * h + l] >> (2 * s2)) & 3;
            const int hi = (hm[l] >> (4 * h + s2)) & 1;
            g.q[128 * h + 32 * s2 + l] = uint8_t(lo | (hi << 2));
          }
      // 16 6-bit sub-scales: low 4 bits are the nibbles of bytes 0-7 (sub-block j < 8: low nibble
      // of byte j; j >= 8: high nibble of byte j - 8), high 2 bits are bit pair (j / 4) of
      // byte 8 + j % 4.
      for (int j = 0; j < 16; ++j) {
        const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        fill_sub(g, j, d * float((lo | (hi << 4)) - 32), 4, 0.0f);
      }
      return;
    }
    case DType::Q4_K:    // d, dmin, scales[12], qs[128]: x = d sc q - dmin m per 32 values
    case DType::Q5_K: {  // d, dmin, scales[12], qh[32], qs[128]: q gains bit 4 from qh
      const float d = half_at(b), dmin = half_at(b + 2);
      const uint8_t* s = b + 4;
      const bool five = t == DType::Q5_K;
      const uint8_t* qh = b + 16;
      const uint8_t* qs = five ? b + 48 : b + 16;
      // Values 64c + l (l < 32): low nibble of qs[32c + l]; 64c + 32 + l: its high nibble. Q5_K's
      // bit 4 of value 32k + l is bit k of qh[l].
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          uint8_t lo = uint8_t(qs[32 * c + l] & 0x0f), hi = uint8_t(qs[32 * c + l] >> 4);
          if (five) {
            lo = uint8_t(lo | (((qh[l] >> (2 * c)) & 1) << 4));
            hi = uint8_t(hi | (((qh[l] >> (2 * c + 1)) & 1) << 4));
          }
          g.q[64 * c + l] = lo;
          g.q[64 * c + 32 + l] = hi;
        }
      for (int k = 0; k < 8; ++k) {
        int sc, mn;
        scale_min_k4(s, k, &sc, &mn);
        for (int j = 2 * k; j < 2 * k + 2; ++j) fill_sub(g, j, d * float(sc), 0, dmin * float(mn));
      }
      return;
    }
    case DType::Q6_K: {  // ql[128], qh[64], scales[16] (int8), d: x = d sc (q - 32)
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = half_at(b + 208);
      // Half h (values 128h..), l < 32: value l from ql[64h + l] low nibble and qh[32h + l] bits
      // 0-1; l + 32: ql[64h + 32 + l] low, bits 2-3; l + 64: ql[64h + l] high, bits 4-5; l + 96:
      // ql[64h + 32 + l] high, bits 6-7.
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
          const uint8_t a = ql[64 * h + l], c = ql[64 * h + 32 + l], e = qh[32 * h + l];
          uint8_t* q = g.q + 128 * h;
          q[l] = uint8_t((a & 0x0f) | ((e & 3) << 4));
          q[l + 32] = uint8_t((c & 0x0f) | (((e >> 2) & 3) << 4));
          q[l + 64] = uint8_t((a >> 4) | (((e >> 4) & 3) << 4));
          q[l + 96] = uint8_t((c >> 4) | (((e >> 6) & 3) << 4));
        }
      for (int j = 0; j < 16; ++j) fill_sub(g, j, d * float(sc[j]), 32, 0.0f);
      return;
    }
    default: return;
  }
}

namespace {

void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
int nearest(float x) { return int(std::lrintf(x)); }
int clampi(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

// Q4_1 / Q5_1 (quantize_row_q4_1_ref / q5_1_ref): d = (max - min) / levels, m = min.
void quant_min32(const float* x, uint8_t* b, bool five) {
  float mn = x[0], mx = x[0];
  for (int i = 1; i < 32; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  const int levels = five ? 31 : 15;
  const float d = (mx - mn) / float(levels);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(b, d);
  put_half(b + 2, mn);
  uint8_t q[32];
  for (int i = 0; i < 32; ++i) q[i] = uint8_t(std::min(levels, int((x[i] - mn) * id + 0.5f)));
  uint8_t* qs = b + (five ? 8 : 4);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
    qh |= uint32_t((q[j] >> 4) & 1) << j;
    qh |= uint32_t((q[j + 16] >> 4) & 1) << (j + 16);
  }
  if (five) std::memcpy(b + 4, &qh, 4);
}

// Q5_0 (quantize_row_q5_0_ref): the value of largest magnitude maps to -16.
void quant_q5_0(const float* x, uint8_t* b) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < 32; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, int(x[j] * id + 16.5f)), q1 = std::min(31, int(x[j + 16] * id + 16.5f));
    b[6 + j] = uint8_t((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= uint32_t((q0 >> 4) & 1) << j;
    qh |= uint32_t((q1 >> 4) & 1) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}

// Per sub-block of len values: scale and min (<= 0) of an unsigned code with `levels` steps.
void range_of(const float* x, int len, int levels, float* scale, float* neg_min) {
  float mn = x[0], mx = x[0];
  for (int i = 1; i < len; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  mn = std::min(mn, 0.0f);
  *scale = (mx - mn) / float(levels);
  *neg_min = -mn;
}

// Per sub-block: signed scale mapping the value of largest magnitude to -half.
float signed_scale(const float* x, int len, float half) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < len; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  return max / -half;
}

// Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scales and mins.
void quant_k45(const float* x, uint8_t* b, bool five) {
  const int levels = five ? 31 : 15;
  float sc[8], mn[8], max_sc = 0.0f, max_mn = 0.0f;
  for (int j = 0; j < 8; ++j) {
    range_of(x + 32 * j, 32, levels, &sc[j], &mn[j]);
    max_sc = std::max(max_sc, sc[j]);
    max_mn = std::max(max_mn, mn[j]);
  }
  const float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
  const float isc = max_sc > 0 ? 63.0f / max_sc : 0.0f, imn = max_mn > 0 ? 63.0f / max_mn : 0.0f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = uint8_t(clampi(nearest(isc * sc[j]), 0, 63));
    lm[j] = uint8_t(clampi(nearest(imn * mn[j]), 0, 63));
  }
  put_half(b, d);
  put_half(b + 2, dmin);
  // the 12 scale bytes (quants.cpp scale_min_k4, inverted)
  uint8_t* s = b + 4;
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t((ls[j] & 63) | ((ls[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t((lm[j] & 63) | ((lm[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((ls[j + 4] & 0x0f) | ((lm[j + 4] & 0x0f) << 4));
  }
  // values against the dequantized scales, as they will be read back
  const float dq = f16_to_f32(f32_to_f16(d)), dmq = f16_to_f32(f32_to_f16(dmin));
  uint8_t q[256];
  for (int j = 0; j < 8; ++j) {
    const float S = dq * float(ls[j]), M = dmq * float(lm[j]);
    const float iS = S != 0.0f ? 1.0f / S : 0.0f;
    for (int i = 0; i < 32; ++i) q[32 * j + i] = uint8_t(clampi(nearest((x[32 * j + i] + M) * iS), 0, levels));
  }
  uint8_t* qh = b + 16;
  uint8_t* qs = five ? b + 48 : b + 16;
  if (five) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      qs[32 * c + l] = uint8_t((lo & 0x0f) | ((hi & 0x0f) << 4));
      if (five) qh[l] = uint8_t(qh[l] | (((lo >> 4) & 1) << (2 * c)) | (((hi >> 4) & 1) << (2 * c + 1)));
    }
}

// Q6_K: 16 sub-blocks of 16, int8 scales, q - 32 in [-32, 31].
void quant_q6_k(const float* x, uint8_t* b) {
  float sc[16], max_abs = 0.0f, max_sc = 0.0f;
  for (int j = 0; j < 16; ++j) {
    sc[j] = signed_scale(x + 16 * j, 16, 32.0f);
    if (std::fabs(sc[j]) > max_abs) {
      max_abs = std::fabs(sc[j]);
      max_sc = sc[j];
    }
  }
  const float iscale = max_sc != 0.0f ? -128.0f / max_sc : 0.0f;
  const float d = iscale != 0.0f ? 1.0f / iscale : 0.0f;
  auto* scales = reinterpret_cast<int8_t*>(b + 192);
  for (int j = 0; j < 16; ++j) scales[j] = int8_t(clampi(nearest(iscale * sc[j]), -128, 127));
  put_half(b + 208, d);
  const float dq = f16_to_f32(f32_to_f16(d));
  uint8_t q[256];
  for (int j = 0; j < 16; ++j) {
    const float S = dq * float(scales[j]);
    const float iS = S != 0.0f ? 1.0f / S : 0.0f;
    for (int i = 0; i < 16; ++i) q[16 * j + i] = uint8_t(clampi(nearest(x[16 * j + i] * iS), -32, 31) + 32);
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* v = q + 128 * h;
      ql[64 * h + l] = uint8_t((v[l] & 0x0f) | ((v[l + 64] & 0x0f) << 4));
      ql[64 * h + 32 + l] = uint8_t((v[l + 32] & 0x0f) | ((v[l + 96] & 0x0f) << 4));
      qh[32 * h + l] = uint8_t((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
    }
}

// Q3_K: 16 sub-blocks of 16, 6-bit signed scales (stored + 32), q - 4 in [-4, 3].
void quant_q3_k(const float* x, uint8_t* b) {
  float sc[16], max_abs = 0.0f, max_sc = 0.0f;
  for (int j = 0; j < 16; ++j) {
    sc[j] = signed_scale(x + 16 * j, 16, 4.0f);
    if (std::fabs(sc[j]) > max_abs) {
      max_abs = std::fabs(sc[j]);
      max_sc = sc[j];
    }
  }
  const float iscale = max_sc != 0.0f ? -32.0f / max_sc : 0.0f;
  const float d = iscale != 0.0f ? 1.0f / iscale : 0.0f;
  int ls[16];
  for (int j = 0; j < 16; ++j) ls[j] = clampi(nearest(iscale * sc[j]), -32, 31);
  uint8_t* s = b + 96;
  std::memset(s, 0, 12);
  for (int j = 0; j < 16; ++j) {  // low 4 bits: nibbles of bytes 0-7; high 2 bits: pairs of bytes 8-11
    const int u = ls[j] + 32;
    if (j < 8) {
      s[j] = uint8_t(s[j] | (u & 0x0f));
    } else {
      s[j - 8] = uint8_t(s[j - 8] | ((u & 0x0f) << 4));
    }
    s[8 + j % 4] = uint8_t(s[8 + j % 4] | (((u >> 4) & 3) << (2 * (j / 4))));
  }
  put_half(b + 108, d);
  const float dq = f16_to_f32(f32_to_f16(d));
  uint8_t q[256];
  for (int j = 0; j < 16; ++j) {
    const float S = dq * float(ls[j]);
    const float iS = S != 0.0f ? 1.0f / S : 0.0f;
    for (int i = 0; i < 16; ++i) q[16 * j + i] = uint8_t(clampi(nearest(x[16 * j + i] * iS), -4, 3) + 4);
  }
  uint8_t* hm = b;
  uint8_t* qs = b + 32;
  std::memset(hm, 0, 32);
  std::memset(qs, 0, 64);
  for (int h = 0; h < 2; ++h)
    for (int s2 = 0; s2 < 4; ++s2)
      for (int l = 0; l < 32; ++l) {
        const uint8_t v = q[128 * h + 32 * s2 + l];
        qs[32 * h + l] = uint8_t(qs[32 * h + l] | ((v & 3) << (2 * s2)));
        hm[l] = uint8_t(hm[l] | (((v >> 2) & 1) << (4 * h + s2)));
      }
}

// Q2_K: 16 sub-blocks of 16, 4-bit scales and mins, q in [0, 3].
void quant_q2_k(const float* x, uint8_t* b) {
  float sc[16], mn[16], max_sc = 0.0f, max_mn = 0.0f;
  for (int j = 0; j < 16; ++j) {
    range_of(x + 16 * j, 16, 3, &sc[j], &mn[j]);
    max_sc = std::max(max_sc, sc[j]);
    max_mn = std::max(max_mn, mn[j]);
  }
  const float d = max_sc / 15.0f, dmin = max_mn / 15.0f;
  const float isc = max_sc > 0 ? 15.0f / max_sc : 0.0f, imn = max_mn > 0 ? 15.0f / max_mn : 0.0f;
  int ls[16], lm[16];
  for (int j = 0; j < 16; ++j) {
    ls[j] = clampi(nearest(isc * sc[j]), 0, 15);
    lm[j] = clampi(nearest(imn * mn[j]), 0, 15);
    b[j] = uint8_t(ls[j] | (lm[j] << 4));
  }
  put_half(b + 80, d);
  put_half(b + 82, dmin);
  const float dq = f16_to_f32(f32_to_f16(d)), dmq = f16_to_f32(f32_to_f16(dmin));
  uint8_t q[256];
  for (int j = 0; j < 16; ++j) {
    const float S = dq * float(ls[j]), M = dmq * float(lm[j]);
    const float iS = S != 0.0f ? 1.0f / S : 0.0f;
    for (int i = 0; i < 16; ++i) q[16 * j + i] = uint8_t(clampi(nearest((x[16 * j + i] + M) * iS), 0, 3));
  }
  uint8_t* qs = b + 16;
  std::memset(qs, 0, 64);
  for (int h = 0; h < 2; ++h)
    for (int s2 = 0; s2 < 4; ++s2)
      for (int l = 0; l < 32; ++l) qs[32 * h + l] = uint8_t(qs[32 * h + l] | (q[128 * h + 32 * s2 + l] << (2 * s2)));
}

}  // namespace

void quantize_blocks(DType t, const float* src, uint8_t* dst, int64_t n) {
  const int64_t gv = qgroup_values(t);
  const size_t gb = dtype_block_bytes(t);
  for (int64_t g = 0; g < n / gv; ++g) {
    const float* x = src + g * gv;
    uint8_t* b = dst + size_t(g) * gb;
    switch (t) {
      case DType::Q4_1: quant_min32(x, b, false); break;
      case DType::Q5_1: quant_min32(x, b, true); break;
      case DType::Q5_0: quant_q5_0(x, b); break;
      case DType::Q2_K: quant_q2_k(x, b); break;
      case DType::Q3_K: quant_q3_k(x, b); break;
      case DType::Q4_K: quant_k45(x, b, false); break;
      case DType::Q5_K: quant_k45(x, b, true); break;
      case DType::Q6_K: quant_q6_k(x, b); break;
      default: return;
    }
  }
}

}  // namespace lcx::kernels
