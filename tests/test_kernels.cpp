// Every kernel variant this CPU can run, against the scalar twins (the oracle).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/ops.h"
#include "kernels/ops_internal.h"
#include "runtime/thread_pool.h"

namespace lcx::kernels {
namespace {

std::vector<const KernelTable*> simd_tables() {
  std::vector<const KernelTable*> out;
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512}) {
    if (const KernelTable* k = kernel_table(isa)) out.push_back(k);
  }
  return out;
}

std::vector<float> random_vec(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// A weight matrix in dtype t, built by quantizing random floats with the scalar reference.
std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const std::vector<float> f = random_vec(rows * cols, seed, 0.5f);
  std::vector<uint8_t> w(dtype_row_bytes(t, cols) * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    scalar::quantize_row(t, f.data() + r * cols, w.data() + size_t(r) * dtype_row_bytes(t, cols), cols);
  }
  return w;
}

// sum_c |w[r,c] x[t,c]|: the scale of the rounding error of any summation order.
std::vector<double> abs_products(const MatRef& w, const float* x, int64_t n_tokens) {
  std::vector<double> out(static_cast<size_t>(n_tokens * w.rows));
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    scalar::dequantize_row(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r) * dtype_row_bytes(w.dtype, w.cols),
                           row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t c = 0; c < w.cols; ++c) s += std::fabs(double(row[size_t(c)]) * x[t * w.cols + c]);
      out[size_t(t * w.rows + r)] = s;
    }
  }
  return out;
}

std::string shape_str(const KernelTable& k, DType t, int64_t rows, int64_t cols, int64_t nt) {
  return std::string(kernel_isa_name(k.isa)) + " " + dtype_name(t) + " rows=" + std::to_string(rows) +
         " cols=" + std::to_string(cols) + " n_tokens=" + std::to_string(nt);
}

const DType kAllTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};

// F32/F16/BF16 weights (and Q8_0/Q4_0 above the GEMV size, which dequantize to f32) accumulate in
// float32: the only difference from the scalar twin is summation order.
TEST(Kernels, MatmulFloatAccumulateMatchesScalar) {
  for (const KernelTable* k : simd_tables()) {
    for (DType t : kAllTypes) {
      const bool quant = dtype_is_quantized(t);
      const std::vector<int64_t> cols_list = quant ? std::vector<int64_t>{32, 96, 288, 544}
                                                   : std::vector<int64_t>{1, 5, 17, 32, 100, 288, 531, 1100, 2100};
      // The AVX-512 f32 GEMM takes rows of up to 2048 columns in one block (1100) and wider rows
      // in 512-column blocks (2100: four and a partial one); 131 rows: two groups of two 32-row
      // panels and a partial group.
      for (int64_t rows : {1, 7, 33, 67, 131}) {
        for (int64_t cols : cols_list) {
          const std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 131 + cols));
          const MatRef w{t, rows, cols, wdata.data()};
          for (int64_t nt : {1, 2, 3, 4, 7, 12, 13, 64, 65}) {
            if (quant && nt <= kGemvMaxTokens) continue;  // int8 path: tested below
            const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 7));
            std::vector<float> want(static_cast<size_t>(nt * rows)), got(static_cast<size_t>(nt * rows), NAN);
            const MatmulJob jw{w, x.data(), nt, want.data(), {}};
            const MatmulJob jg{w, x.data(), nt, got.data(), {}};
            scalar::matmul_rows_job(jw, 0, rows, 0, nt);
            k->matmul_rows(jg, 0, rows, 0, nt);
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_NEAR(got[i], want[i], 1e-5 * scale[i] + 1e-30) << shape_str(*k, t, rows, cols, nt) << " i=" << i;
            }
          }
        }
      }
    }
  }
}

// Q8_0/Q4_0 GEMV with int8 activations: (a) the integer sums are exact, so against the scalar
// twin of the int8 path only float summation order differs; (b) against float activations the
// error is at most half an activation quantization step per element:
//   |y_int8 - y_f32| <= sum_c |w[r,c]| * amax(x block of c) / 254.
TEST(Kernels, MatmulInt8ActivationsWithinBound) {
  for (const KernelTable* k : simd_tables()) {
    for (DType t : {DType::Q8_0, DType::Q4_0}) {
      for (int64_t rows : {1, 7, 33, 67}) {
        // Block counts 1, 2, 3, 4, 6, 9, 17: the AVX-512 Q4_0 GEMV takes blocks in pairs, two
        // pairs per step, then a lone pair and a lone block.
        for (int64_t cols : {32, 64, 96, 128, 192, 288, 544}) {
          const std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 17 + cols));
          const MatRef w{t, rows, cols, wdata.data()};
          for (int64_t nt : {1, 2, 3, 4}) {
            const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 3));
            std::vector<int8_t> qs(static_cast<size_t>(nt * cols));
            std::vector<float> d(static_cast<size_t>(nt * cols / kQBlock));
            for (int64_t i = 0; i < nt; ++i) {
              k->quantize_acts(x.data() + i * cols, cols, qs.data() + i * cols, d.data() + i * (cols / kQBlock));
            }
            std::vector<float> twin(static_cast<size_t>(nt * rows)), exact(static_cast<size_t>(nt * rows)), got(static_cast<size_t>(nt * rows), NAN);
            const MatmulJob jt{w, x.data(), nt, twin.data(), {qs.data(), d.data()}};
            const MatmulJob je{w, x.data(), nt, exact.data(), {}};
            const MatmulJob jg{w, x.data(), nt, got.data(), {qs.data(), d.data()}};
            scalar::matmul_rows_q8acts(jt, 0, rows, 0, nt);
            scalar::matmul_rows_job(je, 0, rows, 0, nt);
            k->matmul_rows(jg, 0, rows, 0, nt);
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            std::vector<float> wrow(static_cast<size_t>(cols));
            for (int64_t r = 0; r < rows; ++r) {
              scalar::dequantize_row(t, wdata.data() + size_t(r) * dtype_row_bytes(t, cols), wrow.data(), cols);
              for (int64_t i = 0; i < nt; ++i) {
                double bound = 0;
                for (int64_t c = 0; c < cols; ++c) bound += std::fabs(wrow[size_t(c)]) * d[size_t(i * (cols / kQBlock) + c / kQBlock)] * 0.5;
                const size_t at = size_t(i * rows + r);
                ASSERT_NEAR(got[at], twin[at], 1e-5 * scale[at] + 1e-30) << shape_str(*k, t, rows, cols, nt);
                ASSERT_NEAR(got[at], exact[at], bound * 1.001 + 1e-5 * scale[at]) << shape_str(*k, t, rows, cols, nt);
              }
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, MatmulRowSubrangesAndThreads) {
  for (DType t : kAllTypes) {
    for (int64_t nt : {1, 3, 5, 64, 65}) {
      for (int64_t rows : {45, 300}) {
        const int64_t cols = 320;
        const std::vector<uint8_t> wdata = make_weights(t, rows, cols, 99);
        const MatRef w{t, rows, cols, wdata.data()};
        const std::vector<float> x = random_vec(nt * cols, 5);
        std::vector<float> want(static_cast<size_t>(nt * rows));
        scalar::matmul_rows(w, x.data(), nt, want.data(), 0, rows);
        const std::vector<double> scale = abs_products(w, x.data(), nt);
        // int8 activations (quantized GEMV/GEMM on SIMD variants) and the opt-in bf16 GEMM need the
        // looser bound; 1e-2 of the absolute product sum is far above it for these Gaussian inputs.
        const bool low_precision =
            (dtype_is_quantized(t) && nt <= kGemvMaxTokens && active_kernel_isa() != KernelIsa::Scalar) ||
            gemm_mode(active_kernels(), t, nt, fast_bf16_requested()) != GemmMode::F32;
        const double rel = low_precision ? 1e-2 : 1e-5;
        for (int n_threads : {1, 2, 3}) {
          ThreadPool pool(n_threads);
          std::vector<float> got(static_cast<size_t>(nt * rows), NAN);
          matmul(w, x.data(), nt, got.data(), pool);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_NEAR(got[i], want[i], rel * scale[i] + 1e-30) << dtype_name(t) << " threads=" << n_threads << " nt=" << nt;
          }
        }
        std::vector<float> part(static_cast<size_t>(nt * rows), -7.0f);
        matmul_rows(w, x.data(), nt, part.data(), 5, 40);  // a ragged sub-range touches only its rows
        for (int64_t i = 0; i < nt; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const size_t at = size_t(i * rows + r);
            if (r < 5 || r >= 40) {
              ASSERT_EQ(part[at], -7.0f);
            } else {
              ASSERT_NEAR(part[at], want[at], rel * scale[at] + 1e-30);
            }
          }
        }
      }
    }
  }
}

// ---- Low-precision GEMMs (n_tokens > kGemvMaxTokens) ---------------------------------------

// Activations of all tokens quantized row-major by the scalar twin (the oracle's QuantActs).
struct TwinActs {
  std::vector<int8_t> qs;
  std::vector<float> d;
};
TwinActs twin_quantize(const std::vector<float>& x, int64_t nt, int64_t cols) {
  TwinActs a{std::vector<int8_t>(size_t(nt * cols)), std::vector<float>(size_t(nt * cols / kQBlock))};
  for (int64_t i = 0; i < nt; ++i) {
    scalar::quantize_acts(x.data() + i * cols, cols, a.qs.data() + i * cols, a.d.data() + i * (cols / kQBlock));
  }
  return a;
}

// 64-byte aligned packed activations (the kernels use aligned loads).
struct PackedBuf {
  std::vector<uint8_t> raw;
  uint8_t* data = nullptr;
};
PackedBuf pack_all(const KernelTable& k, GemmMode mode, const std::vector<float>& x, int64_t nt, int64_t cols) {
  PackedBuf p;
  p.raw.assign(packed_acts_bytes(mode, cols, nt) + 64, 0xee);
  const auto addr = reinterpret_cast<uintptr_t>(p.raw.data());
  p.data = p.raw.data() + (64 - addr % 64) % 64;
  const auto pack = mode == GemmMode::Int8      ? k.pack_acts_int8
                    : mode == GemmMode::Bf16    ? k.pack_acts_bf16
                    : mode == GemmMode::AmxInt8 ? k.pack_acts_amx_int8
                                                : k.pack_acts_amx;
  const int64_t groups = pack_token_groups(nt);
  pack(x.data(), cols, nt, 0, groups / 2, p.data);  // in two pieces, as threads do
  pack(x.data(), cols, nt, groups / 2, groups, p.data);
  return p;
}

// The packed int8 activations hold exactly quantize_acts' values, biased by 128; pads are zero.
TEST(Kernels, PackActsInt8MatchesQuantizeActs) {
  for (const KernelTable* k : simd_tables()) {
    if (k->pack_acts_int8 == nullptr) continue;
    for (int64_t nt : {5, 16, 17, 40}) {
      const int64_t cols = 96, nb = cols / kQBlock;
      std::vector<float> x = random_vec(nt * cols, uint32_t(nt), 2.0f);
      for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.0f;  // an all-zero block
      const TwinActs want = twin_quantize(x, nt, cols);
      const PackedBuf p = pack_all(*k, GemmMode::Int8, x, nt, cols);
      for (int64_t t = 0; t < pack_token_groups(nt) * kPackTokens; ++t) {
        const int64_t g = t / kPackTokens, i = t % kPackTokens;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = p.data + (g * nb + b) * kInt8GroupBlockBytes;
          float d;
          std::memcpy(&d, blk + 8 * 64 + i * 4, 4);
          ASSERT_EQ(d, t < nt ? want.d[size_t(t * nb + b)] : 0.0f) << kernel_isa_name(k->isa) << " t=" << t;
          for (int j = 0; j < kQBlock; ++j) {
            const int q = int(blk[(j / 4) * 64 + i * 4 + j % 4]) - 128;
            ASSERT_EQ(q, t < nt ? int(want.qs[size_t(t * cols + b * kQBlock + j)]) : 0) << kernel_isa_name(k->isa);
          }
        }
      }
    }
  }
}

// |y_int8 - y_f32| <= sum_c |w[r,c]| * d_x(block of c) / 2 (see GemmMode).
double int8_bound(const MatRef& w, const TwinActs& a, int64_t r, int64_t t) {
  std::vector<float> row(size_t(w.cols));
  scalar::dequantize_row(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r) * dtype_row_bytes(w.dtype, w.cols),
                         row.data(), w.cols);
  double bound = 0;
  for (int64_t c = 0; c < w.cols; ++c) bound += std::fabs(row[size_t(c)]) * a.d[size_t(t * (w.cols / kQBlock) + c / kQBlock)] * 0.5;
  return bound;
}

// Q8_0/Q4_0 prompt processing with int8 activations: the integer block sums are exact, so against
// the scalar int8 twin only float rounding differs; against float activations, the stated bound.
// The AMX int8 GEMM (GemmMode::AmxInt8, the default where the CPU has AMX) has the same numerics.
TEST(Kernels, MatmulInt8GemmMatchesTwin) {
  std::vector<std::pair<const KernelTable*, GemmMode>> runs;
  for (const KernelTable* k : simd_tables()) {
    if (k->pack_acts_int8 != nullptr) runs.emplace_back(k, GemmMode::Int8);
    if (k->pack_acts_amx_int8 != nullptr && cpu_amx_ready()) runs.emplace_back(k, GemmMode::AmxInt8);
  }
  for (const auto& [k, mode] : runs) {
    for (DType t : {DType::Q8_0, DType::Q4_0}) {
      for (int64_t rows : {1, 7, 33, 67}) {
        for (int64_t cols : {32, 96, 288, 544}) {
          const std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 29 + cols));
          const MatRef w{t, rows, cols, wdata.data()};
          for (int64_t nt : {5, 12, 16, 17, 33, 48, 65}) {
            const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 11));
            const TwinActs a = twin_quantize(x, nt, cols);
            const PackedBuf p = pack_all(*k, mode, x, nt, cols);
            std::vector<float> twin(size_t(nt * rows)), exact(size_t(nt * rows)), got(size_t(nt * rows), NAN);
            scalar::matmul_rows_q8acts({w, x.data(), nt, twin.data(), {a.qs.data(), a.d.data()}}, 0, rows, 0, nt);
            scalar::matmul_rows_job({w, x.data(), nt, exact.data(), {}}, 0, rows, 0, nt);
            MatmulJob jg{w, x.data(), nt, got.data(), {}};
            jg.mode = mode;
            jg.xp = p.data;
            k->matmul_rows(jg, 0, rows, 0, nt);
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t i = 0; i < nt; ++i) {
                const size_t at = size_t(i * rows + r);
                ASSERT_NEAR(got[at], twin[at], 1e-5 * scale[at] + 1e-30) << shape_str(*k, t, rows, cols, nt);
                ASSERT_NEAR(got[at], exact[at], int8_bound(w, a, r, i) * 1.001 + 1e-5 * scale[at])
                    << shape_str(*k, t, rows, cols, nt);
              }
            }
            // A ragged sub-range of rows and tokens touches only its own outputs.
            const int64_t ra = std::min<int64_t>(rows - 1, 3), rb = std::min<int64_t>(rows, 38), ta = 3, tb = nt - 1;
            std::vector<float> part(size_t(nt * rows), -7.0f);
            jg.y = part.data();
            k->matmul_rows(jg, ra, rb, ta, tb);
            for (int64_t i = 0; i < nt; ++i) {
              for (int64_t r = 0; r < rows; ++r) {
                const size_t at = size_t(i * rows + r);
                if (r < ra || r >= rb || i < ta || i >= tb) {
                  ASSERT_EQ(part[at], -7.0f) << shape_str(*k, t, rows, cols, nt);
                } else {
                  ASSERT_EQ(part[at], got[at]) << shape_str(*k, t, rows, cols, nt);
                }
              }
            }
          }
        }
      }
    }
  }
}

// Q4_0 weights repacked into 16-row panels (DType::Q4_0_R16, the AVX-512 decode layout): the
// repack keeps every block, and every kernel variant gives on R16 what it gives on the Q4_0 rows
// (GEMV: the int8 twin within float summation order; prompt GEMMs: the same bits, the panel
// preparation gathers the same blocks). Row ranges start and end inside panels.
TEST(Kernels, Q4_0R16MatchesQ4_0) {
  std::vector<const KernelTable*> tables = simd_tables();
  tables.push_back(&scalar::kTable);
  for (int64_t rows : {16, 48, 80}) {
    for (int64_t cols : {32, 96, 288, 1056}) {
      const std::vector<uint8_t> q4 = make_weights(DType::Q4_0, rows, cols, uint32_t(rows * 5 + cols));
      std::vector<uint8_t> r16(q4.size());
      repack_q4_0_r16(q4.data(), r16.data(), rows, cols);
      const int64_t nb = cols / kQBlock;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
          const BlockQ4_0 got = q4_0_r16_block(r16.data(), cols, r, b);
          ASSERT_EQ(std::memcmp(&got, q4.data() + size_t(r * nb + b) * sizeof(BlockQ4_0), sizeof got), 0)
              << "r=" << r << " b=" << b;
        }
      }
      const MatRef wq{DType::Q4_0, rows, cols, q4.data()}, wr{DType::Q4_0_R16, rows, cols, r16.data()};
      for (const KernelTable* k : tables) {
        for (int64_t nt : {1, 2, 3, 4, 5, 17}) {
          const std::vector<float> x = random_vec(nt * cols, uint32_t(nt * 3 + cols));
          const TwinActs a = twin_quantize(x, nt, cols);
          const std::vector<double> scale = abs_products(wq, x.data(), nt);
          std::vector<float> want(size_t(nt * rows));
          MatmulJob jg{wr, x.data(), nt, nullptr, {}};
          PackedBuf p;
          if (nt <= kGemvMaxTokens && k->isa != KernelIsa::Scalar) {
            scalar::matmul_rows_q8acts({wq, x.data(), nt, want.data(), {a.qs.data(), a.d.data()}}, 0, rows, 0, nt);
            jg.xq = {a.qs.data(), a.d.data()};
          } else {
            MatmulJob jw{wq, x.data(), nt, want.data(), {}};
            jw.mode = gemm_mode(*k, DType::Q4_0, nt, false);
            if (jw.mode == GemmMode::Int8 || jw.mode == GemmMode::AmxInt8) {
              p = pack_all(*k, jw.mode, x, nt, cols);
              jw.xp = jg.xp = p.data;
            }
            jg.mode = jw.mode;
            ASSERT_EQ(gemm_mode(*k, DType::Q4_0_R16, nt, false), jw.mode);
            k->matmul_rows(jw, 0, rows, 0, nt);
          }
          const bool exact = jg.mode == GemmMode::Int8 || jg.mode == GemmMode::AmxInt8 || k->isa == KernelIsa::Scalar;
          for (int64_t r0 : {int64_t(0), int64_t(3), int64_t(17)}) {
            for (int64_t r1 : {rows, rows - 5}) {
              if (r0 >= r1) continue;
              std::vector<float> got(size_t(nt * rows), -7.0f);
              jg.y = got.data();
              k->matmul_rows(jg, r0, r1, 0, nt);
              for (int64_t i = 0; i < nt; ++i) {
                for (int64_t r = 0; r < rows; ++r) {
                  const size_t at = size_t(i * rows + r);
                  const std::string where = shape_str(*k, DType::Q4_0_R16, rows, cols, nt) + " r=" + std::to_string(r) +
                                            " r0=" + std::to_string(r0) + " r1=" + std::to_string(r1);
                  if (r < r0 || r >= r1) {
                    ASSERT_EQ(got[at], -7.0f) << where;
                  } else if (exact) {
                    ASSERT_EQ(got[at], want[at]) << where;
                  } else {
                    ASSERT_NEAR(got[at], want[at], 1e-5 * scale[at] + 1e-30) << where;
                  }
                }
              }
            }
          }
        }
        // Through the thread pool, as the model calls it.
        for (int64_t nt : {1, 3, 20}) {
          const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 1));
          const std::vector<double> scale = abs_products(wq, x.data(), nt);
          ThreadPool pool(2);
          std::vector<float> want(size_t(nt * rows)), got(size_t(nt * rows), NAN);
          matmul_with(*k, false, wq, x.data(), nt, want.data(), pool);
          matmul_with(*k, false, wr, x.data(), nt, got.data(), pool);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_NEAR(got[i], want[i], 1e-5 * scale[i] + 1e-30) << shape_str(*k, DType::Q4_0_R16, rows, cols, nt);
          }
        }
      }
    }
  }
}

// matmul_multi (q/k/v and gate/up in one fork-join at decode) gives each matrix exactly what its
// own matmul gives: every row is computed by the same kernel from the same quantized activations.
TEST(Kernels, MatmulMultiMatchesSeparateMatmuls) {
  const int64_t cols = 256;
  const int64_t rows[3] = {96, 16, 48};
  for (DType t : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_0_R16}) {
    std::vector<std::vector<uint8_t>> data;
    MatRef w[3];
    for (int i = 0; i < 3; ++i) {
      const DType base = t == DType::Q4_0_R16 ? DType::Q4_0 : t;
      data.push_back(make_weights(base, rows[i], cols, uint32_t(40 + i)));
      if (t == DType::Q4_0_R16) {
        const std::vector<uint8_t> rm = data.back();
        repack_q4_0_r16(rm.data(), data.back().data(), rows[i], cols);
      }
      w[i] = MatRef{t, rows[i], cols, data.back().data()};
    }
    for (int64_t nt : {1, 2, 4, 7, 40}) {
      const std::vector<float> x = random_vec(nt * cols, uint32_t(nt));
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        std::vector<float> want[3], got[3];
        float* y[3];
        for (int i = 0; i < 3; ++i) {
          want[i].assign(size_t(nt * rows[i]), 0.0f);
          got[i].assign(size_t(nt * rows[i]), NAN);
          matmul(w[i], x.data(), nt, want[i].data(), pool);
          y[i] = got[i].data();
        }
        matmul_multi(w, 3, x.data(), nt, y, pool);
        for (int i = 0; i < 3; ++i) {
          EXPECT_EQ(got[i], want[i]) << dtype_name(t) << " nt=" << nt << " threads=" << threads << " matrix " << i;
        }
      }
    }
  }
}

// Whether this CPU runs the bf16 GEMM of table k.
bool has_bf16_gemm(const KernelTable& k) { return gemm_mode(k, DType::BF16, kGemvMaxTokens + 1, true) == GemmMode::Bf16; }

// F16/BF16 prompt processing with LONGCTX_FAST_BF16: against the scalar bf16 twin (only float
// summation order differs) and against the exact f32 product with the stated relative bound.
TEST(Kernels, MatmulBf16GemmMatchesTwin) {
  for (const KernelTable* k : simd_tables()) {
    if (!has_bf16_gemm(*k)) continue;
    for (DType t : {DType::F16, DType::BF16}) {
      for (int64_t rows : {1, 7, 33, 67}) {
        for (int64_t cols : {1, 5, 32, 100, 288, 531}) {
          const std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 7 + cols));
          const MatRef w{t, rows, cols, wdata.data()};
          for (int64_t nt : {5, 12, 16, 17, 33, 48, 65}) {
            const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 5));
            const PackedBuf p = pack_all(*k, GemmMode::Bf16, x, nt, cols);
            std::vector<float> twin(size_t(nt * rows)), exact(size_t(nt * rows)), got(size_t(nt * rows), NAN);
            scalar::matmul_rows_bf16({w, x.data(), nt, twin.data(), {}}, 0, rows, 0, nt);
            scalar::matmul_rows_job({w, x.data(), nt, exact.data(), {}}, 0, rows, 0, nt);
            MatmulJob jg{w, x.data(), nt, got.data(), {}};
            jg.mode = GemmMode::Bf16;
            jg.xp = p.data;
            k->matmul_rows(jg, 0, rows, 0, nt);
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            const double rel = t == DType::BF16 ? 0x1p-8 : 0x1p-7;
            for (size_t i = 0; i < got.size(); ++i) {
              ASSERT_NEAR(got[i], twin[i], 1e-5 * scale[i] + 1e-30) << shape_str(*k, t, rows, cols, nt) << " i=" << i;
              ASSERT_NEAR(got[i], exact[i], (rel + 1e-5) * scale[i] + 1e-30) << shape_str(*k, t, rows, cols, nt);
            }
          }
        }
      }
    }
  }
}

// F16/BF16 prompt processing on AMX tiles (the default where the CPU has AMX-BF16): against the
// scalar twin of the bf16 pieces (float summation order differs) and against the exact product
// with the bound of ops_internal.h (2^-23 of sum |w x| plus float32 summation), whole and for
// sub-ranges of rows and tokens as threads call it.
TEST(Kernels, MatmulAmxGemmMatchesTwin) {
  const KernelTable* k = kernel_table(KernelIsa::Avx512);
  if (k == nullptr || !cpu_amx_ready()) GTEST_SKIP() << "no AMX-BF16 on this CPU (or not enabled by the OS)";
  for (DType t : {DType::F16, DType::BF16}) {
    for (int64_t rows : {1, 7, 16, 33, 67}) {
      for (int64_t cols : {1, 5, 32, 100, 288, 531}) {
        const std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 7 + cols));
        const MatRef w{t, rows, cols, wdata.data()};
        for (int64_t nt : {5, 12, 16, 17, 33, 48, 65}) {
          const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 5));
          const PackedBuf p = pack_all(*k, GemmMode::Amx, x, nt, cols);
          std::vector<float> twin(size_t(nt * rows)), exact(size_t(nt * rows)), got(size_t(nt * rows), NAN);
          scalar::matmul_rows_amx({w, x.data(), nt, twin.data(), {}}, 0, rows, 0, nt);
          scalar::matmul_rows_job({w, x.data(), nt, exact.data(), {}}, 0, rows, 0, nt);
          MatmulJob jg{w, x.data(), nt, got.data(), {}};
          jg.mode = GemmMode::Amx;
          jg.xp = p.data;
          // Rows and tokens in pieces, as matmul_with hands them out (32-row blocks, 16-token groups).
          const int64_t rs = rows > 32 ? 32 : rows, ts = nt > 16 ? 16 : nt;
          k->matmul_rows(jg, 0, rs, 0, ts);
          k->matmul_rows(jg, rs, rows, 0, ts);
          k->matmul_rows(jg, 0, rows, ts, nt);
          const std::vector<double> scale = abs_products(w, x.data(), nt);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_NEAR(got[i], twin[i], 1e-5 * scale[i] + 1e-30) << shape_str(*k, t, rows, cols, nt) << " i=" << i;
            ASSERT_NEAR(got[i], exact[i], (0x1p-23 + 1e-5) * scale[i] + 1e-30) << shape_str(*k, t, rows, cols, nt);
          }
        }
      }
    }
  }
}

// The AMX pieces give float32 quality: on typical data the error against the float32 GEMM's
// scalar twin stays within float32 summation noise (two pieces of x, 2^-15, moved the F16
// fixtures up to 8.7e-5 of their 1e-4).
TEST(Kernels, MatmulAmxTwinIsNearFloat32) {
  for (DType t : {DType::F16, DType::BF16}) {
    const int64_t rows = 64, cols = 2048, nt = 3;
    const std::vector<uint8_t> wdata = make_weights(t, rows, cols, 5);
    const MatRef w{t, rows, cols, wdata.data()};
    const std::vector<float> x = random_vec(nt * cols, 6);
    std::vector<float> twin(size_t(nt * rows)), exact(size_t(nt * rows));
    scalar::matmul_rows_amx({w, x.data(), nt, twin.data(), {}}, 0, rows, 0, nt);
    scalar::matmul_rows_job({w, x.data(), nt, exact.data(), {}}, 0, rows, 0, nt);
    const std::vector<double> scale = abs_products(w, x.data(), nt);
    double worst = 0;
    for (size_t i = 0; i < twin.size(); ++i) worst = std::max(worst, std::fabs(double(twin[i]) - exact[i]) / scale[i]);
    EXPECT_LT(worst, 2e-7) << dtype_name(t);  // two pieces of x gave ~3e-6, bf16 alone ~1e-3
  }
}

// The whole matmul (activation packing split across threads, then rows or tokens split) for
// every variant, dtype and thread count, against the twin of the path it takes.
TEST(Kernels, MatmulLowPrecisionThreads) {
  for (const KernelTable* k : simd_tables()) {
    for (bool fast : {false, true}) {
      for (DType t : kAllTypes) {
        for (int64_t nt : {5, 64, 65}) {
          for (int64_t rows : {45, 300}) {
            const int64_t cols = 320;
            const std::vector<uint8_t> wdata = make_weights(t, rows, cols, 77);
            const MatRef w{t, rows, cols, wdata.data()};
            const std::vector<float> x = random_vec(nt * cols, 9);
            const GemmMode mode = gemm_mode(*k, t, nt, fast);
            std::vector<float> want(size_t(nt * rows));
            const TwinActs a = twin_quantize(x, nt, cols);
            const MatmulJob jw{w, x.data(), nt, want.data(), {a.qs.data(), a.d.data()}};
            if (mode == GemmMode::Int8 || mode == GemmMode::AmxInt8) {
              scalar::matmul_rows_q8acts(jw, 0, rows, 0, nt);
            } else if (mode == GemmMode::Bf16) {
              scalar::matmul_rows_bf16(jw, 0, rows, 0, nt);
            } else if (mode == GemmMode::Amx) {
              scalar::matmul_rows_amx(jw, 0, rows, 0, nt);
            } else {
              scalar::matmul_rows_job(jw, 0, rows, 0, nt);
            }
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            for (int n_threads : {1, 2, 3}) {
              ThreadPool pool(n_threads);
              std::vector<float> got(size_t(nt * rows), NAN);
              matmul_with(*k, fast, w, x.data(), nt, got.data(), pool);
              for (size_t i = 0; i < got.size(); ++i) {
                ASSERT_NEAR(got[i], want[i], 1e-5 * scale[i] + 1e-30)
                    << shape_str(*k, t, rows, cols, nt) << " threads=" << n_threads << " fast=" << fast;
              }
            }
          }
        }
      }
    }
  }
}

// Blocks that exercise the rounding rules: ties (x * id exactly k + 0.5), zeros, a largest
// magnitude that appears with both signs, tiny scales (fp16 subnormal d) and large ones.
std::vector<float> quant_test_data() {
  std::vector<float> v = random_vec(32 * 40, 11);
  for (int j = 0; j < 32; ++j) v[size_t(j)] = float(j % 2 ? j : -j) + 0.5f;  // Q8_0 ties: d = 1
  v[0] = 127.0f;
  for (int j = 32; j < 64; ++j) v[size_t(j)] = 0.0f;
  for (int j = 64; j < 96; ++j) v[size_t(j)] = float(j % 5) - 2.0f;
  v[64] = -4.0f;
  v[80] = 4.0f;  // Q4_0 keeps the first (negative) one
  for (int j = 96; j < 128; ++j) v[size_t(j)] *= 1e-7f;
  for (int j = 128; j < 160; ++j) v[size_t(j)] *= 3e4f;
  for (int j = 160; j < 192; ++j) v[size_t(j)] = float(j - 176) * 0.25f;  // Q4_0: d = -0.5... ties at .5
  return v;
}

TEST(Kernels, QuantizeRowBitExact) {
  const std::vector<float> x = quant_test_data();
  const int64_t n = int64_t(x.size());
  for (const KernelTable* k : simd_tables()) {
    for (DType t : kAllTypes) {
      const size_t bytes = dtype_row_bytes(t, n);
      std::vector<uint8_t> want(bytes), got(bytes, 0xcd);
      scalar::quantize_row(t, x.data(), want.data(), n);
      k->quantize_row(t, x.data(), got.data(), n);
      ASSERT_EQ(0, std::memcmp(want.data(), got.data(), bytes)) << kernel_isa_name(k->isa) << " " << dtype_name(t);
      std::vector<float> dw(static_cast<size_t>(n)), dg(static_cast<size_t>(n), NAN);
      scalar::dequantize_row(t, want.data(), dw.data(), n);
      k->dequantize_row(t, want.data(), dg.data(), n);
      ASSERT_EQ(0, std::memcmp(dw.data(), dg.data(), size_t(n) * 4)) << kernel_isa_name(k->isa) << " " << dtype_name(t);
    }
    // BF16 odd lengths and NaN handling (F16 NaN payloads are left to the scalar path).
    std::vector<float> y = random_vec(37, 3);
    y[5] = NAN;
    y[6] = INFINITY;
    y[7] = -0.0f;
    std::vector<uint16_t> bw(37), bg(37);
    scalar::quantize_row(DType::BF16, y.data(), bw.data(), 37);
    k->quantize_row(DType::BF16, y.data(), bg.data(), 37);
    ASSERT_EQ(bw, bg) << kernel_isa_name(k->isa);
  }
}

// llama.cpp's reference quantizers on known values.
TEST(Kernels, QuantizeReferenceValues) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j) - 16.0f;  // amax 16 at j = 0 (value -16)
  BlockQ8_0 q8;
  scalar::quantize_row(DType::Q8_0, x.data(), &q8, 32);
  EXPECT_EQ(q8.d, f32_to_f16(16.0f / 127.0f));
  EXPECT_EQ(q8.qs[0], -127);
  EXPECT_EQ(q8.qs[16], 0);
  EXPECT_EQ(q8.qs[24], int8_t(std::roundf(8.0f * (127.0f / 16.0f))));
  BlockQ4_0 q4;
  scalar::quantize_row(DType::Q4_0, x.data(), &q4, 32);
  EXPECT_EQ(q4.d, f32_to_f16(2.0f));  // max = -16, d = max / -8
  // value j: q = min(15, int(x / 2 + 8.5)): j=0 -> 0, j=16 -> 8, j=31 -> 15
  EXPECT_EQ(q4.qs[0] & 0x0f, 0);
  EXPECT_EQ(q4.qs[0] >> 4, 8);
  EXPECT_EQ(q4.qs[15] >> 4, 15);
}

TEST(Kernels, QuantizeDequantizeRoundTrip) {
  const std::vector<float> x = random_vec(32 * 64, 21, 2.0f);
  const int64_t n = int64_t(x.size());
  for (DType t : kAllTypes) {
    std::vector<uint8_t> q(dtype_row_bytes(t, n));
    std::vector<float> back(static_cast<size_t>(n));
    quantize_row(t, x.data(), q.data(), n);
    dequantize_row(t, q.data(), back.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[size_t(b * 32 + j)]));
      for (int j = 0; j < 32; ++j) {
        const float v = x[size_t(b * 32 + j)], r = back[size_t(b * 32 + j)];
        switch (t) {
          case DType::F32: ASSERT_EQ(v, r); break;
          case DType::F16: ASSERT_NEAR(r, v, std::fabs(v) * 0x1p-11f + 1e-7f); break;
          case DType::BF16: ASSERT_NEAR(r, v, std::fabs(v) * 0x1p-8f); break;
          // half a step (d = amax/127), plus the fp16 rounding of d
          case DType::Q8_0: ASSERT_NEAR(r, v, amax / 127.0f * 0.5f + amax * 0x1p-10f); break;
          // step d = amax/8; the clamp to 15 can cost a full step at +amax
          case DType::Q4_0: ASSERT_NEAR(r, v, amax / 8.0f * 1.0f + amax * 0x1p-10f); break;
          default: break;
        }
      }
    }
  }
}

TEST(Kernels, QuantizeActsBitExact) {
  std::vector<float> x = quant_test_data();
  for (int j = 192; j < 224; ++j) x[size_t(j)] = float(j - 208) * 0.5f;  // exact ties with d = 1/127*16...
  const int64_t n = int64_t(x.size());
  std::vector<int8_t> qw(static_cast<size_t>(n)), qg(static_cast<size_t>(n));
  std::vector<float> dw(static_cast<size_t>(n / 32)), dg(static_cast<size_t>(n / 32));
  scalar::quantize_acts(x.data(), n, qw.data(), dw.data());
  for (int8_t q : qw) ASSERT_GE(q, -127);  // the SIMD sign tricks need |q| <= 127
  for (const KernelTable* k : simd_tables()) {
    k->quantize_acts(x.data(), n, qg.data(), dg.data());
    ASSERT_EQ(qw, qg) << kernel_isa_name(k->isa);
    ASSERT_EQ(dw, dg) << kernel_isa_name(k->isa);
  }
}

TEST(Kernels, VectorOpsMatchScalar) {
  for (const KernelTable* k : simd_tables()) {
    const char* isa = kernel_isa_name(k->isa);
    for (int64_t n : {1, 3, 8, 15, 16, 17, 31, 64, 100, 1000, 5632}) {
      const std::vector<float> a = random_vec(n, uint32_t(n), 3.0f), b = random_vec(n, uint32_t(n + 1));
      double abs_dot = 0;
      for (int64_t i = 0; i < n; ++i) abs_dot += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
      EXPECT_NEAR(k->dot_f32(a.data(), b.data(), n), scalar::dot_f32(a.data(), b.data(), n), 1e-6 * abs_dot) << isa << n;

      std::vector<float> yw = b, yg = b;
      scalar::axpy(0.37f, a.data(), yw.data(), n);
      k->axpy(0.37f, a.data(), yg.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(yg[size_t(i)], yw[size_t(i)], 1e-6 * (std::fabs(b[size_t(i)]) + std::fabs(a[size_t(i)]))) << isa;

      std::vector<float> ow(static_cast<size_t>(n)), og(static_cast<size_t>(n));
      scalar::rmsnorm(a.data(), b.data(), n, 1e-6f, ow.data());
      k->rmsnorm(a.data(), b.data(), n, 1e-6f, og.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(og[size_t(i)], ow[size_t(i)], 2e-6 * std::fabs(ow[size_t(i)]) + 1e-30) << isa;

      // silu over a wide range, including where exp(-g) overflows.
      std::vector<float> g = a;
      for (int64_t i = 0; i < n; ++i) g[size_t(i)] *= 10.0f;
      scalar::swiglu(g.data(), b.data(), n, ow.data());
      k->swiglu(g.data(), b.data(), n, og.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(og[size_t(i)], ow[size_t(i)], 1e-6 * std::fabs(ow[size_t(i)]) + 1e-30) << isa << " g=" << g[size_t(i)];

      // softmax over scores spanning ~[-100, 30], with masked (-inf) entries.
      std::vector<float> sw = g, sg;
      if (n > 4) sw[2] = -INFINITY;
      sg = sw;
      scalar::softmax(sw.data(), n);
      k->softmax(sg.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(sg[size_t(i)], sw[size_t(i)], 1e-6 * sw[size_t(i)] + 1e-37) << isa << " i=" << i;
    }
  }
}

// The polynomial exp behind softmax/swiglu, against double precision, across its whole range.
TEST(Kernels, ExpAccuracy) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  for (const KernelTable* k : simd_tables()) {
    // softmax of [v, 0] = [e^v / (1 + e^v), ...]; use swiglu instead: g / (1 + exp(-g)) with up = 1
    // gives exp(-g) = g / out - 1, too lossy. So test exp through softmax of single pairs.
    double worst = 0;
    for (float v : x) {
      if (v > 0) continue;
      float p[2] = {v, 0.0f};
      k->softmax(p, 2);
      const double want = std::exp(double(v)) / (1.0 + std::exp(double(v)));
      worst = std::max(worst, std::fabs(p[0] - want) / want);
    }
    EXPECT_LT(worst, 4e-7) << kernel_isa_name(k->isa);  // ~3 ulp: exp, one add, one divide, one multiply
  }
}

TEST(Kernels, DispatchNamesTheActiveVariant) {
  const KernelIsa isa = active_kernel_isa();
  EXPECT_TRUE(kernel_isa_supported(isa));
  EXPECT_NE(kernel_table(isa), nullptr);
  EXPECT_NE(std::string(kernel_isa_name(isa)), "?");
  EXPECT_NE(kernel_table(KernelIsa::Scalar), nullptr);
  if (const char* env = std::getenv("LONGCTX_KERNELS")) {
    if (std::string(env) == "scalar") {
      EXPECT_EQ(isa, KernelIsa::Scalar);
    }
  } else if (kernel_isa_supported(KernelIsa::Avx512)) {
    EXPECT_EQ(isa, KernelIsa::Avx512);
  }
}

// GEMV edge cases of the AVX-512 kernels: the int8 GEMV takes columns in groups of four blocks
// (then 1-3 lone blocks) and every GEMV reduces rows 16 at a time, so use block counts 4k + 0..3,
// row ranges that start and end inside a batch of 16, token sub-ranges, and Q8_0 weights of -128
// (not produced by the quantizer, but legal in a file: the biased dot must stay exact).
TEST(Kernels, GemvGroupTailsAndRowBatches) {
  for (const KernelTable* k : simd_tables()) {
    for (DType t : kAllTypes) {
      const bool quant = dtype_is_quantized(t);
      const std::vector<int64_t> cols_list = quant ? std::vector<int64_t>{128, 160, 224, 256, 384, 416, 1056}
                                                   : std::vector<int64_t>{31, 63, 64, 65, 97, 160, 1000};
      for (int64_t rows : {1, 16, 17, 40}) {
        for (int64_t cols : cols_list) {
          std::vector<uint8_t> wdata = make_weights(t, rows, cols, uint32_t(rows * 7 + cols));
          if (t == DType::Q8_0) {  // a few quants of -128, extreme products with |q_x| = 127 below
            for (int64_t r = 0; r < rows; r += 3) {
              auto* b = reinterpret_cast<BlockQ8_0*>(wdata.data() + size_t(r) * dtype_row_bytes(t, cols));
              for (int64_t ib = 0; ib < cols / kQBlock; ib += 2) b[ib].qs[(r + ib) % kQBlock] = -128;
            }
          }
          const MatRef w{t, rows, cols, wdata.data()};
          for (int64_t nt = 1; nt <= kGemvMaxTokens; ++nt) {
            std::vector<float> x = random_vec(nt * cols, uint32_t(nt * 13 + cols));
            if (quant) x[0] = 1e3f;  // the block's amax: its q = 127
            std::vector<int8_t> qs(static_cast<size_t>(nt * cols));
            std::vector<float> d(static_cast<size_t>(nt * cols / kQBlock));
            QuantActs xq{};
            if (quant) {
              for (int64_t i = 0; i < nt; ++i) {
                k->quantize_acts(x.data() + i * cols, cols, qs.data() + i * cols, d.data() + i * (cols / kQBlock));
              }
              xq = {qs.data(), d.data()};
            }
            const std::vector<double> scale = abs_products(w, x.data(), nt);
            std::vector<float> want(static_cast<size_t>(nt * rows));
            const MatmulJob jw{w, x.data(), nt, want.data(), xq};
            if (quant) {
              scalar::matmul_rows_q8acts(jw, 0, rows, 0, nt);
            } else {
              scalar::matmul_rows_job(jw, 0, rows, 0, nt);
            }
            // Rows [r0, rows) and tokens [t0, nt): everything else must stay untouched.
            for (int64_t r0 : {int64_t(0), std::min<int64_t>(3, rows - 1)}) {
              for (int64_t t0 : {int64_t(0), nt - 1}) {
                std::vector<float> got(static_cast<size_t>(nt * rows), -7.0f);
                const MatmulJob jg{w, x.data(), nt, got.data(), xq};
                k->matmul_rows(jg, r0, rows, t0, nt);
                for (int64_t i = 0; i < nt; ++i) {
                  for (int64_t r = 0; r < rows; ++r) {
                    const size_t at = size_t(i * rows + r);
                    if (r < r0 || i < t0) {
                      ASSERT_EQ(got[at], -7.0f) << shape_str(*k, t, rows, cols, nt);
                    } else {
                      ASSERT_NEAR(got[at], want[at], 1e-5 * scale[at] + 1e-30)
                          << shape_str(*k, t, rows, cols, nt) << " r=" << r << " t=" << i << " r0=" << r0 << " t0=" << t0;
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace lcx::kernels

// The decode split (both ends of one range, see ThreadPool::parallel_for_stream) hands every
// index to exactly one call, for any length and thread count, and each thread's calls move in
// one direction (thread 0 forward, thread 1 backward), so its reads stay one stream.
TEST(ThreadPoolSplit, StreamSplitCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    lcx::ThreadPool pool(threads);
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(8), int64_t(9), int64_t(31), int64_t(80),
                      int64_t(1000)}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      for (auto& s : seen) s = 0;
      std::atomic<int> bad_range{0};
      std::mutex mu;
      std::map<std::thread::id, std::vector<int64_t>> starts;  // each thread's range starts, in call order
      pool.parallel_for_stream(n, [&](int64_t b, int64_t e) {
        if (b < 0 || e > n || b >= e) bad_range++;
        for (int64_t i = std::max<int64_t>(b, 0); i < std::min(e, n); ++i) seen[size_t(i)]++;
        std::lock_guard<std::mutex> lock(mu);
        starts[std::this_thread::get_id()].push_back(b);
      });
      EXPECT_EQ(bad_range.load(), 0) << "threads=" << threads << " n=" << n;
      for (const auto& [id, v] : starts) {
        const bool up = std::is_sorted(v.begin(), v.end());
        const bool down = std::is_sorted(v.rbegin(), v.rend());
        EXPECT_TRUE(up || down) << "threads=" << threads << " n=" << n << ": a thread changed direction";
      }
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[size_t(i)].load(), 1) << "threads=" << threads << " n=" << n << " i=" << i;
    }
  }
}
