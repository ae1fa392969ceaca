// Prompt lookup decoding (GenerateOptions::lookup): the draft proposer, and generation with
// drafts giving what generation without them gives - tokens, text, stop reasons, and the session
// left behind (history, logits, what a later call generates).
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/lookup.h"
#include "longctx/longctx.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

std::vector<int32_t> drafts(const std::vector<int32_t>& seq, int min_n, int max_n, int k) {
  std::vector<int32_t> out = {-7};  // cleared by the call
  lcx::lookup_drafts(seq, min_n, max_n, k, out);
  return out;
}

TEST(LookupDrafts, MostRecentLongestMatch) {
  // Suffix [3 4] occurs at 2 and at 7; the most recent (7) proposes what followed it there.
  EXPECT_EQ(drafts({1, 2, 3, 4, 5, 6, 9, 3, 4, 8, 8, 3, 4}, 2, 3, 2), (std::vector<int32_t>{8, 8}));
  // Trigram [2 3 4] only at 1: longer n-grams are tried first.
  EXPECT_EQ(drafts({1, 2, 3, 4, 5, 6, 9, 3, 4, 8, 8, 2, 3, 4}, 2, 3, 3), (std::vector<int32_t>{5, 6, 9}));
  // Drafts stop at the end of the sequence (a loop of period 2 proposes one period).
  EXPECT_EQ(drafts({7, 1, 2, 1, 2, 1, 2}, 2, 3, 5), (std::vector<int32_t>{1, 2}));
}

TEST(LookupDrafts, NothingWithoutAMatch) {
  EXPECT_TRUE(drafts({1, 2, 3, 4}, 2, 3, 3).empty());
  EXPECT_TRUE(drafts({1, 2, 3, 1}, 2, 3, 3).empty());              // a unigram match only
  EXPECT_EQ(drafts({1, 2, 3, 1}, 1, 3, 3), (std::vector<int32_t>{2, 3, 1}));  // ... allowed with min 1
  EXPECT_TRUE(drafts({}, 1, 3, 3).empty());
  EXPECT_TRUE(drafts({5}, 1, 3, 3).empty());
  EXPECT_TRUE(drafts({1, 2, 1, 2}, 2, 3, 0).empty());
}

std::shared_ptr<longctx::Model> load(const std::string& name) {
  longctx::LoadOptions lo;
  lo.tokenizer_path = (fs::path(fixtures_dir()) / "tokenizer.model").string();
  return longctx::Model::load((fs::path(fixtures_dir()) / "models" / name).string(), lo);
}

// A prompt that repeats itself, so that drafts are found from the first generated token on.
const char* kPrompt =
    "The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log. The cat";

struct GenRun {
  longctx::GenerateResult r;
  std::string streamed;
  std::vector<int32_t> history;
  std::vector<float> logits;
  std::vector<int32_t> next;  // what a second generate() call then gives
};

GenRun run(const std::shared_ptr<longctx::Model>& m, longctx::GenerateOptions g, int lookup, int stop_after = -1) {
  g.lookup = lookup;
  g.lookup_min_ngram = 1;  // drafts after any repeated token: the most draft calls and rollbacks
  longctx::Session s(m);
  s.feed_text(kPrompt);
  GenRun out;
  int n = 0;
  out.r = s.generate(g, [&](const longctx::Piece& p) {
    out.streamed += p.text;
    return stop_after < 0 || ++n < stop_after;
  });
  out.history = s.history();
  out.logits = s.logits();
  longctx::GenerateOptions g2 = g;
  g2.n_predict = 12;
  out.next = s.generate(g2).ids;
  return out;
}

void expect_same(const GenRun& a, const GenRun& b, const std::string& what) {
  EXPECT_EQ(a.r.ids, b.r.ids) << what;
  EXPECT_EQ(a.r.text, b.r.text) << what;
  EXPECT_EQ(a.streamed, b.streamed) << what;
  EXPECT_EQ(a.r.stop_reason, b.r.stop_reason) << what;
  EXPECT_EQ(a.history, b.history) << what;
  ASSERT_EQ(a.logits.size(), b.logits.size()) << what;
  for (size_t i = 0; i < a.logits.size(); ++i) ASSERT_NEAR(a.logits[i], b.logits[i], 1e-4) << what << " logit " << i;
  EXPECT_EQ(a.next, b.next) << what;
}

TEST(Lookup, GreedySameTokensFewerCalls) {
  for (const char* name : {"llama_mha", "llama_gqa", "llama_rope_yarn"}) {
    auto m = load(name);
    longctx::GenerateOptions g;
    g.n_predict = 48;
    g.sampling.temperature = 0;
    const GenRun plain = run(m, g, 0);
    EXPECT_EQ(plain.r.n_drafted, 0);
    for (int k : {1, 3, 6}) {
      const GenRun fast = run(m, g, k);
      expect_same(plain, fast, std::string(name) + " lookup " + std::to_string(k));
      EXPECT_GT(fast.r.n_drafted, 0) << name;
      EXPECT_LE(fast.r.n_accepted, fast.r.n_drafted);
      if (std::string(name) == "llama_gqa") {
        EXPECT_GT(fast.r.n_accepted, 0);  // its greedy output loops
      }
    }
  }
}

// Sampling draws one random number per token from the same logits, drafts or not.
TEST(Lookup, SamplingSameTokens) {
  auto m = load("llama_gqa");
  longctx::GenerateOptions g;
  g.n_predict = 40;
  g.sampling.temperature = 0.7f;
  g.sampling.seed = 11;
  g.sampling.repeat_penalty = 1.3f;  // reads the history up to the token being sampled
  g.sampling.repeat_last_n = 8;
  g.logprobs = 2;
  const GenRun plain = run(m, g, 0), fast = run(m, g, 3);
  expect_same(plain, fast, "sampling");
  EXPECT_GT(fast.r.n_drafted, 0);
  ASSERT_EQ(plain.r.logprobs.size(), fast.r.logprobs.size());
  for (size_t i = 0; i < plain.r.logprobs.size(); ++i) EXPECT_NEAR(plain.r.logprobs[i].logprob, fast.r.logprobs[i].logprob, 1e-4);
}

// Ends inside a run of confirmed drafts leave no unconfirmed ones behind.
TEST(Lookup, StopsLeaveTheSessionAsPlainDecoding) {
  auto m = load("llama_gqa");
  longctx::GenerateOptions g;
  g.n_predict = 40;
  g.sampling.temperature = 0;
  const GenRun full = run(m, g, 0);
  EXPECT_GT(run(m, g, 3).r.n_accepted, 0);
  for (int stop_after : {1, 2, 5, 9, 17}) {
    expect_same(run(m, g, 0, stop_after), run(m, g, 3, stop_after), "callback " + std::to_string(stop_after));
  }
  for (int32_t n : {1, 2, 3, 7}) {
    longctx::GenerateOptions gn = g;
    gn.n_predict = n;
    expect_same(run(m, gn, 0), run(m, gn, 3), "n_predict " + std::to_string(n));
  }
  ASSERT_GT(full.r.text.size(), 20u);
  longctx::GenerateOptions gs = g;
  gs.stop = {full.r.text.substr(full.r.text.size() / 2, 4)};
  expect_same(run(m, gs, 0), run(m, gs, 3), "stop string");
}

// LongLLaMA: generation moves the full local context to memory one token at a time; draft calls
// stay inside the local window, so the memory sees what plain generation gives it.
TEST(Lookup, LongLlamaAcrossMemoryMoves) {
  for (const char* name : {"longllama_mem", "longllama_bf16mem", "longllama_nomem"}) {
    auto m = load(name);
    longctx::GenerateOptions g;
    g.n_predict = int32_t(3 * m->n_ctx_train() + 5);  // several moves of the local window
    g.sampling.temperature = 0;
    for (int k : {1, 3}) {
      const GenRun plain = run(m, g, 0), fast = run(m, g, k);
      expect_same(plain, fast, std::string(name) + " lookup " + std::to_string(k));
      EXPECT_GT(fast.r.n_drafted, 0) << name;
    }
    // The memory after generation is the same as well.
    for (int k : {0, 2}) {
      longctx::Session s(m);
      s.feed_text(kPrompt);
      g.lookup = k;
      g.lookup_min_ngram = 1;
      s.generate(g);
      static int64_t n_mem0;
      if (k == 0) n_mem0 = s.n_memory();
      else EXPECT_EQ(s.n_memory(), n_mem0) << name;
    }
  }
}

TEST(Lookup, ContextLimitAndUnsupportedModels) {
  {
    auto m = load("llama_mha");
    longctx::SessionOptions so;
    longctx::GenerateOptions g;
    g.n_predict = 40;
    g.sampling.temperature = 0;
    const int64_t n_prompt = int64_t(m->tokenize(kPrompt).size());
    so.n_ctx = n_prompt + 10;  // generation ends on the context, drafts must stay inside it
    std::vector<longctx::GenerateResult> r;
    for (int k : {0, 3}) {
      longctx::Session s(m, so);
      s.feed_text(kPrompt);
      g.lookup = k;
      r.push_back(s.generate(g));
      EXPECT_LE(s.n_past(), so.n_ctx);
    }
    EXPECT_EQ(r[0].ids, r[1].ids);
    EXPECT_EQ(r[0].stop_reason, "context");
    EXPECT_EQ(r[1].stop_reason, "context");
  }
  // Dynamic NTK and LongRoPE tables depend on the length seen: lookup is off, the output unchanged.
  for (const char* name : {"llama_rope_dynamic", "llama_rope_longrope"}) {
    auto m = load(name);
    longctx::GenerateOptions g;
    g.n_predict = 24;
    g.sampling.temperature = 0;
    const GenRun plain = run(m, g, 0), fast = run(m, g, 3);
    EXPECT_EQ(fast.r.n_drafted, 0) << name;
    expect_same(plain, fast, name);
  }
  longctx::GenerateOptions bad;
  bad.lookup = -1;
  auto m = load("llama_mha");
  longctx::Session s(m);
  s.feed_text("Hi");
  EXPECT_THROW(s.generate(bad), std::runtime_error);
}

}  // namespace
