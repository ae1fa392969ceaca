#include "runtime/dtype.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "runtime/error.h"

namespace lcx {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_0_R16: return "Q4_0_R16";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q2_K: return "Q2_K";
    case DType::Q3_K: return "Q3_K";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::Q4_K_R16: return "Q4_K_R16";
    case DType::Q5_0_R16: return "Q5_0_R16";
    default: return "?";
  }
}

DType dtype_from_name(const std::string& name) {
  std::string u = name;
  std::transform(u.begin(), u.end(), u.begin(), [](unsigned char c) { return std::toupper(c); });
  if (u == "F32" || u == "FLOAT32") return DType::F32;
  if (u == "F16" || u == "FLOAT16") return DType::F16;
  if (u == "BF16" || u == "BFLOAT16") return DType::BF16;
  if (u == "Q8_0") return DType::Q8_0;
  if (u == "Q4_0") return DType::Q4_0;
  for (DType t : {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    if (u == dtype_name(t)) return t;
  fail("unknown dtype '" + name + "': choose one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k");
}

bool dtype_is_quantized(DType t) { return dtype_block_values(t) > 1; }

int64_t dtype_block_values(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16: return 1;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_0_R16:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_0_R16:
    case DType::Q5_1: return kQBlock;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q4_K_R16: return 256;
    default: return 1;
  }
}

size_t dtype_block_bytes(DType t) {
  // ggml-common.h's block sizes (static_asserts there): fp16 scales, nibbles, high bits, sub-scales.
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::Q8_0: return sizeof(BlockQ8_0);  // 34
    case DType::Q4_0:
    case DType::Q4_0_R16: return sizeof(BlockQ4_0);  // 18
    case DType::Q4_1: return 2 + 2 + 16;             // d, m, qs
    case DType::Q5_0:
    case DType::Q5_0_R16: return 2 + 4 + 16;         // d, qh, qs
    case DType::Q5_1: return 2 + 2 + 4 + 16;         // d, m, qh, qs
    case DType::Q2_K: return 16 + 64 + 2 + 2;        // scales, qs, d, dmin
    case DType::Q3_K: return 32 + 64 + 12 + 2;       // hmask, qs, scales, d
    case DType::Q4_K:
    case DType::Q4_K_R16: return 2 + 2 + 12 + 128;   // d, dmin, scales, qs
    case DType::Q5_K: return 2 + 2 + 12 + 32 + 128;  // d, dmin, scales, qh, qs
    case DType::Q6_K: return 128 + 64 + 16 + 2;      // ql, qh, scales, d
    default: return 0;
  }
}

size_t dtype_row_bytes(DType t, int64_t n) { return size_t(n / dtype_block_values(t)) * dtype_block_bytes(t); }

void repack_q4_0_r16(const void* src, void* dst, int64_t rows, int64_t cols) {
  const int64_t nb = cols / kQBlock;
  const auto* in = static_cast<const BlockQ4_0*>(src);  // [rows, nb]
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lane = r % kR16Rows;
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4_0& blk = in[r * nb + b];
      uint8_t* g = out + size_t((r / kR16Rows) * nb + b) * kR16GroupBytes;
      std::memcpy(g + 2 * lane, &blk.d, 2);
      for (int k = 0; k < 4; ++k) std::memcpy(g + 2 * kR16Rows + 64 * k + 4 * lane, blk.qs + 4 * k, 4);
    }
  }
}

void q4_0_r16_rowmajor_bytes(const void* data, int64_t cols, size_t offset, size_t n, uint8_t* out) {
  const int64_t nb = cols / kQBlock;
  size_t j = 0;
  while (j < n) {
    const size_t at = offset + j, i = at / sizeof(BlockQ4_0), within = at % sizeof(BlockQ4_0);
    const BlockQ4_0 blk = q4_0_r16_block(data, cols, int64_t(i) / nb, int64_t(i) % nb);
    const size_t take = std::min(n - j, sizeof(BlockQ4_0) - within);
    std::memcpy(out + j, reinterpret_cast<const uint8_t*>(&blk) + within, take);
    j += take;
  }
}

void r16_block(DType t, const void* data, int64_t cols, int64_t r, int64_t b, uint8_t* out) {
  if (t == DType::Q4_0_R16) {
    const BlockQ4_0 blk = q4_0_r16_block(data, cols, r, b);
    std::memcpy(out, &blk, sizeof(blk));
    return;
  }
  if (t == DType::Q5_0_R16) {  // layout in dtype.h
    const int64_t nb = cols / kQBlock, lane = r % kR16Rows;
    const auto* g = static_cast<const uint8_t*>(data) + size_t((r / kR16Rows) * nb + b) * kQ5_0R16GroupBytes;
    std::memcpy(out, g + 2 * lane, 2);
    uint32_t qh = 0;
    for (int m = 0; m < 8; ++m) {
      uint64_t mask;
      std::memcpy(&mask, g + 32 + 8 * m, 8);
      for (int k = 0; k < 4; ++k)
        if ((mask >> (4 * lane + k)) & 1u) qh |= 1u << ((m < 4 ? 0 : 16) + 4 * (m % 4) + k);
    }
    std::memcpy(out + 2, &qh, 4);
    for (int k = 0; k < 4; ++k) std::memcpy(out + 6 + 4 * k, g + 96 + 64 * k + 4 * lane, 4);
    return;
  }
  // Q4_K_R16 (layout in dtype.h)
  const int64_t ng = cols / 256, lane = r % kR16Rows;
  const auto* g = static_cast<const uint8_t*>(data) + size_t((r / kR16Rows) * ng + b) * kQ4KR16GroupBytes;
  std::memcpy(out, g + 2 * lane, 2);
  std::memcpy(out + 2, g + 32 + 2 * lane, 2);
  for (int w = 0; w < 3; ++w) std::memcpy(out + 4 + 4 * w, g + 64 + 64 * w + 4 * lane, 4);
  for (int c = 0; c < 4; ++c)
    for (int k = 0; k < 8; ++k) std::memcpy(out + 16 + 32 * c + 4 * k, g + 256 + 512 * c + 64 * k + 4 * lane, 4);
}

void repack_r16(DType t, const void* src, void* dst, int64_t rows, int64_t cols) {
  if (t == DType::Q4_0_R16) {
    repack_q4_0_r16(src, dst, rows, cols);
    return;
  }
  if (t == DType::Q5_0_R16) {
    const int64_t nb = cols / kQBlock;
    const auto* in = static_cast<const uint8_t*>(src);  // [rows, nb] blocks of 22 bytes
    auto* out = static_cast<uint8_t*>(dst);
    std::memset(out, 0, size_t(rows / kR16Rows * nb) * kQ5_0R16GroupBytes);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t lane = r % kR16Rows;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = in + size_t(r * nb + b) * kQ5_0BlockBytes;
        uint8_t* g = out + size_t((r / kR16Rows) * nb + b) * kQ5_0R16GroupBytes;
        std::memcpy(g + 2 * lane, blk, 2);
        uint32_t qh;
        std::memcpy(&qh, blk + 2, 4);
        for (int m = 0; m < 8; ++m) {
          uint64_t mask;
          std::memcpy(&mask, g + 32 + 8 * m, 8);
          for (int k = 0; k < 4; ++k)
            if ((qh >> ((m < 4 ? 0 : 16) + 4 * (m % 4) + k)) & 1u) mask |= uint64_t(1) << (4 * lane + k);
          std::memcpy(g + 32 + 8 * m, &mask, 8);
        }
        for (int k = 0; k < 4; ++k) std::memcpy(g + 96 + 64 * k + 4 * lane, blk + 6 + 4 * k, 4);
      }
    }
    return;
  }
  const int64_t ng = cols / 256;
  const auto* in = static_cast<const uint8_t*>(src);  // [rows, ng] blocks of 144 bytes
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lane = r % kR16Rows;
    for (int64_t b = 0; b < ng; ++b) {
      const uint8_t* blk = in + size_t(r * ng + b) * kQ4KBlockBytes;
      uint8_t* g = out + size_t((r / kR16Rows) * ng + b) * kQ4KR16GroupBytes;
      std::memcpy(g + 2 * lane, blk, 2);
      std::memcpy(g + 32 + 2 * lane, blk + 2, 2);
      for (int w = 0; w < 3; ++w) std::memcpy(g + 64 + 64 * w + 4 * lane, blk + 4 + 4 * w, 4);
      for (int c = 0; c < 4; ++c)
        for (int k = 0; k < 8; ++k) std::memcpy(g + 256 + 512 * c + 64 * k + 4 * lane, blk + 16 + 32 * c + 4 * k, 4);
    }
  }
}

void r16_rowmajor_bytes(DType t, const void* data, int64_t cols, size_t offset, size_t n, uint8_t* out) {
  const size_t bb = dtype_block_bytes(t);
  const int64_t nb = cols / dtype_block_values(t);
  uint8_t blk[kQ4KBlockBytes];
  size_t j = 0;
  while (j < n) {
    const size_t at = offset + j, i = at / bb, within = at % bb;
    r16_block(t, data, cols, int64_t(i) / nb, int64_t(i) % nb, blk);
    const size_t take = std::min(n - j, bb - within);
    std::memcpy(out + j, blk + within, take);
    j += take;
  }
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return fp32_from_bits(sign);
    // subnormal: normalise
    int e = -1;
    do { mant <<= 1; ++e; } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    return fp32_from_bits(sign | uint32_t(127 - 15 - e) << 23 | mant << 13);
  }
  if (exp == 31) return fp32_from_bits(sign | 0x7f800000u | mant << 13);
  return fp32_from_bits(sign | (exp + 127 - 15) << 23 | mant << 13);
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = fp32_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;            // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;           // overflow (>= 65520) -> inf
  if (abs < 0x38800000u) {                                 // result is subnormal or zero
    // value = abs_f * 2^24 in units of the smallest subnormal; round to nearest even
    const float v = fp32_from_bits(abs) * 16777216.0f;     // exact scaling by 2^24
    const uint32_t r = uint32_t(std::nearbyint(v));
    return sign | uint16_t(r);
  }
  uint32_t mant = abs & 0x7fffffu;
  uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t h = exp << 10 | mant >> 13;
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carries into exponent correctly
  return sign | uint16_t(h);
}

}  // namespace lcx
