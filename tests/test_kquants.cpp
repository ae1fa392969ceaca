// GGML block types beyond Q8_0/Q4_0 (Q4_1, Q5_0, Q5_1, Q2_K ... Q6_K): their bits against an
// independent oracle (gguf-py's dequantizers, tests/data/kquants.gguf), every kernel variant
// against the scalar twins, and whole models read from GGUF files holding them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "kernels/ops.h"
#include "kernels/ops_internal.h"
#include "kernels/quants.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "synthetic_model.h"
#include "testutil.h"

namespace lcx {
namespace {

namespace fs = std::filesystem;
using kernels::KernelTable;
using kernels::MatmulJob;
using kernels::MatRef;

std::string data_dir() { return (fs::path(__FILE__).parent_path() / "data").string(); }

const DType kBlockTypes[] = {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                             DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<const KernelTable*> all_tables() {
  std::vector<const KernelTable*> out = {&kernels::scalar::kTable};
  for (auto isa : {kernels::KernelIsa::Avx2, kernels::KernelIsa::Avx512})
    if (const KernelTable* k = kernels::kernel_table(isa)) out.push_back(k);
  return out;
}

// Offsets of the fp16 scale (positive) and min (signed) fields in one block (ggml-common.h).
struct Fields {
  std::vector<size_t> scales, mins;
};
Fields fields(DType t) {
  switch (t) {
    case DType::Q4_1: return {{0}, {2}};
    case DType::Q5_0: return {{0}, {}};
    case DType::Q5_1: return {{0}, {2}};
    case DType::Q2_K: return {{80, 82}, {}};
    case DType::Q3_K: return {{108}, {}};
    case DType::Q4_K:
    case DType::Q5_K: return {{0, 2}, {}};
    case DType::Q6_K: return {{208}, {}};
    default: return {};
  }
}

// Random blocks: any bit pattern is a valid block once the fp16 fields are finite.
std::vector<uint8_t> random_blocks(DType t, int64_t rows, int64_t cols, uint32_t seed, float scale_hi = 0.02f) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(scale_hi / 20, scale_hi), mn(-0.2f, 0.2f);
  const size_t bb = dtype_block_bytes(t), nb = size_t(rows * cols / dtype_block_values(t));
  std::vector<uint8_t> w(nb * bb);
  for (auto& b : w) b = uint8_t(byte(rng));
  const Fields f = fields(t);
  for (size_t i = 0; i < nb; ++i) {
    for (size_t off : f.scales) {
      const uint16_t h = f32_to_f16(sc(rng));
      std::memcpy(&w[i * bb + off], &h, 2);
    }
    for (size_t off : f.mins) {
      const uint16_t h = f32_to_f16(mn(rng));
      std::memcpy(&w[i * bb + off], &h, 2);
    }
  }
  return w;
}

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(KQuants, SizesAndNames) {
  // ggml-common.h's static_asserts.
  EXPECT_EQ(dtype_block_bytes(DType::Q4_1), 20u);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_0), 22u);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_1), 24u);
  EXPECT_EQ(dtype_block_bytes(DType::Q2_K), 84u);
  EXPECT_EQ(dtype_block_bytes(DType::Q3_K), 110u);
  EXPECT_EQ(dtype_block_bytes(DType::Q4_K), 144u);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_K), 176u);
  EXPECT_EQ(dtype_block_bytes(DType::Q6_K), 210u);
  EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 4096), 16u * 144u);
  EXPECT_EQ(dtype_row_bytes(DType::Q5_0, 3200), 100u * 22u);
  for (DType t : kBlockTypes) {
    EXPECT_TRUE(dtype_is_quantized(t)) << dtype_name(t);
    EXPECT_EQ(ggml_type_name(ggml_type_of(t)), dtype_name(t));
  }
}

// The oracle: tests/data/kquants.gguf (tools/dev/make_kquant_testdata.py) holds random blocks of
// each type and gguf-py's dequantization of them. Every kernel variant must agree bit for bit.
TEST(KQuants, DequantizeMatchesGgufPy) {
  const GgufFile g = GgufFile::open(data_dir() + "/kquants.gguf");
  int checked = 0;
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const std::string name = dtype_name(t);
    const TensorView q = g.tensors().at(name + ".q"), want = g.tensors().at(name + ".f32");
    ASSERT_EQ(q.dtype, t) << name;
    ASSERT_EQ(q.shape, want.shape) << name;
    const int64_t rows = q.rows(), cols = q.cols();
    std::vector<float> got(static_cast<size_t>(cols));
    for (const KernelTable* k : all_tables()) {
      for (int64_t r = 0; r < rows; ++r) {
        k->dequantize_row(t, static_cast<const uint8_t*>(q.data) + size_t(r) * dtype_row_bytes(t, cols), got.data(),
                          cols);
        const float* w = static_cast<const float*>(want.data) + r * cols;
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(got[size_t(c)], w[c]) << name << " " << kernels::kernel_isa_name(k->isa) << " row " << r << " col " << c;
        }
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 10);
}

// Decode GEMV (int8 activations): against the scalar twin up to float summation order, and against
// float activations within half an activation quantization step per element.
TEST(KQuants, GemvMatchesTwinAndFloat) {
  for (const KernelTable* k : all_tables()) {
    if (k->isa == kernels::KernelIsa::Scalar) continue;
    for (DType t : kBlockTypes) {
      const int64_t bv = dtype_block_values(t);
      for (int64_t cols : {bv, 2 * bv, 3 * bv, 5 * bv}) {
        for (int64_t rows : {1, 5, 17}) {
          const std::vector<uint8_t> wd = random_blocks(t, rows, cols, uint32_t(rows * 7 + cols));
          const MatRef w{t, rows, cols, wd.data()};
          for (int64_t nt : {1, 2, 4}) {
            const std::vector<float> x = random_vec(nt * cols, uint32_t(nt * 13 + cols));
            std::vector<int8_t> qs(size_t(nt * cols));
            std::vector<float> d(size_t(nt * cols / kQBlock));
            for (int64_t i = 0; i < nt; ++i)
              k->quantize_acts(x.data() + i * cols, cols, qs.data() + i * cols, d.data() + i * (cols / kQBlock));
            std::vector<float> twin(size_t(nt * rows)), exact(size_t(nt * rows)), got(size_t(nt * rows), NAN);
            const bool int8 = kernels::has_int8_gemv(*k, t);
            MatmulJob jg{w, x.data(), nt, got.data(), {}};
            if (int8) jg.xq = {qs.data(), d.data()};
            kernels::scalar::matmul_rows_q8acts({w, x.data(), nt, twin.data(), {qs.data(), d.data()}}, 0, rows, 0, nt);
            kernels::scalar::matmul_rows_job({w, x.data(), nt, exact.data(), {}}, 0, rows, 0, nt);
            k->matmul_rows(jg, 0, rows, 0, nt);
            std::vector<float> wrow(static_cast<size_t>(cols));
            for (int64_t r = 0; r < rows; ++r) {
              kernels::scalar::dequantize_row(t, wd.data() + size_t(r) * dtype_row_bytes(t, cols), wrow.data(), cols);
              for (int64_t i = 0; i < nt; ++i) {
                double scale = 0, bound = 0;
                for (int64_t c = 0; c < cols; ++c) {
                  scale += std::fabs(double(wrow[size_t(c)]) * x[size_t(i * cols + c)]);
                  bound += std::fabs(wrow[size_t(c)]) * d[size_t(i * (cols / kQBlock) + c / kQBlock)] * 0.5;
                }
                const size_t at = size_t(i * rows + r);
                const std::string what = std::string(kernels::kernel_isa_name(k->isa)) + " " + dtype_name(t) +
                                         " rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                                         " nt=" + std::to_string(nt);
                if (int8) {
                  // The SIMD kernel scales exact integer lane sums; the twin scales sub-block sums.
                  ASSERT_NEAR(got[at], twin[at], 2e-5 * (scale + bound) + 1e-30) << what;
                  ASSERT_NEAR(got[at], exact[at], bound * 1.001 + 1e-5 * scale) << what;
                } else {
                  ASSERT_NEAR(got[at], exact[at], 1e-5 * scale + 1e-30) << what;
                }
              }
            }
          }
        }
      }
    }
  }
}

// Prompt-sized products. Without packed activations (matmul_rows alone) the dequantized row
// blocks and the F32 kernels: float32 accuracy. Through matmul_with (AVX-512: the int8 GEMM with
// 16-column sub-blocks) against the scalar twin of the int8 path, and within the activation
// rounding bound of the float result.
TEST(KQuants, GemmMatchesScalar) {
  ThreadPool pool(2);
  for (const KernelTable* k : all_tables()) {
    if (k->isa == kernels::KernelIsa::Scalar) continue;
    for (DType t : kBlockTypes) {
      const int64_t cols = 2 * dtype_block_values(t);
      for (int64_t rows : {3, 70}) {
        const std::vector<uint8_t> wd = random_blocks(t, rows, cols, uint32_t(rows + cols));
        const MatRef w{t, rows, cols, wd.data()};
        for (int64_t nt : {5, 16, 37}) {
          const std::vector<float> x = random_vec(nt * cols, uint32_t(nt));
          std::vector<float> want(static_cast<size_t>(nt * rows)), twin(static_cast<size_t>(nt * rows));
          std::vector<float> got(static_cast<size_t>(nt * rows), NAN), got_mt(static_cast<size_t>(nt * rows), NAN);
          std::vector<int8_t> qs(static_cast<size_t>(nt * cols));
          std::vector<float> d(static_cast<size_t>(nt * cols / kQBlock));
          for (int64_t i = 0; i < nt; ++i)
            kernels::scalar::quantize_acts(x.data() + i * cols, cols, qs.data() + i * cols, d.data() + i * (cols / kQBlock));
          kernels::scalar::matmul_rows_job({w, x.data(), nt, want.data(), {}}, 0, rows, 0, nt);
          kernels::scalar::matmul_rows_q8acts({w, x.data(), nt, twin.data(), {qs.data(), d.data()}}, 0, rows, 0, nt);
          k->matmul_rows({w, x.data(), nt, got.data(), {}}, 0, rows / 2, 0, nt);
          k->matmul_rows({w, x.data(), nt, got.data(), {}}, rows / 2, rows, 0, nt);
          kernels::matmul_with(*k, false, w, x.data(), nt, got_mt.data(), pool);
          const bool int8 = kernels::gemm_mode(*k, t, nt, false) == kernels::GemmMode::Int8;
          const std::string what = std::string(kernels::kernel_isa_name(k->isa)) + " " + dtype_name(t) +
                                   " rows=" + std::to_string(rows) + " nt=" + std::to_string(nt);
          for (size_t i = 0; i < want.size(); ++i) {
            const float tol = 1e-4f * (1.0f + std::fabs(want[i]));
            ASSERT_NEAR(got[i], want[i], tol) << what;
            ASSERT_NEAR(got_mt[i], int8 ? twin[i] : want[i], tol) << what << (int8 ? " (int8 GEMM)" : "");
          }
        }
      }
    }
  }
}

// A model read from a GGUF whose matrices are Q4_K / Q6_K / Q5_0 (as a Q4_K_M file mixes them)
// gives the logits of the same model with those weights stored dequantized as F32, up to the
// int8 activation rounding of the decode GEMV. Exercises the loader (types, row sizes, q/k row
// permutation of block rows) and the forward pass end to end.
TEST(KQuants, ModelFromBlockTypesMatchesF32) {
  const std::string dir = test::tmp_dir();
  auto m = test::synthetic_model({.n_embd = 256, .seed = 11, .path = dir + "/synthetic"});
  const std::string f32_src = dir + "/kq.src.gguf";
  convert_to_gguf(*m, f32_src, DType::F32);
  const GgufFile src = GgufFile::open(f32_src);
  GgufWriter wq, wf;
  for (const auto& [key, v] : src.metadata()) {
    wq.set(key, v);
    wf.set(key, v);
  }
  int n_block = 0;
  uint32_t seed = 100;
  std::vector<std::shared_ptr<std::vector<uint8_t>>> keep;
  for (const GgufTensorInfo& ti : src.tensor_infos()) {
    const TensorView v = src.tensors().at(ti.name);
    const bool matrix = v.shape.size() == 2 && ti.name != "token_embd.weight";
    const DType t = !matrix ? DType::F32
                    : ti.name.find("attn_v") != std::string::npos ? DType::Q6_K
                    : ti.name.find("attn_q") != std::string::npos ? DType::Q5_0
                                                                  : DType::Q4_K;
    if (!matrix || v.cols() % dtype_block_values(t) != 0) {
      wq.add_tensor(ti.name, v);
      wf.add_tensor(ti.name, v);
      continue;
    }
    auto q = std::make_shared<std::vector<uint8_t>>(random_blocks(t, v.rows(), v.cols(), seed++, 0.0005f));
    auto f = std::make_shared<std::vector<uint8_t>>(size_t(v.numel()) * 4);
    for (int64_t r = 0; r < v.rows(); ++r)
      kernels::scalar::dequantize_row(t, q->data() + size_t(r) * dtype_row_bytes(t, v.cols()),
                                      reinterpret_cast<float*>(f->data()) + r * v.cols(), v.cols());
    keep.push_back(q);
    keep.push_back(f);
    wq.add_tensor(ti.name, t, v.shape, [q](const GgufWriter::Sink& s) { s(q->data(), q->size()); });
    wf.add_tensor(ti.name, DType::F32, v.shape, [f](const GgufWriter::Sink& s) { s(f->data(), f->size()); });
    ++n_block;
  }
  ASSERT_GE(n_block, 4);
  const std::string pq = dir + "/kq.blocks.gguf", pf = dir + "/kq.f32.gguf";
  wq.write(pq);
  wf.write(pf);

  auto mq = longctx::Model::load(pq), mf = longctx::Model::load(pf);
  longctx::SessionOptions so;
  so.n_threads = 2;
  longctx::Session a(mq, so), b(mf, so);
  std::vector<int32_t> ids;
  for (int i = 0; i < 12; ++i) ids.push_back(int32_t(1 + (i * 37) % (mq->n_vocab() - 1)));
  std::vector<float> la, lb;
  a.feed(std::vector<int32_t>(ids.begin(), ids.begin() + 8), &la);
  b.feed(std::vector<int32_t>(ids.begin(), ids.begin() + 8), &lb);
  float amax = 0;
  for (float v : lb) amax = std::max(amax, std::fabs(v));
  ASSERT_GT(amax, 0.0f);
  // prompt: int8 activations on AVX-512 (the int8 GEMM), float32 elsewhere
  for (size_t j = 0; j < lb.size(); ++j) ASSERT_NEAR(la[j], lb[j], 0.03f * amax) << "prompt logit " << j;
  for (size_t i = 8; i < ids.size(); ++i) {  // decode: int8 activations on AVX-512
    a.feed({ids[i]});
    b.feed({ids[i]});
    float mx = 0;
    for (float v : b.logits()) mx = std::max(mx, std::fabs(v));
    for (size_t j = 0; j < b.logits().size(); ++j) ASSERT_NEAR(a.logits()[j], b.logits()[j], 0.03f * mx) << "token " << i;
  }
  EXPECT_NE(mq->describe().find("Q4_K"), std::string::npos) << mq->describe();
}

// Types longctx does not read are refused with the type's name and a way out.
TEST(KQuants, UnsupportedTypeNamed) {
  const std::string dir = test::tmp_dir();
  const std::string p = dir + "/iq.gguf";
  {
    // A Q8_0 tensor whose type id is rewritten to IQ4_XS (23).
    GgufWriter w;
    w.set_str("general.architecture", "llama");
    std::vector<uint8_t> blk(34, 0);
    w.add_tensor("t", DType::Q8_0, {1, 32}, [&](const GgufWriter::Sink& s) { s(blk.data(), blk.size()); });
    w.write(p);
  }
  std::string bytes = test::read_file(p);
  const std::string name = std::string("\x01\0\0\0\0\0\0\0t", 9);
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  const size_t type_at = at + name.size() + 4 + 2 * 8;  // n_dims, ne[0], ne[1]
  const uint32_t iq4_xs = 23;
  std::memcpy(&bytes[type_at], &iq4_xs, 4);
  {
    std::FILE* f = std::fopen(p.c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  try {
    GgufFile::open(p);
    FAIL() << "IQ4_XS accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("IQ4_XS"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Q4_K_M"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lcx

namespace lcx {
namespace {

// Q4_K repacked into 16-row panels (Q4_K_R16, the AVX-512 decode layout): the same blocks, the
// file's bytes back, and every kernel path gives what the row-major Q4_K gives.
class R16Types : public testing::TestWithParam<std::pair<DType, int64_t>> {};

TEST_P(R16Types, MatchRowMajor) {
  ThreadPool pool(2);
  const DType rt = GetParam().first, src = dtype_r16_source(rt);
  const int64_t rows = 48, cols = GetParam().second;
  const std::vector<uint8_t> wq = random_blocks(src, rows, cols, 5);
  std::vector<uint8_t> wr(wq.size());
  repack_r16(rt, wq.data(), wr.data(), rows, cols);
  std::vector<uint8_t> back(wq.size());
  r16_rowmajor_bytes(rt, wr.data(), cols, 0, wr.size(), back.data());
  ASSERT_EQ(back, wq);
  std::vector<uint8_t> part(100);
  r16_rowmajor_bytes(rt, wr.data(), cols, 1000, part.size(), part.data());
  ASSERT_TRUE(std::equal(part.begin(), part.end(), wq.begin() + 1000));

  const MatRef a{src, rows, cols, wq.data()}, b{rt, rows, cols, wr.data()};
  std::vector<float> ra(static_cast<size_t>(cols)), rb(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::scalar::weight_row(a, r, ra.data());
    kernels::scalar::weight_row(b, r, rb.data());
    ASSERT_EQ(ra, rb) << "row " << r;
  }
  for (const KernelTable* k : all_tables()) {
    for (int64_t nt : {1, 2, 3, 4, 20}) {
      const std::vector<float> x = random_vec(nt * cols, uint32_t(nt + 1));
      std::vector<int8_t> qs(static_cast<size_t>(nt * cols));
      std::vector<float> d(static_cast<size_t>(nt * cols / kQBlock));
      for (int64_t i = 0; i < nt; ++i)
        kernels::scalar::quantize_acts(x.data() + i * cols, cols, qs.data() + i * cols, d.data() + i * (cols / kQBlock));
      std::vector<float> want(static_cast<size_t>(nt * rows)), got(static_cast<size_t>(nt * rows), NAN);
      if (nt <= kernels::kGemvMaxTokens && kernels::has_int8_gemv(*k, b.dtype)) {
        // twin on the row-major blocks; the kernel on the panels, rows split mid-panel as threads may
        kernels::scalar::matmul_rows_q8acts({a, x.data(), nt, want.data(), {qs.data(), d.data()}}, 0, rows, 0, nt);
        k->matmul_rows({b, x.data(), nt, got.data(), {qs.data(), d.data()}}, 0, 24, 0, nt);
        k->matmul_rows({b, x.data(), nt, got.data(), {qs.data(), d.data()}}, 24, rows, 0, nt);
      } else if (kernels::gemm_mode(*k, b.dtype, nt, false) == kernels::GemmMode::Int8) {
        kernels::scalar::matmul_rows_q8acts({a, x.data(), nt, want.data(), {qs.data(), d.data()}}, 0, rows, 0, nt);
        kernels::matmul_with(*k, false, b, x.data(), nt, got.data(), pool);
      } else {
        kernels::scalar::matmul_rows_job({a, x.data(), nt, want.data(), {}}, 0, rows, 0, nt);
        k->matmul_rows({b, x.data(), nt, got.data(), {}}, 0, rows, 0, nt);
      }
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::fabs(want[i]))) << kernels::kernel_isa_name(k->isa) << " nt=" << nt;
    }
  }
}

// Q4_K_R16 (k-quant super-blocks) and Q5_0_R16 (32-value blocks with 5th-bit masks; 3200-wide
// rows as the 3B fallbacks have, an odd block count included).
INSTANTIATE_TEST_SUITE_P(KQuants, R16Types,
                         testing::Values(std::pair{DType::Q4_K_R16, int64_t(768)}, std::pair{DType::Q5_0_R16, int64_t(3200)},
                                         std::pair{DType::Q5_0_R16, int64_t(96)}));

}  // namespace
}  // namespace lcx

namespace lcx {
namespace {

// The quantizers behind `convert --outtype`: what they write dequantizes (through the path checked
// against gguf-py above) to within a fraction of each sub-block's step of the input.
TEST(KQuants, QuantizeRoundTrip) {
  const int64_t n = 4 * 256;
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = dist(rng);
  x[5] = 0.0f;
  std::fill(x.begin() + 256, x.begin() + 288, 0.0f);  // an all-zero block
  // max |error| relative to the largest |x| of the tensor, per type (round to nearest: half a
  // step of levels over the sub-block range, plus the sub-scale rounding)
  const std::pair<DType, double> types[] = {{DType::Q4_1, 0.08}, {DType::Q5_0, 0.05}, {DType::Q5_1, 0.04},
                                            {DType::Q2_K, 0.45}, {DType::Q3_K, 0.25}, {DType::Q4_K, 0.12},
                                            {DType::Q5_K, 0.06}, {DType::Q6_K, 0.03}};
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  for (const auto& [t, tol] : types) {
    std::vector<uint8_t> q(dtype_row_bytes(t, n));
    kernels::scalar::quantize_row(t, x.data(), q.data(), n);
    std::vector<float> back(static_cast<size_t>(n));
    kernels::scalar::dequantize_row(t, q.data(), back.data(), n);
    double max_err = 0, sum_sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      max_err = std::max(max_err, double(std::fabs(back[size_t(i)] - x[size_t(i)])));
      sum_sq += double(back[size_t(i)] - x[size_t(i)]) * double(back[size_t(i)] - x[size_t(i)]);
    }
    EXPECT_LE(max_err, tol * amax) << dtype_name(t);
    for (int i = 256; i < 288; ++i) EXPECT_EQ(back[size_t(i)], 0.0f) << dtype_name(t) << " zero block";
    // more bits, less error
    RecordProperty(std::string("rms_") + dtype_name(t), std::to_string(std::sqrt(sum_sq / double(n))));
  }
  // Rows that are not whole blocks are the caller's business (convert falls back): no writes past n.
  EXPECT_EQ(dtype_from_name("q4_k"), DType::Q4_K);
  EXPECT_EQ(dtype_from_name("Q6_K"), DType::Q6_K);
  EXPECT_THROW(dtype_from_name("q4_k_r16"), Error);
}

// convert --outtype q4_k from a Hugging Face fixture: Q4_K where rows allow, llama-quantize's
// fallbacks elsewhere, and the model still tracks the float logits.
TEST(KQuants, ConvertToQ4K) {
  const std::string dir = test::tmp_dir();
  auto m = test::synthetic_model({.n_embd = 256, .seed = 3, .path = dir + "/synthetic"});
  const std::string f32 = dir + "/c.f32.gguf", q4k = dir + "/c.q4k.gguf";
  convert_to_gguf(*m, f32, DType::F32);
  convert_to_gguf(*m, q4k, DType::Q4_K);
  const GgufFile g = GgufFile::open(q4k);
  int n_q4k = 0, n_fallback = 0;
  for (const GgufTensorInfo& ti : g.tensor_infos()) {
    if (ti.dtype == DType::Q4_K) ++n_q4k;
    if (ti.dtype == DType::Q5_0) ++n_fallback;  // rows of 64 (ffn_down) are not k-quant blocks
  }
  EXPECT_GT(n_q4k, 0);
  EXPECT_GT(n_fallback, 0);
  EXPECT_EQ(g.get_int("general.file_type"), 14);
  // Correlation of the prompt logits with the float model's: more bits, closer (this small random
  // model amplifies weight error: measured Q8_0 0.9996, Q6_K 0.997, Q5_K 0.988, Q4_K 0.977,
  // Q4_0 0.936, Q3_K 0.79, Q2_K 0.60).
  const auto corr = [&](const std::string& path) {
    auto a = longctx::Model::load(path), b = longctx::Model::load(f32);
    longctx::SessionOptions so;
    so.n_threads = 1;
    longctx::Session sa(a, so), sb(b, so);
    std::vector<float> la, lb;
    sa.feed({1, 5, 9, 13, 17, 21}, &la);
    sb.feed({1, 5, 9, 13, 17, 21}, &lb);
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < la.size(); ++i) {
      dot += double(la[i]) * lb[i];
      na += double(la[i]) * la[i];
      nb += double(lb[i]) * lb[i];
    }
    return dot / std::sqrt(na * nb);
  };
  const std::string q40 = dir + "/c.q40.gguf", q6k = dir + "/c.q6k.gguf";
  convert_to_gguf(*m, q40, DType::Q4_0);
  convert_to_gguf(*m, q6k, DType::Q6_K);
  const double c4k = corr(q4k), c40 = corr(q40), c6k = corr(q6k);
  EXPECT_GT(c4k, 0.95);
  EXPECT_GT(c4k, c40);  // k-quant scales beat one scale per 32 at the same 4 bits
  EXPECT_GT(c6k, c4k);
}

}  // namespace
}  // namespace lcx
