// A small fork-join pool. Workers spin briefly and then sleep on a condition variable: on a
// shared 2-core machine, pure spinning (OpenMP's default) collapses throughput when another
// process wants a core, and pure sleeping adds wake-up latency to every decode step.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/function_ref.h"

namespace lcx {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads includes the calling thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(i_thread, n_threads) on every thread (the caller is thread 0) and waits. fn is
  // referenced, not copied: no allocation per call.
  void run(FunctionRef<void(int, int)> fn);

  // Splits [0, n) into contiguous chunks, one per thread; fn(begin, end).
  void parallel_for(int64_t n, FunctionRef<void(int64_t, int64_t)> fn);

  // As parallel_for, for streaming work (decode GEMVs read each weight row once): with two
  // threads, each first takes 3/8 of [0, n) from its own end and then the middle is handed
  // out in small pieces from both ends, so each thread still reads one region front to back
  // but the one that runs slower (a busy core, a slower memory path) does less of it; fn may
  // be called several times per thread, with increasing (thread 0) or decreasing (thread 1)
  // ranges. Other thread counts: parallel_for.
  void parallel_for_stream(int64_t n, FunctionRef<void(int64_t, int64_t)> fn);

 private:
  void worker(int idx);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  const FunctionRef<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
};

}  // namespace lcx
