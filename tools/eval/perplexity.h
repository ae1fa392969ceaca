// Perplexity of a token sequence, two protocols:
//
// Window (fixed-length models, Hugging Face "Perplexity of fixed-length models"): windows of
//   `ctx` tokens advancing by `stride`; each window starts from an empty cache and scores only
//   the tokens the previous window did not (its last `stride` tokens; all but the first token
//   in the first window), so every scored token sees at least ctx - stride tokens of context.
//
// Stream (LongLLaMA / Focused Transformer, and LLaMA with a long enough RoPE): the whole
//   sequence goes through one session in chunks, logits of one chunk at a time, so a token is
//   predicted with everything before it available (FoT: through the memory). Per-position
//   buckets (0-1k, 1k-2k, 2k-4k, ...) show whether long context helps.
//
// Logits are never held for more than one chunk: [chunk, n_vocab] floats.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "longctx/longctx.h"

namespace lcx::eval {

enum class PplMode { Window, Stream };

struct PplOptions {
  PplMode mode = PplMode::Window;
  int64_t ctx = 2048;     // Window: tokens per window
  int64_t stride = 1024;  // Window: advance per window (<= ctx)
  int64_t chunk = 512;    // logit rows per feed call
  // Stream with FoT memory: chunks never cross multiples of `align` (the model's window,
  // max_position_embeddings), so each window becomes one local context that moves to memory
  // whole when the next begins, as the reference's windows do. 0: no alignment.
  int64_t align = 0;
};

// One scored window of the strided protocol: tokens [begin, end) are fed, tokens
// [score_from, end) are scored.
struct PplWindow {
  int64_t begin, end, score_from;
};
// The Hugging Face loop: for begin in range(0, n, stride): end = min(begin + ctx, n);
// trg_len = end - prev_end; ... ; prev_end = end; stop once end == n.
std::vector<PplWindow> stride_windows(int64_t n_tokens, int64_t ctx, int64_t stride);

struct PplBucket {
  int64_t begin = 0, end = 0;  // positions of the predicted tokens
  int64_t n = 0;
  double nll_sum = 0;
  double ppl() const;
};
// [0,1024), [1024,2048), [2048,4096), ... up to n_tokens.
std::vector<PplBucket> position_buckets(int64_t n_tokens);

struct PplResult {
  int64_t n_tokens = 0, n_scored = 0, n_windows = 0;
  double nll_sum = 0;
  std::vector<PplBucket> buckets;
  double nll_mean() const { return n_scored ? nll_sum / double(n_scored) : 0; }
  double ppl() const;
};

// -log softmax(logits)[target], computed in double.
double token_nll(const float* logits, int64_t n_vocab, int32_t target);

// Runs the protocol over `ids` (BOS first if the text had one). The session is reset first.
PplResult perplexity(longctx::Session& s, const std::vector<int32_t>& ids, int64_t n_vocab, const PplOptions& opt,
                     const longctx::ProgressCallback& progress = {});

std::string format_ppl(const PplResult& r);
nlohmann::json ppl_json(const PplResult& r, const nlohmann::json& settings);

}  // namespace lcx::eval
