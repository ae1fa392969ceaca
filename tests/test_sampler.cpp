// Sampling and generation mechanics: greedy, seeds, each filter, penalties, stop strings,
// EOS, the streaming callback.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/json_constraint.h"
#include "engine/sampler.h"
#include "longctx/longctx.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

std::vector<float> logits_of(std::initializer_list<float> l) { return std::vector<float>(l); }

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  lcx::SamplingParams p;
  p.temperature = 0;
  lcx::Sampler s(p);
  auto l = logits_of({0.1f, 3.0f, 3.0f, -1.0f});
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, SeedIsDeterministic) {
  lcx::SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  std::vector<float> l(100);
  for (int i = 0; i < 100; ++i) l[size_t(i)] = std::sin(float(i));
  lcx::Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(l.data(), 100, {}), b.sample(l.data(), 100, {}));
}

TEST(Sampler, TopKOneIsGreedy) {
  lcx::SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  lcx::Sampler s(p);
  auto l = logits_of({0.0f, 0.5f, 0.4f});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l.data(), 3, {}), 1);
}

TEST(Sampler, TopPAndMinPCutTheTail) {
  // probabilities ~ [0.7, 0.2, 0.1]-ish: top_p 0.5 keeps only the first
  lcx::SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 0.5f;
  p.min_p = 0.0f;
  auto l = logits_of({2.0f, 0.75f, 0.05f});
  lcx::Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), 3, {}), 0);
  p.top_p = 1.0f;
  p.min_p = 0.5f;  // keep tokens with p >= 0.5 * p_max: only token 0 (0.2/0.7 < 0.5)
  lcx::Sampler m(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(m.sample(l.data(), 3, {}), 0);
}

TEST(Sampler, TemperatureFollowsTheDistribution) {
  lcx::SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 3;
  auto l = logits_of({0.0f, std::log(3.0f)});  // p = [0.25, 0.75]
  lcx::Sampler s(p);
  int ones = 0;
  for (int i = 0; i < 4000; ++i) ones += s.sample(l.data(), 2, {});
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

TEST(Sampler, RepetitionPenalty) {
  lcx::SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 2.0f;
  lcx::Sampler s(p);
  auto l = logits_of({1.0f, 1.5f, 0.9f});
  EXPECT_EQ(s.sample(l.data(), 3, {1}), 0);     // 1.5 / 2 < 1.0
  EXPECT_EQ(s.sample(l.data(), 3, {0, 1}), 2);  // both penalised: 0.5, 0.75 < 0.9
}

TEST(Sampler, LogitBiasShiftsLogitsBeforeEverything) {
  lcx::SamplingParams p;
  p.temperature = 0;
  auto l = logits_of({1.0f, 3.0f, 2.0f});
  p.logit_bias = {{1, -100.0f}};
  EXPECT_EQ(lcx::Sampler(p).sample(l.data(), 3, {}), 2);  // the best token banned
  p.logit_bias = {{0, 2.5f}, {7, 100.0f}, {-1, 100.0f}};  // ids outside the vocabulary ignored
  EXPECT_EQ(lcx::Sampler(p).sample(l.data(), 3, {}), 0);
  p.temperature = 1.0f;
  p.logit_bias = {{2, 100.0f}};
  lcx::Sampler s(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l.data(), 3, {}), 2);
}

std::shared_ptr<longctx::Model> fixture_model() {
  longctx::LoadOptions lo;
  lo.tokenizer_path = (fs::path(fixtures_dir()) / "tokenizer.model").string();
  return longctx::Model::load((fs::path(fixtures_dir()) / "models" / "llama_mha").string(), lo);
}

TEST(Generate, StreamsAndStopsAtStopString) {
  auto m = fixture_model();
  longctx::GenerateOptions g;
  g.n_predict = 24;
  g.sampling.temperature = 0;
  std::string full;
  {
    longctx::Session s(m);
    s.feed_text("The quick brown fox");
    auto r = s.generate(g, [&](const longctx::Piece& p) {
      full += p.text;
      return true;
    });
    EXPECT_EQ(r.stop_reason, "length");
    EXPECT_EQ(r.ids.size(), 24u);
    EXPECT_EQ(full, r.text);
    // Streamed text continues the prompt: prompt text + streamed text == decode(prompt + ids).
    auto all = m->tokenize("The quick brown fox");
    const std::string prompt_text = m->detokenize(all);
    all.insert(all.end(), r.ids.begin(), r.ids.end());
    EXPECT_EQ(prompt_text + r.text, m->detokenize(all));
  }
  ASSERT_GT(full.size(), 12u);
  // A stop string from the middle of that output: generation stops there and it is not emitted.
  const std::string stop = full.substr(full.size() / 2, 5);
  g.stop = {stop};
  longctx::Session s(m);
  s.feed_text("The quick brown fox");
  std::string streamed;
  auto r = s.generate(g, [&](const longctx::Piece& p) {
    streamed += p.text;
    return true;
  });
  EXPECT_EQ(r.stop_reason, "stop");
  EXPECT_EQ(streamed, full.substr(0, full.find(stop)));
  EXPECT_EQ(r.text, streamed);
}

TEST(Generate, CallbackCanStop) {
  auto m = fixture_model();
  longctx::Session s(m);
  s.feed_text("Hello");
  longctx::GenerateOptions g;
  g.n_predict = 20;
  int n = 0;
  auto r = s.generate(g, [&](const longctx::Piece&) { return ++n < 3; });
  EXPECT_EQ(r.stop_reason, "callback");
  EXPECT_EQ(r.ids.size(), 3u);
}

TEST(Generate, EosStopsUnlessIgnored) {
  // Make EOS the greedy choice by feeding a prompt and checking the reason is honoured: we
  // cannot steer a random model, so check the API contract on ignore_eos instead.
  auto m = fixture_model();
  longctx::Session s(m);
  s.feed_text("Hello");
  longctx::GenerateOptions g;
  g.n_predict = 5;
  g.ignore_eos = true;
  auto r = s.generate(g);
  EXPECT_EQ(r.ids.size(), 5u);
  EXPECT_THROW(longctx::Session(m).generate(g), std::runtime_error);  // nothing fed
}

// Log-probabilities are the log-softmax of the raw logits, with the n best in order.
TEST(TokenLogprob, LogSoftmaxAndTopInOrder) {
  const std::vector<float> l = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};
  double z = 0;
  for (float x : l) z += std::exp(double(x));
  const auto t = longctx::token_logprob(l.data(), 5, 4, 3);
  EXPECT_EQ(t.id, 4);
  EXPECT_NEAR(t.logprob, 0.5 - std::log(z), 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // tie between 1 and 2: lower id first
  EXPECT_EQ(t.top[1].first, 2);
  EXPECT_EQ(t.top[2].first, 0);
  EXPECT_NEAR(t.top[0].second, 3.0 - std::log(z), 1e-6);
  EXPECT_NEAR(t.top[2].second, 1.0 - std::log(z), 1e-6);
  EXPECT_TRUE(longctx::token_logprob(l.data(), 5, 0, 0).top.empty());
  EXPECT_EQ(longctx::token_logprob(l.data(), 5, 0, 99).top.size(), 5u);  // at most the vocabulary
  // Large logits do not overflow: the maximum is subtracted first.
  const std::vector<float> big = {1000.0f, 1000.0f};
  EXPECT_NEAR(longctx::token_logprob(big.data(), 2, 0, 1).logprob, std::log(0.5), 1e-6);
}

// Generation reports each token's log-probability: the same values as the log-softmax of the
// logits a full forward over prompt + generated tokens gives, the greedy token first among
// the alternatives, and a piece per token carrying it.
TEST(Generate, LogprobsMatchTheForward) {
  auto m = fixture_model();
  longctx::Session s(m);
  const auto prompt = m->tokenize("The quick brown fox");
  s.feed(prompt);
  longctx::GenerateOptions g;
  g.n_predict = 8;
  g.sampling.temperature = 0;
  g.logprobs = 2;
  int with_lp = 0;
  auto r = s.generate(g, [&](const longctx::Piece& p) {
    if (p.logprob) {
      EXPECT_EQ(p.logprob->id, p.id);
      ++with_lp;
    }
    return true;
  });
  ASSERT_EQ(r.ids.size(), 8u);
  ASSERT_EQ(r.logprobs.size(), 8u);
  EXPECT_EQ(with_lp, 8);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r.ids.begin(), r.ids.end());
  longctx::Session ref(m);
  std::vector<float> logits;
  ref.feed(all, &logits);
  const int32_t V = m->n_vocab();
  for (size_t i = 0; i < r.ids.size(); ++i) {
    const auto& t = r.logprobs[i];
    EXPECT_EQ(t.id, r.ids[i]);
    ASSERT_EQ(t.top.size(), 2u);
    EXPECT_EQ(t.top[0].first, t.id);  // greedy
    EXPECT_EQ(t.top[0].second, t.logprob);
    EXPECT_LE(t.logprob, 0.0f);
    const auto want = longctx::token_logprob(logits.data() + (prompt.size() - 1 + i) * size_t(V), V, t.id, 2);
    EXPECT_NEAR(t.logprob, want.logprob, 1e-4) << i;
  }
  // Off by default: nothing extra.
  longctx::Session s2(m);
  s2.feed(prompt);
  g.logprobs = -1;
  EXPECT_TRUE(s2.generate(g).logprobs.empty());
}

bool json_prefix_ok(const std::string& s, bool* complete = nullptr) {
  lcx::JsonPrefix p;
  const bool ok = p.feed(s);
  if (complete) *complete = ok && p.complete();
  return ok;
}

// The JSON-mode automaton: every prefix of a valid object is accepted and the object is
// complete exactly at its end; anything that can no longer become one object is refused.
TEST(JsonMode, AutomatonAcceptsObjectPrefixesOnly) {
  const std::vector<std::string> good = {
      "{}", " {\"a\": 1}", "{\"a\":[1,2.5,-3e+4,0,-0.25E-2,{}],\"b\":{\"c\":null}}",
      "{\"s\": \"caf\xc3\xa9 \\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9\"}", "{\"t\":true,\"f\":false,\"n\":null,\"e\":[]}",
      "{\n  \"k\" : [ \"v\" , 1 ]\n}"};
  for (const auto& g : good) {
    EXPECT_TRUE(nlohmann::json::accept(g)) << g;  // the test's own inputs are valid JSON
    for (size_t n = 0; n < g.size(); ++n) {
      bool complete = true;
      EXPECT_TRUE(json_prefix_ok(g.substr(0, n), &complete)) << g.substr(0, n);
      EXPECT_FALSE(complete) << g.substr(0, n);
    }
    bool complete = false;
    EXPECT_TRUE(json_prefix_ok(g, &complete)) << g;
    EXPECT_TRUE(complete) << g;
  }
  for (const char* b : {"[1]", "\"a\"", "1", "{\"a\":01}", "{\"a\" 1}", "{,}", "{\"a\":1,}", "{\"a\":[1,]}",
                               "{\"a\":trux}", "{\"a\":-}", "{\"a\":1.}", "{\"a\":1e}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12g4\"}",
                               "{\"a\":\"line\nbreak\"}", "{\"a\":1]", "{\"a\":[1}", "{} ", "{}{}", "{'a':1}", "{a:1}"})
    EXPECT_FALSE(json_prefix_ok(b)) << b;
  // Bounded: whitespace runs and nesting depth.
  EXPECT_TRUE(json_prefix_ok("{" + std::string(lcx::JsonPrefix::kMaxWhitespace, ' ')));
  EXPECT_FALSE(json_prefix_ok("{" + std::string(lcx::JsonPrefix::kMaxWhitespace + 1, ' ')));
  EXPECT_TRUE(json_prefix_ok(std::string(lcx::JsonPrefix::kMaxLeading, '\n') + "{"));
  EXPECT_FALSE(json_prefix_ok(std::string(lcx::JsonPrefix::kMaxLeading + 1, '\n') + "{"));
  std::string deep = "{\"a\":";
  for (int i = 1; i < lcx::JsonPrefix::kMaxDepth; ++i) deep += "[";
  EXPECT_TRUE(json_prefix_ok(deep));
  EXPECT_FALSE(json_prefix_ok(deep + "["));
}

// JSON mode in generation: whatever the model, the text is a prefix of one JSON object, and a
// finished ("stop") choice is exactly one object. A bias towards '}' makes the object close.
TEST(JsonMode, GenerationStaysJson) {
  auto m = fixture_model();
  for (float temp : {0.0f, 1.0f}) {
    for (bool close_early : {false, true}) {
      longctx::Session s(m);
      s.feed_text("Answer in JSON:");
      longctx::GenerateOptions g;
      g.n_predict = 40;
      g.sampling.temperature = temp;
      g.sampling.seed = 7;
      g.json_object = true;
      if (close_early)
        for (int32_t id : {m->tokenize("}", false).back(), m->tokenize("{", false).back()})
          g.sampling.logit_bias.push_back({id, 30.0f});
      auto r = s.generate(g);
      bool complete = false;
      EXPECT_TRUE(json_prefix_ok(r.text, &complete)) << r.text;
      if (r.stop_reason == "stop") {
        EXPECT_TRUE(complete) << r.text;
        nlohmann::json j;
        ASSERT_NO_THROW(j = nlohmann::json::parse(r.text)) << r.text;
        EXPECT_TRUE(j.is_object());
      } else {
        EXPECT_EQ(r.stop_reason, "length") << r.text;
      }
      if (close_early) {
        EXPECT_EQ(r.stop_reason, "stop") << r.text;
      }
    }
  }
}

}  // namespace
