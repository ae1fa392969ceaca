// User-facing RoPE settings: command-line overrides over what the model file says, the
// `longctx rope` frequency table, and the "context past the trained one" warning.
//
// Precedence (lowest to highest): built-in defaults < GGUF metadata / config.json < command line.
// apply_rope_overrides() is the single place the last step happens; see docs/ROPE.md.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "model/rope.h"

namespace lcx {

// Every field is optional: unset means "keep what the model file says".
struct RopeOverrides {
  std::optional<RopeScaling> type;              // --rope-scaling none|linear|dynamic|yarn|llama3|longrope
  std::optional<float> factor;                  // --rope-scale
  std::optional<float> freq_base;               // --rope-freq-base (rope_theta)
  std::optional<double> ntk_alpha;              // --rope-ntk-alpha: theta *= alpha^(d/(d-2))
  std::optional<int64_t> orig_ctx;              // --rope-orig-ctx
  std::optional<float> yarn_beta_fast;          // --yarn-beta-fast
  std::optional<float> yarn_beta_slow;          // --yarn-beta-slow
  std::optional<float> yarn_attn_factor;        // --yarn-attn-factor
  std::optional<float> low_freq_factor;         // --rope-low-freq-factor
  std::optional<float> high_freq_factor;        // --rope-high-freq-factor
  std::optional<DynamicCacheMode> dynamic_mode; // --rope-dynamic-cache consistent|hf
  std::optional<bool> longrope_switch;          // --longrope-switch on|off

  bool any() const;
};

// Applies the overrides to a configuration loaded from the model file, then validates the
// result (rope_validate). Order: scaling type, factor, freq base, then NTK alpha on top of the
// (possibly overridden) base, then the method parameters. Throws lcx::Error with the flag to fix
// for combinations that cannot work: a scaling method chosen on the command line without a
// factor > 1 when the model has none, a parameter flag for a method that is not in use
// (e.g. --yarn-beta-fast with linear), longrope on a model without short/long factor lists.
void apply_rope_overrides(RopeConfig& cfg, const RopeOverrides& ov);

// True when `flag` (e.g. "--rope-scale") is one of the RoPE flags; every one takes a value.
bool is_rope_flag(const std::string& flag);

// Parses one CLI flag and its value into `ov`. Returns false when `flag` is not a RoPE flag
// (the caller handles it); throws lcx::Error for a RoPE flag with a bad value.
bool parse_rope_flag(const std::string& flag, const std::string& value, RopeOverrides& ov);

// Help text listing the RoPE flags, one per line, for `longctx --help`.
const char* rope_flags_help();

// Per-dimension table for `longctx rope`: inv_freq, wavelength 2*pi/inv_freq (in tokens), the
// plain-RoPE inv_freq and the interpolation ratio, plus the attention scale, for a sequence of
// seq_len tokens (Dynamic NTK and the LongRoPE switch depend on it).
std::string rope_table_report(const RopeConfig& cfg, int64_t seq_len);

// Warning text (empty when there is nothing to say) for running ctx_size tokens on a model
// trained with n_ctx_train: past the trained context without RoPE scaling, or past what the
// configured scaling was made for. The caller prints it once.
std::string rope_context_warning(const RopeConfig& cfg, int64_t n_ctx_train, int64_t ctx_size);

}  // namespace lcx
