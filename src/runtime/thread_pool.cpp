#include "runtime/thread_pool.h"

#include <algorithm>

namespace lcx {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int idx) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little (cheap when jobs come back to back, as in a decode step's matmuls)...
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 20000; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      g = generation_.load(std::memory_order_acquire);
    }
    // ...then sleep, so a busy neighbour process gets the core.
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return generation_.load() != seen; });
      g = generation_.load();
    }
    seen = g;
    const FunctionRef<void(int, int)>* job;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      job = job_;
    }
    (*job)(idx, n_threads_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(FunctionRef<void(int, int)> fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  fn(0, n_threads_);
  // Wait for the workers. On a shared machine a worker may be descheduled; after a short spin,
  // yield so that it (or a neighbour process) can use this core instead of us burning it.
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < 4000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  const int nt = int(std::min<int64_t>(n_threads_, n));
  if (nt == 1) {
    fn(0, n);
    return;
  }
  run([&](int i, int) {
    const int64_t chunk = (n + nt - 1) / nt;
    const int64_t b = std::min<int64_t>(n, int64_t(i) * chunk);
    const int64_t e = std::min<int64_t>(n, b + chunk);
    if (b < e) fn(b, e);
  });
}

void ThreadPool::parallel_for_stream(int64_t n, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n_threads_ != 2 || n < 8 || n > int64_t(UINT32_MAX)) {
    parallel_for(n, fn);
    return;
  }
  // [lo, hi) still unclaimed, packed as lo << 32 | hi so that one CAS claims from either end.
  std::atomic<uint64_t> range{uint64_t(n)};
  const int64_t first = n * 3 / 8, piece = std::max<int64_t>(1, n / 32);
  run([&](int i, int) {
    int64_t take_next = first;
    for (;;) {
      uint64_t cur = range.load(std::memory_order_relaxed), next;
      int64_t b, e;
      do {
        const int64_t lo = int64_t(cur >> 32), hi = int64_t(cur & 0xffffffffu);
        if (lo >= hi) return;
        const int64_t take = std::min(hi - lo, take_next);
        if (i == 0) {
          b = lo;
          e = lo + take;
          next = uint64_t(e) << 32 | uint64_t(hi);
        } else {
          b = hi - take;
          e = hi;
          next = uint64_t(lo) << 32 | uint64_t(b);
        }
      } while (!range.compare_exchange_weak(cur, next, std::memory_order_relaxed));
      fn(b, e);
      take_next = piece;
    }
  });
}

}  // namespace lcx
