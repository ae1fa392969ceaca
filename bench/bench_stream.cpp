// Memory read bandwidth of this machine, the bound for decode (every weight byte is read once per
// token): threads stream disjoint halves of a buffer far larger than the caches. Run it right
// before or between `longctx bench` decode runs; a shared VM's bandwidth moves by 2x from minute
// to minute, so a bound measured an hour earlier says little.
//
//   bench_stream [threads=2] [MiB=2048] [repetitions=5]
//
// Prints each repetition's GB/s and the median.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  const int n_threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
  const size_t mib = argc > 2 ? size_t(std::max(64, std::atoi(argv[2]))) : 2048;
  const int reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  const size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;  // touch every page
  std::vector<double> gbs;
  uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    std::vector<uint64_t> part(size_t(n_threads), 0);
    std::vector<std::thread> th;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < n_threads; ++t)
      th.emplace_back([&, t] {
        const size_t b = n / size_t(n_threads) * size_t(t), e = n / size_t(n_threads) * size_t(t + 1);
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: the loop is bound by loads
        for (size_t i = b; i + 4 <= e; i += 4) {
          s0 += buf[i];
          s1 += buf[i + 1];
          s2 += buf[i + 2];
          s3 += buf[i + 3];
        }
        part[size_t(t)] = s0 ^ s1 ^ s2 ^ s3;
      });
    for (auto& x : th) x.join();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t p : part) sink += p;
    gbs.push_back(double(n * sizeof(uint64_t)) / dt / 1e9);
    std::printf("read %zu MiB with %d thread%s: %.1f GB/s\n", mib, n_threads, n_threads > 1 ? "s" : "", gbs.back());
  }
  std::sort(gbs.begin(), gbs.end());
  std::printf("median %.1f GB/s over %d repetitions (sum %llu)\n", gbs[gbs.size() / 2], reps,
              static_cast<unsigned long long>(sink));
  return 0;
}
