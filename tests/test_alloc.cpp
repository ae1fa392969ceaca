// The decode loop allocates nothing (issue 5): the kernels a decode step runs (GEMV of every
// weight dtype, decode attention) and a whole Session decode step, after warm-up, make no heap
// allocation. Counted by replacing the global operator new in this test binary (std::function,
// std::vector and friends all come through it).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "longctx/longctx.h"
#include "runtime/dtype.h"
#include "runtime/thread_pool.h"
#include "testutil.h"

namespace {
std::atomic<long> g_news{0};
}  // namespace

void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

namespace fs = std::filesystem;
using namespace lcx::test;

TEST(NoAllocation, GemvOfEveryWeightType) {
  lcx::ThreadPool pool(2);
  const int64_t rows = 256, cols = 1024;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> wf(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  for (lcx::DType t : {lcx::DType::F32, lcx::DType::F16, lcx::DType::BF16, lcx::DType::Q8_0, lcx::DType::Q4_0}) {
    std::vector<uint8_t> w(lcx::dtype_row_bytes(t, cols) * size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      lcx::kernels::quantize_row(t, wf.data() + r * cols, w.data() + size_t(r) * lcx::dtype_row_bytes(t, cols), cols);
    const lcx::kernels::MatRef m{t, rows, cols, w.data()};
    lcx::kernels::matmul(m, x.data(), 1, y.data(), pool);  // warm-up: per-thread scratch grows once
    const long before = g_news.load();
    for (int i = 0; i < 20; ++i) lcx::kernels::matmul(m, x.data(), 1, y.data(), pool);
    EXPECT_EQ(g_news.load() - before, 0) << lcx::dtype_name(t);
    EXPECT_TRUE(std::isfinite(y[0]));
  }
}

TEST(NoAllocation, SessionDecodeSteps) {
  for (const char* name : {"llama_gqa", "longllama_mem"}) {
    auto model = longctx::Model::load((fs::path(fixtures_dir()) / "models" / name).string());
    longctx::SessionOptions so;
    so.n_threads = 2;
    longctx::Session s(model, so);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 20; ++i) prompt.push_back(1 + (i * 7) % 500);
    s.feed(prompt);
    // The caches grow geometrically (amortised: a few reallocations per doubling of the
    // context); count the steps between two growths: reserve room by one decode step first.
    std::vector<std::vector<int32_t>> steps;
    for (int i = 0; i < 12; ++i) steps.push_back({int32_t(3 + i)});
    s.feed(steps[0]);
    const long before = g_news.load();
    for (int i = 1; i < 12; ++i) s.feed(steps[size_t(i)]);
    EXPECT_LE(g_news.load() - before, 0) << name;
  }
}

}  // namespace
