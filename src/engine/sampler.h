// Token sampling: repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw, the
// order llama.cpp's default chain uses. Temperature 0 means greedy (argmax, lowest id on ties).
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "longctx/longctx.h"

namespace lcx {

struct SamplingParams {
  float temperature = 0.0f;    // 0: greedy
  int32_t top_k = 40;          // 0: off
  float top_p = 0.95f;         // 1: off
  float min_p = 0.05f;         // 0: off
  float repeat_penalty = 1.0f; // 1: off (CTRL-style: divide positive logits, multiply negative)
  int32_t repeat_last_n = 64;  // how many recent tokens the penalty looks at
  uint64_t seed = 0xC0FFEE;
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits first (ids outside the vocabulary ignored)
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // logits: [n_vocab]; history: tokens so far (prompt + generated), for the penalty (a span:
  // lookup decoding passes the history up to the token being sampled, not the drafts after it).
  // allowed: when given, [n_vocab] flags; only tokens with a non-zero flag are drawn (the
  // caller makes sure at least one is set).
  int32_t sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history,
                 const uint8_t* allowed = nullptr) {
    return sample_history(logits, n_vocab, history, allowed);
  }
  int32_t sample_history(const float* logits, int64_t n_vocab, std::span<const int32_t> history,
                         const uint8_t* allowed = nullptr);

 private:
  int32_t sample_unmasked(const float* logits, int64_t n_vocab, std::span<const int32_t> history,
                          const uint8_t* allowed);
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // reused: no allocation per token once warm
  std::vector<float> prob_;
  std::vector<uint8_t> seen_;                     // repetition penalty: token seen in the window
};

int32_t argmax(const float* x, int64_t n);

// longctx::token_logprob (public API): log-softmax of one token and the n_top best.
using longctx::TokenLogprob;
void token_logprob(const float* logits, int64_t n_vocab, int32_t id, int n_top, TokenLogprob& out);


}  // namespace lcx
