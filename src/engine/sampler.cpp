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

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history) {
  cand_.resize(size_t(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], int32_t(i)};
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
