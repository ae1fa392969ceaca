// Prompt lookup decoding's draft proposer (Saxena 2023, "Prompt Lookup Decoding"; vLLM's
// "ngram" speculative proposer): the tokens that followed the most recent earlier occurrence of
// the sequence's last n tokens. Long-context work (questions about a document, edits of code,
// summaries that quote) repeats spans of the input, and so does a model caught in a loop.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace lcx {

// Drafts for what comes after seq: for n from max_ngram down to min_ngram, the last n tokens
// are searched backwards in seq (the suffix itself excluded); at the first (most recent) match
// the up to n_draft tokens after it are the drafts. out is cleared; empty when nothing matches.
// O(len(seq) * max_ngram) per call, a few hundred microseconds at 100k tokens: small next to a
// forward pass of a model that needs such a context.
void lookup_drafts(std::span<const int32_t> seq, int min_ngram, int max_ngram, int n_draft, std::vector<int32_t>& out);

}  // namespace lcx
