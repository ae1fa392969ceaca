// Reference attention: per (query, head) scores, one float32 softmax, weighted sum of values.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

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
  float* tmp = scratch + a.local.n + a.mem.n;  // [head_dim] decoded row
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t h = w / a.n_q, i = w % a.n_q, g = h / group;
    const float* qv = a.q + (i * a.n_head + h) * hd;
    const int64_t n_vis = a.n_past + i + 1;
    float* p = scratch;
    for (int64_t j = 0; j < n_vis; ++j) {
      kv_decode(a.local.fmt, a.local.k + size_t(j) * a.local.token_stride + size_t(g) * a.local.head_stride, hd, tmp);
      p[j] = dot_f32(qv, tmp, hd) * a.scale;
    }
    float* pm = p + n_vis;
    for (int64_t j = 0; j < a.mem.n; ++j) {
      kv_decode(a.mem.fmt, a.mem.k + size_t(j) * a.mem.token_stride + size_t(g) * a.mem.head_stride, hd, tmp);
      pm[j] = std::max(dot_f32(qv, tmp, hd) * a.scale, a.mem_score_floor);
    }
    if (a.mem_topk > 0 && a.mem_topk < a.mem.n) {
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
    softmax(p, n_vis + a.mem.n);
    float* o = a.out + (i * a.n_head + h) * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t j = 0; j < n_vis; ++j) {
      kv_decode(a.local.fmt, a.local.v + size_t(j) * a.local.token_stride + size_t(g) * a.local.head_stride, hd, tmp);
      axpy(p[j], tmp, o, hd);
    }
    for (int64_t j = 0; j < a.mem.n; ++j) {
      if (pm[j] == 0.0f) continue;
      kv_decode(a.mem.fmt, a.mem.v + size_t(j) * a.mem.token_stride + size_t(g) * a.mem.head_stride, hd, tmp);
      axpy(pm[j], tmp, o, hd);
    }
  }
}

}  // namespace scalar

void attention(const AttentionArgs& a, ThreadPool& pool) {
  const int64_t n_work = a.n_head * a.n_q;
  const size_t need = size_t(a.local.n + a.mem.n + 2 * a.head_dim);
  pool.run([&](int ith, int nth) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < need) scratch.resize(need);
    const int64_t chunk = (n_work + nth - 1) / nth;
    const int64_t w0 = std::min(n_work, ith * chunk), w1 = std::min(n_work, w0 + chunk);
    if (w0 < w1) scalar::attention_items(a, w0, w1, scratch.data());
  });
}

}  // namespace lcx::kernels
