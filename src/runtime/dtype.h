// Storage dtypes of weights and caches, and their scalar conversions.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace lcx {

// Q8_0 / Q4_0 follow llama.cpp's GGML block layouts bit for bit so GGUF files interoperate:
//   Q8_0: 32 values = fp16 scale d + 32 x int8 q,            x = d * q
//   Q4_0: 32 values = fp16 scale d + 16 bytes of nibbles,    x = d * (nibble - 8)
//         byte j holds value j (low nibble) and value j + 16 (high nibble).
enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, kCount };

constexpr int kQBlock = 32;  // values per Q8_0 / Q4_0 block

struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQBlock];
};
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[kQBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);

const char* dtype_name(DType t);
// Parses "f32", "F16", "bf16", "q8_0", "Q4_0"...; throws lcx::Error naming the choices.
DType dtype_from_name(const std::string& name);
bool dtype_is_quantized(DType t);
// Bytes of one row of n values (n must be a multiple of 32 for quantized types).
size_t dtype_row_bytes(DType t, int64_t n);

inline float fp32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t fp32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_f32(uint16_t h) { return fp32_from_bits(uint32_t(h) << 16); }
// Round to nearest even, as torch does when casting to bfloat16. NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = fp32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);   // exact
uint16_t f32_to_f16(float f);   // round to nearest even, overflow to inf

}  // namespace lcx
