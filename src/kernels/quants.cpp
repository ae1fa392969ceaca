// Unpacking of GGML block formats (see quants.h). Byte layouts are ggml-common.h's block_*
// structs; each case cites the fields in their order.
#include "kernels/quants.h"

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

}  // namespace lcx::kernels
