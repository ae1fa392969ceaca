// Approximate kNN memory attention (--mem-index hnsw): the candidate-list attention kernel
// against dense and exact top-k attention, the HNSW memory index (recall, copies, FIFO drops),
// and the whole model on the LongLLaMA fixture (logit effect, clone, saved state, memory cap).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_internal.h"
#include "longctx/longctx.h"
#include "model/memory_index.h"
#include "runtime/thread_pool.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;
using lcx::kernels::AttentionArgs;
using lcx::kernels::KernelIsa;
using lcx::kernels::KvFormat;
using lcx::kernels::KvSpan;

namespace {

std::vector<KernelIsa> all_isas() {
  std::vector<KernelIsa> out{KernelIsa::Scalar};
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512})
    if (lcx::kernels::attn_kernels(isa) != nullptr) out.push_back(isa);
  return out;
}

std::vector<float> gaussian(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

std::vector<uint8_t> encode_rows(KvFormat f, const std::vector<float>& x, int64_t hd) {
  const size_t rb = lcx::kernels::kv_row_bytes(f, hd);
  const int64_t n = int64_t(x.size()) / hd;
  std::vector<uint8_t> out(rb * size_t(n));
  for (int64_t r = 0; r < n; ++r) lcx::kernels::kv_encode(f, x.data() + r * hd, hd, out.data() + size_t(r) * rb);
  return out;
}

// One attention problem: n_q queries with causal local keys and a memory of n_mem tokens.
struct Problem {
  int64_t n_head_kv = 2, group = 2, hd = 20, n_q = 3, n_past = 5, n_mem = 150;
  KvFormat mem_fmt = KvFormat::BF16;
  std::vector<float> q, lk, lv, mk_f32;
  std::vector<uint8_t> mk, mv;
  std::vector<float> out;

  Problem(int64_t n_q_, KvFormat f, uint32_t seed) : n_q(n_q_), mem_fmt(f) {
    const int64_t n_head = n_head_kv * group, n_loc = n_past + n_q;
    q = gaussian(size_t(n_q * n_head * hd), seed);
    lk = gaussian(size_t(n_loc * n_head_kv * hd), seed + 1);
    lv = gaussian(size_t(n_loc * n_head_kv * hd), seed + 2);
    // Memory keys a bit larger than local ones, so memory matters in the softmax.
    mk_f32 = gaussian(size_t(n_mem * n_head_kv * hd), seed + 3, 1.5f);
    mk = encode_rows(f, mk_f32, hd);
    mv = encode_rows(f, gaussian(size_t(n_mem * n_head_kv * hd), seed + 4), hd);
    out.assign(q.size(), 0.0f);
  }
  AttentionArgs args() {
    AttentionArgs a;
    a.q = q.data();
    a.n_q = n_q;
    a.n_head = n_head_kv * group;
    a.n_head_kv = n_head_kv;
    a.head_dim = hd;
    a.scale = 1.0f / std::sqrt(float(hd));
    a.local = {KvFormat::F32, reinterpret_cast<const uint8_t*>(lk.data()), reinterpret_cast<const uint8_t*>(lv.data()),
               n_past + n_q, size_t(n_head_kv * hd) * 4, size_t(hd) * 4};
    a.n_past = n_past;
    const size_t rb = lcx::kernels::kv_row_bytes(mem_fmt, hd);
    a.mem = {mem_fmt, mk.data(), mv.data(), n_mem, rb * size_t(n_head_kv), rb};
    a.out = out.data();
    return a;
  }
};

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

TEST(KnnKernel, AllRowsAsCandidatesEqualsDense) {
  lcx::ThreadPool pool(2);
  for (KvFormat f : {KvFormat::F32, KvFormat::BF16, KvFormat::Q8Row}) {
    for (int64_t n_q : {1, 3, 40}) {
      Problem p(n_q, f, 7);
      AttentionArgs a = p.args();
      lcx::kernels::attention(a, pool, KernelIsa::Scalar);
      const std::vector<float> dense = p.out;
      // Every memory row, shuffled per (query, head), plus padding: the same softmax.
      const int64_t n_head = a.n_head, k = p.n_mem + 3;
      std::vector<int32_t> cand(size_t(n_q * n_head * k));
      std::mt19937 rng(3);
      for (int64_t w = 0; w < n_q * n_head; ++w) {
        int32_t* c = cand.data() + w * k;
        std::iota(c, c + p.n_mem, 0);
        std::shuffle(c, c + p.n_mem, rng);
        c[p.n_mem] = -1;
        c[p.n_mem + 1] = int32_t(p.n_mem);  // outside the memory: ignored
        c[p.n_mem + 2] = -1;
      }
      a.mem_cand = cand.data();
      a.mem_n_cand = k;
      for (KernelIsa isa : all_isas()) {
        std::fill(p.out.begin(), p.out.end(), 0.0f);
        lcx::kernels::attention(a, pool, isa);
        EXPECT_LT(max_diff(dense, p.out), 2e-5) << lcx::kernels::kernel_isa_name(isa) << " n_q=" << n_q;
      }
    }
  }
}

TEST(KnnKernel, ExactTopKAsCandidatesEqualsExactTopK) {
  lcx::ThreadPool pool(2);
  const int64_t k = 17;
  for (int64_t n_q : {1, 4}) {
    Problem p(n_q, KvFormat::F32, 11);
    AttentionArgs a = p.args();
    a.mem_topk = k;
    lcx::kernels::attention(a, pool, KernelIsa::Scalar);
    const std::vector<float> exact = p.out;
    // The same top-k sets by brute force, in reverse order, some lists padded with -1.
    const int64_t n_head = a.n_head;
    std::vector<int32_t> cand(size_t(n_q * n_head * (k + 1)), -1);
    for (int64_t i = 0; i < n_q; ++i) {
      for (int64_t h = 0; h < n_head; ++h) {
        const int64_t g = h / p.group;
        std::vector<std::pair<float, int32_t>> s;
        for (int64_t t = 0; t < p.n_mem; ++t) {
          const float* key = p.mk_f32.data() + (t * p.n_head_kv + g) * p.hd;
          s.push_back({lcx::kernels::scalar::dot_f32(p.q.data() + (i * n_head + h) * p.hd, key, p.hd), int32_t(t)});
        }
        std::sort(s.begin(), s.end(), [](auto x, auto y) { return x.first > y.first; });
        int32_t* c = cand.data() + (i * n_head + h) * (k + 1);
        for (int64_t j = 0; j < k; ++j) c[k - j] = s[size_t(j)].second;
      }
    }
    a.mem_topk = 0;
    a.mem_cand = cand.data();
    a.mem_n_cand = k + 1;
    for (KernelIsa isa : all_isas()) {
      std::fill(p.out.begin(), p.out.end(), 0.0f);
      lcx::kernels::attention(a, pool, isa);
      EXPECT_LT(max_diff(exact, p.out), 2e-5) << lcx::kernels::kernel_isa_name(isa) << " n_q=" << n_q;
    }
  }
}

// Exact top-k rows of q against keys [n, hd] by brute force.
std::vector<int32_t> brute_topk(const float* q, const std::vector<float>& keys, int64_t hd, int64_t k) {
  const int64_t n = int64_t(keys.size()) / hd;
  std::vector<std::pair<float, int32_t>> s;
  for (int64_t t = 0; t < n; ++t) s.push_back({lcx::kernels::scalar::dot_f32(q, keys.data() + t * hd, hd), int32_t(t)});
  std::partial_sort(s.begin(), s.begin() + k, s.end(), [](auto x, auto y) { return x.first > y.first; });
  std::vector<int32_t> out;
  for (int64_t j = 0; j < k; ++j) out.push_back(s[size_t(j)].second);
  return out;
}

KvSpan f32_span(const std::vector<float>& keys, int64_t n, int64_t n_head_kv, int64_t hd) {
  const auto* p = reinterpret_cast<const uint8_t*>(keys.data());
  return {KvFormat::F32, p, p, n, size_t(n_head_kv * hd) * 4, size_t(hd) * 4};
}

// Recall of the index's top-k against exact top-k for random queries, one kv head.
double recall(const lcx::MemoryIndex& idx, const std::vector<float>& keys, int64_t hd, int64_t k, int ef,
              lcx::ThreadPool& pool, int n_queries = 50) {
  const std::vector<float> qs = gaussian(size_t(n_queries * hd), 99);
  std::vector<int32_t> got(size_t(n_queries * k));
  idx.search(qs.data(), n_queries, 1, k, ef, got.data(), pool);
  int64_t hit = 0;
  for (int i = 0; i < n_queries; ++i) {
    const auto want = brute_topk(qs.data() + i * hd, keys, hd, k);
    const std::set<int32_t> w(want.begin(), want.end());
    for (int64_t j = 0; j < k; ++j) hit += w.count(got[size_t(i * k + j)]);
  }
  return double(hit) / double(n_queries * k);
}

TEST(KnnIndex, RecallAtDefaultEf) {
  // Keys with the anisotropy of real attention keys (a few dominant directions plus noise, so
  // norms vary widely); isotropic Gaussian keys in 64 dimensions, a hard case for any graph
  // index (near-uniform distances), are checked more loosely.
  const int64_t hd = 64, n = 4000, k = 32;
  lcx::ThreadPool pool(2);
  std::vector<float> keys = gaussian(size_t(n * hd), 5);
  const std::vector<float> dirs = gaussian(size_t(4 * hd), 6, 2.0f);
  std::vector<float> mixed = keys;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (int64_t t = 0; t < n; ++t)
    for (int d4 = 0; d4 < 4; ++d4) {
      const float w = nd(rng);
      for (int64_t i = 0; i < hd; ++i) mixed[size_t(t * hd + i)] = 0.5f * keys[size_t(t * hd + i)] + w * dirs[size_t(d4 * hd + i)];
    }
  for (const auto* data : {&mixed, &keys}) {
    lcx::MemoryIndex idx;
    idx.sync(f32_span(*data, n, 1, hd), 1, hd, lcx::HnswParams{}, pool);
    ASSERT_EQ(idx.size(), n);
    const double r = recall(idx, *data, hd, k, 0, pool);
    const double r_hi = recall(idx, *data, hd, k, 512, pool);
    std::printf("[ hnsw ] %s keys, %lld rows: recall@%lld %.3f (default ef), %.3f (ef 512)\n",
                data == &mixed ? "anisotropic" : "isotropic", (long long)n, (long long)k, r, r_hi);
    EXPECT_GE(r, data == &mixed ? 0.9 : 0.8);
    EXPECT_GE(r_hi, 0.97);
  }
}

TEST(KnnIndex, IncrementalCopyAndDrop) {
  const int64_t hd = 16, n_head_kv = 2, n = 600;
  lcx::ThreadPool pool(2);
  const std::vector<float> keys = gaussian(size_t(n * n_head_kv * hd), 21);
  // Built in three steps equals built at once (same graph: rows go in in order per head).
  lcx::MemoryIndex a, b;
  a.sync(f32_span(keys, n, n_head_kv, hd), n_head_kv, hd, {}, pool);
  for (int64_t m : {100, 350, 600}) b.sync(f32_span(keys, m, n_head_kv, hd), n_head_kv, hd, {}, pool);
  const std::vector<float> qs = gaussian(size_t(8 * n_head_kv * hd), 22);
  const int64_t k = 10;
  std::vector<int32_t> ra(size_t(8 * n_head_kv * k)), rb(ra.size()), rc(ra.size());
  a.search(qs.data(), 8, n_head_kv, k, 0, ra.data(), pool);
  b.search(qs.data(), 8, n_head_kv, k, 0, rb.data(), pool);
  EXPECT_EQ(ra, rb);
  // A copy answers the same and grows independently.
  lcx::MemoryIndex c = a;
  c.search(qs.data(), 8, n_head_kv, k, 0, rc.data(), pool);
  EXPECT_EQ(ra, rc);
  a.clear();
  c.search(qs.data(), 8, n_head_kv, k, 0, rc.data(), pool);
  EXPECT_EQ(rb, rc);
  EXPECT_EQ(a.size(), 0);
  // k >= rows with a wide beam: every row comes back exactly once, padding after.
  lcx::MemoryIndex small;
  small.sync(f32_span(keys, 30, n_head_kv, hd), n_head_kv, hd, {}, pool);
  std::vector<int32_t> all(size_t(n_head_kv * 40));
  small.search(qs.data(), 1, n_head_kv, 40, 100, all.data(), pool);
  for (int64_t h = 0; h < n_head_kv; ++h) {
    std::set<int32_t> s(all.begin() + h * 40, all.begin() + h * 40 + 30);
    EXPECT_EQ(s.size(), 30u);
    EXPECT_EQ(*s.begin(), 0);
    EXPECT_EQ(*s.rbegin(), 29);
    for (int64_t j = 30; j < 40; ++j) EXPECT_EQ(all[size_t(h * 40 + j)], -1);
  }
  // FIFO drop: rows are renumbered from the new front; dropped rows never come back.
  small.drop_front(10);
  EXPECT_EQ(small.size(), 20);
  const std::vector<float> rest(keys.begin() + 10 * n_head_kv * hd, keys.begin() + 30 * n_head_kv * hd);
  small.search(qs.data(), 1, n_head_kv, 40, 100, all.data(), pool);
  for (int64_t h = 0; h < n_head_kv; ++h) {
    std::set<int32_t> s(all.begin() + h * 40, all.begin() + h * 40 + 20);
    EXPECT_EQ(s.size(), 20u);
    EXPECT_EQ(*s.begin(), 0);
    EXPECT_EQ(*s.rbegin(), 19);
    EXPECT_EQ(all[size_t(h * 40 + 20)], -1);
  }
  // ... and rows appended after the drop get the following numbers.
  const std::vector<float> more(keys.begin() + 10 * n_head_kv * hd, keys.begin() + 40 * n_head_kv * hd);
  small.sync(f32_span(more, 30, n_head_kv, hd), n_head_kv, hd, {}, pool);
  EXPECT_EQ(small.size(), 30);
  small.search(qs.data(), 1, n_head_kv, 40, 100, all.data(), pool);
  std::set<int32_t> s(all.begin(), all.begin() + 30);
  EXPECT_EQ(s.size(), 30u);
  EXPECT_EQ(*s.rbegin(), 29);
}

// --- The whole model on the LongLLaMA fixture -------------------------------------------------

std::string model_dir(const std::string& m) { return (fs::path(fixtures_dir()) / "models" / m).string(); }

std::vector<int32_t> case_ids(const std::string& name) {
  auto j = nlohmann::json::parse(read_file((fs::path(fixtures_dir()) / "cases" / name / "case.json").string()));
  return j["input_ids"].get<std::vector<int32_t>>();
}

std::shared_ptr<longctx::Model> load_mem_model() {
  longctx::LoadOptions lo;
  lo.overrides = {{"--last-context-length", "16"}};
  return longctx::Model::load(model_dir("longllama_mem"), lo);
}

std::vector<float> run(const std::shared_ptr<longctx::Model>& m, const std::vector<int32_t>& ids,
                       longctx::SessionOptions so = {}) {
  so.n_threads = 2;
  longctx::Session s(m, so);
  std::vector<float> out;
  s.feed(ids, &out);
  return out;
}

longctx::SessionOptions knn(int64_t k, const std::string& index, int ef = 0) {
  longctx::SessionOptions so;
  so.mem_topk = k;
  so.mem_index = index;
  so.hnsw_ef = ef;
  return so;
}

TEST(KnnModel, HnswAgainstDenseAndExactTopK) {
  auto m = load_mem_model();
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");  // 284 tokens end up in memory
  const auto dense = run(m, ids);
  // K >= memory size: dense attention, bit for bit.
  EXPECT_EQ(max_diff(dense, run(m, ids, knn(1000, "hnsw"))), 0.0);
  // A beam wider than the memory finds the exact top-k: exact top-k up to float rounding.
  const auto exact = run(m, ids, knn(32, "exact"));
  const double d_wide = max_diff(exact, run(m, ids, knn(32, "hnsw", 1000)));
  EXPECT_LT(d_wide, 1e-3);
  // Default beam: approximate.
  const auto hnsw = run(m, ids, knn(32, "hnsw"));
  const double d_exact = max_diff(exact, hnsw), d_dense = max_diff(dense, hnsw);
  std::printf("[ kNN ] top-32 of 284 memory keys, max |logit diff|: exact top-k vs dense %.3g; hnsw vs exact "
              "top-k %.3g (ef 1000: %.3g); hnsw vs dense %.3g\n",
              max_diff(dense, exact), d_exact, d_wide, d_dense);
  EXPECT_LT(d_dense, 1.0);
  for (float x : hnsw) ASSERT_TRUE(std::isfinite(x));
}

TEST(KnnModel, CloneAndSavedStateWithIndex) {
  auto m = load_mem_model();
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  const std::vector<int32_t> doc(ids.begin(), ids.begin() + 250), q(ids.begin() + 250, ids.end());
  longctx::SessionOptions so = knn(16, "hnsw");
  so.n_threads = 2;
  longctx::Session a(m, so);
  a.feed(doc);
  const std::string path = (fs::path(tmp_dir()) / "knn.mem").string();
  a.save_state(path);
  auto b = a.clone();  // deep copy of the graphs
  longctx::Session c(m, so);
  c.load_state(path);  // the index is rebuilt on the next forward
  std::vector<float> la, lb, lc;
  a.feed(q, &la);
  b->feed(q, &lb);
  c.feed(q, &lc);
  EXPECT_EQ(max_diff(la, lb), 0.0);
  // Rows go into each graph in memory order, so the rebuilt graph is the same graph.
  EXPECT_EQ(max_diff(la, lc), 0.0);
  // The clone is independent: feeding it more did not touch a.
  std::vector<float> la2;
  auto d = a.clone();
  d->feed(q, &la2);
  b->feed(q, &lb);
  EXPECT_EQ(max_diff(la2, lb), 0.0);
}

TEST(KnnModel, MemoryCapWithIndex) {
  auto m = load_mem_model();
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  longctx::SessionOptions so = knn(16, "hnsw", 1000);
  so.mem_max_tokens = 100;
  so.n_threads = 2;
  longctx::Session s(m, so);
  std::vector<float> out;
  s.feed_split(ids, 200, &out);  // memory passes the cap several times while decoding
  EXPECT_EQ(s.n_memory(), 100);
  longctx::SessionOptions ex = knn(16, "exact");
  ex.mem_max_tokens = 100;
  ex.n_threads = 2;
  longctx::Session e(m, ex);
  std::vector<float> ref;
  e.feed_split(ids, 200, &ref);
  // A beam wider than the memory: the dropped rows are gone from the index too.
  EXPECT_LT(max_diff(ref, out), 1e-3);
}

TEST(KnnModel, BadOptionsAreRefused) {
  auto m = load_mem_model();
  EXPECT_THROW(longctx::Session(m, knn(0, "hnsw")), std::runtime_error);
  EXPECT_THROW(longctx::Session(m, knn(8, "faiss")), std::runtime_error);
}

}  // namespace
