// AMX kernels: the F16 / BF16 prompt-processing GEMM on TDPBF16PS tiles (GemmMode::Amx; the
// numerics, the bf16 pieces and the error bound are described in ops_internal.h). Called only
// through the AVX-512 table and only where cpu_amx_ready().
//
// Roles: C[16 weight rows][16 tokens] (float32) += A[16 rows][32 columns] (bf16, row-major)
//        * B[16 column pairs][16 tokens][2] (bf16, the "VNNI" layout TDPBF16PS wants).
// Activations are packed into B tiles once per matmul (pack_acts, shared by all threads); weights
// are split into bf16 pieces 32 rows at a time into a thread-local panel of A tiles that every
// token group then reuses. Eight tile registers: four accumulators (2 row tiles x 2 token
// groups), two A and two B operands, so each loaded tile feeds two products.
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
LCX_ISA_BEGIN("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16")

namespace lcx::kernels::amx {
namespace {

constexpr int64_t kTileBytes = 1024;   // 16 rows x 64 bytes
constexpr int64_t kPanelRows = 32;     // weight rows per panel: two A tiles
constexpr int64_t kPieces = 2;         // activation pieces: x_hi, x_mid

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

void load_tile_config() {
  static const TileConfig cfg = kTileConfig;
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// The weight panel: rows [rp, rp + nr) (nr <= 32, the rest zero) as A tiles
// [row tile][chunk][piece][16 rows][32 bf16]; pieces w_hi, w_lo for F16, w for BF16.
template <DType T>
void pack_weight_panel(const MatRef& w, int64_t rp, int64_t nr, int64_t nch, uint8_t* panel) {
  constexpr int64_t P = T == DType::F16 ? 2 : 1;
  const size_t row_bytes = dtype_row_bytes(T, w.cols);
  for (int64_t i = 0; i < kPanelRows; ++i) {
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

// C tiles of 2 row tiles x NT token groups over all chunks. a: the panel; b[v]: token group v's
// packed activations. Tile registers: C(mt, v) = tmm(2 * mt + v), A = tmm4/5, B = tmm6/7.
template <int NT, int P>
void tile_products(const uint8_t* a, const uint8_t* const* b, int64_t nch) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const uint8_t* a1 = a + nch * P * kTileBytes;  // second row tile
  for (int64_t j = 0; j < nch; ++j) {
    const uint8_t* aj0 = a + j * P * kTileBytes;
    const uint8_t* aj1 = a1 + j * P * kTileBytes;
    const int64_t bo = j * kPieces * kTileBytes;
    // w_hi (or w) x x_hi
    _tile_loadd(4, aj0, 64);
    _tile_loadd(5, aj1, 64);
    _tile_loadd(6, b[0] + bo, 64);
    if constexpr (NT == 2) _tile_loadd(7, b[1] + bo, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if constexpr (NT == 2) {
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
    if constexpr (P == 2) {
      // w_lo x x_hi (the B tiles stay)
      _tile_loadd(4, aj0 + kTileBytes, 64);
      _tile_loadd(5, aj1 + kTileBytes, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NT == 2) {
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_loadd(4, aj0, 64);
      _tile_loadd(5, aj1, 64);
    }
    // w_hi (or w) x x_mid
    _tile_loadd(6, b[0] + bo + kTileBytes, 64);
    if constexpr (NT == 2) _tile_loadd(7, b[1] + bo + kTileBytes, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if constexpr (NT == 2) {
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
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
  // Reused across calls (capacity only grows): 2 row tiles x nch chunks x P pieces.
  thread_local std::vector<uint8_t> panel_buf;
  const size_t panel_bytes = size_t(2 * nch * P * kTileBytes) + 64;
  if (panel_buf.size() < panel_bytes) panel_buf.resize(panel_bytes);
  const auto addr = reinterpret_cast<uintptr_t>(panel_buf.data());
  uint8_t* panel = panel_buf.data() + (64 - addr % 64) % 64;
  alignas(64) float c[4][256];
  load_tile_config();
  for (int64_t rp = r0; rp < r1; rp += kPanelRows) {
    const int64_t nr = imin(kPanelRows, r1 - rp);
    pack_weight_panel<T>(job.w, rp, nr, nch, panel);
    // GCC's tileloadd is an asm statement without a memory operand: keep the stores above it.
    __asm__ volatile("" ::: "memory");
    for (int64_t g = ga; g < gb; g += 2) {
      const uint8_t* b[2] = {job.xp + g * gstride, job.xp + (g + 1) * gstride};
      const int nt = g + 1 < gb ? 2 : 1;
      if (nt == 2) {
        tile_products<2, P>(panel, b, nch);
      } else {
        tile_products<1, P>(panel, b, nch);
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(2, c[2], 64);
      if (nt == 2) {
        _tile_stored(1, c[1], 64);
        _tile_stored(3, c[3], 64);
      }
      for (int mt = 0; mt < 2; ++mt) {
        for (int v = 0; v < nt; ++v) {
          store_tile(c[2 * mt + v], job.y, ldy, rp + mt * 16, imin(16, nr - mt * 16), (g + v) * kPackTokens, t0, t1);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace

// Token groups [g0, g1): per group and chunk, the x_hi then the x_mid B tile. A token's 16 column
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
        const __m512 h0 = from_bf16(to_bf16(v0)), h1 = from_bf16(to_bf16(v1));
        // cvtne2ps: the second operand fills the low half (columns c .. c + 15).
        const __m512i hi = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(h1, h0));
        const __m512i mid = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_sub_ps(v1, h1), _mm512_sub_ps(v0, h0)));
        uint8_t* tile = base + j * kPieces * kTileBytes + n * 4;
        _mm512_i32scatter_epi32(tile, rows, hi, 4);
        _mm512_i32scatter_epi32(tile + kTileBytes, rows, mid, 4);
      }
    }
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
