// RoPE frequencies for every scaling method, reproducing transformers v4.49
// (src/transformers/modeling_rope_utils.py, models/llama/modeling_llama.py) operation by
// operation. The reference mixes two precisions, and matching it matters at long positions:
//   * Python numbers (config values, math.log/floor/ceil/sqrt) are float64;
//   * anything derived from `torch.arange(...).float()` is a float32 tensor; a Python number
//     that meets it is first rounded to float32 (torch type promotion), except the exponent of
//     `tensor ** python_float`, which torch's CPU pow kernel keeps in double
//     (std::pow(float, double), aten/src/ATen/native/cpu/PowKernel.cpp);
//   * `python_number / tensor` is `tensor.reciprocal() * python_number` (Tensor.__rtruediv__);
//   * `python_float ** tensor` is powf(float(base), e) (Tensor.__rpow__ makes a float32 tensor).
// Every step below names the Python expression it reproduces. For head_dim/2 below torch's
// vector width (the fixtures) torch uses libm's powf, as std::pow(float, float) does here, so the
// tables are bit-identical; for larger head_dim torch's vectorised pow (Sleef, 1 ulp) may differ
// from libm by one ulp in some entries.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "runtime/error.h"

// Every float32 operation must round separately, as torch's element-wise kernels do: no fused
// multiply-add contraction even when the build enables FMA instructions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace lcx {

const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::None: return "none";
    case RopeScaling::Linear: return "linear";
    case RopeScaling::Dynamic: return "dynamic";
    case RopeScaling::Yarn: return "yarn";
    case RopeScaling::Llama3: return "llama3";
    case RopeScaling::LongRope: return "longrope";
  }
  return "?";
}

RopeScaling rope_scaling_from_name(const std::string& s) {
  if (s == "none" || s == "default") return RopeScaling::None;
  if (s == "linear") return RopeScaling::Linear;
  if (s == "dynamic") return RopeScaling::Dynamic;
  if (s == "yarn") return RopeScaling::Yarn;
  if (s == "llama3") return RopeScaling::Llama3;
  if (s == "longrope" || s == "su") return RopeScaling::LongRope;
  fail("unknown rope scaling '" + s + "': choose none, linear, dynamic, yarn, llama3 or longrope");
}

namespace {

constexpr double kPi = std::numbers::pi;  // math.pi

// torch.arange(0, dim, 2, dtype=torch.int64).float() / dim   (float32 division)
float dim_exponent(int64_t i, int64_t d) { return float(2 * i) / float(d); }

// `base ** exps` with a float32 base: powf (std::pow(float, float) is powf).
float pow_f32(float base, float e) { return std::pow(base, e); }

// _compute_default_rope_parameters: inv_freq = 1.0 / (base ** (arange(0, d, 2).float() / d)).
// `1.0 / t` is t.reciprocal() * 1.0, i.e. one float32 division.
std::vector<float> default_inv_freq(float base, int64_t d) {
  std::vector<float> inv(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) inv[size_t(i)] = 1.0f / pow_f32(base, dim_exponent(i, d));
  return inv;
}

// _compute_dynamic_ntk_parameters (bloc97 / emozilla, "Dynamically Scaled RoPE", 2023):
//   base' = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (d / (d - 2))
// LlamaRotaryEmbedding._dynamic_frequency_update passes seq_len = torch.max(position_ids) + 1,
// an int64 tensor, so the whole expression is float32 (only the pow exponent stays double);
// for seq_len <= max_pos the init path (Python floats) gives base exactly.
float dynamic_base(const RopeConfig& c, int64_t seq_len) {
  if (seq_len <= c.max_pos) return c.theta;
  const int64_t d = c.head_dim;
  float t = c.factor * float(seq_len);                 // factor * seq_len
  t = t / float(c.max_pos);                            //   / max_position_embeddings
  t = t - float(double(c.factor) - 1.0);               //   - (factor - 1)
  t = float(std::pow(double(t), double(d) / double(d - 2)));  // ** (dim / (dim - 2))
  return c.theta * t;                                  // base * (...)
}

// _compute_yarn_parameters (Peng et al. 2023, "YaRN", arXiv:2309.00071).
RopeFreqs yarn_freqs(const RopeConfig& c) {
  const int64_t d = c.head_dim;
  const double base = c.theta;
  const double factor = c.factor;
  // transformers v4.49 takes max_position_embeddings as the original context; GGUF's
  // rope.scaling.original_context_length / --rope-orig-ctx set orig_ctx instead.
  const double orig = double(rope_original_ctx(c));
  RopeFreqs f;
  // Attention factor (paper eq. 23: sqrt(1/t) = 0.1 ln s + 1); the DeepSeek-V2/V3 variant
  // divides two such "mscale" values (later transformers' get_mscale).
  auto get_mscale = [](double s, double m) { return s <= 1.0 ? 1.0 : 0.1 * m * std::log(s) + 1.0; };
  double att;
  if (c.attention_factor > 0.0f)
    att = c.attention_factor;
  else if (c.mscale > 0.0f && c.mscale_all_dim > 0.0f)
    att = get_mscale(factor, c.mscale) / get_mscale(factor, c.mscale_all_dim);
  else
    att = 0.1 * std::log(factor) + 1.0;
  f.attn_scale = float(att);

  // find_correction_dim / find_correction_range, in Python floats; floor/ceil then clipped.
  auto correction_dim = [&](double n_rot) {
    return (double(d) * std::log(orig / (n_rot * 2 * kPi))) / (2 * std::log(base));
  };
  // Clamped to [-d, 2d] before the integer conversion (validated configs stay far inside).
  auto to_int = [&](double x) { return std::isnan(x) ? int64_t(0) : int64_t(std::clamp(x, -double(d), 2.0 * double(d))); };
  const int64_t low = std::max<int64_t>(to_int(std::floor(correction_dim(c.beta_fast))), 0);
  const int64_t high = std::min<int64_t>(to_int(std::ceil(correction_dim(c.beta_slow))), d - 1);
  // linear_ramp_factor(low, high, d // 2): (arange(d//2).float() - low) / (high - low), clamped.
  const double span = (low == high) ? double(high) + 0.001 - double(low) : double(high - low);

  f.inv_freq.resize(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    const float pos_freq = pow_f32(c.theta, dim_exponent(i, d));   // base ** (arange/dim)
    const float extrapolation = 1.0f / pos_freq;                   // 1.0 / pos_freqs
    const float interpolation = 1.0f / (c.factor * pos_freq);      // 1.0 / (factor * pos_freqs)
    float ramp = (float(i) - float(low)) / float(span);
    ramp = std::min(std::max(ramp, 0.0f), 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    f.inv_freq[size_t(i)] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return f;
}

// _compute_llama3_parameters (Llama 3.1 "apply_scaling"): wavelengths longer than
// orig/low_freq_factor are interpolated by factor, shorter than orig/high_freq_factor kept,
// and smoothly blended in between.
std::vector<float> llama3_inv_freq(const RopeConfig& c) {
  std::vector<float> inv = default_inv_freq(c.theta, c.head_dim);
  const int64_t old_ctx = rope_original_ctx(c);
  const double lff = c.low_freq_factor, hff = c.high_freq_factor;
  const float low_freq_wavelen = float(double(old_ctx) / lff);   // compared in float32
  const float high_freq_wavelen = float(double(old_ctx) / hff);
  const float two_pi = float(2 * kPi);
  for (auto& v : inv) {
    const float wavelen = (1.0f / v) * two_pi;                    // 2 * math.pi / inv_freq
    const float scaled = wavelen > low_freq_wavelen ? v / c.factor : v;
    // (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    const float smooth = ((1.0f / wavelen) * float(old_ctx) - float(lff)) / float(hff - lff);
    const float smoothed = (1.0f - smooth) * scaled / c.factor + smooth * scaled;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    v = medium ? smoothed : scaled;
  }
  return inv;
}

// _compute_longrope_parameters (Ding et al. 2024, "LongRoPE", arXiv:2402.13753; Phi-3).
RopeFreqs longrope_freqs(const RopeConfig& c, int64_t seq_len) {
  const int64_t d = c.head_dim;
  const int64_t orig = rope_original_ctx(c);
  // With original_max_position_embeddings (a top-level config key) the factor is the ratio of
  // the two contexts, a Python float; otherwise rope_scaling["factor"].
  const double factor = c.orig_ctx > 0 ? double(c.max_pos) / double(c.orig_ctx) : double(c.factor);
  RopeFreqs f;
  double att;
  if (c.attention_factor > 0.0f)
    att = c.attention_factor;
  else if (factor <= 1.0)
    att = 1.0;
  else
    att = std::sqrt(1.0 + std::log(factor) / std::log(double(orig)));
  f.attn_scale = float(att);
  // transformers v4.49's LlamaRotaryEmbedding computes this once with seq_len=None, so it
  // always uses short_factor; newer versions switch to long_factor past orig (longrope_switch).
  const bool use_long = c.longrope_switch && seq_len > orig;
  const std::vector<float>& ext = use_long ? c.long_factor : c.short_factor;
  f.inv_freq.resize(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i)   // 1.0 / (ext_factors * base ** inv_freq_shape)
    f.inv_freq[size_t(i)] = 1.0f / (ext[size_t(i)] * pow_f32(c.theta, dim_exponent(i, d)));
  return f;
}

bool finite_pos(double v) { return std::isfinite(v) && v > 0.0; }

}  // namespace

int64_t rope_original_ctx(const RopeConfig& cfg) { return cfg.orig_ctx > 0 ? cfg.orig_ctx : cfg.max_pos; }

double rope_ntk_alpha_theta(double theta, double alpha, int64_t head_dim) {
  if (!finite_pos(alpha)) fail("NTK alpha must be a positive number, got " + std::to_string(alpha));
  if (head_dim <= 2) fail("NTK alpha scaling needs head_dim > 2, got " + std::to_string(head_dim));
  const double d = double(head_dim);
  return theta * std::pow(alpha, d / (d - 2));
}

namespace {

// cos and sin are multiplied by the attention factor, so every attention score by its square:
// past ~100 (scores x 10^4) the scores of a real model overflow float32 (found by
// fuzz_overrides: --yarn-attn-factor 1e30 gave NaN logits). 0 means "the method's default".
void check_attention_factor(const RopeConfig& c, const std::string& m) {
  if (!(c.attention_factor >= 0.0f && c.attention_factor <= 100.0f))
    fail(m + "attention_factor must be a number in (0, 100], got " + std::to_string(c.attention_factor) +
         " (--yarn-attn-factor / rope_scaling.attention_factor)");
}

}  // namespace

void rope_validate(const RopeConfig& c) {
  const std::string m = std::string("rope (") + rope_scaling_name(c.type) + "): ";
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    fail(m + "head_dim must be a positive even number, got " + std::to_string(c.head_dim));
  if (!finite_pos(c.theta)) fail(m + "rope_theta / freq_base must be a positive number, got " + std::to_string(c.theta));
  if (c.max_pos <= 0) fail(m + "max_position_embeddings must be positive, got " + std::to_string(c.max_pos));
  if (c.orig_ctx < 0) fail(m + "original context must be positive, got " + std::to_string(c.orig_ctx));
  if (!c.freq_factors.empty()) {
    if (int64_t(c.freq_factors.size()) != c.head_dim / 2)
      fail(m + "rope_freqs.weight has " + std::to_string(c.freq_factors.size()) + " factors, head_dim/2 = " +
           std::to_string(c.head_dim / 2) + " needed");
    for (float v : c.freq_factors)
      if (!finite_pos(v)) fail(m + "rope_freqs.weight factors must be positive numbers, got " + std::to_string(v));
  }
  if (c.type == RopeScaling::None) return;
  // Up to 10^6: a million times the trained context is already far past any memory; larger
  // factors only overflow the context arithmetic (found by fuzz_overrides).
  if (!finite_pos(c.factor) || c.factor > 1e6f)
    fail(m + "scaling factor must be a number in (0, 1e6], got " + std::to_string(c.factor) + " (rope_scaling.factor / --rope-scale)");
  switch (c.type) {
    case RopeScaling::Dynamic:
      if (c.head_dim <= 2) fail(m + "dynamic NTK needs head_dim > 2 (exponent d/(d-2))");
      break;
    case RopeScaling::Yarn:
      if (c.factor < 1.0f) fail(m + "YaRN factor must be >= 1 (it stretches the context), got " + std::to_string(c.factor));
      // find_correction_dim divides by ln(rope_theta): 1 gives inf, below 1 a reversed range
      // (found by fuzz_overrides: --rope-freq-base 1 with yarn).
      if (!(c.theta > 1.0f))
        fail(m + "YaRN needs rope_theta (--rope-freq-base) > 1, got " + std::to_string(c.theta));
      if (!finite_pos(c.beta_fast) || !finite_pos(c.beta_slow) || c.beta_fast < c.beta_slow)
        fail(m + "YaRN needs beta_fast >= beta_slow > 0, got beta_fast=" + std::to_string(c.beta_fast) +
             " beta_slow=" + std::to_string(c.beta_slow));
      check_attention_factor(c, m);
      break;
    case RopeScaling::Llama3:
      if (!finite_pos(c.low_freq_factor) || !(c.high_freq_factor > c.low_freq_factor))
        fail(m + "llama3 needs high_freq_factor > low_freq_factor > 0, got low=" + std::to_string(c.low_freq_factor) +
             " high=" + std::to_string(c.high_freq_factor));
      break;
    case RopeScaling::LongRope: {
      const size_t half = size_t(c.head_dim / 2);
      if (c.short_factor.size() != half || c.long_factor.size() != half)
        fail(m + "longrope needs short_factor and long_factor lists of head_dim/2 = " + std::to_string(half) +
             " entries (from config.json rope_scaling), got " + std::to_string(c.short_factor.size()) + " and " +
             std::to_string(c.long_factor.size()));
      for (size_t i = 0; i < half; ++i)
        if (!finite_pos(c.short_factor[i]) || !finite_pos(c.long_factor[i]))
          fail(m + "longrope factors must be positive numbers (entry " + std::to_string(i) + ")");
      check_attention_factor(c, m);
      break;
    }
    default: break;
  }
}

RopeFreqs rope_frequencies(const RopeConfig& cfg, int64_t seq_len) {
  rope_validate(cfg);
  RopeFreqs f;
  switch (cfg.type) {
    case RopeScaling::None:
      f.inv_freq = default_inv_freq(cfg.theta, cfg.head_dim);
      break;
    case RopeScaling::Linear:
      // Position Interpolation (Chen et al. 2023, arXiv:2306.15595; kaiokendev):
      // positions / factor == `inv_freq /= factor` (float32 division).
      f.inv_freq = default_inv_freq(cfg.theta, cfg.head_dim);
      for (auto& v : f.inv_freq) v /= cfg.factor;
      break;
    case RopeScaling::Dynamic:
      f.inv_freq = default_inv_freq(dynamic_base(cfg, seq_len), cfg.head_dim);
      break;
    case RopeScaling::Yarn:
      f = yarn_freqs(cfg);
      break;
    case RopeScaling::Llama3:
      f.inv_freq = llama3_inv_freq(cfg);
      break;
    case RopeScaling::LongRope:
      f = longrope_freqs(cfg, seq_len);
      break;
  }
  // llama.cpp: theta_i = pos * base^(-2i/d) / freq_factors[i] (float32 division).
  for (size_t i = 0; i < cfg.freq_factors.size() && i < f.inv_freq.size(); ++i) f.inv_freq[i] /= cfg.freq_factors[i];
  return f;
}

void rope_apply(float* x, int64_t n_head, int64_t head_dim, int64_t pos, const RopeFreqs& f) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    // freqs = inv_freq @ position_ids.float() (float32, one rounding); cos/sin in float32, then
    // `cos * attention_scaling` with the scale rounded to float32.
    const float ang = float(pos) * f.inv_freq[size_t(i)];
    const float c = std::cos(ang) * f.attn_scale;
    const float s = std::sin(ang) * f.attn_scale;
    for (int64_t h = 0; h < n_head; ++h) {
      float* v = x + h * head_dim;
      // q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q[half:], q[:half])
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

std::string rope_describe(const RopeConfig& cfg) {
  std::ostringstream os;
  os << "type=" << rope_scaling_name(cfg.type) << " theta=" << cfg.theta;
  switch (cfg.type) {
    case RopeScaling::None: break;
    case RopeScaling::Linear: os << " factor=" << cfg.factor; break;
    case RopeScaling::Dynamic:
      os << " factor=" << cfg.factor << " cache=" << (cfg.dynamic_mode == DynamicCacheMode::HF ? "hf" : "consistent");
      break;
    case RopeScaling::Yarn:
      os << " factor=" << cfg.factor << " beta_fast=" << cfg.beta_fast << " beta_slow=" << cfg.beta_slow;
      if (cfg.attention_factor > 0) os << " attn_factor=" << cfg.attention_factor;
      if (cfg.mscale > 0) os << " mscale=" << cfg.mscale << " mscale_all_dim=" << cfg.mscale_all_dim;
      break;
    case RopeScaling::Llama3:
      os << " factor=" << cfg.factor << " low_freq_factor=" << cfg.low_freq_factor
         << " high_freq_factor=" << cfg.high_freq_factor;
      break;
    case RopeScaling::LongRope: os << " switch=" << (cfg.longrope_switch ? "on" : "off"); break;
  }
  if (cfg.type != RopeScaling::None && cfg.type != RopeScaling::Dynamic) os << " orig_ctx=" << rope_original_ctx(cfg);
  if (!cfg.freq_factors.empty())
    os << " freq_factors=" << cfg.freq_factors.size() << " (rope_freqs.weight, " << cfg.freq_factors.front() << ".."
       << cfg.freq_factors.back() << ")";
  return os.str();
}

}  // namespace lcx
