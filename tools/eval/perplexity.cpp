#include "perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/error.h"

namespace lcx::eval {

std::vector<PplWindow> stride_windows(int64_t n_tokens, int64_t ctx, int64_t stride) {
  if (ctx < 2) fail("--ctx must be at least 2 tokens");
  if (stride < 1 || stride > ctx) fail("--stride must be between 1 and --ctx (" + std::to_string(ctx) + ")");
  std::vector<PplWindow> out;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < n_tokens; begin += stride) {
    const int64_t end = std::min(begin + ctx, n_tokens);
    // The labels are shifted inside the window, so its first token is never predicted.
    const int64_t from = std::max(begin + 1, prev_end);
    if (from < end) out.push_back({begin, end, from});
    prev_end = end;
    if (end == n_tokens) break;
  }
  return out;
}

double PplBucket::ppl() const { return n ? std::exp(nll_sum / double(n)) : 0.0; }
double PplResult::ppl() const { return n_scored ? std::exp(nll_mean()) : 0.0; }

std::vector<PplBucket> position_buckets(int64_t n_tokens) {
  std::vector<PplBucket> b;
  int64_t lo = 0, hi = 1024;
  while (lo < n_tokens) {
    b.push_back({lo, std::min(hi, n_tokens), 0, 0.0});
    lo = hi;
    hi *= 2;
  }
  return b;
}

double token_nll(const float* logits, int64_t n_vocab, int32_t target) {
  if (target < 0 || target >= n_vocab) fail("token id " + std::to_string(target) + " is outside the vocabulary");
  double mx = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) mx = std::max(mx, double(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  return std::log(sum) + mx - double(logits[target]);
}

namespace {

struct Scorer {
  const std::vector<int32_t>& ids;
  int64_t V;
  PplResult& r;
  // Rows [first, first + n) of logits predict ids[first + 1 ..].
  void add(const std::vector<float>& logits, int64_t first, int64_t n) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t pos = first + j + 1;  // the predicted token
      const double nll = token_nll(logits.data() + j * V, V, ids[size_t(pos)]);
      r.nll_sum += nll;
      r.n_scored++;
      for (auto& b : r.buckets)
        if (pos >= b.begin && pos < b.end) {
          b.n++;
          b.nll_sum += nll;
        }
    }
  }
};

// Feeds ids[b, e) in chunks of at most `chunk` rows that never cross a multiple of `align`,
// scoring each row; `done` is advanced for progress.
void feed_scored(longctx::Session& s, Scorer& sc, int64_t b, int64_t e, int64_t chunk, int64_t align,
                 const std::function<void(int64_t)>& advanced) {
  std::vector<float> logits;
  while (b < e) {
    int64_t c = std::min(chunk, e - b);
    if (align > 0) c = std::min(c, (b / align + 1) * align - b);
    const std::vector<int32_t> part(sc.ids.begin() + b, sc.ids.begin() + b + c);
    s.feed(part, &logits);  // [c, n_vocab]
    sc.add(logits, b, c);
    b += c;
    if (advanced) advanced(c);
  }
}

}  // namespace

PplResult perplexity(longctx::Session& s, const std::vector<int32_t>& ids, int64_t n_vocab, const PplOptions& opt,
                     const longctx::ProgressCallback& progress) {
  const int64_t n = int64_t(ids.size());
  if (n < 2) fail("perplexity needs a text of at least 2 tokens (got " + std::to_string(n) + ")");
  if (opt.chunk < 1) fail("--chunk must be at least 1");
  PplResult r;
  r.n_tokens = n;
  r.buckets = position_buckets(n);
  Scorer sc{ids, n_vocab, r};
  s.reset();
  if (opt.mode == PplMode::Stream) {
    // Rows for positions 0 .. n-2 predict tokens 1 .. n-1; the last token is never fed.
    int64_t done = 0;
    feed_scored(s, sc, 0, n - 1, opt.chunk, opt.align, [&](int64_t c) {
      done += c;
      if (progress) progress(done, n - 1);
    });
    r.n_windows = 1;
    return r;
  }
  const auto windows = stride_windows(n, opt.ctx, opt.stride);
  int64_t total = 0, done = 0;
  for (const auto& w : windows) total += w.end - 1 - w.begin;
  for (const auto& w : windows) {
    s.reset();
    // Context the window needs but does not score: fed without logits.
    if (w.score_from - 1 > w.begin) {
      s.feed(std::vector<int32_t>(ids.begin() + w.begin, ids.begin() + w.score_from - 1));
      done += w.score_from - 1 - w.begin;
    }
    feed_scored(s, sc, w.score_from - 1, w.end - 1, opt.chunk, 0, [&](int64_t c) {
      done += c;
      if (progress) progress(done, total);
    });
    r.n_windows++;
  }
  return r;
}

std::string format_ppl(const PplResult& r) {
  std::string out;
  char buf[160];
  std::snprintf(buf, sizeof buf, "perplexity %.4f  (mean NLL %.5f nats over %lld scored tokens of %lld; %lld window%s)\n",
                r.ppl(), r.nll_mean(), (long long)r.n_scored, (long long)r.n_tokens, (long long)r.n_windows,
                r.n_windows == 1 ? "" : "s");
  out += buf;
  out += "   positions        tokens       NLL    perplexity\n";
  out += "  ---------------------------------------------------\n";
  for (const auto& b : r.buckets) {
    if (b.n == 0) continue;
    std::snprintf(buf, sizeof buf, "  %7lld-%-9lld %8lld  %9.5f  %11.4f\n", (long long)b.begin, (long long)b.end,
                  (long long)b.n, b.nll_sum / double(b.n), b.ppl());
    out += buf;
  }
  return out;
}

nlohmann::json ppl_json(const PplResult& r, const nlohmann::json& settings) {
  nlohmann::json buckets = nlohmann::json::array();
  for (const auto& b : r.buckets) {
    if (b.n == 0) continue;
    buckets.push_back({{"begin", b.begin},
                       {"end", b.end},
                       {"tokens", b.n},
                       {"nll", b.nll_sum / double(b.n)},
                       {"perplexity", b.ppl()}});
  }
  return {{"perplexity", r.ppl()},
          {"nll", r.nll_mean()},
          {"tokens", r.n_tokens},
          {"scored", r.n_scored},
          {"windows", r.n_windows},
          {"buckets", buckets},
          {"settings", settings}};
}

}  // namespace lcx::eval
