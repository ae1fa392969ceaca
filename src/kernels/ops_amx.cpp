// AMX kernels for prompt processing (more than 4 tokens), called only through the AVX-512 table
// and only where cpu_amx_ready(); the numerics and error bounds are described in ops_internal.h.
//
// F16 / BF16 (GemmMode::Amx): TDPBF16PS on bf16 pieces of the operands.
//   C[16 weight rows][16 tokens] (float32) += A[16 rows][32 columns] (bf16, row-major)
//                                           * B[16 column pairs][16 tokens][2] (bf16, "VNNI").
//   Activations are packed into B tiles once per matmul (pack_acts, shared by all threads);
//   weights are split into bf16 pieces 64 rows at a time into a thread-local panel of A tiles
//   that every token group then reuses (4 row tiles x 1 token group per pass: C = tmm0-3, A
//   alternating tmm4/5, B alternating tmm6/7).
// Q8_0 / Q4_0 / Q4_0_R16 (GemmMode::AmxInt8): TDPBSSD per 32-value block on the int8 packing of
//   the VNNI GEMM (bias removed), scaled into float32 on the AVX-512 units (int8_tile).
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/ops_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/isa_region.h"

// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* helpers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // a GCC-only warning group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16,amx-int8")

namespace lcx::kernels::amx {
namespace {

constexpr int64_t kTileBytes = 1024;   // 16 rows x 64 bytes
constexpr int64_t kPanelRows = 32;     // int8 GEMM: weight rows per panel, two A tiles
constexpr int64_t kBfRowTiles = 4;     // bf16 GEMM: row tiles per panel (64 rows)
constexpr int64_t kPieces = 3;         // activation pieces: x_hi, x_mid, x_lo

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n < 0 ? 0 : n)) - 1); }

// float32 -> bf16 round to nearest even (vcvtneps2bf16), and back (exact).
inline __m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }
inline __m512 from_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

// Palette 1: every tile 16 rows x 64 bytes. Per thread; loaded at the start of each gemm call and
// released at its end, so threads that never run it carry no tile state (8 KiB per XSAVE).
// A constant object, not one filled on the stack: GCC's _tile_loadconfig declares a read of only
// 8 bytes, so the compiler may drop stores to the rest of a local config (an invalid config makes
// the next tile instruction fault; llama.cpp's AMX path hits this, its PR 26954).
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
constexpr TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

// The int8 GEMM works one 32-value quant block at a time (every block has its own scales): C
// tiles 0-3 16 x 16 int32, A tiles 4/5 16 rows x 32 bytes, B tiles 6/7 8 rows x 64 bytes.
constexpr TileConfig kInt8TileConfig = {
    1, 0, {}, {64, 64, 64, 64, 32, 32, 64, 64}, {16, 16, 16, 16, 16, 16, 8, 8}};

void load_tile_config(bool int8) {
  static const TileConfig cfg = kTileConfig, cfg8 = kInt8TileConfig;
  const TileConfig* c = int8 ? &cfg8 : &cfg;
  __asm__ volatile("" : : "r"(c) : "memory");
  _tile_loadconfig(c);
}

// The weight panel: rows [rp, rp + nr) (nr <= 64, the rest zero) as A tiles
// [row tile][chunk][piece][16 rows][32 bf16]; pieces w_hi, w_lo for F16, w for BF16.
template <DType T>
void pack_weight_panel(const MatRef& w, int64_t rp, int64_t nr, int64_t nch, uint8_t* panel) {
  constexpr int64_t P = T == DType::F16 ? 2 : 1;
  const size_t row_bytes = dtype_row_bytes(T, w.cols);
  for (int64_t i = 0; i < kBfRowTiles * 16; ++i) {
    const int64_t mt = i / 16, m = i % 16;
    const auto* row = static_cast<const uint8_t*>(w.data) + size_t(rp + (i < nr ? i : 0)) * row_bytes;
    for (int64_t j = 0; j < nch; ++j) {
      uint8_t* tile = panel + (mt * nch + j) * P * kTileBytes + m * 64;
      for (int64_t h = 0; h < 2; ++h) {  // two halves of 16 columns
        const int64_t c = j * kAmxChunk + h * 16;
        const __mmask16 mk = i < nr ? tail_mask(w.cols - c) : __mmask16(0);
        if constexpr (T == DType::F16) {
          const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, row + c * 2));
          const __m256i hi = to_bf16(v);
          const __m256i lo = to_bf16(_mm512_sub_ps(v, from_bf16(hi)));  // exact: <= 3 bits remain
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + h * 32), hi);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + kTileBytes + h * 32), lo);
        } else {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + h * 32), _mm256_maskz_loadu_epi16(mk, row + c * 2));
        }
      }
    }
  }
}

// One chunk of one token group against the panel's four row tiles: C(mt) = tmm(mt) += the five
// (F16) or three (BF16) piece products. Each B tile (an activation piece, tmm6/tmm7 in turn) is
// loaded once and meets every row tile, whose A tiles alternate between tmm4 and tmm5 so that a
// load overlaps the product before it: 1 B load per 4 products. F16 5632 x 2048 x 512 on one
// thread: 62 ms with 2 row tiles x 2 token groups (A and B tiles reloaded in turn), 50 ms so.
// Column slices that keep the panel's A tiles in L1 while the groups pass (C tiles parked in
// memory between slices) were slower at every width tried (1-16 chunks: 56-68 ms).
template <int P>
inline void chunk_products(const uint8_t* panel, int64_t nch, int64_t j, const uint8_t* xj) {
#define LCX_A(mt, piece) (panel + (((mt) * nch + j) * P + (piece)) * kTileBytes)
#define LCX_ROW_TILES(BT, piece)         \
  do {                                   \
    _tile_loadd(4, LCX_A(0, piece), 64); \
    _tile_dpbf16ps(0, 4, BT);            \
    _tile_loadd(5, LCX_A(1, piece), 64); \
    _tile_dpbf16ps(1, 5, BT);            \
    _tile_loadd(4, LCX_A(2, piece), 64); \
    _tile_dpbf16ps(2, 4, BT);            \
    _tile_loadd(5, LCX_A(3, piece), 64); \
    _tile_dpbf16ps(3, 5, BT);            \
  } while (0)
  _tile_loadd(6, xj, 64);  // x_hi
  LCX_ROW_TILES(6, 0);     // w_hi (or w) x_hi
  if constexpr (P == 2) LCX_ROW_TILES(6, 1);  // w_lo x_hi
  _tile_loadd(7, xj + kTileBytes, 64);  // x_mid
  if constexpr (P == 2) LCX_ROW_TILES(7, 1);  // w_lo x_mid
  LCX_ROW_TILES(7, 0);                        // w_hi x_mid
  _tile_loadd(6, xj + 2 * kTileBytes, 64);  // x_lo
  LCX_ROW_TILES(6, 0);                      // w_hi x_lo
#undef LCX_ROW_TILES
#undef LCX_A
}

// C[16 rows][16 tokens] into y[t, r] for the rows and tokens in range (a 16 x 16 transpose).
void store_tile(const float* c, float* y, int64_t ldy, int64_t r, int64_t nrow, int64_t t, int64_t t0, int64_t t1) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(16));
  if (nrow <= 0) return;
  const __mmask16 mk = tail_mask(nrow);
  for (int64_t n = 0; n < 16; ++n) {
    if (t + n < t0 || t + n >= t1) continue;
    _mm512_mask_storeu_ps(y + (t + n) * ldy + r, mk, _mm512_i32gather_ps(idx, c + n, 4));
  }
}

template <DType T>
void gemm_typed(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  constexpr int P = T == DType::F16 ? 2 : 1;
  const int64_t K = job.w.cols, ldy = job.w.rows;
  const int64_t nch = (K + kAmxChunk - 1) / kAmxChunk;
  const int64_t gstride = nch * kPieces * kTileBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  // Reused across calls (capacity only grows): the panel, 4 row tiles x nch chunks x P pieces.
  thread_local std::vector<uint8_t> panel_buf;
  const size_t panel_bytes = size_t(kBfRowTiles * nch * P * kTileBytes) + 64;
  if (panel_buf.size() < panel_bytes) panel_buf.resize(panel_bytes);
  const auto paddr = reinterpret_cast<uintptr_t>(panel_buf.data());
  uint8_t* panel = panel_buf.data() + (64 - paddr % 64) % 64;
  alignas(64) float c[kBfRowTiles][256];
  load_tile_config(false);
  for (int64_t rp = r0; rp < r1; rp += kBfRowTiles * 16) {
    const int64_t nr = imin(kBfRowTiles * 16, r1 - rp);
    pack_weight_panel<T>(job.w, rp, nr, nch, panel);
    // GCC's tileloadd is an asm statement without a memory operand: keep the stores above it.
    __asm__ volatile("" ::: "memory");
    for (int64_t g = ga; g < gb; ++g) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const uint8_t* xg = job.xp + g * gstride;
      for (int64_t j = 0; j < nch; ++j) chunk_products<P>(panel, nch, j, xg + j * kPieces * kTileBytes);
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      for (int64_t mt = 0; mt < kBfRowTiles && mt * 16 < nr; ++mt) {
        store_tile(c[mt], job.y, ldy, rp + mt * 16, imin(16, nr - mt * 16), g * kPackTokens, t0, t1);
      }
    }
  }
  _tile_release();
}

// ---- Int8 (Q8_0 / Q4_0 / Q4_0_R16 weights; GemmMode::AmxInt8) ----------------------------------
//
// TDPBSSD on one 32-value block at a time: C[16 rows][16 tokens] = sum of 32 products of signed
// bytes, exact in int32; then y += d_w d_x C in float32 (AVX-512), as the VNNI GEMM and its twin
// scalar::matmul_rows_q8acts do. Activations: the int8 packing of the AVX-512 table with the +128
// bias taken off again (kInt8GroupBlockBytes per group and block: B tile [8 quads][16 tokens][4],
// then the 16 d_x).

// The panel's weights as A tiles [row tile][block][16 rows][32 bytes] (Q4_0: nibble - 8) and
// their scales dw[row tile][block][16]; rows past nr are zero.
template <DType T>
void pack_int8_panel(const MatRef& w, int64_t rp, int64_t nr, int64_t nb, int8_t* aq, float* dw) {
  for (int64_t i = 0; i < kPanelRows; ++i) {
    const int64_t mt = i / 16, m = i % 16;
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* dst = aq + ((mt * nb + b) * 16 + m) * kQBlock;
      float* d = dw + (mt * nb + b) * 16 + m;
      if (i >= nr) {
        std::memset(dst, 0, kQBlock);
        *d = 0.0f;
        continue;
      }
      if constexpr (T == DType::Q8_0) {
        const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(w.data)[(rp + i) * nb + b];
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs)));
        *d = _cvtsh_ss(blk.d);
      } else {
        const BlockQ4_0 blk = T == DType::Q4_0_R16 ? q4_0_r16_block(w.data, w.cols, rp + i, b)
                                                   : static_cast<const BlockQ4_0*>(w.data)[(rp + i) * nb + b];
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
        const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
        const __m256i q = _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst), q);
        *d = _cvtsh_ss(blk.d);
      }
    }
  }
}

// One output tile (16 rows x 16 tokens) over all nb blocks. Each block is one TDPBSSD into its own
// C tile. The tile unit runs its instructions in order, so a tile store right after its product
// would wait out the product's latency and stall everything behind it: block b's product is
// issued, then block b - 2's tile is stored, then the AVX-512 units scale block b - 3 (stored one
// step earlier) into float accumulators held in registers. C tiles rotate over four, A and B
// tiles over two (each is reloaded only after the product two blocks back has read it).
// A macro, not a template: GCC's tile intrinsics paste the register number into the asm text.
#define LCX_INT8_STEP(CT, AT, BT, ST)                                             \
  do {                                                                            \
    if (b < nb) {                                                                 \
      _tile_zero(CT);                                                             \
      _tile_loadd(AT, aq + b * astep, arow);                                      \
      _tile_loadd(BT, xg + b * kInt8GroupBlockBytes, 64);                         \
      _tile_dpbssd(CT, AT, BT);                                                   \
    }                                                                             \
    if (b >= 2 && b - 2 < nb) _tile_stored(ST, cb[ST], 64);                       \
  } while (0)

// A full 32-row Q4_0_R16 panel starting on a 16-row boundary, straight from its groups: per
// block, the 16 rows' fp16 d (one conversion) and 4 x [16 rows x 4 bytes] of nibbles, transposed
// to rows (a 4 x 4 dword transpose per 128-bit lane) and spread to bytes (nibble - 8).
void pack_r16_panel(const MatRef& w, int64_t rp, int64_t nb, int8_t* aq, float* dw) {
  const __m512i lo4 = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
  const __m512i idx0 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), idx1 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int64_t mt = 0; mt < 2; ++mt) {
    const int64_t panel = rp / kR16Rows + mt;
    for (int64_t b = 0; b < nb; ++b) {
      const auto* g = static_cast<const uint8_t*>(w.data) + size_t(panel * nb + b) * kR16GroupBytes;
      _mm512_store_ps(dw + (mt * nb + b) * 16, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g))));
      __m512i c[4];
      for (int k = 0; k < 4; ++k) c[k] = _mm512_loadu_si512(g + 2 * kR16Rows + 64 * k);
      const __m512i t01l = _mm512_unpacklo_epi32(c[0], c[1]), t01h = _mm512_unpackhi_epi32(c[0], c[1]);
      const __m512i t23l = _mm512_unpacklo_epi32(c[2], c[3]), t23h = _mm512_unpackhi_epi32(c[2], c[3]);
      // u[j], 128-bit lane l: the 16 quant bytes of row 4 l + j.
      const __m512i u[4] = {_mm512_unpacklo_epi64(t01l, t23l), _mm512_unpackhi_epi64(t01l, t23l),
                            _mm512_unpacklo_epi64(t01h, t23h), _mm512_unpackhi_epi64(t01h, t23h)};
      int8_t* tile = aq + (mt * nb + b) * 16 * kQBlock;
      for (int j = 0; j < 4; ++j) {
        const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(u[j], lo4), eight);
        const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(u[j], 4), lo4), eight);
        const __m512i r0 = _mm512_permutex2var_epi64(lo, idx0, hi);  // rows j, 4 + j
        const __m512i r1 = _mm512_permutex2var_epi64(lo, idx1, hi);  // rows 8 + j, 12 + j
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + j * kQBlock), _mm512_castsi512_si256(r0));
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + (4 + j) * kQBlock), _mm512_extracti64x4_epi64(r0, 1));
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + (8 + j) * kQBlock), _mm512_castsi512_si256(r1));
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + (12 + j) * kQBlock), _mm512_extracti64x4_epi64(r1, 1));
      }
    }
  }
}

// The scales of a full 32-row Q8_0 panel, dw[row tile][block][16].
void pack_q8_scales(const MatRef& w, int64_t rp, int64_t nb, float* dw) {
  const auto* blocks = static_cast<const BlockQ8_0*>(w.data);
  for (int64_t i = 0; i < kPanelRows; ++i) {
    for (int64_t b = 0; b < nb; ++b) dw[((i / 16) * nb + b) * 16 + i % 16] = _cvtsh_ss(blocks[(rp + i) * nb + b].d);
  }
}

// acc[m] (16 tokens of row m) += d_w[m] d_x C[m]: cb the block's int32 tile, dwb its 16 row
// scales, dxp the 16 token scales.
inline void int8_scale(const int32_t* cb, const float* dwb, const float* dxp, __m512* acc) {
  const __m512 dx = _mm512_loadu_ps(dxp);
  for (int m = 0; m < 16; ++m) {
    const __m512 cf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + m * 16)), dx);
    acc[m] = _mm512_fmadd_ps(cf, _mm512_set1_ps(dwb[m]), acc[m]);
  }
}

// aq: the row tile's block 0 (16 rows of 32 bytes, arow bytes apart), block b at aq + b * astep;
// dw: its scales [nb][16]; xg: the token group's packed blocks; out: [16 rows][16 tokens].
void int8_tile(const int8_t* aq, int64_t astep, int64_t arow, const float* dw, const uint8_t* xg, int64_t nb,
               float* out) {
  alignas(64) int32_t cb[4][256];
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb + 3; ++b) {
    switch (b & 3) {
      case 0: LCX_INT8_STEP(0, 4, 6, 2); break;
      case 1: LCX_INT8_STEP(1, 5, 7, 3); break;
      case 2: LCX_INT8_STEP(2, 4, 6, 0); break;
      default: LCX_INT8_STEP(3, 5, 7, 1); break;
    }
    if (b >= 3) {
      const int64_t p = b - 3;
      int8_scale(cb[p & 3], dw + p * 16, reinterpret_cast<const float*>(xg + p * kInt8GroupBlockBytes + 8 * 64), acc);
    }
  }
  for (int m = 0; m < 16; ++m) _mm512_store_ps(out + m * 16, acc[m]);
}
#undef LCX_INT8_STEP

template <DType T>
void gemm_int8_typed(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int64_t K = job.w.cols, ldy = job.w.rows, nb = K / kQBlock;
  const int64_t gstride = nb * kInt8GroupBlockBytes;
  const int64_t ga = t0 / kPackTokens, gb = (t1 + kPackTokens - 1) / kPackTokens;
  thread_local std::vector<uint8_t> panel_buf;
  const size_t q_bytes = size_t(2 * nb * 16 * kQBlock), panel_bytes = q_bytes + size_t(2 * nb * 16) * 4 + 64;
  if (panel_buf.size() < panel_bytes) panel_buf.resize(panel_bytes);
  const auto addr = reinterpret_cast<uintptr_t>(panel_buf.data());
  auto* aq = reinterpret_cast<int8_t*>(panel_buf.data() + (64 - addr % 64) % 64);
  auto* dw = reinterpret_cast<float*>(aq + q_bytes);
  alignas(64) float out[256];
  load_tile_config(true);
  const size_t row_bytes = dtype_row_bytes(T, K);
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    // Q8_0 blocks already are A tile rows (32 bytes after the scale): tiles load them in place
    // with the row stride, and only the scales are gathered; a panel running past the matrix's
    // last row is copied with zero rows instead.
    const bool in_place = T == DType::Q8_0 && rp + kPanelRows <= job.w.rows;
    if (in_place) {
      pack_q8_scales(job.w, rp, nb, dw);
    } else if (T == DType::Q4_0_R16 && rp % kR16Rows == 0 && rp + kPanelRows <= job.w.rows) {
      pack_r16_panel(job.w, rp, nb, aq, dw);
    } else {
      pack_int8_panel<T>(job.w, rp, nr, nb, aq, dw);
    }
    __asm__ volatile("" ::: "memory");  // as in gemm_typed: the panel is read by asm
    for (int64_t g = ga; g < gb; ++g) {
      for (int mt = 0; mt < 2 && mt * 16 < nr; ++mt) {
        if (in_place) {
          const auto* a = static_cast<const int8_t*>(job.w.data) + size_t(rp + mt * 16) * row_bytes + 2;
          int8_tile(a, int64_t(sizeof(BlockQ8_0)), int64_t(row_bytes), dw + mt * nb * 16, job.xp + g * gstride, nb, out);
        } else {
          int8_tile(aq + mt * nb * 16 * kQBlock, 16 * kQBlock, kQBlock, dw + mt * nb * 16, job.xp + g * gstride, nb, out);
        }
        store_tile(out, job.y, ldy, rp + mt * 16, imin(16, nr - mt * 16), g * kPackTokens, t0, t1);
      }
    }
  }
  _tile_release();
}

}  // namespace

// Token groups [g0, g1): per group and chunk, the x_hi, x_mid and x_lo B tiles. A token's 16 column
// pairs go to dword n of the tile's 16 rows (a scatter with stride 64 bytes).
void pack_acts(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp) {
  const int64_t nch = (cols + kAmxChunk - 1) / kAmxChunk;
  const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(16));
  for (int64_t g = g0; g < g1; ++g) {
    uint8_t* base = xp + g * nch * kPieces * kTileBytes;
    for (int64_t n = 0; n < kPackTokens; ++n) {
      const int64_t t = g * kPackTokens + n;
      for (int64_t j = 0; j < nch; ++j) {
        const int64_t c = j * kAmxChunk;
        __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
        if (t < n_tokens) {
          v0 = _mm512_maskz_loadu_ps(tail_mask(cols - c), x + t * cols + c);
          v1 = _mm512_maskz_loadu_ps(tail_mask(cols - c - 16), x + t * cols + c + 16);
        }
        uint8_t* tile = base + j * kPieces * kTileBytes + n * 4;
        for (int64_t p = 0; p < kPieces; ++p) {
          // Each piece is the bf16 rounding of what the pieces before it left (exact in float32).
          const __m512 h0 = from_bf16(to_bf16(v0)), h1 = from_bf16(to_bf16(v1));
          // cvtne2ps: the second operand fills the low half (columns c .. c + 15).
          _mm512_i32scatter_epi32(tile + p * kTileBytes, rows, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(h1, h0)), 4);
          v0 = _mm512_sub_ps(v0, h0);
          v1 = _mm512_sub_ps(v1, h1);
        }
      }
    }
  }
}

// The AVX-512 int8 packing, then the +128 bias taken off (u ^ 0x80 = u - 128 as a signed byte).
void pack_acts_int8(const float* x, int64_t cols, int64_t n_tokens, int64_t g0, int64_t g1, uint8_t* xp) {
  const KernelTable* k = kernel_table(KernelIsa::Avx512);
  k->pack_acts_int8(x, cols, n_tokens, g0, g1, xp);
  const int64_t nb = cols / kQBlock;
  const __m512i bias = _mm512_set1_epi8(char(0x80));
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = xp + (g * nb + b) * kInt8GroupBlockBytes;
      for (int j = 0; j < 8; ++j) {
        auto* p = reinterpret_cast<__m512i*>(blk + j * 64);
        _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), bias));
      }
    }
  }
}

void gemm_int8(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
  switch (job.w.dtype) {
    case DType::Q8_0: gemm_int8_typed<DType::Q8_0>(job, r0, r1, t0, t1); return;
    case DType::Q4_0: gemm_int8_typed<DType::Q4_0>(job, r0, r1, t0, t1); return;
    default: gemm_int8_typed<DType::Q4_0_R16>(job, r0, r1, t0, t1); return;
  }
}

void gemm(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
  if (job.w.dtype == DType::F16) {
    gemm_typed<DType::F16>(job, r0, r1, t0, t1);
  } else {
    gemm_typed<DType::BF16>(job, r0, r1, t0, t1);
  }
}

}  // namespace lcx::kernels::amx

#pragma GCC diagnostic pop
LCX_ISA_END

#endif  // x86-64
