// Dispatching entry points: pick the kernel variant once (CPU features, LONGCTX_KERNELS), and
// split matmuls across the thread pool.
#include "kernels/ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/ops_internal.h"

namespace lcx::kernels {

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::Scalar: return "scalar";
    case KernelIsa::Avx2: return "avx2";
    case KernelIsa::Avx512: return "avx512";
    default: return "?";
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
// AVX2 (checked first, including the OS's AVX state) implies the registers are usable.
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

bool kernel_isa_supported(KernelIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  switch (isa) {
    case KernelIsa::Scalar: return true;
    case KernelIsa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case KernelIsa::Avx512:
      // The avx512 file also uses AVX2/FMA/F16C instructions on 256-bit halves.
      return kernel_isa_supported(KernelIsa::Avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return false;
  }
#else
  return isa == KernelIsa::Scalar;
#endif
}

const KernelTable* kernel_table(KernelIsa isa) {
  if (!kernel_isa_supported(isa)) return nullptr;
  switch (isa) {
    case KernelIsa::Scalar: return &scalar::kTable;
#if defined(__x86_64__) && defined(__GNUC__)
    case KernelIsa::Avx2: return &avx2::kTable;
    case KernelIsa::Avx512: return &avx512::kTable;
#endif
    default: return nullptr;
  }
}

namespace {

const KernelTable& pick_kernels() {
  KernelIsa best = KernelIsa::Scalar;
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512}) {
    if (kernel_isa_supported(isa)) best = isa;
  }
  if (const char* env = std::getenv("LONGCTX_KERNELS"); env != nullptr && *env != '\0') {
    // Never fail here: this runs on first use, possibly inside a pool worker.
    bool known = false;
    for (int i = 0; i < int(KernelIsa::kCount); ++i) {
      const auto isa = KernelIsa(i);
      if (std::strcmp(env, kernel_isa_name(isa)) != 0) continue;
      known = true;
      if (kernel_isa_supported(isa)) return *kernel_table(isa);
      std::fprintf(stderr, "longctx: LONGCTX_KERNELS=%s is not supported by this CPU; using %s\n", env,
                   kernel_isa_name(best));
    }
    if (!known) {
      std::fprintf(stderr, "longctx: unknown LONGCTX_KERNELS=%s (choose scalar, avx2 or avx512); using %s\n",
                   env, kernel_isa_name(best));
    }
  }
  return *kernel_table(best);
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable& table = pick_kernels();
  return table;
}

KernelIsa active_kernel_isa() { return active_kernels().isa; }
bool q4_0_r16_preferred() {
  const KernelIsa isa = active_kernel_isa();
  return isa == KernelIsa::Avx512 || isa == KernelIsa::Avx2;  // both have Q4_0_R16 kernels
}
bool q4_k_r16_preferred() {
  static const bool off = [] {
    const char* e = std::getenv("LONGCTX_Q4K_R16");
    return e != nullptr && std::strcmp(e, "0") == 0;
  }();
  return !off && active_kernel_isa() == KernelIsa::Avx512;
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) { active_kernels().dequantize_row(t, src, dst, n); }
void quantize_row(DType t, const float* src, void* dst, int64_t n) { active_kernels().quantize_row(t, src, dst, n); }
float dot_f32(const float* a, const float* b, int64_t n) { return active_kernels().dot_f32(a, b, n); }
void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  active_kernels().rmsnorm(x, w, n, eps, out);
}
void swiglu(const float* gate, const float* up, int64_t n, float* out) { active_kernels().swiglu(gate, up, n, out); }
void softmax(float* x, int64_t n) { active_kernels().softmax(x, n); }
void axpy(float a, const float* x, float* y, int64_t n) { active_kernels().axpy(a, x, y, n); }

namespace {

// Activations of a Q8_0/Q4_0 GEMV quantized once per call, shared by all threads.
struct QuantActsBuf {
  std::vector<int8_t> qs;  // [n_tokens, cols]
  std::vector<float> d;    // [n_tokens, cols / 32]
};

bool use_int8_gemv(const KernelTable& k, const MatRef& w, int64_t n_tokens) {
  return has_int8_gemv(k, w.dtype) && n_tokens <= kGemvMaxTokens;
}

void quantize_job_acts(const KernelTable& k, MatmulJob& job, QuantActsBuf& buf) {
  const int64_t cols = job.w.cols;
  buf.qs.resize(size_t(job.n_tokens * cols));
  buf.d.resize(size_t(job.n_tokens * (cols / kQBlock)));
  for (int64_t t = 0; t < job.n_tokens; ++t) {
    k.quantize_acts(job.x + t * cols, cols, buf.qs.data() + t * cols, buf.d.data() + t * (cols / kQBlock));
  }
  job.xq = {buf.qs.data(), buf.d.data()};
}

}  // namespace

bool has_int8_gemv(const KernelTable& k, DType t) {
  if (k.isa == KernelIsa::Scalar || !dtype_is_quantized(t)) return false;
  // AVX-512 has GEMVs for every block type; AVX2 for the row-major ones and Q4_0_R16 (Q4_K_R16
  // and Q5_0_R16 are made only for AVX-512).
  return k.isa == KernelIsa::Avx512 || !dtype_is_r16(t) || t == DType::Q4_0_R16;
}

void matmul_rows_via_f32(const KernelTable& k, const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const int64_t cols = job.w.cols, nt = t1 - t0;
  // 16 rows for a GEMV (the f32 rows stay in L1/L2 for the dot products), 64 for a GEMM (each
  // call packs the activations once for all its rows).
  const int64_t block = nt <= kGemvMaxTokens ? 16 : 64;
  thread_local std::vector<float> wbuf, ybuf;
  if (wbuf.size() < size_t(block * cols)) wbuf.resize(size_t(block * cols));
  if (ybuf.size() < size_t(block * job.n_tokens)) ybuf.resize(size_t(block * job.n_tokens));
  const size_t rb = dtype_row_bytes(job.w.dtype, cols);
  for (int64_t rb0 = r0; rb0 < r1; rb0 += block) {
    const int64_t nr = std::min(block, r1 - rb0);
    for (int64_t i = 0; i < nr; ++i) {
      if (dtype_is_r16(job.w.dtype)) {
        scalar::weight_row(job.w, rb0 + i, wbuf.data() + i * cols);  // gathered from the panels
      } else {
        k.dequantize_row(job.w.dtype, static_cast<const uint8_t*>(job.w.data) + size_t(rb0 + i) * rb,
                         wbuf.data() + i * cols, cols);
      }
    }
    MatmulJob sub;
    sub.w = MatRef{DType::F32, nr, cols, wbuf.data()};  // [nr, cols]
    sub.x = job.x;
    sub.n_tokens = job.n_tokens;
    sub.y = ybuf.data();  // [n_tokens, nr]; rows t0..t1 written
    k.matmul_rows(sub, 0, nr, t0, t1);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < nr; ++i) job.y[t * job.w.rows + rb0 + i] = ybuf[size_t(t * nr + i)];
  }
}

// LONGCTX_FAST_BF16: "1" both, "matmul" the F16/BF16 weight GEMMs only, "attention" the BF16
// memory attention only.
static bool fast_bf16_env_has(const char* what) {
  const char* env = std::getenv("LONGCTX_FAST_BF16");
  return env != nullptr && (std::strcmp(env, "1") == 0 || std::strcmp(env, what) == 0);
}

bool fast_bf16_requested() {
  static const bool on = fast_bf16_env_has("matmul");
  return on;
}

bool fast_bf16_attention_requested() {
  static const bool on = fast_bf16_env_has("attention");
  return on;
}

bool cpu_has_avx512bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool cpu_amx_ready() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ready = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!kernel_isa_supported(KernelIsa::Avx512) || !cpu_has_avx512bf16()) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    constexpr unsigned kAmx = (1u << 22) | (1u << 24) | (1u << 25);  // AMX-BF16, AMX-TILE, AMX-INT8
    if ((d & kAmx) != kAmx) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & bit_OSXSAVE) == 0) return false;
    unsigned xlo = 0, xhi = 0;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & (3u << 17)) != (3u << 17)) return false;  // XCR0: XTILECFG, XTILEDATA
#if defined(__linux__)
    // Linux enables the 8 KiB tile data state per process on request (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA, Linux 5.16); without it the first tile load faults.
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
    return true;
#else
    return false;
#endif
  }();
  return ready;
#else
  return false;
#endif
}

bool amx_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("LONGCTX_AMX");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    return cpu_amx_ready();
  }();
  return on && active_kernel_isa() == KernelIsa::Avx512;
}

namespace {

// Activations packed for a low-precision GEMM (see GemmMode), reused across calls of one thread:
// a prompt's matmuls all need about the same size, and fresh multi-MiB buffers cost page faults.
uint8_t* packed_acts_scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const auto addr = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + ((64 - addr % 64) % 64);  // cache-line aligned
}

void pack_job_acts(const KernelTable& k, MatmulJob& job, ThreadPool* pool) {
  uint8_t* xp = packed_acts_scratch(packed_acts_bytes(job.mode, job.w.cols, job.n_tokens));
  const auto pack = job.mode == GemmMode::Int8    ? k.pack_acts_int8
                    : job.mode == GemmMode::Bf16   ? k.pack_acts_bf16
                    : job.mode == GemmMode::AmxInt8 ? k.pack_acts_amx_int8
                                                   : k.pack_acts_amx;
  const int64_t groups = pack_token_groups(job.n_tokens);
  if (pool == nullptr) {
    pack(job.x, job.w.cols, job.n_tokens, 0, groups, xp);
  } else {
    pool->parallel_for(groups, [&](int64_t g0, int64_t g1) { pack(job.x, job.w.cols, job.n_tokens, g0, g1, xp); });
  }
  job.xp = xp;
}

}  // namespace

GemmMode gemm_mode(const KernelTable& k, DType t, int64_t n_tokens, bool fast_bf16) {
  if (n_tokens <= kGemvMaxTokens) return GemmMode::F32;
  if ((t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_0_R16) && k.pack_acts_amx_int8 != nullptr &&
      amx_enabled()) {
    return GemmMode::AmxInt8;
  }
  if ((t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_0_R16) && k.pack_acts_int8 != nullptr) {
    return GemmMode::Int8;
  }
  // The other block types: the int8 GEMMs with 16-column sub-blocks (gemm_kq; the 16-row panel
  // layouts exist only for the AVX-512 kernels).
  if (dtype_is_quantized(t) && k.pack_acts_int8 != nullptr &&
      (k.isa == KernelIsa::Avx512 || (k.isa == KernelIsa::Avx2 && !dtype_is_r16(t)))) {
    return GemmMode::Int8;
  }
  if ((t == DType::F16 || t == DType::BF16) && fast_bf16 && k.pack_acts_bf16 != nullptr && cpu_has_avx512bf16()) {
    return GemmMode::Bf16;
  }
  if ((t == DType::F16 || t == DType::BF16) && k.pack_acts_amx != nullptr && amx_enabled()) return GemmMode::Amx;
  return GemmMode::F32;
}

// Rows per work item of a split matmul: the GEMM's weight panel (the AMX bf16 GEMM packs 64 rows
// at a time, the others 32).
static int64_t row_block(GemmMode mode) { return mode == GemmMode::Amx ? 64 : 32; }

void matmul_rows(const MatRef& w, const float* x, int64_t n_tokens, float* y, int64_t r0, int64_t r1) {
  const KernelTable& k = active_kernels();
  MatmulJob job{w, x, n_tokens, y, {}};
  QuantActsBuf buf;
  if (use_int8_gemv(k, w, n_tokens)) quantize_job_acts(k, job, buf);
  job.mode = gemm_mode(k, w.dtype, n_tokens, fast_bf16_requested());
  if (job.mode != GemmMode::F32) pack_job_acts(k, job, nullptr);
  k.matmul_rows(job, r0, r1, 0, n_tokens);
}

void matmul_with(const KernelTable& k, bool fast_bf16, const MatRef& w, const float* x, int64_t n_tokens, float* y,
                 ThreadPool& pool) {
  if (w.rows <= 0 || n_tokens <= 0) return;
  MatmulJob job{w, x, n_tokens, y, {}};
  // Reused across calls (capacity only grows): no allocation per matmul in the decode loop.
  thread_local QuantActsBuf buf;
  if (use_int8_gemv(k, w, n_tokens)) quantize_job_acts(k, job, buf);

  job.mode = gemm_mode(k, w.dtype, n_tokens, fast_bf16);
  // Row blocks match the GEMM micro-panel (no thread gets a ragged panel except the last).
  const int64_t block = row_block(job.mode);
  const int64_t n_row_blocks = (w.rows + block - 1) / block;
  const double flops = 2.0 * double(w.rows) * double(w.cols) * double(n_tokens);
  // Waking threads costs more than such a small product.
  const bool serial = pool.size() == 1 || flops < 2e5;
  if (job.mode != GemmMode::F32) pack_job_acts(k, job, serial ? nullptr : &pool);
  if (serial) {
    k.matmul_rows(job, 0, w.rows, 0, n_tokens);
    return;
  }
  if (n_tokens <= kGemvMaxTokens || (job.mode == GemmMode::F32 && n_row_blocks >= 2 * pool.size())) {
    // Split output rows: each weight row is read once per call whatever the number of tokens,
    // which is what bounds decode speed (memory bandwidth). The f32 GEMM packs the activations of
    // all tokens per call, so it wants one call per thread too.
    // Decode: contiguous regions claimed from both ends (parallel_for_stream). Zen 5, tg32
    // alternated against fixed halves: F16 faster in 5 of 5 pairs (median 19.4 -> 20.9 t/s:
    // the worker spun ~8 % of the time waiting for the other half), Q4_0 in 3 of 4, Q8_0 even.
    auto body = [&](int64_t b0, int64_t b1) { k.matmul_rows(job, b0 * block, std::min(w.rows, b1 * block), 0, n_tokens); };
    if (n_tokens <= kGemvMaxTokens) {
      pool.parallel_for_stream(n_row_blocks, body);
    } else {
      pool.parallel_for(n_row_blocks, body);
    }
  } else if (n_row_blocks >= 2 * pool.size()) {
    // Prompt processing is compute bound and the cores are shared with other processes: threads
    // take row blocks from a counter, so a thread slowed by a busy core does less of the work
    // instead of everyone waiting for its fixed half (the activations are packed once, above).
    std::atomic<int64_t> next{0};
    pool.run([&](int, int) {
      for (int64_t b = next.fetch_add(1); b < n_row_blocks; b = next.fetch_add(1)) {
        k.matmul_rows(job, b * block, std::min(w.rows, (b + 1) * block), 0, n_tokens);
      }
    });
  } else {
    // Few rows, many tokens (small models, k/v projections of tiny configs): split tokens, in
    // whole packed groups for the low-precision GEMMs.
    const int64_t unit = job.mode == GemmMode::F32 ? 1 : kPackTokens;
    pool.parallel_for((n_tokens + unit - 1) / unit, [&](int64_t u0, int64_t u1) {
      k.matmul_rows(job, 0, w.rows, u0 * unit, std::min(n_tokens, u1 * unit));
    });
  }
}

void matmul(const MatRef& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  matmul_with(active_kernels(), fast_bf16_requested(), w, x, n_tokens, y, pool);
}

void matmul_multi(const MatRef* w, int n, const float* x, int64_t n_tokens, float* const* y, ThreadPool& pool) {
  constexpr int kMax = 4;
  bool same = n >= 2 && n <= kMax && pool.size() > 1;
  for (int i = 0; same && i < n; ++i) same = w[i].cols == w[0].cols && w[i].dtype == w[0].dtype && w[i].rows > 0;
  const KernelTable& k = active_kernels();
  const bool fast_bf16 = fast_bf16_requested();
  if (same && n_tokens > kGemvMaxTokens) {
    // Prompt: the low-precision GEMMs pack the shared input once (q/k/v packed it three times,
    // gate/up twice) and all matrices' row blocks go to one counter, one fork-join.
    const GemmMode mode = gemm_mode(k, w[0].dtype, n_tokens, fast_bf16);
    if (mode == GemmMode::F32) {
      for (int i = 0; i < n; ++i) matmul(w[i], x, n_tokens, y[i], pool);
      return;
    }
    MatmulJob jobs[kMax];
    const int64_t block = row_block(mode);  // as matmul_with: the GEMM micro-panel
    int64_t first_block[kMax + 1] = {0};
    for (int i = 0; i < n; ++i) {
      jobs[i] = MatmulJob{w[i], x, n_tokens, y[i], {}};
      jobs[i].mode = mode;
      if (i == 0) {
        pack_job_acts(k, jobs[0], &pool);
      } else {
        jobs[i].xp = jobs[0].xp;
      }
      first_block[i + 1] = first_block[i] + (w[i].rows + block - 1) / block;
    }
    std::atomic<int64_t> next{0};
    pool.run([&](int, int) {
      int i = 0;
      for (int64_t b = next.fetch_add(1); b < first_block[n]; b = next.fetch_add(1)) {
        while (b >= first_block[i + 1]) ++i;  // blocks are taken in increasing order
        const int64_t r = (b - first_block[i]) * block;
        k.matmul_rows(jobs[i], r, std::min(w[i].rows, r + block), 0, n_tokens);
      }
    });
    return;
  }
  if (!same) {
    for (int i = 0; i < n; ++i) matmul(w[i], x, n_tokens, y[i], pool);
    return;
  }
  MatmulJob jobs[kMax];
  thread_local QuantActsBuf buf;
  // Row blocks of 32 (as matmul_with), numbered across the matrices in order.
  const int64_t block = 32;
  int64_t first_block[kMax + 1] = {0};
  for (int i = 0; i < n; ++i) {
    jobs[i] = MatmulJob{w[i], x, n_tokens, y[i], {}};
    if (i == 0) {
      if (use_int8_gemv(k, w[0], n_tokens)) quantize_job_acts(k, jobs[0], buf);
    } else {
      jobs[i].xq = jobs[0].xq;  // same x, same width: the same quantized activations
    }
    first_block[i + 1] = first_block[i] + (w[i].rows + block - 1) / block;
  }
  auto body = [&](int64_t b0, int64_t b1) {
    for (int i = 0; i < n; ++i) {
      const int64_t lo = std::max(b0, first_block[i]), hi = std::min(b1, first_block[i + 1]);
      if (lo >= hi) continue;
      k.matmul_rows(jobs[i], (lo - first_block[i]) * block, std::min(w[i].rows, (hi - first_block[i]) * block), 0,
                    n_tokens);
    }
  };
  pool.parallel_for_stream(first_block[n], body);  // as matmul_with's decode
}

}  // namespace lcx::kernels
