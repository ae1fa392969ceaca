#include "engine/lookup.h"

#include <algorithm>

namespace lcx {

void lookup_drafts(std::span<const int32_t> seq, int min_ngram, int max_ngram, int n_draft, std::vector<int32_t>& out) {
  out.clear();
  const int64_t len = int64_t(seq.size());
  if (n_draft <= 0 || min_ngram < 1) return;
  for (int64_t n = std::min<int64_t>(max_ngram, len - 1); n >= min_ngram; --n) {
    const int32_t* suffix = seq.data() + (len - n);
    // A match at p is followed by seq[p + n], so p + n <= len - 1; the most recent one wins
    // (in a loop it is the current period).
    for (int64_t p = len - n - 1; p >= 0; --p) {
      if (seq[size_t(p)] != suffix[0] || !std::equal(suffix, suffix + n, seq.data() + p)) continue;
      const int64_t from = p + n, to = std::min<int64_t>(from + n_draft, len);
      out.assign(seq.begin() + from, seq.begin() + to);
      return;
    }
  }
}

}  // namespace lcx
