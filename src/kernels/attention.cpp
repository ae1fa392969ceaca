// Attention entry point: the scalar reference (per (query, head) scores, one float32 softmax,
// weighted sum of values) and the dispatch to the flash-attention SIMD variants
// (attention_simd.inc, attention_avx2.cpp, attention_avx512.cpp).
#include "kernels/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "kernels/attention_internal.h"
#include "kernels/ops_internal.h"
#include "kernels/ops.h"
#include "runtime/dtype.h"

namespace lcx::kernels {

size_t kv_row_bytes(KvFormat f, int64_t hd) {
  switch (f) {
    case KvFormat::F32: return size_t(hd) * 4;
    case KvFormat::F16:
    case KvFormat::BF16: return size_t(hd) * 2;
    case KvFormat::Q8Row: return sizeof(float) + size_t(hd);
  }
  return 0;
}

void kv_encode(KvFormat f, const float* x, int64_t hd, uint8_t* dst) {
  switch (f) {
    case KvFormat::F32: std::memcpy(dst, x, size_t(hd) * 4); return;
    case KvFormat::F16: quantize_row(DType::F16, x, dst, hd); return;
    case KvFormat::BF16: quantize_row(DType::BF16, x, dst, hd); return;
    case KvFormat::Q8Row: {
      float amax = 0.0f;
      for (int64_t i = 0; i < hd; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
      std::memcpy(dst, &d, sizeof d);
      auto* q = reinterpret_cast<int8_t*>(dst + sizeof d);
      for (int64_t i = 0; i < hd; ++i) q[i] = int8_t(std::lround(x[i] * id));
      return;
    }
  }
}

void kv_decode(KvFormat f, const uint8_t* src, int64_t hd, float* x) {
  switch (f) {
    case KvFormat::F32: std::memcpy(x, src, size_t(hd) * 4); return;
    case KvFormat::F16: dequantize_row(DType::F16, src, x, hd); return;
    case KvFormat::BF16: dequantize_row(DType::BF16, src, x, hd); return;
    case KvFormat::Q8Row: {
      float d;
      std::memcpy(&d, src, sizeof d);
      const auto* q = reinterpret_cast<const int8_t*>(src + sizeof d);
      for (int64_t i = 0; i < hd; ++i) x[i] = d * float(q[i]);
      return;
    }
  }
}

namespace scalar {

void attention_items(const AttentionArgs& a, int64_t w0, int64_t w1, float* scratch) {
  const int64_t hd = a.head_dim, group = a.n_head / a.n_head_kv;
  // Memory entries per item: every memory row, or the item's candidate list.
  const int64_t n_m = a.mem_cand ? a.mem_n_cand : a.mem.n;
  float* tmp = scratch + a.local.n + std::max(a.mem.n, n_m);  // [head_dim] decoded row
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t h = w / a.n_q, i = w % a.n_q, g = h / group;
    const float* qv = a.q + (i * a.n_head + h) * hd;
    const int32_t* cand = a.mem_cand ? a.mem_cand + (i * a.n_head + h) * a.mem_n_cand : nullptr;
    auto mem_row = [&](int64_t j) -> int64_t {
      if (!cand) return j;
      return cand[j] >= 0 && cand[j] < a.mem.n ? cand[j] : -1;
    };
    const int64_t n_vis = a.n_past + i + 1;
    float* p = scratch;
    for (int64_t j = 0; j < n_vis; ++j) {
      kv_decode(a.local.fmt, a.local.k + size_t(j) * a.local.token_stride + size_t(g) * a.local.head_stride, hd, tmp);
      p[j] = dot_f32(qv, tmp, hd) * a.scale;
    }
    float* pm = p + n_vis;
    for (int64_t j = 0; j < n_m; ++j) {
      const int64_t r = mem_row(j);
      if (r < 0) {
        pm[j] = -INFINITY;
        continue;
      }
      kv_decode(a.mem.fmt, a.mem.k + size_t(r) * a.mem.token_stride + size_t(g) * a.mem.head_stride, hd, tmp);
      pm[j] = std::max(dot_f32(qv, tmp, hd) * a.scale, a.mem_score_floor);
    }
    if (!cand && a.mem_topk > 0 && a.mem_topk < a.mem.n) {
      // kNN memory attention (Memorizing Transformers, Wu et al. 2022): keep the top-k memory
      // scores for this query and head; the rest leave the softmax. Ties keep the earliest.
      std::vector<float> sorted(pm, pm + a.mem.n);
      std::nth_element(sorted.begin(), sorted.begin() + (a.mem_topk - 1), sorted.end(), std::greater<float>());
      const float thr = sorted[size_t(a.mem_topk - 1)];
      int64_t above = 0;
      for (int64_t j = 0; j < a.mem.n; ++j) above += pm[j] > thr;
      int64_t ties_left = a.mem_topk - above;
      for (int64_t j = 0; j < a.mem.n; ++j) {
        if (pm[j] > thr) continue;
        if (pm[j] == thr && ties_left > 0) { --ties_left; continue; }
        pm[j] = -INFINITY;
      }
    }
    softmax(p, n_vis + n_m);
    float* o = a.out + (i * a.n_head + h) * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t j = 0; j < n_vis; ++j) {
      kv_decode(a.local.fmt, a.local.v + size_t(j) * a.local.token_stride + size_t(g) * a.local.head_stride, hd, tmp);
      axpy(p[j], tmp, o, hd);
    }
    for (int64_t j = 0; j < n_m; ++j) {
      if (pm[j] == 0.0f) continue;
      const int64_t r = mem_row(j);
      kv_decode(a.mem.fmt, a.mem.v + size_t(r) * a.mem.token_stride + size_t(g) * a.mem.head_stride, hd, tmp);
      axpy(pm[j], tmp, o, hd);
    }
  }
}

}  // namespace scalar

size_t attn_scratch_floats(int64_t hd, int64_t m) {
  const int64_t mp = (m + kAttnMaxLanes - 1) / kAttnMaxLanes * kAttnMaxLanes;
  const int64_t hdp = (hd + kAttnMaxLanes - 1) / kAttnMaxLanes * kAttnMaxLanes;
  // Wide layout (attention_simd.inc): Qt, O [hd, mp]; Kt, Vt [T, hdp]; S [T, mp]; 4 x [mp]; plus
  // 64-byte alignment of each. The narrow layout needs less.
  return size_t(2 * hdp * mp + 2 * kAttnTile * hdp + kAttnTile * mp + 4 * mp + hdp / 2 * mp + 16 * 16);
}

size_t attn_range_scratch_floats(int64_t hd, int64_t m, int64_t n_head_kv) {
  // Rounded to 32 (not kAttnMaxLanes): the AVX-512 fused decode keeps bf16 rows as pairs of
  // 16-float halves, and also needs [n_head_kv * m, 16 * 16 + 16] floats of its own.
  const int64_t hdp = (hd + 31) / 32 * 32;
  const int64_t g_stride = (2 * m * hdp + 2 * m + 15) / 16 * 16;
  // Kt, Vt [T, hdp], S [m, T], per kv head Q, O [m, hdp] + mx, l, then the per-head descriptors.
  // Plus the shared decode path's per-tile rows of all kv heads: K and V [n_head_kv, T, hdp].
  return size_t(2 * kAttnTile * hdp + m * kAttnTile + n_head_kv * g_stride + 16 * 8) + size_t(n_head_kv * m * 272) +
         size_t(n_head_kv) * 128 / sizeof(float) + size_t(2 * n_head_kv * kAttnTile * hdp + 32);
}

const AttnKernels* attn_kernels(KernelIsa isa) {
  if (!kernel_isa_supported(isa)) return nullptr;
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case KernelIsa::Avx2: return &attn_avx2::kAttn;
    case KernelIsa::Avx512: return &attn_avx512::kAttn;
#endif
    default: return nullptr;
  }
}

namespace {

void attention_oracle(const AttentionArgs& a, ThreadPool& pool) {
  const int64_t n_work = a.n_head * a.n_q;
  const size_t need = size_t(a.local.n + std::max(a.mem.n, a.mem_cand ? a.mem_n_cand : 0) + 2 * a.head_dim);
  pool.run([&](int ith, int nth) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < need) scratch.resize(need);
    const int64_t chunk = (n_work + nth - 1) / nth;
    const int64_t w0 = std::min(n_work, ith * chunk), w1 = std::min(n_work, w0 + chunk);
    if (w0 < w1) scalar::attention_items(a, w0, w1, scratch.data());
  });
}

// Per-thread buffers of the SIMD path, kept between calls (one forward pass calls attention
// once per layer with the same shapes).
struct AttnBuffers {
  std::vector<float> scratch;   // flash_block / mem_scores
  std::vector<float> scores;    // top-k: [m, mem.n]
  std::vector<float> row;       // top-k: [mem.n] selection copy
  std::vector<float> state;     // top-k: O [m, hd], mx [m], l [m]
  std::vector<float> v;         // top-k: [head_dim] decoded value row
  std::vector<int64_t> picked;  // top-k: selected memory rows of one query row
};

// Exact top-k of one row of memory scores, the oracle's rule: every score above the k-th largest,
// then ties with it in index order (the earliest win).
void select_topk(const float* s, int64_t n, int64_t k, AttnBuffers& buf) {
  buf.row.assign(s, s + n);
  std::nth_element(buf.row.begin(), buf.row.begin() + (k - 1), buf.row.end(), std::greater<float>());
  const float thr = buf.row[size_t(k - 1)];
  int64_t above = 0;
  for (int64_t j = 0; j < n; ++j) above += s[j] > thr;
  int64_t ties_left = k - above;
  buf.picked.clear();
  for (int64_t j = 0; j < n; ++j) {
    if (s[j] > thr || (s[j] == thr && ties_left-- > 0)) buf.picked.push_back(j);
  }
}

// kNN memory attention for one block: the flash kernel runs over the local keys, the memory
// scores of every row are computed densely, and each row's top-k memory keys join its softmax
// state (rescaled to the new running max) before normalisation.
void topk_block(const AttnKernels& k, const AttentionArgs& a, const AttnBlock& b, AttnBuffers& buf) {
  const int64_t group = a.n_head / a.n_head_kv, hd = a.head_dim, n = a.mem.n;
  const int64_t m = (b.i1 - b.i0) * group;
  buf.state.resize(size_t(m * (hd + 2)));
  FlashState st{buf.state.data(), buf.state.data() + m * hd, buf.state.data() + m * hd + m};
  k.flash_block(a, b, false, &st, buf.scratch.data());
  buf.scores.resize(size_t(m * n));
  k.mem_scores(a, b, buf.scores.data(), buf.scratch.data());
  buf.v.resize(size_t(hd));
  for (int64_t r = 0; r < m; ++r) {
    const float* s = buf.scores.data() + r * n;
    select_topk(s, n, a.mem_topk, buf);
    float mx = st.mx[r];
    for (int64_t j : buf.picked) mx = std::max(mx, s[j]);
    const float c = std::exp(st.mx[r] - mx);
    float* o = st.o + r * hd;
    float l = st.l[r] * c;
    for (int64_t i = 0; i < hd; ++i) o[i] *= c;
    const size_t g_off = size_t(b.g) * a.mem.head_stride;
    for (int64_t j : buf.picked) {
      const float p = std::exp(s[j] - mx);
      l += p;
      k.decode_row(a.mem.fmt, a.mem.v + size_t(j) * a.mem.token_stride + g_off, hd, buf.v.data());
      axpy(p, buf.v.data(), o, hd);
    }
    const int64_t il = r / group, hh = r % group;
    float* dst = a.out + ((b.i0 + il) * a.n_head + b.g * group + hh) * hd;
    const float inv = 1.0f / l;
    for (int64_t i = 0; i < hd; ++i) dst[i] = o[i] * inv;
  }
}

// Decode with exact top-k (few query rows per kv head): the memory scores of all heads are
// computed in storage order, split over tokens between threads (kernel mem_scores_range: only
// the keys are read, half of dense attention's bytes); then per kv head the flash kernel runs over
// the local keys and every row merges its top-k memory keys, as topk_block does.
void topk_decode(const AttnKernels& k, const AttentionArgs& a, ThreadPool& pool) {
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim, n = a.mem.n;
  thread_local std::vector<float> scores;  // [n_head_kv, m, n]; reused across calls
  scores.resize(size_t(a.n_head_kv * m * n));
  const int64_t chunk = std::max<int64_t>(1024, (n + 4 * pool.size() - 1) / (4 * pool.size()) / 16 * 16);
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  const size_t need = std::max(attn_range_scratch_floats(hd, m, a.n_head_kv), attn_scratch_floats(hd, m));
  std::atomic<int64_t> next{0};
  float* sc = scores.data();
  pool.run([&](int, int) {
    thread_local AttnBuffers buf;
    if (buf.scratch.size() < need) buf.scratch.resize(need);
    for (int64_t c = next.fetch_add(1); c < n_chunks; c = next.fetch_add(1)) {
      k.mem_scores_range(a, c * chunk, std::min(n, (c + 1) * chunk), sc, n, buf.scratch.data());
    }
  });
  next = 0;
  pool.run([&](int, int) {
    thread_local AttnBuffers buf;
    if (buf.scratch.size() < need) buf.scratch.resize(need);
    for (int64_t g = next.fetch_add(1); g < a.n_head_kv; g = next.fetch_add(1)) {
      buf.state.resize(size_t(m * (hd + 2)));
      FlashState st{buf.state.data(), buf.state.data() + m * hd, buf.state.data() + m * hd + m};
      k.flash_block(a, AttnBlock{g, 0, a.n_q}, false, &st, buf.scratch.data());
      buf.v.resize(size_t(hd));
      const size_t g_off = size_t(g) * a.mem.head_stride;
      for (int64_t r = 0; r < m; ++r) {
        const float* s = sc + (g * m + r) * n;
        select_topk(s, n, a.mem_topk, buf);
        float mx = st.mx[r];
        for (int64_t j : buf.picked) mx = std::max(mx, s[j]);
        const float c = std::exp(st.mx[r] - mx);
        float* o = st.o + r * hd;
        float l = st.l[r] * c;
        for (int64_t i = 0; i < hd; ++i) o[i] *= c;
        for (int64_t j : buf.picked) {
          const float p = std::exp(s[j] - mx);
          l += p;
          k.decode_row(a.mem.fmt, a.mem.v + size_t(j) * a.mem.token_stride + g_off, hd, buf.v.data());
          axpy(p, buf.v.data(), o, hd);
        }
        float* dst = a.out + ((r / group) * a.n_head + g * group + r % group) * hd;
        const float inv = 1.0f / l;
        for (int64_t i = 0; i < hd; ++i) dst[i] = o[i] * inv;
      }
    }
  });
}

// Approximate kNN memory attention for one block: the flash kernel runs over the local keys;
// each row then scores only its candidate memory rows (chosen by an index outside the kernel)
// and merges them into its softmax state, as topk_block does with the exact selection.
void cand_block(const AttnKernels& k, const AttentionArgs& a, const AttnBlock& b, AttnBuffers& buf) {
  const int64_t group = a.n_head / a.n_head_kv, hd = a.head_dim, n_c = a.mem_n_cand;
  const int64_t m = (b.i1 - b.i0) * group;
  buf.state.resize(size_t(m * (hd + 2)));
  FlashState st{buf.state.data(), buf.state.data() + m * hd, buf.state.data() + m * hd + m};
  k.flash_block(a, b, false, &st, buf.scratch.data());
  buf.scores.resize(size_t(n_c));
  buf.v.resize(size_t(hd));
  const size_t g_off = size_t(b.g) * a.mem.head_stride;
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = b.i0 + r / group, h = b.g * group + r % group;
    const float* qv = a.q + (i * a.n_head + h) * hd;
    const int32_t* cand = a.mem_cand + (i * a.n_head + h) * n_c;
    float* s = buf.scores.data();
    float mx = st.mx[r];
    for (int64_t j = 0; j < n_c; ++j) {
      if (cand[j] < 0 || cand[j] >= a.mem.n) {
        s[j] = -INFINITY;
        continue;
      }
      k.decode_row(a.mem.fmt, a.mem.k + size_t(cand[j]) * a.mem.token_stride + g_off, hd, buf.v.data());
      s[j] = std::max(dot_f32(qv, buf.v.data(), hd) * a.scale, a.mem_score_floor);
      mx = std::max(mx, s[j]);
    }
    const float c = std::exp(st.mx[r] - mx);
    float* o = st.o + r * hd;
    float l = st.l[r] * c;
    for (int64_t d = 0; d < hd; ++d) o[d] *= c;
    for (int64_t j = 0; j < n_c; ++j) {
      if (s[j] == -INFINITY) continue;
      const float p = std::exp(s[j] - mx);
      l += p;
      k.decode_row(a.mem.fmt, a.mem.v + size_t(cand[j]) * a.mem.token_stride + g_off, hd, buf.v.data());
      axpy(p, buf.v.data(), o, hd);
    }
    float* dst = a.out + (i * a.n_head + h) * hd;
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < hd; ++d) dst[d] = o[d] * inv;
  }
}

// Decode: few query rows per kv head, so the work is split over keys instead (flash decoding):
// each item walks one chunk of memory or local keys for all heads, and the chunks' softmax
// states are merged at the end, rescaled to the common max.
void attention_split_keys(const AttnKernels& k, const AttentionArgs& a, ThreadPool& pool) {
  const int64_t group = a.n_head / a.n_head_kv, m = a.n_q * group, hd = a.head_dim;
  const int64_t n_local = a.n_past + a.n_q;
  const int64_t total = a.mem.n + n_local;
  // Chunks of whole tiles, about four per thread, at least 512 keys (the merge stays negligible).
  int64_t chunk = std::max<int64_t>(512, (total + 4 * pool.size() - 1) / (4 * pool.size()));
  chunk = (chunk + kAttnTile - 1) / kAttnTile * kAttnTile;
  struct Item {
    bool mem;
    int64_t t0, t1;
  };
  // Reused across calls (decode calls this once per layer and token): no allocation per call.
  // Named through references: inside the pool's lambda a thread_local name would resolve to the
  // worker thread's own (empty) instance.
  thread_local std::vector<Item> tl_items;
  thread_local std::vector<float> tl_states;
  std::vector<Item>& items = tl_items;
  std::vector<float>& states = tl_states;
  items.clear();
  for (int64_t t = 0; t < a.mem.n; t += chunk) items.push_back({true, t, std::min(a.mem.n, t + chunk)});
  for (int64_t t = 0; t < n_local; t += chunk) items.push_back({false, t, std::min(n_local, t + chunk)});
  const int64_t per_item = a.n_head_kv * m * (hd + 2);
  states.resize(items.size() * size_t(per_item));
  const size_t need = attn_range_scratch_floats(hd, m, a.n_head_kv);
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < need) scratch.resize(need);
    for (int64_t it = next.fetch_add(1); it < int64_t(items.size()); it = next.fetch_add(1)) {
      const Item& item = items[size_t(it)];
      k.narrow_range(a, item.mem, item.t0, item.t1, states.data() + it * per_item, scratch.data());
    }
  });
  for (int64_t g = 0; g < a.n_head_kv; ++g) {
    for (int64_t r = 0; r < m; ++r) {
      const float* st0 = states.data() + g * m * (hd + 2);
      float mx = -INFINITY;
      for (size_t it = 0; it < items.size(); ++it) mx = std::max(mx, st0[size_t(per_item) * it + m * hd + r]);
      float* dst = a.out + ((r / group) * a.n_head + g * group + r % group) * hd;
      std::fill(dst, dst + hd, 0.0f);
      float l = 0.0f;
      for (size_t it = 0; it < items.size(); ++it) {
        const float* st = st0 + size_t(per_item) * it;
        const float c = std::exp(st[m * hd + r] - mx);  // 0 for a chunk this row cannot see
        if (c == 0.0f) continue;
        l += st[m * hd + m + r] * c;
        axpy(c, st + r * hd, dst, hd);
      }
      const float inv = 1.0f / l;
      for (int64_t i = 0; i < hd; ++i) dst[i] *= inv;
    }
  }
}

void attention_simd(const AttnKernels& k, const AttentionArgs& a, ThreadPool& pool) {
  const int64_t group = a.n_head / a.n_head_kv;
  const bool cand = a.mem_cand != nullptr && a.mem.n > 0;
  const bool topk = !cand && a.mem_topk > 0 && a.mem_topk < a.mem.n;
  if (!topk && !cand && a.n_q * group < k.lanes) {
    attention_split_keys(k, a, pool);
    return;
  }
  const int64_t m = a.n_q * group;
  if (topk && m < k.lanes && k.mem_scores_range != nullptr && a.head_dim <= 128 && a.n_head_kv <= 256 &&
      a.n_head_kv * m <= 256) {
    topk_decode(k, a, pool);
    return;
  }
  // Query rows per block: enough to run the GEMMs near peak (each decoded key tile is reused by
  // all rows) while the block's tiles stay in L2. Top-k keeps its [m, mem.n] scores smaller.
  const int64_t target_rows = topk || cand ? 16 : a.mem.n > 0 ? 256 : 128;
  int64_t qb = std::clamp<int64_t>(target_rows / group, 1, a.n_q);
  // Enough work items for every thread (prefill of a few tokens with few kv heads).
  while (qb > 1 && a.n_head_kv * ((a.n_q + qb - 1) / qb) < 2 * pool.size()) qb = (qb + 1) / 2;
  const int64_t n_qb = (a.n_q + qb - 1) / qb, n_items = n_qb * a.n_head_kv;
  const size_t need = attn_scratch_floats(a.head_dim, qb * group);
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    thread_local AttnBuffers buf;
    if (buf.scratch.size() < need) buf.scratch.resize(need);
    // Dynamic scheduling: causal blocks late in the window cost more than early ones.
    for (int64_t it = next.fetch_add(1); it < n_items; it = next.fetch_add(1)) {
      const int64_t qi = it / a.n_head_kv;
      const AttnBlock b{it % a.n_head_kv, qi * qb, std::min(a.n_q, (qi + 1) * qb)};
      if (cand)
        cand_block(k, a, b, buf);
      else if (topk)
        topk_block(k, a, b, buf);
      else
        k.flash_block(a, b, a.mem.n > 0, nullptr, buf.scratch.data());
    }
  });
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool& pool, KernelIsa isa) {
  if (a.n_q <= 0 || a.n_head <= 0) return;
  const AttnKernels* k = attn_kernels(isa);
  if (k == nullptr)
    attention_oracle(a, pool);
  else
    attention_simd(*k, a, pool);
}

void attention(const AttentionArgs& a, ThreadPool& pool) {
  if (a.mem.fmt == KvFormat::BF16 && a.mem.n > 0 && !a.mem_bf16_dot && fast_bf16_attention_requested() &&
      cpu_has_avx512bf16()) {
    AttentionArgs b = a;
    b.mem_bf16_dot = true;
    attention(b, pool, active_kernel_isa());
    return;
  }
  attention(a, pool, active_kernel_isa());
}

}  // namespace lcx::kernels
