// Every SIMD attention variant (flash attention, attention_simd.inc) against the scalar oracle
// (scalar::attention_items): GQA ratios, head sizes that are not multiples of the vector width,
// causal local keys with a past, FoT memory in each row format, the memory score floor, top-k.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_internal.h"
#include "kernels/ops.h"
#include "kernels/ops_internal.h"
#include "runtime/thread_pool.h"

namespace lcx::kernels {
namespace {

std::vector<KernelIsa> simd_isas() {
  std::vector<KernelIsa> out;
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512}) {
    if (attn_kernels(isa) != nullptr) out.push_back(isa);
  }
  return out;
}

const char* fmt_name(KvFormat f) {
  switch (f) {
    case KvFormat::F32: return "f32";
    case KvFormat::F16: return "f16";
    case KvFormat::BF16: return "bf16";
    case KvFormat::Q8Row: return "q8row";
  }
  return "?";
}

struct Case {
  int64_t n_head_kv = 2, group = 1, head_dim = 16, n_q = 1, n_past = 0, n_mem = 0;
  KvFormat local_fmt = KvFormat::F32, mem_fmt = KvFormat::F32;
  int64_t mem_topk = 0;
  float floor = -1e6f;
  bool integer = false;  // small integer values and a power-of-two scale: every score exact
  uint32_t seed = 1;

  std::string str() const {
    return "n_head_kv=" + std::to_string(n_head_kv) + " group=" + std::to_string(group) + " hd=" +
           std::to_string(head_dim) + " n_q=" + std::to_string(n_q) + " n_past=" + std::to_string(n_past) +
           " n_mem=" + std::to_string(n_mem) + " local=" + fmt_name(local_fmt) + " mem=" + fmt_name(mem_fmt) +
           " topk=" + std::to_string(mem_topk) + " floor=" + std::to_string(floor);
  }
};

// Keys and values of n tokens x n_head_kv heads in one format: [n, n_head_kv, row_bytes].
struct KvData {
  std::vector<uint8_t> k, v;
  KvSpan span(KvFormat f, int64_t n, int64_t n_head_kv, int64_t hd) const {
    const size_t rb = kv_row_bytes(f, hd);
    return {f, k.data(), v.data(), n, rb * size_t(n_head_kv), rb};
  }
};

KvData make_kv(KvFormat f, int64_t n, int64_t n_head_kv, int64_t hd, std::mt19937& rng, bool integer) {
  const size_t rb = kv_row_bytes(f, hd);
  KvData d;
  d.k.resize(rb * size_t(n * n_head_kv));
  d.v.resize(d.k.size());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> id(-6, 6);
  std::vector<float> row(static_cast<size_t>(hd));
  for (int64_t r = 0; r < n * n_head_kv; ++r) {
    for (auto& x : row) x = integer ? float(id(rng)) : nd(rng);
    // Q8Row stores d = amax / 127: with a 127 in the row, d = 1 and integers stay exact.
    if (integer && f == KvFormat::Q8Row) row[0] = 127.0f;
    kv_encode(f, row.data(), hd, d.k.data() + size_t(r) * rb);
    for (auto& x : row) x = nd(rng);
    kv_encode(f, row.data(), hd, d.v.data() + size_t(r) * rb);
  }
  return d;
}

struct Problem {
  std::vector<float> q;
  KvData local, mem;
  AttentionArgs args;
};

Problem make_problem(const Case& c) {
  Problem p;
  std::mt19937 rng(c.seed);
  const int64_t n_head = c.n_head_kv * c.group, n_local = c.n_past + c.n_q;
  p.q.resize(size_t(c.n_q * n_head * c.head_dim));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> id(-3, 3);
  for (auto& x : p.q) x = c.integer ? float(id(rng)) : nd(rng);
  p.local = make_kv(c.local_fmt, n_local, c.n_head_kv, c.head_dim, rng, c.integer);
  p.mem = make_kv(c.mem_fmt, c.n_mem, c.n_head_kv, c.head_dim, rng, c.integer);
  AttentionArgs& a = p.args;
  a.q = p.q.data();
  a.n_q = c.n_q;
  a.n_head = n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim = c.head_dim;
  a.scale = c.integer ? 0.125f : 1.0f / std::sqrt(float(c.head_dim));
  a.local = p.local.span(c.local_fmt, n_local, c.n_head_kv, c.head_dim);
  a.n_past = c.n_past;
  a.mem = p.mem.span(c.mem_fmt, c.n_mem, c.n_head_kv, c.head_dim);
  a.mem_score_floor = c.floor;
  a.mem_topk = c.mem_topk;
  return p;
}

std::vector<float> run(Problem& p, KernelIsa isa, ThreadPool& pool) {
  std::vector<float> out(size_t(p.args.n_q * p.args.n_head * p.args.head_dim), NAN);
  p.args.out = out.data();
  attention(p.args, pool, isa);
  return out;
}

// Outputs are convex combinations of value rows (|v| ~ 1): float32 rounding of scores, exp and
// sums in another order stays far below 1e-5.
void expect_close(const std::vector<float>& ref, const std::vector<float>& got, const std::string& what) {
  ASSERT_EQ(ref.size(), got.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(double(ref[i]) - double(got[i])) / (1.0 + std::fabs(double(ref[i])));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, 1e-5) << what << ": element " << at << " ref " << ref[at] << " got " << got[at];
}

void check_case(const Case& c, ThreadPool& pool) {
  Problem p = make_problem(c);
  const std::vector<float> ref = run(p, KernelIsa::Scalar, pool);
  for (KernelIsa isa : simd_isas()) {
    const std::vector<float> got = run(p, isa, pool);
    expect_close(ref, got, std::string(kernel_isa_name(isa)) + " " + c.str());
  }
}

const KvFormat kFormats[] = {KvFormat::F32, KvFormat::F16, KvFormat::BF16, KvFormat::Q8Row};

TEST(Attention, HasSimdVariants) {
  if (simd_isas().empty()) GTEST_SKIP() << "no SIMD attention variant on this CPU";
  SUCCEED();
}

// Local causal attention only: every head size, GQA ratio and window shape.
TEST(Attention, LocalMatchesOracle) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (int64_t group : {1, 4, 8}) {
    for (int64_t hd : {8, 16, 64, 100, 128}) {
      for (int64_t n_q : {1, 2, 5, 16, 33, 70}) {
        for (int64_t n_past : {0, 7, 64, 300}) {
          Case c;
          c.n_head_kv = group == 1 ? 3 : 2;
          c.group = group;
          c.head_dim = hd;
          c.n_q = n_q;
          c.n_past = n_past;
          c.seed = seed++;
          check_case(c, pool);
        }
      }
    }
  }
}

// Memory in every row format, with and without local past; the floor sometimes clamps.
TEST(Attention, MemoryMatchesOracle) {
  ThreadPool pool(2);
  uint32_t seed = 100;
  for (KvFormat f : kFormats) {
    for (int64_t group : {1, 4, 8}) {
      for (int64_t hd : {8, 64, 100, 128}) {
        for (int64_t n_mem : {1, 63, 64, 200, 1000}) {
          Case c;
          c.n_head_kv = 2;
          c.group = group;
          c.head_dim = hd;
          c.n_q = int64_t(seed % 5 == 0 ? 1 : 1 + seed % 40);
          c.n_past = int64_t(seed % 3 == 0 ? 0 : seed % 150);
          c.n_mem = n_mem;
          c.mem_fmt = f;
          c.local_fmt = seed % 7 == 0 ? KvFormat::BF16 : KvFormat::F32;
          c.floor = seed % 4 == 0 ? -0.5f : -1e6f;
          c.seed = seed++;
          check_case(c, pool);
        }
      }
    }
  }
}

// Decode shapes (fewer query rows per kv head than a vector's lanes): the AVX-512 variant reads
// rows in place with per-format loads (bf16 as even/odd halves, masked tails), tiles of 16 keys,
// and falls back to the shared path above head_dim 128; the AVX2 one does the same in tiles of 8
// keys for fewer than 8 rows per kv head (group 8, TinyLlama, takes the wide path there). Every
// format, odd head sizes (the AVX2 kernel leaves odd 16-bit rows to the shared path), partial
// last vectors (28: a bf16 pair of 12 columns, f16/q8 tails of 4), tile edges.
TEST(Attention, DecodeMatchesOracle) {
  ThreadPool pool(2);
  uint32_t seed = 500;
  for (KvFormat f : kFormats) {
    for (int64_t hd : {8, 28, 33, 50, 64, 100, 128, 130}) {
      for (int64_t group : {1, 2, 4, 8}) {
        for (int64_t n_q : {1, 3}) {
          for (int64_t n_mem : {0, 15, 16, 17, 700}) {
            Case c;
            c.n_head_kv = seed % 3 == 0 ? 5 : 2;
            c.group = group;
            c.head_dim = hd;
            c.n_q = n_q;
            c.n_past = int64_t((seed * 37) % 90);
            c.n_mem = n_mem;
            c.mem_fmt = f;
            c.local_fmt = seed % 2 ? f : KvFormat::F32;
            c.floor = seed % 4 == 0 ? -0.5f : -1e6f;
            c.seed = seed++;
            check_case(c, pool);
          }
        }
      }
    }
  }
}

// Decode with exact top-k (AVX-512: scores of all heads in storage order, then per-head
// selection): integer data so that the selected sets are identical, ties included.
TEST(Attention, TopKDecodeMatchesOracle) {
  ThreadPool pool(2);
  uint32_t seed = 900;
  for (KvFormat f : kFormats) {
    for (int64_t hd : {8, 33, 64, 100}) {
      for (int64_t group : {1, 4}) {
        for (int64_t topk : {1, 5, 64}) {
          Case c;
          c.n_head_kv = 3;
          c.group = group;
          c.head_dim = hd;
          c.n_q = seed % 2 ? 1 : 2;
          c.n_past = int64_t(seed % 40);
          c.n_mem = seed % 3 ? 700 : 2100;
          c.mem_fmt = f;
          c.mem_topk = topk;
          c.integer = true;
          c.floor = seed % 4 == 0 ? 0.0f : -1e6f;
          c.seed = seed++;
          check_case(c, pool);
        }
      }
    }
  }
}

// With the floor above most scores, memory keys mostly tie at the floor.
TEST(Attention, ScoreFloor) {
  ThreadPool pool(2);
  for (float floor : {-1e6f, -1.0f, 0.0f, 0.5f}) {
    for (int64_t n_q : {1, 20}) {
      Case c;
      c.group = 4;
      c.head_dim = 100;
      c.n_q = n_q;
      c.n_past = 10;
      c.n_mem = 150;
      c.mem_fmt = KvFormat::BF16;
      c.floor = floor;
      c.seed = uint32_t(n_q) + 7;
      check_case(c, pool);
    }
  }
}

// Exact top-k: with integer data and scale 1/8 every score is exact, so the oracle and the
// SIMD variants select the same set, ties (many) included.
TEST(Attention, TopKMatchesOracle) {
  ThreadPool pool(2);
  uint32_t seed = 500;
  for (KvFormat f : kFormats) {
    for (int64_t group : {1, 4}) {
      for (int64_t topk : {1, 5, 64, 199}) {
        for (int64_t n_q : {1, 9, 37}) {
          Case c;
          c.n_head_kv = 2;
          c.group = group;
          c.head_dim = seed % 2 ? 100 : 64;
          c.n_q = n_q;
          c.n_past = seed % 3 == 0 ? 0 : 20;
          c.n_mem = 200;
          c.mem_fmt = f;
          c.mem_topk = topk;
          c.integer = true;
          c.floor = seed % 4 == 0 ? 0.0f : -1e6f;
          c.seed = seed++;
          check_case(c, pool);
        }
      }
    }
  }
}

// k >= n_mem is dense memory attention.
TEST(Attention, TopKAtLeastMemoryIsDense) {
  ThreadPool pool(2);
  Case c;
  c.group = 4;
  c.head_dim = 100;
  c.n_q = 12;
  c.n_past = 30;
  c.n_mem = 90;
  c.mem_fmt = KvFormat::BF16;
  Problem p = make_problem(c);
  for (KernelIsa isa : {KernelIsa::Scalar, KernelIsa::Avx2, KernelIsa::Avx512}) {
    if (isa != KernelIsa::Scalar && attn_kernels(isa) == nullptr) continue;
    p.args.mem_topk = 0;
    const std::vector<float> dense = run(p, isa, pool);
    for (int64_t k : {90, 91, 1000}) {
      p.args.mem_topk = k;
      const std::vector<float> got = run(p, isa, pool);
      EXPECT_EQ(0, std::memcmp(dense.data(), got.data(), dense.size() * 4)) << kernel_isa_name(isa) << " k=" << k;
    }
  }
}

// Thread count does not change results (blocks are independent).
TEST(Attention, ThreadCountInvariant) {
  Case c;
  c.n_head_kv = 4;
  c.group = 2;
  c.head_dim = 100;
  c.n_q = 50;
  c.n_past = 100;
  c.n_mem = 300;
  c.mem_fmt = KvFormat::Q8Row;
  Problem p = make_problem(c);
  ThreadPool one(1), two(2);
  for (KernelIsa isa : simd_isas()) {
    const std::vector<float> a = run(p, isa, one), b = run(p, isa, two);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << kernel_isa_name(isa);
  }
}

// The SIMD row decoders give exactly kv_decode's values.
TEST(Attention, DecodeRowExact) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (KernelIsa isa : simd_isas()) {
    for (KvFormat f : kFormats) {
      for (int64_t hd : {1, 7, 8, 15, 16, 17, 64, 100, 128}) {
        const size_t n = static_cast<size_t>(hd);
        std::vector<float> x(n), ref(n), got(n);
        for (auto& v : x) v = nd(rng);
        std::vector<uint8_t> row(kv_row_bytes(f, hd));
        kv_encode(f, x.data(), hd, row.data());
        kv_decode(f, row.data(), hd, ref.data());
        attn_kernels(isa)->decode_row(f, row.data(), hd, got.data());
        EXPECT_EQ(0, std::memcmp(ref.data(), got.data(), size_t(hd) * 4))
            << kernel_isa_name(isa) << " " << fmt_name(f) << " hd=" << hd;
      }
    }
  }
}

// LONGCTX_FAST_BF16 memory tiles (AVX512_BF16): queries and probabilities rounded to bf16, so
// compared with the oracle at bf16 accuracy (2^-8 relative per product; observed ~1e-3).
TEST(Attention, Bf16MemoryTilesCloseToOracle) {
  if (attn_kernels(KernelIsa::Avx512) == nullptr || !cpu_has_avx512bf16())
    GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  ThreadPool pool(2);
  uint32_t seed = 1300;
  for (int64_t hd : {8, 16, 64, 100, 128, 50}) {
    for (int64_t n_q : {16, 70}) {
      for (int64_t n_mem : {1, 63, 64, 130, 1000}) {
        Case c;
        c.n_head_kv = 2;
        c.group = seed % 2 ? 1 : 2;
        c.head_dim = hd;
        c.n_q = n_q;
        c.n_past = int64_t(seed % 50);
        c.n_mem = n_mem;
        c.mem_fmt = KvFormat::BF16;
        c.seed = seed++;
        Problem p = make_problem(c);
        const std::vector<float> ref = run(p, KernelIsa::Scalar, pool);
        p.args.mem_bf16_dot = true;
        const std::vector<float> got = run(p, KernelIsa::Avx512, pool);
        double worst = 0;
        for (size_t i = 0; i < ref.size(); ++i)
          worst = std::max(worst, std::fabs(double(ref[i]) - double(got[i])) / (1.0 + std::fabs(double(ref[i]))));
        EXPECT_LE(worst, 5e-3) << c.str();
        EXPECT_GT(worst, 0.0) << "bf16 path not taken: " << c.str();
        EXPECT_FALSE(std::isnan(worst)) << c.str();
        if (n_mem == 1000 && n_q == 70) std::printf("[ bf16 memory ] %s: max rel diff %.2g\n", c.str().c_str(), worst);
      }
    }
  }
}
}  // namespace
}  // namespace lcx::kernels
