// Matmul microbenchmarks at real model shapes, per weight dtype, decode (1 token: GB/s of
// weights streamed; 4 tokens: the largest GEMV) and prompt processing (512 tokens: GFLOP/s).
//
//   bench_kernels --benchmark_filter='Tiny.*F32' --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
//
// LONGCTX_KERNELS=scalar|avx2|avx512 picks the variant; LONGCTX_FAST_BF16=1 the bf16 GEMM for
// F16/BF16 weights. Weight copies are rotated so that the weights read per iteration come from
// DRAM, as in a real forward pass, not from a warm cache.
//
// The machine is shared, so rates are per CPU-second of the whole process (all pool threads):
// "GFLOP/s" is GFLOP per CPU-second, i.e. per-core efficiency; the wall time is "Time". On an idle
// machine the 2-thread wall rate is about twice the per-CPU-second rate.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "runtime/thread_pool.h"

namespace {

using lcx::DType;
using lcx::kernels::MatRef;

struct Shape {
  const char* name;
  int64_t rows, cols;  // [n_out, n_in]
};
// TinyLlama-1.1B (n_embd 2048, n_ff 5632, n_vocab 32000) and OpenLLaMA-3B (3200, 8640).
const Shape kShapes[] = {
    {"Tiny_ffn_up_5632x2048", 5632, 2048},    {"Tiny_ffn_down_2048x5632", 2048, 5632},
    {"Tiny_lm_head_32000x2048", 32000, 2048}, {"Open3B_ffn_up_8640x3200", 8640, 3200},
    {"Open3B_ffn_down_3200x8640", 3200, 8640},
    // ~0.5 MB of Q8_0 / 1 MB of F16 weights (128 rows: half that): stay in L2 (no rotation below), so decode
    // shows the kernel's compute rate apart from DRAM bandwidth.
    {"L2_256x2048", 256, 2048}, {"L2_128x2048", 128, 2048},
};
// Q4_0_R16: Q4_0 in the 16-row panels the model repacks it into for the AVX-512 kernels.
// Q5_0 / Q4_K / Q5_K / Q6_K: GGUF block types (random blocks; llama-quantize's Q4_K_M mixes Q4_K and Q6_K).
const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q4_0_R16, DType::Q5_0, DType::Q4_K, DType::Q4_K_R16, DType::Q5_K, DType::Q6_K};

// Random blocks of a GGML block type: random bytes with the fp16 scale fields (offsets from
// ggml-common.h) set to small finite values.
void random_blocks(DType t, uint8_t* w, size_t bytes) {
  std::mt19937 rng(3);
  for (size_t i = 0; i < bytes; ++i) w[i] = uint8_t(rng());
  std::vector<size_t> offs;
  if (t == DType::Q5_0) offs = {0};
  if (t == DType::Q4_K || t == DType::Q5_K) offs = {0, 2};
  if (t == DType::Q6_K) offs = {208};
  const size_t bb = lcx::dtype_block_bytes(t);
  for (size_t b = 0; b + bb <= bytes; b += bb)
    for (size_t o : offs) {
      const uint16_t h = lcx::f32_to_f16(0.001f + 0.01f * float(rng() % 100) / 100.0f);
      std::memcpy(w + b + o, &h, 2);
    }
}

void BM_Matmul(benchmark::State& state, Shape shape, DType dtype, int64_t n_tokens, int n_threads) {
  const int64_t rows = shape.rows, cols = shape.cols;
  const size_t bytes = lcx::dtype_row_bytes(dtype, cols) * size_t(rows);
  // Enough copies to exceed any last-level cache (>= 256 MiB of weights in rotation).
  const bool in_cache = std::string(shape.name).rfind("L2_", 0) == 0;
  const size_t n_copies = n_tokens <= 4 && !in_cache ? std::max<size_t>(1, (size_t(256) << 20) / bytes + 1) : 1;
  std::vector<std::vector<uint8_t>> w(n_copies, std::vector<uint8_t>(bytes));
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.5f);
    std::vector<float> row(static_cast<size_t>(cols));
    const DType qt = dtype == DType::Q4_0_R16 ? DType::Q4_0 : dtype;
    const bool block_type = lcx::dtype_block_values(dtype) == 256 || dtype == DType::Q5_0;
    if (block_type) random_blocks(lcx::dtype_r16_source(dtype), w[0].data(), bytes);
    if (dtype == DType::Q4_K_R16) {
      std::vector<uint8_t> rowmajor = w[0];
      lcx::repack_r16(dtype, rowmajor.data(), w[0].data(), rows, cols);
    }
    for (int64_t r = 0; r < rows && !block_type; ++r) {
      for (auto& v : row) v = dist(rng);
      lcx::kernels::quantize_row(qt, row.data(), w[0].data() + size_t(r) * lcx::dtype_row_bytes(qt, cols), cols);
    }
    if (dtype == DType::Q4_0_R16) {
      std::vector<uint8_t> rowmajor = w[0];
      lcx::repack_q4_0_r16(rowmajor.data(), w[0].data(), rows, cols);
    }
    for (size_t i = 1; i < n_copies; ++i) w[i] = w[0];
  }
  std::vector<float> x(static_cast<size_t>(n_tokens * cols)), y(static_cast<size_t>(n_tokens * rows));
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : x) v = dist(rng);
  lcx::ThreadPool pool(n_threads);
  size_t i = 0;
  for (auto _ : state) {
    const MatRef m{dtype, rows, cols, w[i++ % n_copies].data()};
    lcx::kernels::matmul(m, x.data(), n_tokens, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  if (n_tokens <= 4) {
    state.counters["GB/s"] = benchmark::Counter(double(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * double(rows) * double(cols) * double(n_tokens), benchmark::Counter::kIsIterationInvariantRate);
  const char* fast = std::getenv("LONGCTX_FAST_BF16");
  state.SetLabel(std::string(lcx::kernels::kernel_isa_name(lcx::kernels::active_kernel_isa())) +
                 (fast != nullptr && std::string(fast) == "1" ? " fast_bf16" : ""));
}

int register_all() {
  for (const Shape& s : kShapes) {
    for (DType t : kTypes) {
      for (int64_t nt : {1, 4, 512}) {
        if (nt == 512 && std::string(s.name).find("lm_head") != std::string::npos) continue;
        if (nt == 512 && std::string(s.name).rfind("L2_", 0) == 0) continue;
        for (int th : {1, 2}) {
          const std::string name = std::string(s.name) + "/" + lcx::dtype_name(t) + "/tokens:" + std::to_string(nt) +
                                   "/threads:" + std::to_string(th);
          benchmark::RegisterBenchmark(name.c_str(), BM_Matmul, s, t, nt, th)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
        }
      }
    }
  }
  return 0;
}
const int kRegistered = register_all();

}  // namespace

BENCHMARK_MAIN();
