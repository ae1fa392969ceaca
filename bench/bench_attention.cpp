// Attention microbenchmarks at real model shapes: FoT memory attention of LongLLaMA-3B
// (n_head 32 = n_head_kv, head_dim 100, bfloat16 memory) for a prefill window and for decode,
// and causal local attention of a GQA model (TinyLlama-1.1B: 32 heads, 4 kv heads, head_dim 64).
//
//   bench_attention --benchmark_filter='Mem' --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
//
// The variant is part of each benchmark's name (scalar runs only where it finishes in seconds).
// GFLOP/s counts 4 * head_dim flops per (query, head, key) score (Q.K and P.V); GB/s counts the
// key and value bytes one call must read at least once.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_internal.h"
#include "runtime/byte_buffer.h"
#include "runtime/thread_pool.h"

namespace {

using lcx::kernels::KernelIsa;
using lcx::kernels::KvFormat;

struct Shape {
  const char* name;
  int64_t n_head, n_head_kv, head_dim;
  int64_t n_q, n_past;        // local: causal, n_past + n_q keys (f32, as the model keeps them)
  int64_t n_mem;              // memory rows
  KvFormat mem_fmt;
  int64_t topk;
  KvFormat local_fmt = KvFormat::F32;  // the local cache's --cache-type
};

// Heads are reduced where a full layer would take many seconds: the cost per head is the same.
const Shape kShapes[] = {
    // LongLLaMA-3B memory layer, prefill window of 2048 against 16k memory keys, 2 of 32 heads.
    {"LongLLaMA3B_prefill2048_mem16k_2heads", 2, 2, 100, 2048, 0, 16384, KvFormat::BF16, 0},
    // ... decode: one query against 32k memory keys, all 32 heads (bandwidth bound; 419 MB).
    {"LongLLaMA3B_decode_mem32k", 32, 32, 100, 1, 0, 32768, KvFormat::BF16, 0},
    // ... one layer of a 128k memory (1.68 GB, as in the 128k decode goal).
    {"LongLLaMA3B_decode_mem128k", 32, 32, 100, 1, 0, 131072, KvFormat::BF16, 0},
    // ... the same from cache (1k memory keys, 13 MB, L3-resident): the kernel's compute rate.
    {"LongLLaMA3B_decode_mem1k_cached", 32, 32, 100, 1, 0, 1024, KvFormat::BF16, 0},
    // ... from L2 (64 memory keys, 0.8 MB): the kernel's compute rate.
    {"LongLLaMA3B_decode_mem64_l2", 32, 32, 100, 1, 0, 64, KvFormat::BF16, 0},
    {"LongLLaMA3B_decode_mem32k_q8row", 32, 32, 100, 1, 0, 32768, KvFormat::Q8Row, 0},
    {"LongLLaMA3B_decode_mem32k_topk128", 32, 32, 100, 1, 0, 32768, KvFormat::BF16, 128},
    {"LongLLaMA3B_prefill512_mem16k_topk128_2heads", 2, 2, 100, 512, 0, 16384, KvFormat::BF16, 128},
    // TinyLlama local attention: decode at depth 16k, prefill of 4096 tokens.
    {"Tiny_decode_depth16k", 32, 4, 64, 1, 16383, 0, KvFormat::F32, 0},
    {"Tiny_decode_depth16k_f16cache", 32, 4, 64, 1, 16383, 0, KvFormat::F32, 0, KvFormat::F16},
    // Llama-3-8B shape (4 query heads per kv head, head_dim 128) at depth 16k, f16 cache.
    {"Llama3_8B_decode_depth16k_f16cache", 32, 8, 128, 1, 16383, 0, KvFormat::F32, 0, KvFormat::F16},
    // ... at depth 1k (4 MB of cache, L3-resident): the kernel's compute rate for 4 rows per kv head.
    {"Llama3_8B_decode_depth1k_f16cache", 32, 8, 128, 1, 1023, 0, KvFormat::F32, 0, KvFormat::F16},
    {"Tiny_prefill4096_causal", 32, 4, 64, 4096, 0, 0, KvFormat::F32, 0},
    // Small shape where the scalar oracle also runs (speedup reference).
    {"Small_prefill256_mem2k", 8, 8, 100, 256, 0, 2048, KvFormat::BF16, 0},
};

// Rows live in lcx::ByteBuffer, as the engine's FoT memory does (2 MiB pages where the kernel
// offers transparent huge pages).
using Bytes = lcx::ByteBuffer;

Bytes random_rows(KvFormat f, int64_t n_rows, int64_t hd, uint32_t seed) {
  const size_t rb = lcx::kernels::kv_row_bytes(f, hd);
  Bytes out;
  out.resize(rb * size_t(n_rows));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(hd));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (auto& x : row) x = nd(rng);
    lcx::kernels::kv_encode(f, row.data(), hd, out.data() + size_t(r) * rb);
  }
  return out;
}

void BM_Attention(benchmark::State& state, Shape s, KernelIsa isa, int n_threads) {
  if (isa != KernelIsa::Scalar && lcx::kernels::attn_kernels(isa) == nullptr) {
    state.SkipWithError("variant not supported by this CPU");
    return;
  }
  const int64_t hd = s.head_dim, n_local = s.n_past + s.n_q;
  std::vector<float> q(static_cast<size_t>(s.n_q * s.n_head * hd)), out(q.size());
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : q) x = nd(rng);
  }
  const Bytes lk = random_rows(s.local_fmt, n_local * s.n_head_kv, hd, 2);
  const Bytes lv = random_rows(s.local_fmt, n_local * s.n_head_kv, hd, 3);
  const Bytes mk = random_rows(s.mem_fmt, s.n_mem * s.n_head_kv, hd, 4);
  const Bytes mv = random_rows(s.mem_fmt, s.n_mem * s.n_head_kv, hd, 5);
  lcx::kernels::AttentionArgs a;
  a.q = q.data();
  a.n_q = s.n_q;
  a.n_head = s.n_head;
  a.n_head_kv = s.n_head_kv;
  a.head_dim = hd;
  a.scale = 1.0f / std::sqrt(float(hd));
  const size_t lrb = lcx::kernels::kv_row_bytes(s.local_fmt, hd);
  a.local = {s.local_fmt, lk.data(), lv.data(), n_local, lrb * size_t(s.n_head_kv), lrb};
  a.n_past = s.n_past;
  const size_t mrb = lcx::kernels::kv_row_bytes(s.mem_fmt, hd);
  a.mem = {s.mem_fmt, mk.data(), mv.data(), s.n_mem, mrb * size_t(s.n_head_kv), mrb};
  a.mem_topk = s.topk;
  // LONGCTX_FAST_BF16=1: bf16 dot products for BF16 memory tiles (as kernels::attention does).
  const char* fast = std::getenv("LONGCTX_FAST_BF16");
  a.mem_bf16_dot = fast != nullptr && std::string(fast) == "1";
  a.out = out.data();
  lcx::ThreadPool pool(n_threads);
  for (auto _ : state) {
    lcx::kernels::attention(a, pool, isa);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Scores per head: every query sees all memory keys and n_past + i + 1 local keys.
  const double scores = double(s.n_head) * (double(s.n_q) * double(s.n_mem) +
                                            double(s.n_q) * double(s.n_past) + double(s.n_q) * double(s.n_q + 1) / 2);
  const double kv_bytes = 2.0 * double(s.n_head_kv) * (double(s.n_mem) * double(mrb) + double(n_local) * double(lrb));
  state.counters["GFLOP/s"] = benchmark::Counter(4e-9 * scores * double(hd), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(1e-9 * kv_bytes, benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  for (const Shape& s : kShapes) {
    const bool small = std::string(s.name).rfind("Small", 0) == 0;
    for (KernelIsa isa : {KernelIsa::Scalar, KernelIsa::Avx2, KernelIsa::Avx512}) {
      if (isa == KernelIsa::Scalar && !small) continue;
      for (int th : {1, 2}) {
        const std::string name = std::string(s.name) + "/" + lcx::kernels::kernel_isa_name(isa) +
                                 "/threads:" + std::to_string(th);
        benchmark::RegisterBenchmark(name.c_str(), BM_Attention, s, isa, th)->UseRealTime()->Unit(benchmark::kMillisecond);
      }
    }
  }
  return 0;
}
const int kRegistered = register_all();

}  // namespace

BENCHMARK_MAIN();
