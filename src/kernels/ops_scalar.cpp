// Plain scalar kernels: the oracle for every SIMD variant, and the fallback on any CPU.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops_internal.h"
#include "kernels/quants.h"

namespace lcx::kernels::scalar {

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32: std::copy_n(static_cast<const float*>(src), n, dst); return;
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
        const float d = f16_to_f32(b[ib].d);
        for (int j = 0; j < kQBlock; ++j) dst[ib * kQBlock + j] = d * float(b[ib].qs[j]);
      }
      return;
    }
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
        const float d = f16_to_f32(b[ib].d);
        for (int j = 0; j < kQBlock / 2; ++j) {
          dst[ib * kQBlock + j] = d * float(int(b[ib].qs[j] & 0x0f) - 8);
          dst[ib * kQBlock + j + kQBlock / 2] = d * float(int(b[ib].qs[j] >> 4) - 8);
        }
      }
      return;
    }
    default: {
      if (!qgroup_supported(t)) return;
      // value = S (q - z) - M in the reference dequantizers' float order (quants.h).
      const int64_t gv = qgroup_values(t);
      const size_t gb = dtype_block_bytes(t);
      QGroup g;
      for (int64_t ib = 0; ib < n / gv; ++ib) {
        unpack_qgroup(t, static_cast<const uint8_t*>(src) + size_t(ib) * gb, g);
        for (int64_t i = 0; i < gv; ++i) {
          const int j = int(i / kQSub);
          dst[ib * gv + i] = g.S[j] * float(int(g.q[i]) - g.z[j]) - g.M[j];
        }
      }
      return;
    }
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DType::F32: std::copy_n(src, n, static_cast<float*>(dst)); return;
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::Q8_0: {
      auto* b = static_cast<BlockQ8_0*>(dst);
      for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
        const float* x = src + ib * kQBlock;
        float amax = 0.0f;
        for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        b[ib].d = f32_to_f16(d);
        for (int j = 0; j < kQBlock; ++j) b[ib].qs[j] = int8_t(std::roundf(x[j] * id));
      }
      return;
    }
    case DType::Q4_0: {
      auto* b = static_cast<BlockQ4_0*>(dst);
      for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
        const float* x = src + ib * kQBlock;
        float amax = 0.0f, max = 0.0f;  // signed value of largest magnitude
        for (int j = 0; j < kQBlock; ++j) {
          if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
        }
        const float d = max / -8.0f;
        const float id = d ? 1.0f / d : 0.0f;
        b[ib].d = f32_to_f16(d);
        for (int j = 0; j < kQBlock / 2; ++j) {
          const int x0 = std::min(15, int(x[j] * id + 8.5f));
          const int x1 = std::min(15, int(x[j + kQBlock / 2] * id + 8.5f));
          b[ib].qs[j] = uint8_t(x0 | (x1 << 4));
        }
      }
      return;
    }
    default:
      quantize_blocks(t, src, static_cast<uint8_t*>(dst), n);  // the GGML block types (quants.cpp)
      return;
  }
}

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void weight_row(const MatRef& w, int64_t r, float* dst) {
  if (dtype_is_r16(w.dtype)) {  // not contiguous: gather each block (see dtype.h)
    const DType src = dtype_r16_source(w.dtype);
    const int64_t bv = dtype_block_values(src);
    uint8_t blk[kQ4KBlockBytes];
    for (int64_t b = 0; b < w.cols / bv; ++b) {
      r16_block(w.dtype, w.data, w.cols, r, b, blk);
      dequantize_row(src, blk, dst + b * bv, bv);
    }
    return;
  }
  dequantize_row(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r) * dtype_row_bytes(w.dtype, w.cols), dst,
                 w.cols);
}

void matmul_rows(const MatRef& w, const float* x, int64_t n_tokens, float* y, int64_t r0, int64_t r1) {
  std::vector<float> row(size_t(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    weight_row(w, r, row.data());
    for (int64_t t = 0; t < n_tokens; ++t) y[t * w.rows + r] = dot_f32(row.data(), x + t * w.cols, w.cols);
  }
}

void matmul_rows_job(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const MatRef& w = job.w;
  std::vector<float> row(size_t(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    weight_row(w, r, row.data());
    for (int64_t t = t0; t < t1; ++t) job.y[t * w.rows + r] = dot_f32(row.data(), job.x + t * w.cols, w.cols);
  }
}

void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d) {
  for (int64_t ib = 0; ib < n / kQBlock; ++ib) {
    const float* xb = x + ib * kQBlock;
    float amax = 0.0f;
    for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 127.0f / amax : 0.0f;
    d[ib] = db;
    // nearbyint (round half to even) is what the SIMD float->int conversions do.
    for (int j = 0; j < kQBlock; ++j) qs[ib * kQBlock + j] = int8_t(std::nearbyint(xb[j] * id));
  }
}

void matmul_rows_q8acts(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const MatRef& w = job.w;
  const int64_t nb = w.cols / kQBlock;
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  if (w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0 && w.dtype != DType::Q4_0_R16) {
    // Other block types through their unpacked form (quants.h): per sub-block of 16,
    // S dx (isum - z xsum) - M dx xsum, with isum = sum q xq and xsum = sum xq.
    const DType src = dtype_r16_source(w.dtype);
    const int64_t gv = qgroup_values(src);
    const size_t gb = dtype_block_bytes(src);
    QGroup g;
    uint8_t gathered[kQ4KBlockBytes];
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = static_cast<const uint8_t*>(w.data) + size_t(r) * row_bytes;
      for (int64_t t = t0; t < t1; ++t) {
        const int8_t* q = job.xq.qs + t * w.cols;
        const float* d = job.xq.d + t * nb;
        float sum = 0.0f;
        for (int64_t ig = 0; ig < w.cols / gv; ++ig) {
          const uint8_t* blk = row + size_t(ig) * gb;
          if (src != w.dtype) {
            r16_block(w.dtype, w.data, w.cols, r, ig, gathered);
            blk = gathered;
          }
          unpack_qgroup(src, blk, g);
          for (int j = 0; j < int(gv / kQSub); ++j) {
            const int64_t c0 = ig * gv + j * kQSub;
            int32_t isum = 0, xsum = 0;
            for (int i = 0; i < kQSub; ++i) {
              isum += int32_t(g.q[j * kQSub + i]) * q[c0 + i];
              xsum += q[c0 + i];
            }
            const float dx = d[c0 / kQBlock];
            sum += g.S[j] * dx * float(isum - g.z[j] * xsum) - g.M[j] * dx * float(xsum);
          }
        }
        job.y[t * w.rows + r] = sum;
      }
    }
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(w.data) + size_t(r) * row_bytes;
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* q = job.xq.qs + t * w.cols;
      const float* d = job.xq.d + t * nb;
      float sum = 0.0f;
      for (int64_t ib = 0; ib < nb; ++ib) {
        int32_t isum = 0;
        float dw = 0.0f;
        if (w.dtype == DType::Q8_0) {
          const auto& b = reinterpret_cast<const BlockQ8_0*>(row)[ib];
          dw = f16_to_f32(b.d);
          for (int j = 0; j < kQBlock; ++j) isum += int32_t(b.qs[j]) * q[ib * kQBlock + j];
        } else {
          const BlockQ4_0 b = w.dtype == DType::Q4_0_R16 ? q4_0_r16_block(w.data, w.cols, r, ib)
                                                         : reinterpret_cast<const BlockQ4_0*>(row)[ib];
          dw = f16_to_f32(b.d);
          for (int j = 0; j < kQBlock / 2; ++j) {
            isum += (int32_t(b.qs[j] & 0x0f) - 8) * q[ib * kQBlock + j];
            isum += (int32_t(b.qs[j] >> 4) - 8) * q[ib * kQBlock + j + kQBlock / 2];
          }
        }
        sum += dw * d[ib] * float(isum);
      }
      job.y[t * w.rows + r] = sum;
    }
  }
}

void matmul_rows_bf16(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const MatRef& w = job.w;
  std::vector<float> row(size_t(w.cols)), xt(size_t(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    weight_row(w, r, row.data());
    for (auto& v : row) v = bf16_to_f32(f32_to_bf16(v));  // F16 -> bf16 rounds; BF16 is exact
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t c = 0; c < w.cols; ++c) xt[size_t(c)] = bf16_to_f32(f32_to_bf16(job.x[t * w.cols + c]));
      job.y[t * w.rows + r] = dot_f32(row.data(), xt.data(), w.cols);  // bf16 x bf16 is exact in f32
    }
  }
}

void matmul_rows_amx(const MatmulJob& job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const MatRef& w = job.w;
  auto bf = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
  const size_t n = size_t(w.cols);
  std::vector<float> hi(n), lo(n), xh(n), xm(n), xl(n);
  for (int64_t r = r0; r < r1; ++r) {
    weight_row(w, r, hi.data());
    for (size_t c = 0; c < n; ++c) {
      const float v = hi[c];
      hi[c] = bf(v);
      lo[c] = w.dtype == DType::F16 ? bf(v - hi[c]) : 0.0f;  // F16: exact; BF16: one piece
    }
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = job.x + t * w.cols;
      for (size_t c = 0; c < n; ++c) {
        xh[c] = bf(x[c]);
        xm[c] = bf(x[c] - xh[c]);
        xl[c] = bf(x[c] - xh[c] - xm[c]);  // both subtractions exact
      }
      // Each bf16 x bf16 product is exact in float32; the sums round as float32 (any order).
      float s = 0.0f;
      for (size_t c = 0; c < n; ++c) {
        s += hi[c] * xh[c] + hi[c] * xm[c] + hi[c] * xl[c] + lo[c] * xh[c] + lo[c] * xm[c];
      }
      job.y[t * w.rows + r] = s;
    }
  }
}

const KernelTable kTable = {KernelIsa::Scalar, matmul_rows_job, quantize_acts, dequantize_row, quantize_row,
                            dot_f32, rmsnorm, swiglu, softmax, axpy, nullptr, nullptr, nullptr, nullptr};

}  // namespace lcx::kernels::scalar
