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
//
// Q4_0_R16 is not a file format: it is Q4_0 weights repacked at load time for the AVX-512 decode
// GEMV (same blocks, same bytes per row, only their order differs). Rows go in panels of 16;
// panel p holds rows 16p..16p+15 as cols / 32 block groups of 288 bytes, one per 32-column block
// b: the 16 rows' fp16 scales (32 bytes, row order), then the 16 rows' quants as 4 x 64 bytes,
// chunk k holding bytes 4k..4k+3 of each row's 16 quant bytes (row order). One 64-byte load is
// then 16 rows x 8 values, so a vpdpbusd against 4 broadcast activations advances 16 rows at
// once and each row's sum stays in its own lane (no horizontal reduction, no byte shuffles).
// Needs rows % 16 == 0. llama.cpp repacks Q4_0 the same way for its CPU kernels (Q4_0x8 for
// AVX2); this is our own layout.
//
// The other GGUF block types llama.cpp writes (ggml-common.h), read from files as they are:
//   Q4_1 / Q5_0 / Q5_1: blocks of 32 with an fp16 scale (and fp16 min for _1; 5th bits in qh);
//   Q2_K / Q3_K / Q4_K / Q5_K / Q6_K ("k-quants"): super-blocks of 256 values with an fp16 scale
//   (and min) and 6- or 4-bit sub-scales per 16 or 32 values. What the bits mean is in
//   kernels/quants.h, which unpacks every one of them into one form the kernels share.
enum class DType : uint8_t {
  F32, F16, BF16, Q8_0, Q4_0, Q4_0_R16,
  Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
  Q4_K_R16, Q5_0_R16,
  kCount
};

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

constexpr int64_t kR16Rows = 16;                                  // rows per Q4_0_R16 panel
constexpr size_t kR16GroupBytes = kR16Rows * sizeof(BlockQ4_0);   // one block of 16 rows: 288

// Block b of row r of a Q4_0_R16 matrix with `cols` columns, as the Q4_0 block it came from.
inline BlockQ4_0 q4_0_r16_block(const void* data, int64_t cols, int64_t r, int64_t b) {
  const int64_t nb = cols / kQBlock;
  const auto* g = static_cast<const uint8_t*>(data) + size_t((r / kR16Rows) * nb + b) * kR16GroupBytes;
  const int64_t lane = r % kR16Rows;
  BlockQ4_0 out;
  std::memcpy(&out.d, g + 2 * lane, 2);
  for (int k = 0; k < 4; ++k) std::memcpy(out.qs + 4 * k, g + 2 * kR16Rows + 64 * k + 4 * lane, 4);
  return out;
}
// Q4_0 [rows, cols] (rows % 16 == 0) -> Q4_0_R16 in dst (same size; dst must not alias src).
void repack_q4_0_r16(const void* src, void* dst, int64_t rows, int64_t cols);
// Bytes [offset, offset + n) of the row-major Q4_0 tensor a Q4_0_R16 tensor came from (state
// fingerprints and GGUF export see the file's bytes, whatever layout the kernels use).
void q4_0_r16_rowmajor_bytes(const void* data, int64_t cols, size_t offset, size_t n, uint8_t* out);

// Q4_K_R16 is to Q4_K what Q4_0_R16 is to Q4_0: the same super-blocks, 16 rows per panel, each
// panel and super-block g a group of 16 x 144 bytes: the 16 rows' fp16 d (32 bytes, row order),
// their fp16 dmin (32), their 12 scale bytes as 3 x [16 rows x 4 bytes] (bytes 0-3, 4-7, 8-11),
// then for each 32-byte chunk c of the quants 8 x [16 rows x 4 bytes] (bytes 4k..4k+3 of the
// chunk). A 64-byte load is then 16 rows x 8 values of one sub-block (low nibbles) and 16 x 8 of
// the next (high nibbles), and the 6-bit scales of 16 rows decode in parallel.
// Q5_0_R16: Q5_0 in 16-row panels, per panel and block 16 x 22 bytes: the 16 rows' fp16 d (32
// bytes), their 5th bits as 8 x 64-bit masks (mask j < 4: bit 4r + k = bit 4j + k of row r's qh,
// i.e. of value 4j + k; mask 4 + j: the same for value 16 + 4j + k), then the nibbles as for
// Q4_0_R16 (4 x [16 rows x 4 bytes]). Mask j is then exactly the byte mask of the j-th 64-byte
// nibble load, so the 5th bits cost one masked add per load.
constexpr size_t kQ5_0BlockBytes = 22;
constexpr size_t kQ5_0R16GroupBytes = kR16Rows * kQ5_0BlockBytes;  // 352
constexpr size_t kQ4KBlockBytes = 144;
constexpr size_t kQ4KR16GroupBytes = kR16Rows * kQ4KBlockBytes;  // 2304

// The repacked ("R16") types and the file types they come from.
inline bool dtype_is_r16(DType t) { return t == DType::Q4_0_R16 || t == DType::Q4_K_R16 || t == DType::Q5_0_R16; }
inline DType dtype_r16_source(DType t) {
  return t == DType::Q4_0_R16 ? DType::Q4_0 : t == DType::Q4_K_R16 ? DType::Q4_K : t == DType::Q5_0_R16 ? DType::Q5_0 : t;
}
inline DType dtype_r16_of(DType t) {
  return t == DType::Q4_0 ? DType::Q4_0_R16 : t == DType::Q4_K ? DType::Q4_K_R16 : t == DType::Q5_0 ? DType::Q5_0_R16 : t;
}
// Block b (dtype_block_bytes bytes of the source type) of row r of an R16 matrix, as in the file.
void r16_block(DType t, const void* data, int64_t cols, int64_t r, int64_t b, uint8_t* out);
// Source-type [rows, cols] (rows % 16 == 0) -> R16 type t in dst (same size; no aliasing).
void repack_r16(DType t, const void* src, void* dst, int64_t rows, int64_t cols);
// Bytes [offset, offset + n) of the row-major tensor an R16 tensor came from.
void r16_rowmajor_bytes(DType t, const void* data, int64_t cols, size_t offset, size_t n, uint8_t* out);

const char* dtype_name(DType t);
// Parses "f32", "F16", "bf16", "q8_0", "Q4_0"...; throws lcx::Error naming the choices.
DType dtype_from_name(const std::string& name);
bool dtype_is_quantized(DType t);
// Values per block: 1 for float types, 32 for Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1, 256 for k-quants.
int64_t dtype_block_values(DType t);
// Bytes per block (for float types: per value).
size_t dtype_block_bytes(DType t);
// Bytes of one row of n values (n must be a multiple of dtype_block_values(t)).
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
