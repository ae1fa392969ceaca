#include "model/rope_options.h"

#include <cerrno>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <sstream>

#include "runtime/error.h"

namespace lcx {

namespace {

double parse_number(const std::string& flag, const std::string& value) {
  const char* s = value.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s, &end);
  // (end must reach the string's real end: "3\0garbage" through the C++ API is not "3")
  if (value.empty() || end != s + value.size() || errno == ERANGE || !std::isfinite(v))
    fail(flag + " expects a number, got '" + value + "'");
  return v;
}

double parse_positive(const std::string& flag, const std::string& value) {
  const double v = parse_number(flag, value);
  if (!(v > 0.0)) fail(flag + " must be greater than 0, got '" + value + "'");
  return v;
}

// A positive number that float32 holds without becoming inf or 0 (1e39, 1e-50 are refused).
float parse_positive_f32(const std::string& flag, const std::string& value) {
  const double v = parse_positive(flag, value);
  if (v > double(std::numeric_limits<float>::max()) || float(v) == 0.0f)
    fail(flag + " is out of float32 range, got '" + value + "'");
  return float(v);
}

int64_t parse_positive_int(const std::string& flag, const std::string& value) {
  const char* s = value.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (value.empty() || end != s + value.size() || errno == ERANGE || v <= 0)
    fail(flag + " expects a positive whole number of tokens, got '" + value + "'");
  return int64_t(v);
}

bool scales(RopeScaling t) {
  return t == RopeScaling::Linear || t == RopeScaling::Dynamic || t == RopeScaling::Yarn || t == RopeScaling::Llama3;
}

// Tokens the configured scaling was made for (0: no particular limit to warn about).
int64_t designed_ctx(const RopeConfig& c, int64_t n_ctx_train) {
  switch (c.type) {
    case RopeScaling::None: return n_ctx_train;
    case RopeScaling::Linear:
    case RopeScaling::Yarn:
    case RopeScaling::Dynamic:
      return int64_t(std::floor(double(rope_original_ctx(c)) * double(c.factor)));
    case RopeScaling::Llama3:
      // max_position_embeddings is already the extended context in Llama 3.1 configs.
      return std::max<int64_t>(c.max_pos, int64_t(std::floor(double(rope_original_ctx(c)) * double(c.factor))));
    case RopeScaling::LongRope: return c.max_pos;
  }
  return 0;
}

}  // namespace

bool RopeOverrides::any() const {
  return type || factor || freq_base || ntk_alpha || orig_ctx || yarn_beta_fast || yarn_beta_slow ||
         yarn_attn_factor || low_freq_factor || high_freq_factor || dynamic_mode || longrope_switch;
}

void apply_rope_overrides(RopeConfig& cfg, const RopeOverrides& ov) {
  if (ov.type) {
    cfg.type = *ov.type;
    // A method chosen on the command line needs a factor from somewhere: the flag, or the
    // model's own rope_scaling factor (kept when switching method).
    if (scales(cfg.type) && !ov.factor && !(cfg.factor > 1.0f))
      fail(std::string("--rope-scaling ") + rope_scaling_name(cfg.type) +
           " needs a scale factor: add --rope-scale N (N > 1, e.g. desired context / trained context)");
    if (cfg.type == RopeScaling::LongRope && (cfg.short_factor.empty() || cfg.long_factor.empty()))
      fail("--rope-scaling longrope needs the model's per-dimension short_factor/long_factor lists "
           "(config.json rope_scaling); they cannot be given on the command line");
    if (cfg.type == RopeScaling::None) cfg.factor = 1.0f;
  }
  if (ov.factor) {
    if (!(*ov.factor > 0.0f)) fail("--rope-scale must be greater than 0");
    if (cfg.type == RopeScaling::None)
      fail("--rope-scale needs a scaling method: add --rope-scaling linear|dynamic|yarn|llama3 "
           "(the model file has none)");
    if (cfg.type == RopeScaling::LongRope)
      fail("--rope-scale does not apply to longrope (its factor is max_position_embeddings / "
           "original_max_position_embeddings)");
    cfg.factor = *ov.factor;
  }
  if (ov.freq_base) {
    if (!(*ov.freq_base > 0.0f)) fail("--rope-freq-base must be greater than 0");
    cfg.theta = *ov.freq_base;
  }
  if (ov.ntk_alpha) cfg.theta = float(rope_ntk_alpha_theta(double(cfg.theta), *ov.ntk_alpha, cfg.head_dim));
  if (ov.orig_ctx) {
    if (cfg.type == RopeScaling::Dynamic)
      fail("--rope-orig-ctx does not apply to dynamic scaling: its threshold is the model's "
           "max_position_embeddings (transformers behaviour)");
    if (cfg.type == RopeScaling::None || cfg.type == RopeScaling::Linear)
      fail(std::string("--rope-orig-ctx does not apply to ") + rope_scaling_name(cfg.type) +
           " RoPE: it is used by yarn, llama3 and longrope");
    cfg.orig_ctx = *ov.orig_ctx;
  }
  const bool yarn = cfg.type == RopeScaling::Yarn;
  if ((ov.yarn_beta_fast || ov.yarn_beta_slow || ov.yarn_attn_factor) && !yarn)
    fail("--yarn-beta-fast / --yarn-beta-slow / --yarn-attn-factor need --rope-scaling yarn (the current method is " +
         std::string(rope_scaling_name(cfg.type)) + ")");
  if (ov.yarn_beta_fast) cfg.beta_fast = *ov.yarn_beta_fast;
  if (ov.yarn_beta_slow) cfg.beta_slow = *ov.yarn_beta_slow;
  if (ov.yarn_attn_factor) cfg.attention_factor = *ov.yarn_attn_factor;
  if ((ov.low_freq_factor || ov.high_freq_factor) && cfg.type != RopeScaling::Llama3)
    fail("--rope-low-freq-factor / --rope-high-freq-factor need --rope-scaling llama3 (the current method is " +
         std::string(rope_scaling_name(cfg.type)) + ")");
  if (ov.low_freq_factor) cfg.low_freq_factor = *ov.low_freq_factor;
  if (ov.high_freq_factor) cfg.high_freq_factor = *ov.high_freq_factor;
  if (ov.dynamic_mode) {
    if (cfg.type != RopeScaling::Dynamic)
      fail("--rope-dynamic-cache needs dynamic RoPE scaling (the current method is " +
           std::string(rope_scaling_name(cfg.type)) + ")");
    cfg.dynamic_mode = *ov.dynamic_mode;
  }
  if (ov.longrope_switch) {
    if (cfg.type != RopeScaling::LongRope)
      fail("--longrope-switch needs longrope RoPE scaling (the current method is " +
           std::string(rope_scaling_name(cfg.type)) + ")");
    cfg.longrope_switch = *ov.longrope_switch;
  }
  rope_validate(cfg);
}

bool is_rope_flag(const std::string& f) {
  return f == "--rope-scaling" || f == "--rope-scale" || f == "--rope-freq-base" || f == "--rope-ntk-alpha" ||
         f == "--rope-orig-ctx" || f == "--yarn-beta-fast" || f == "--yarn-beta-slow" || f == "--yarn-attn-factor" ||
         f == "--rope-low-freq-factor" || f == "--rope-high-freq-factor" || f == "--rope-dynamic-cache" ||
         f == "--longrope-switch";
}

bool parse_rope_flag(const std::string& flag, const std::string& value, RopeOverrides& ov) {
  if (!is_rope_flag(flag)) return false;
  if (flag == "--rope-scaling") {
    try {
      ov.type = rope_scaling_from_name(value);
    } catch (const Error&) {
      fail("--rope-scaling: unknown method '" + value + "': choose none, linear, dynamic, yarn, llama3 or longrope");
    }
  } else if (flag == "--rope-scale") {
    ov.factor = parse_positive_f32(flag, value);
  } else if (flag == "--rope-freq-base") {
    ov.freq_base = parse_positive_f32(flag, value);
  } else if (flag == "--rope-ntk-alpha") {
    ov.ntk_alpha = parse_positive(flag, value);
  } else if (flag == "--rope-orig-ctx") {
    ov.orig_ctx = parse_positive_int(flag, value);
  } else if (flag == "--yarn-beta-fast") {
    ov.yarn_beta_fast = parse_positive_f32(flag, value);
  } else if (flag == "--yarn-beta-slow") {
    ov.yarn_beta_slow = parse_positive_f32(flag, value);
  } else if (flag == "--yarn-attn-factor") {
    ov.yarn_attn_factor = parse_positive_f32(flag, value);
  } else if (flag == "--rope-low-freq-factor") {
    ov.low_freq_factor = parse_positive_f32(flag, value);
  } else if (flag == "--rope-high-freq-factor") {
    ov.high_freq_factor = parse_positive_f32(flag, value);
  } else if (flag == "--rope-dynamic-cache") {
    if (value == "consistent") ov.dynamic_mode = DynamicCacheMode::Consistent;
    else if (value == "hf") ov.dynamic_mode = DynamicCacheMode::HF;
    else fail("--rope-dynamic-cache expects 'consistent' or 'hf', got '" + value + "'");
  } else if (flag == "--longrope-switch") {
    if (value == "on" || value == "true" || value == "1") ov.longrope_switch = true;
    else if (value == "off" || value == "false" || value == "0") ov.longrope_switch = false;
    else fail("--longrope-switch expects 'on' or 'off', got '" + value + "'");
  }
  return true;
}

const char* rope_flags_help() {
  return
      "RoPE context extension (override the model file; see docs/ROPE.md):\n"
      "  --rope-scaling M           none|linear|dynamic|yarn|llama3|longrope\n"
      "  --rope-scale F             scaling factor (> 0), e.g. target context / trained context\n"
      "  --rope-freq-base B         rope_theta\n"
      "  --rope-ntk-alpha A         NTK-aware scaling: theta = base * A^(d/(d-2))\n"
      "  --rope-orig-ctx N          original (pre-extension) context for yarn/llama3/longrope\n"
      "  --yarn-beta-fast B         YaRN high-frequency boundary (default 32)\n"
      "  --yarn-beta-slow B         YaRN low-frequency boundary (default 1)\n"
      "  --yarn-attn-factor S       YaRN cos/sin scale (default 0.1*ln(factor)+1)\n"
      "  --rope-low-freq-factor F   llama3 low_freq_factor (default 1)\n"
      "  --rope-high-freq-factor F  llama3 high_freq_factor (default 4)\n"
      "  --rope-dynamic-cache M     consistent (default: cached keys re-rotated, cache == recompute)\n"
      "                             | hf (transformers: cached keys keep their rotation)\n"
      "  --longrope-switch on|off   use long_factor past the original context (newer transformers;\n"
      "                             default off = transformers v4.49, always short_factor)\n";
}

std::string rope_table_report(const RopeConfig& cfg, int64_t seq_len) {
  const RopeFreqs f = rope_frequencies(cfg, seq_len);
  RopeConfig plain_cfg = cfg;
  plain_cfg.type = RopeScaling::None;
  const RopeFreqs plain = rope_frequencies(plain_cfg, seq_len);
  std::ostringstream os;
  os << "rope: " << rope_describe(cfg) << " head_dim=" << cfg.head_dim << " max_pos=" << cfg.max_pos << "\n";
  char line[160];
  std::snprintf(line, sizeof line, "sequence length %lld; attention scale (multiplies cos and sin) %.9g\n",
                static_cast<long long>(seq_len), double(f.attn_scale));
  os << line;
  std::snprintf(line, sizeof line, "%5s %9s %15s %15s %15s %10s\n", "i", "dims", "inv_freq", "wavelength",
                "plain_inv_freq", "plain/ours");
  os << line;
  const double two_pi = 2 * std::numbers::pi;
  const int64_t half = cfg.head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double inv = f.inv_freq[size_t(i)], p = plain.inv_freq[size_t(i)];
    char dims[48];
    std::snprintf(dims, sizeof dims, "%lld,%lld", static_cast<long long>(i), static_cast<long long>(i + half));
    std::snprintf(line, sizeof line, "%5lld %9s %15.9g %15.6g %15.9g %10.6g\n", static_cast<long long>(i), dims,
                  inv, two_pi / inv, p, p / inv);
    os << line;
  }
  return os.str();
}

std::string rope_context_warning(const RopeConfig& cfg, int64_t n_ctx_train, int64_t ctx_size) {
  if (n_ctx_train <= 0 || ctx_size <= 0) return "";
  const int64_t limit = designed_ctx(cfg, n_ctx_train);
  if (limit <= 0 || ctx_size <= limit) return "";
  std::ostringstream os;
  if (cfg.type == RopeScaling::None) {
    const int64_t k = (ctx_size + n_ctx_train - 1) / n_ctx_train;
    os << "warning: context size " << ctx_size << " is larger than the model's trained context " << n_ctx_train
       << " and RoPE scaling is off: positions past " << n_ctx_train
       << " were never seen in training and quality usually collapses there. Consider "
       << "--rope-scaling yarn --rope-scale " << k << " (or dynamic / linear with the same factor).";
  } else {
    os << "warning: context size " << ctx_size << " is larger than the " << limit << " tokens the configured "
       << rope_scaling_name(cfg.type) << " RoPE scaling was made for (" << rope_describe(cfg)
       << "); quality may degrade past " << limit << ". A larger --rope-scale extends it.";
  }
  return os.str();
}

}  // namespace lcx
