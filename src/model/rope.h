// Rotary position embedding (RoPE, Su et al. 2021) and every context-extension method as pure
// functions of configuration: one place computes the per-dimension inverse frequencies and the
// attention scale, and one function rotates. Layout is Hugging Face's "rotate half": dimension i
// pairs with i + head_dim/2 (GGUF files store q/k rows permuted for interleaved pairs; the GGUF
// loader undoes that so this is the only layout in the engine).
//
// Reference: transformers v4.49 `modeling_rope_utils.py` + `LlamaRotaryEmbedding`, reproduced
// operation by operation in float32 (see rope.cpp and docs/ROPE.md); tools/rope_reference.py is
// an independent numpy re-expression used to produce the expected values in tests/test_rope.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lcx {

enum class RopeScaling { None, Linear, Dynamic, Yarn, Llama3, LongRope };
// How Dynamic NTK treats a KV cache (see docs/ROPE.md).
//   Consistent: every position uses the base for the current total length; cached keys are
//               re-rotated when it changes (query and keys share one base). Hidden states of
//               earlier tokens are not recomputed, so with more than one layer incremental
//               decoding is close to, not equal to, a full recomputation.
//   HF:         transformers v4.49 behaviour: cached keys keep the rotation they got.
enum class DynamicCacheMode { Consistent, HF };

const char* rope_scaling_name(RopeScaling s);
RopeScaling rope_scaling_from_name(const std::string& s);  // throws lcx::Error

struct RopeConfig {
  int64_t head_dim = 0;
  float theta = 10000.0f;             // rope_theta / <arch>.rope.freq_base
  RopeScaling type = RopeScaling::None;
  float factor = 1.0f;                // linear / dynamic / yarn / llama3 (/ longrope) factor
  int64_t max_pos = 2048;             // config max_position_embeddings
  // original_max_position_embeddings (0: not given). Used by llama3 (required), longrope
  // (top-level config key; factor becomes max_pos/orig_ctx) and yarn (only when given by GGUF
  // or --rope-orig-ctx: transformers v4.49 uses max_pos for yarn). Never by dynamic.
  int64_t orig_ctx = 0;
  // YaRN (Peng et al. 2023)
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  float attention_factor = 0.0f;      // 0: derive (yarn: 0.1 ln s + 1; longrope: sqrt(...))
  float mscale = 0.0f;                // DeepSeek-style mscale / mscale_all_dim (0: unset)
  float mscale_all_dim = 0.0f;
  // Llama 3
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  // LongRoPE (Ding et al. 2024)
  std::vector<float> short_factor;
  std::vector<float> long_factor;
  bool longrope_switch = false;       // use long_factor past orig_ctx (newer transformers)
  // Per-dimension divisors of the inverse frequencies [head_dim/2] (empty: none), as llama.cpp
  // applies a GGUF's rope_freqs.weight tensor (ggml_rope_ext freq_factors): how llama.cpp's
  // converter stores Llama 3.1 scaling. Applied after the method's own frequencies.
  std::vector<float> freq_factors;
  DynamicCacheMode dynamic_mode = DynamicCacheMode::Consistent;
};

// The per-dimension inverse frequencies [head_dim/2] and the factor that multiplies cos and sin.
struct RopeFreqs {
  std::vector<float> inv_freq;
  float attn_scale = 1.0f;
};

// seq_len: the sequence length the table serves (Dynamic NTK and the LongRoPE switch depend on
// it; other methods ignore it). Computed in float32 as transformers does. Throws lcx::Error when
// the configuration is invalid (see rope_validate).
RopeFreqs rope_frequencies(const RopeConfig& cfg, int64_t seq_len);

// Rotates n_head vectors of head_dim (row stride head_dim) at position pos in place:
//   x' = x * cos(pos * f) * s + rotate_half(x) * sin(pos * f) * s
// The angle is the float32 product float(pos) * inv_freq and cos/sin are float32 and then
// multiplied by s in float32, as LlamaRotaryEmbedding.forward computes them.
void rope_apply(float* x, int64_t n_head, int64_t head_dim, int64_t pos, const RopeFreqs& f);

// Throws lcx::Error naming the first field that cannot describe a RoPE (odd head_dim, factor
// <= 0, llama3 high <= low freq factor, longrope lists of the wrong length, ...).
void rope_validate(const RopeConfig& cfg);

// The original (pre-extension) context a method works from: orig_ctx when given, else max_pos.
int64_t rope_original_ctx(const RopeConfig& cfg);

// NTK-aware scaling by alpha (bloc97, "NTK-Aware Scaled RoPE", 2023): the base becomes
// theta * alpha^(d/(d-2)), computed in double like the Python expression that produced the
// `h_rope_theta_ntk` fixture (10000 * 8 ** (8/6) = 159999.99999999997).
double rope_ntk_alpha_theta(double theta, double alpha, int64_t head_dim);

// Human-readable one-line summary, for `longctx info`.
std::string rope_describe(const RopeConfig& cfg);

}  // namespace lcx
