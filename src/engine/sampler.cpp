#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace lcx {

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

void token_logprob(const float* logits, int64_t n_vocab, int32_t id, int n_top, TokenLogprob& out) {
  // log p(i) = x_i - (max + log sum exp(x - max)); the sum in double so a 32000-wide
  // vocabulary of near-equal logits loses nothing.
  float mx = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - double(mx));
  const double lse = double(mx) + std::log(sum);
  out.id = id;
  out.logprob = id >= 0 && id < n_vocab ? float(double(logits[id]) - lse) : -INFINITY;
  out.top.clear();
  const int64_t k = std::min<int64_t>(std::max(0, n_top), n_vocab);
  if (k == 0) return;
  // Keep the k best in `top`, sorted descending (k is small: OpenAI allows at most 20).
  auto better = [](float a, int32_t ia, float b, int32_t ib) { return a > b || (a == b && ia < ib); };
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float x = logits[i];
    if (int64_t(out.top.size()) == k && !better(x, int32_t(i), out.top.back().second, out.top.back().first)) continue;
    if (int64_t(out.top.size()) == k) out.top.pop_back();
    auto pos = out.top.end();
    while (pos != out.top.begin() && better(x, int32_t(i), (pos - 1)->second, (pos - 1)->first)) --pos;
    out.top.insert(pos, {int32_t(i), x});
  }
  for (auto& [tid, lp] : out.top) lp = float(double(lp) - lse);
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample_history(const float* logits, int64_t n_vocab, std::span<const int32_t> history,
                                const uint8_t* allowed) {
  const int32_t id = sample_unmasked(logits, n_vocab, history, allowed);
  if (allowed == nullptr || allowed[id]) return id;
  // Float rounding in the draw can fall through to a zero-probability (masked) candidate:
  // take the best allowed token instead.
  int32_t best = -1;
  for (int64_t i = 0; i < n_vocab; ++i)
    if (allowed[i] && (best < 0 || logits[i] > logits[best])) best = int32_t(i);
  return best < 0 ? id : best;
}

int32_t Sampler::sample_unmasked(const float* logits, int64_t n_vocab, std::span<const int32_t> history,
                                 const uint8_t* allowed) {
  cand_.resize(size_t(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], int32_t(i)};
  for (const auto& [id, bias] : p_.logit_bias)
    if (id >= 0 && id < n_vocab) cand_[size_t(id)].first += bias;
  if (allowed)
    for (int64_t i = 0; i < n_vocab; ++i)
      if (!allowed[i]) cand_[size_t(i)].first = -INFINITY;
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n != 0) {
    const size_t from = p_.repeat_last_n < 0 || size_t(p_.repeat_last_n) >= history.size()
                            ? 0 : history.size() - size_t(p_.repeat_last_n);
    seen_.assign(size_t(n_vocab), 0);
    for (size_t k = from; k < history.size(); ++k) {
      const int32_t id = history[k];
      if (id < 0 || id >= n_vocab || seen_[size_t(id)]) continue;
      seen_[size_t(id)] = 1;  // each token penalised once, however often it appeared
      float& l = cand_[size_t(id)].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  if (p_.temperature <= 0.0f) {
    size_t best = 0;
    for (size_t i = 1; i < cand_.size(); ++i)
      if (cand_[i].first > cand_[best].first) best = i;
    return cand_[best].second;
  }
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax over the survivors (sorted, so cand_[0] is the max).
  std::vector<float>& prob = prob_;
  prob.resize(n);
  const float mx = cand_[0].first;
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(cand_[i].first - mx);
  for (auto& x : prob) x /= sum;
  if (p_.top_p < 1.0f) {
    float cum = 0.0f;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i];
      if (cum >= p_.top_p) { keep = i + 1; break; }
    }
    n = std::max<size_t>(1, keep);
  }
  if (p_.min_p > 0.0f) {
    const float floor = p_.min_p * prob[0];
    size_t keep = 1;
    while (keep < n && prob[keep] >= floor) ++keep;
    n = keep;
  }
  // Temperature on the surviving logits, then draw.
  sum = 0.0f;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp((cand_[i].first - mx) / p_.temperature);
  std::uniform_real_distribution<float> U(0.0f, sum);
  float r = U(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= prob[i];
    if (r <= 0.0f) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace lcx
