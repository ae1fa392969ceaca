// kNN memory attention at decode: one query against a large FoT memory, one memory layer of
// LongLLaMA-3B's shape (32 heads = kv heads, head_dim 100, bfloat16 memory, 1024 local keys).
// Dense attention vs exact top-k (scores every memory key) vs the HNSW index (--mem-index hnsw:
// search, then attention over local keys + the K candidates), plus the index build time and the
// recall of its candidates against the exact top-k.
//
//   bench_knn [--rows 65536] [--heads 32] [--k 32] [--ef 0] [--threads 2] [--reps 20]
//
// Keys are synthetic and anisotropic (a few dominant directions plus noise), like real keys
// whose norms vary; timings are medians over --reps decode steps with fresh queries.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "model/memory_index.h"
#include "runtime/thread_pool.h"

namespace {

using lcx::kernels::KvFormat;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 65536, heads = 32, k = 32, hd = 100, n_local = 1024;
  int ef = 0, threads = 2, reps = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (f == "--rows") rows = v;
    else if (f == "--heads") heads = v;
    else if (f == "--k") k = v;
    else if (f == "--ef") ef = int(v);
    else if (f == "--threads") threads = int(v);
    else if (f == "--reps") reps = int(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  const KvFormat fmt = KvFormat::BF16;
  const size_t rb = lcx::kernels::kv_row_bytes(fmt, hd);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);

  // Memory [rows, heads, hd]: per head 4 dominant directions with random weights plus noise.
  std::vector<uint8_t> mk(size_t(rows * heads) * rb), mv(mk.size());
  {
    std::vector<float> dirs(size_t(heads * 4 * hd)), row(static_cast<size_t>(hd));
    for (auto& x : dirs) x = 2.0f * nd(rng);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t g = 0; g < heads; ++g) {
        for (auto& x : row) x = 0.5f * nd(rng);
        for (int d = 0; d < 4; ++d) {
          const float w = nd(rng);
          for (int64_t i = 0; i < hd; ++i) row[size_t(i)] += w * dirs[size_t((g * 4 + d) * hd + i)];
        }
        lcx::kernels::kv_encode(fmt, row.data(), hd, mk.data() + size_t(t * heads + g) * rb);
        for (auto& x : row) x = nd(rng);
        lcx::kernels::kv_encode(fmt, row.data(), hd, mv.data() + size_t(t * heads + g) * rb);
      }
  }
  std::vector<float> lk(size_t(n_local * heads * hd)), lv(lk.size()), q(size_t(heads * hd)), out(q.size());
  for (auto& x : lk) x = nd(rng);
  for (auto& x : lv) x = nd(rng);

  lcx::ThreadPool pool(threads);
  lcx::kernels::AttentionArgs a;
  a.q = q.data();
  a.n_q = 1;
  a.n_head = heads;
  a.n_head_kv = heads;
  a.head_dim = hd;
  a.scale = 1.0f / std::sqrt(float(hd));
  a.local = {KvFormat::F32, reinterpret_cast<const uint8_t*>(lk.data()), reinterpret_cast<const uint8_t*>(lv.data()),
             n_local, size_t(heads * hd) * 4, size_t(hd) * 4};
  a.n_past = n_local - 1;
  a.mem = {fmt, mk.data(), mv.data(), rows, rb * size_t(heads), rb};
  a.out = out.data();

  lcx::MemoryIndex index;
  lcx::HnswParams hp;
  hp.ef_search = ef;
  auto t0 = Clock::now();
  index.sync(a.mem, heads, hd, hp, pool);
  const double build_ms = ms_since(t0);

  std::vector<double> t_dense, t_exact, t_search, t_cand;
  std::vector<int32_t> cand(size_t(heads * k));
  int64_t hit = 0, total = 0;
  for (int r = 0; r < reps; ++r) {
    for (auto& x : q) x = nd(rng);
    a.mem_topk = 0;
    a.mem_cand = nullptr;
    t0 = Clock::now();
    lcx::kernels::attention(a, pool);
    t_dense.push_back(ms_since(t0));
    a.mem_topk = k;
    t0 = Clock::now();
    lcx::kernels::attention(a, pool);
    t_exact.push_back(ms_since(t0));
    t0 = Clock::now();
    index.search(q.data(), 1, heads, k, ef, cand.data(), pool);
    t_search.push_back(ms_since(t0));
    a.mem_topk = 0;
    a.mem_cand = cand.data();
    a.mem_n_cand = k;
    t0 = Clock::now();
    lcx::kernels::attention(a, pool);
    t_cand.push_back(ms_since(t0));
    // Recall of the candidates against the exact top-k (bf16 keys decoded as attention does).
    if (r < 4) {
      std::vector<float> key(static_cast<size_t>(hd));
      for (int64_t g = 0; g < heads; ++g) {
        std::vector<std::pair<float, int32_t>> s(static_cast<size_t>(rows));
        for (int64_t t = 0; t < rows; ++t) {
          lcx::kernels::kv_decode(fmt, mk.data() + size_t(t * heads + g) * rb, hd, key.data());
          s[size_t(t)] = {lcx::kernels::dot_f32(q.data() + g * hd, key.data(), hd), int32_t(t)};
        }
        std::partial_sort(s.begin(), s.begin() + k, s.end(), [](auto x, auto y) { return x.first > y.first; });
        std::set<int32_t> want;
        for (int64_t j = 0; j < k; ++j) want.insert(s[size_t(j)].second);
        for (int64_t j = 0; j < k; ++j) hit += want.count(cand[size_t(g * k + j)]);
        total += k;
      }
    }
  }
  const double search = median(t_search), cand_ms = median(t_cand);
  std::printf("memory %lld rows x %lld heads x head_dim %lld (bf16), local %lld keys, k %lld, %d threads\n",
              (long long)rows, (long long)heads, (long long)hd, (long long)n_local, (long long)k, threads);
  std::printf("index build: %.1f s (%.1f us per row and head, %d threads), index %.0f MB vs memory %.0f MB\n",
              build_ms / 1e3, build_ms * 1e3 / double(rows * heads) * threads, threads, index.bytes() / 1e6,
              2.0 * double(mk.size()) / 1e6);
  std::printf("decode step, median of %d:  dense %.2f ms | exact top-k %.2f ms | hnsw %.2f ms (search %.2f + "
              "attention %.2f) | recall@%lld %.3f\n",
              reps, median(t_dense), median(t_exact), search + cand_ms, search, cand_ms, (long long)k,
              double(hit) / double(std::max<int64_t>(1, total)));
  return 0;
}
