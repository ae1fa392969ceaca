// Evaluation tools (tools/eval, `longctx passkey|synth|perplexity`): prompt construction to the
// token, fitting to a length, depth placement, scoring, the lengths x depths grid, JSON schema,
// the perplexity protocols, and the CLI end to end on the tiny fixture models (random weights:
// accuracy ~0, which is fine — the mechanics are what is tested).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "longctx/longctx.h"
#include "runtime/error.h"
#include "testutil.h"

// The evaluation code lives in the longctx_tools library (tools/eval), which tests link.
#include "eval/perplexity.h"
#include "eval/retrieval.h"
#include "eval/tasks.h"

namespace lcx::eval {
namespace {

using json = nlohmann::json;

std::string fx() { return test::fixtures_dir(); }
std::string tokenizer_path() { return fx() + "/tokenizer.model"; }

std::shared_ptr<longctx::Model> load_model(const std::string& name) {
  longctx::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path();
  return longctx::Model::load(fx() + "/models/" + name, lo);
}

// One LLaMA and one LongLLaMA model for the whole binary.
const std::shared_ptr<longctx::Model>& llama() {
  static auto m = load_model("llama_mha");
  return m;
}
const std::shared_ptr<longctx::Model>& longllama() {
  static auto m = load_model("longllama_mem");
  return m;
}
TokenizeFn tok() {
  return [](const std::string& t, bool bos) { return llama()->tokenize(t, bos); };
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Prompt construction

TEST(EvalPrompt, PasskeyTextIsLandmarkTemplate) {
  SampleSpec sp;
  sp.depth = 0.5;
  sp.seed = 7;
  // 10 sentences = two whole filler repetitions: one before the key, one after.
  const Prompt p = build_prompt(sp, 10);
  const std::string g = kPasskeyFiller;
  const std::string k = p.answer;
  const std::string want = std::string(kPasskeyTask) + "\n" + g + "\n" + "The pass key is " + k +
                           ". Remember it. " + k + " is the pass key.\n" + g + "\n" +
                           "What is the pass key? The pass key is";
  EXPECT_EQ(p.text, want);
  EXPECT_EQ(p.units_before, 5);
  ASSERT_EQ(k.size(), 5u);  // 5 digits
  EXPECT_GE(std::stoi(k), 10000);
  EXPECT_LT(std::stoi(k), 50000);
  // Zero filler: the lines are still joined with "\n", as "\n".join(lines) with empty garbage.
  const Prompt z = build_prompt(sp, 0);
  EXPECT_EQ(z.text, std::string(kPasskeyTask) + "\n\nThe pass key is " + z.answer + ". Remember it. " + z.answer +
                        " is the pass key.\n\nWhat is the pass key? The pass key is");
  // Cut at a sentence, not a repetition: 7 = one repetition and two sentences.
  SampleSpec s0 = sp;
  s0.depth = 1.0;
  const Prompt p7 = build_prompt(s0, 7);
  EXPECT_EQ(p7.text, std::string(kPasskeyTask) + "\n" + g + " The grass is green. The sky is blue.\nThe pass key is " +
                         p7.answer + ". Remember it. " + p7.answer + " is the pass key.\n\n" + kPasskeyQuestion);
}

TEST(EvalPrompt, KeyDependsOnSeedOnly) {
  SampleSpec a, b;
  a.seed = b.seed = 42;
  b.depth = 0.9;
  EXPECT_EQ(build_prompt(a, 20).answer, build_prompt(b, 3).answer);
  std::set<std::string> keys;
  for (int t = 0; t < 20; ++t) {
    SampleSpec s;
    s.seed = trial_seed(555, 2048, 0.5, t);
    keys.insert(build_prompt(s, 1).answer);
  }
  EXPECT_GE(keys.size(), 18u);  // trials draw different keys
  EXPECT_NE(trial_seed(555, 2048, 0.5, 0), trial_seed(555, 4096, 0.5, 0));
  EXPECT_NE(trial_seed(555, 2048, 0.5, 0), trial_seed(555, 2048, 0.25, 0));
  EXPECT_EQ(trial_seed(555, 2048, 0.5, 3), trial_seed(555, 2048, 0.5, 3));
}

TEST(EvalPrompt, PasskeyFitsLengthMaximallyWithKeyAtDepth) {
  for (int64_t len : {256, 300, 1000}) {
    for (double depth : {0.0, 0.25, 0.5, 1.0}) {
      SampleSpec sp;
      sp.length = len;
      sp.depth = depth;
      sp.seed = trial_seed(1, len, depth, 0);
      const Sample s = make_sample(sp, tok());
      SCOPED_TRACE("length " + std::to_string(len) + " depth " + std::to_string(depth));
      EXPECT_EQ(s.prompt_ids, llama()->tokenize(s.prompt, true));
      EXPECT_LE(int64_t(s.prompt_ids.size()), len);
      // Maximal: one more filler sentence goes over the budget.
      EXPECT_GT(int64_t(llama()->tokenize(build_prompt(sp, s.n_units + 1).text, true).size()), len);
      EXPECT_GE(int64_t(s.prompt_ids.size()), len - 8);  // a sentence is at most ~7 tokens
      // The key sits after round(depth * n) filler sentences.
      EXPECT_EQ(s.units_before, std::llround(depth * double(s.n_units)));
      const size_t info = s.prompt.find("The pass key is " + s.answer + ".");
      ASSERT_NE(info, std::string::npos);
      const std::string before = s.prompt.substr(0, info);
      EXPECT_EQ(int64_t(count_of(before, ".") - count_of(kPasskeyTask, ".")), s.units_before);
      EXPECT_EQ(count_of(s.prompt, s.answer), 2u);  // twice in the information line, nowhere else
      // The answer: its own tokenization without BOS, and exactly what follows the prompt.
      EXPECT_EQ(s.answer_ids, llama()->tokenize(s.answer, false));
      auto joined = s.prompt_ids;
      joined.insert(joined.end(), s.answer_ids.begin(), s.answer_ids.end());
      EXPECT_EQ(llama()->tokenize(s.prompt + " " + s.answer, true), joined);
    }
  }
}

TEST(EvalPrompt, TooShortLengthIsAClearError) {
  for (Task t : {Task::Passkey, Task::Needles, Task::Dict, Task::Kv}) {
    SampleSpec sp;
    sp.task = t;
    sp.length = 20;
    try {
      make_sample(sp, tok());
      FAIL() << "no error for " << task_name(t);
    } catch (const lcx::Error& e) {
      EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
    }
  }
}

TEST(EvalPrompt, NeedlesAllPresentQueriedAtDepth) {
  SampleSpec sp;
  sp.task = Task::Needles;
  sp.length = 600;
  sp.depth = 0.25;
  sp.n_needles = 5;
  sp.seed = 99;
  const Sample s = make_sample(sp, tok());
  EXPECT_LE(s.prompt_ids.size(), 600u);
  EXPECT_EQ(count_of(s.prompt, "The special magic number for "), 5u + 1u);  // 5 needles and the question
  EXPECT_EQ(s.answer.size(), 7u);
  const std::string needle = "The special magic number for " + s.query + " is " + s.answer + ".";
  EXPECT_EQ(count_of(s.prompt, needle), 1u);
  // Filler sentences before the queried needle: round(depth * n).
  const size_t at = s.prompt.find(needle);
  const std::string before = s.prompt.substr(0, at);
  const std::string filler[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                "There and back again."};
  int64_t n_before = 0;
  for (const auto& f : filler) n_before += int64_t(count_of(before, f));
  EXPECT_EQ(n_before, std::llround(0.25 * double(s.n_units)));
  EXPECT_NE(s.prompt.rfind("The special magic number for " + s.query + " mentioned in the provided text is"),
            std::string::npos);
  sp.n_needles = 0;
  EXPECT_THROW(build_prompt(sp, 3), lcx::Error);
}

TEST(EvalPrompt, DictAndKvQueryTheLineAtDepth) {
  for (Task t : {Task::Dict, Task::Kv}) {
    for (double depth : {0.0, 0.5, 1.0}) {
      SampleSpec sp;
      sp.task = t;
      sp.length = 400;
      sp.depth = depth;
      sp.seed = 3;
      const Sample s = make_sample(sp, tok());
      SCOPED_TRACE(std::string(task_name(t)) + " depth " + std::to_string(depth));
      EXPECT_LE(s.prompt_ids.size(), 400u);
      EXPECT_GT(llama()->tokenize(build_prompt(sp, s.n_units + 1).text, true).size(), 400u);
      EXPECT_EQ(s.units_before, std::llround(depth * double(s.n_units - 1)));
      const std::string line = t == Task::Dict ? "\n" + s.query + ": " + s.answer + "\n"
                                               : "\"" + s.query + "\": " + s.answer;
      const size_t at = s.prompt.find(line);
      ASSERT_NE(at, std::string::npos) << s.prompt;
      // Entries before the queried one.
      const std::string before = s.prompt.substr(0, at + 1);
      const std::string sep = t == Task::Dict ? ": " : "\": \"";
      EXPECT_EQ(int64_t(count_of(before, sep)) - (t == Task::Dict ? 1 : 0), s.units_before);  // task line has one ": "
      // Unique keys: the queried key appears once in the list and once in the question.
      EXPECT_EQ(count_of(s.prompt, t == Task::Dict ? s.query + ":" : "\"" + s.query + "\""), 2u);
      auto joined = s.prompt_ids;
      joined.insert(joined.end(), s.answer_ids.begin(), s.answer_ids.end());
      EXPECT_EQ(llama()->tokenize(s.prompt + " " + s.answer, true), joined);
    }
  }
}

TEST(EvalPrompt, FitUnitsFindsLargestFittingCount) {
  int calls = 0;
  auto count = [&](int64_t n) {
    ++calls;
    return 10 + 3 * n + (n % 7 == 0 ? 1 : 0) + n / 50;
  };
  for (int64_t budget : {11, 12, 13, 14, 100, 1000, 12345, 100000}) {
    const int64_t n = fit_units(count, budget, budget);
    ASSERT_GE(n, 0);
    EXPECT_LE(count(n), budget);
    EXPECT_GT(count(n + 1), budget) << budget;
  }
  EXPECT_EQ(fit_units(count, 10, 10), -1);  // count(0) = 11
  EXPECT_EQ(fit_units([](int64_t n) { return n; }, 100, 40), 40);  // capped by max_units
  calls = 0;
  fit_units(count, 100000, 100000);
  EXPECT_LT(calls, 20);  // interpolation, not a linear scan
}

TEST(EvalPrompt, ParseLengthsAndDepths) {
  EXPECT_EQ(parse_lengths("2k,4k,8192, 1m"), (std::vector<int64_t>{2048, 4096, 8192, 1048576}));
  EXPECT_EQ(parse_lengths("256k"), (std::vector<int64_t>{262144}));
  for (const char* bad : {"", "abc", "0", "-5", "2x", "1.5k", "k", "2k,,x", "999999999999"})
    EXPECT_THROW(parse_lengths(bad), lcx::Error) << bad;
  EXPECT_EQ(parse_depths("0,0.25,0.5,0.75,1"), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  for (const char* bad : {"", "1.5", "-0.1", "x", "0.5x", "nan"}) EXPECT_THROW(parse_depths(bad), lcx::Error) << bad;
  EXPECT_EQ(parse_task("kv"), Task::Kv);
  EXPECT_THROW(parse_task("nope"), lcx::Error);
}

TEST(EvalPrompt, RngIsPortableAndInRange) {
  Rng a(123), b(123);
  for (int i = 0; i < 100; ++i) {
    const int64_t x = a.uniform(10000, 49999);
    EXPECT_EQ(x, b.uniform(10000, 49999));
    EXPECT_GE(x, 10000);
    EXPECT_LE(x, 49999);
    const double u = a.unit();
    b.unit();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  // splitmix64's published first output for seed 0.
  EXPECT_EQ(Rng(0).next(), 0xE220A8397B1DCDAFull);
}

// ---------------------------------------------------------------------------------------------
// Scoring and the grid

TEST(EvalGrid, ExactMatch) {
  EXPECT_TRUE(exact_match({29871, 29896}, {29871, 29896}));
  EXPECT_FALSE(exact_match({29871, 29897}, {29871, 29896}));
  EXPECT_FALSE(exact_match({29871}, {29871, 29896}));
  EXPECT_FALSE(exact_match({}, {}));
}

TEST(EvalGrid, OracleScoresOneAndJsonSchema) {
  GridConfig cfg;
  cfg.lengths = {200, 300};
  cfg.depths = {0, 1};
  cfg.trials = 3;
  // An oracle that knows the answer (reads the key from the prompt) only when the key is in
  // the first half of the prompt: depth 0 correct, depth 1 wrong.
  auto detok = [](const std::vector<int32_t>& ids) { return llama()->detokenize(ids); };
  auto answer = [&](const std::vector<int32_t>& ids, int32_t n) {
    const std::string text = llama()->detokenize(ids);
    const size_t at = text.find("The pass key is ");
    if (at > text.size() / 2) return std::vector<int32_t>(size_t(n), 0);
    const std::string key = text.substr(at + 16, 5);
    auto want = llama()->tokenize(key, false);
    EXPECT_EQ(int32_t(want.size()), n);
    return want;
  };
  int called = 0;
  const auto cells = run_grid(cfg, tok(), answer, detok, [&](const Cell&) { ++called; });
  ASSERT_EQ(cells.size(), 4u);
  EXPECT_EQ(called, 4);
  for (const auto& c : cells) {
    EXPECT_EQ(c.trials, 3);
    EXPECT_EQ(c.accuracy(), c.depth == 0 ? 1.0 : 0.0) << c.length << " " << c.depth;
    EXPECT_LE(c.mean_prompt_tokens(), double(c.length));
  }
  EXPECT_EQ(cells[0].length, 200);
  EXPECT_EQ(cells[1].depth, 1.0);
  const std::string table = format_grid(cfg, cells);
  EXPECT_NE(table.find("passkey accuracy (3 trials per cell, seed 555)"), std::string::npos) << table;
  EXPECT_NE(table.find("    mean         |    1.00    0.00 |  0.50"), std::string::npos) << table;

  const json j = grid_json(cells, {{"model", "m"}, {"seed", 555}});
  ASSERT_TRUE(j.contains("results") && j.contains("settings"));
  EXPECT_EQ(j["settings"]["model"], "m");
  ASSERT_EQ(j["results"].size(), 4u);
  for (const auto& r : j["results"]) {
    for (const char* k : {"length", "depth", "trials", "accuracy"}) EXPECT_TRUE(r.contains(k)) << k;
    EXPECT_TRUE(r["length"].is_number_integer());
    EXPECT_TRUE(r["depth"].is_number());
    EXPECT_EQ(r["samples"].size(), 3u);
    EXPECT_EQ(r["samples"][0]["correct"].get<bool>(), r["depth"].get<double>() == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Perplexity

TEST(EvalPerplexity, StrideWindowsFollowHuggingFace) {
  const auto w = stride_windows(10, 4, 2);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].begin, 0); EXPECT_EQ(w[0].end, 4); EXPECT_EQ(w[0].score_from, 1);
  EXPECT_EQ(w[1].begin, 2); EXPECT_EQ(w[1].end, 6); EXPECT_EQ(w[1].score_from, 4);
  EXPECT_EQ(w[3].begin, 6); EXPECT_EQ(w[3].end, 10); EXPECT_EQ(w[3].score_from, 8);
  // Every token but the first is scored exactly once, for any ctx/stride; with stride == ctx
  // the windows do not overlap and, as in the reference loop, each window's first token has
  // no prediction.
  for (int64_t n : {2, 7, 64, 100})
    for (int64_t ctx : {2, 5, 16})
      for (int64_t stride = 1; stride <= ctx; ++stride) {
        std::vector<int> seen(size_t(n), 0);
        for (const auto& x : stride_windows(n, ctx, stride)) {
          EXPECT_LE(x.end - x.begin, ctx);
          EXPECT_GE(x.score_from - x.begin, std::min<int64_t>(ctx - stride, x.score_from));
          for (int64_t p = x.score_from; p < x.end; ++p) seen[size_t(p)]++;
        }
        for (int64_t p = 1; p < n; ++p)
          EXPECT_EQ(seen[size_t(p)], stride == ctx && p % ctx == 0 ? 0 : 1) << n << " " << ctx << " " << stride;
      }
  EXPECT_THROW(stride_windows(10, 4, 5), lcx::Error);
  EXPECT_THROW(stride_windows(10, 1, 1), lcx::Error);
}

TEST(EvalPerplexity, TokenNllAndBuckets) {
  const float l[3] = {1.0f, 2.0f, 3.0f};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(token_nll(l, 3, 0), lse - 1.0, 1e-12);
  EXPECT_NEAR(token_nll(l, 3, 2), lse - 3.0, 1e-12);
  EXPECT_THROW(token_nll(l, 3, 3), lcx::Error);
  const auto b = position_buckets(5000);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].end, 1024);
  EXPECT_EQ(b[2].begin, 2048);
  EXPECT_EQ(b[2].end, 4096);
  EXPECT_EQ(b[3].end, 5000);
}

std::vector<int32_t> text_ids(const longctx::Model& m, int64_t n) {
  std::string t;
  for (int i = 0; int64_t(m.tokenize(t, true).size()) < n; ++i)
    t += "Sentence " + std::to_string(i) + " tells of rivers, hills and the old mill by the bridge. ";
  auto ids = m.tokenize(t, true);
  ids.resize(size_t(n));
  return ids;
}

// Reference NLLs from one feed with all logits.
std::vector<double> direct_nll(const std::shared_ptr<longctx::Model>& m, const std::vector<int32_t>& ids) {
  longctx::Session s(m);
  std::vector<float> logits;
  s.feed(ids, &logits);
  std::vector<double> out;
  for (size_t p = 1; p < ids.size(); ++p) out.push_back(token_nll(logits.data() + (p - 1) * m->n_vocab(), m->n_vocab(), ids[p]));
  return out;
}

TEST(EvalPerplexity, FotStreamMatchesWholeInputForward) {
  // longllama_mem: window 32, last_context_length 16. For L = 2*32 + 16 the reference's single
  // forward is windows [0,32), [32,64) into memory, then [64,80) local: exactly what streaming
  // window-aligned chunks produces, so the NLLs must agree.
  const auto& m = longllama();
  const auto ids = text_ids(*m, 80);
  const auto ref = direct_nll(m, ids);
  double ref_sum = 0;
  for (double x : ref) ref_sum += x;
  for (int64_t chunk : {16, 5, 3}) {
    longctx::Session s(m);
    PplOptions o;
    o.mode = PplMode::Stream;
    o.chunk = chunk;
    o.align = 32;
    const auto r = perplexity(s, ids, m->n_vocab(), o);
    EXPECT_EQ(r.n_scored, 79);
    EXPECT_NEAR(r.nll_sum, ref_sum, 1e-3 * 79) << chunk;
    EXPECT_EQ(r.buckets.size(), 1u);
    EXPECT_EQ(r.buckets[0].n, 79);
  }
}

TEST(EvalPerplexity, LlamaWindowsMatchDirectComputation) {
  const auto& m = llama();
  const auto ids = text_ids(*m, 70);
  // ctx >= n: one window, same as one forward.
  {
    longctx::Session s(m);
    PplOptions o;
    o.ctx = 100;
    o.stride = 50;
    o.chunk = 7;
    const auto r = perplexity(s, ids, m->n_vocab(), o);
    double want = 0;
    for (double x : direct_nll(m, ids)) want += x;
    EXPECT_EQ(r.n_windows, 1);
    EXPECT_NEAR(r.nll_sum, want, 1e-4 * 69);
    PplOptions st;
    st.mode = PplMode::Stream;
    st.chunk = 9;
    longctx::Session s2(m);
    EXPECT_NEAR(perplexity(s2, ids, m->n_vocab(), st).nll_sum, want, 1e-4 * 69);
  }
  // Strided: each window recomputed from scratch.
  longctx::Session s(m);
  PplOptions o;
  o.ctx = 32;
  o.stride = 12;
  o.chunk = 5;
  const auto r = perplexity(s, ids, m->n_vocab(), o);
  double want = 0;
  int64_t n = 0;
  for (const auto& w : stride_windows(70, 32, 12)) {
    const auto nll = direct_nll(m, std::vector<int32_t>(ids.begin() + w.begin, ids.begin() + w.end));
    for (int64_t p = w.score_from; p < w.end; ++p, ++n) want += nll[size_t(p - w.begin - 1)];
  }
  EXPECT_EQ(r.n_scored, 69);
  EXPECT_EQ(n, 69);
  EXPECT_NEAR(r.nll_sum, want, 1e-4 * 69);
  const json j = ppl_json(r, {{"mode", "window"}});
  for (const char* k : {"perplexity", "nll", "tokens", "scored", "buckets", "settings"}) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(want / 69), 1e-3 * std::exp(want / 69));
  EXPECT_NE(format_ppl(r).find("0-70"), std::string::npos) << format_ppl(r);
}

// ---------------------------------------------------------------------------------------------
// The CLI

std::string cli() { return test::bin_dir() + "/longctx"; }
std::string model_flags(const std::string& name) {
  return " -m " + fx() + "/models/" + name + " --tokenizer " + tokenizer_path();
}

TEST(EvalCli, PasskeyEndToEndWithJson) {
  const std::string out = test::tmp_dir() + "/pk.json";
  std::string text;
  ASSERT_EQ(test::run_cmd(cli() + " passkey" + model_flags("llama_mha") +
                              " --lengths 128,200 --depths 0,1 --trials 2 --seed 9 --json " + out + " 2>/dev/null",
                          &text),
            0);
  EXPECT_NE(text.find("passkey accuracy (2 trials per cell, seed 9)"), std::string::npos) << text;
  const json j = json::parse(test::read_file(out));
  ASSERT_EQ(j["results"].size(), 4u);
  for (const auto& r : j["results"]) {
    EXPECT_EQ(r["trials"], 2);
    EXPECT_GE(r["accuracy"].get<double>(), 0.0);
    EXPECT_LE(r["accuracy"].get<double>(), 1.0);
    EXPECT_LE(r["mean_prompt_tokens"].get<double>(), r["length"].get<double>());
  }
  const json& s = j["settings"];
  EXPECT_EQ(s["task"], "passkey");
  EXPECT_EQ(s["seed"], 9);
  EXPECT_EQ(s["trials"], 2);
  EXPECT_EQ(s["lengths"], json({128, 200}));
  EXPECT_EQ(s["architecture"], "llama");
  EXPECT_TRUE(s["model_info"].contains("rope"));
}

TEST(EvalCli, SynthTasksAndOverridesInSettings) {
  for (const char* task : {"needles", "dict", "kv"}) {
    const std::string out = test::tmp_dir() + "/synth_" + task + ".json";
    ASSERT_EQ(test::run_cmd(cli() + " synth --task " + task + model_flags("longllama_mem") +
                            " --lengths 160 --depths 0.5 --trials 1 --last-context-length 8 --mem-topk 4 --json " +
                            out + " >/dev/null 2>&1"),
              0)
        << task;
    const json j = json::parse(test::read_file(out));
    EXPECT_EQ(j["settings"]["task"], task);
    EXPECT_EQ(j["settings"]["architecture"], "longllama");
    EXPECT_EQ(j["settings"]["overrides"], json::parse(R"([["--last-context-length","8"]])"));
    EXPECT_EQ(j["settings"]["session"]["mem_topk"], 4);
    EXPECT_NE(j["settings"]["model_info"]["fot memory"].get<std::string>().find("last_context_length 8"),
              std::string::npos);
    ASSERT_EQ(j["results"].size(), 1u);
  }
}

TEST(EvalCli, PerplexityEndToEnd) {
  const std::string txt = test::tmp_dir() + "/ppl.txt", out = test::tmp_dir() + "/ppl.json";
  {
    std::string t;
    for (int i = 0; i < 40; ++i) t += "Line " + std::to_string(i) + ": the mill by the river turns slowly.\n";
    FILE* f = std::fopen(txt.c_str(), "w");
    std::fputs(t.c_str(), f);
    std::fclose(f);
  }
  std::string text;
  ASSERT_EQ(test::run_cmd(cli() + " perplexity" + model_flags("longllama_mem") + " -f " + txt + " --json " + out +
                              " 2>/dev/null",
                          &text),
            0);
  EXPECT_NE(text.find("perplexity "), std::string::npos) << text;
  const json j = json::parse(test::read_file(out));
  EXPECT_EQ(j["settings"]["mode"], "stream");
  EXPECT_EQ(j["settings"]["window"], 32);
  EXPECT_EQ(j["scored"].get<int64_t>() + 1, j["tokens"].get<int64_t>());
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  ASSERT_EQ(test::run_cmd(cli() + " perplexity" + model_flags("llama_mha") + " -f " + txt +
                              " --ctx 48 --stride 16 --max-tokens 100 --json " + out + " 2>/dev/null",
                          &text),
            0);
  const json w = json::parse(test::read_file(out));
  EXPECT_EQ(w["settings"]["mode"], "window");
  EXPECT_EQ(w["tokens"], 100);
  EXPECT_EQ(w["scored"], 99);
}

TEST(EvalCli, ErrorsAreReported) {
  struct Case {
    std::string args, message;
  };
  const std::string m = model_flags("llama_mha");
  const std::string txt = test::tmp_dir() + "/err.txt";
  {
    FILE* f = std::fopen(txt.c_str(), "w");
    std::fputs("A short text of a dozen or so tokens for the error cases.\n", f);
    std::fclose(f);
  }
  const Case cases[] = {
      {"passkey" + m + " --lengths 2k,abc", "--lengths: 'abc'"},
      {"passkey" + m + " --lengths 0", "--lengths: '0'"},
      {"passkey" + m + " --depths 2", "--depths: '2'"},
      {"passkey" + m + " --lengths 16", "too short"},
      {"passkey" + m + " --trials 0", "--trials"},
      {"passkey" + m + " --plot out.jpg", ".png"},
      {"passkey" + m + " --json /nonexistent/dir/r.json", "directory '/nonexistent/dir' does not exist"},
      {"passkey" + m + " --lengths 128,256 -c 200", "--lengths 256 does not fit -c/--ctx-size 200"},
      {"passkey --lengths 2k", "needs --model"},
      {"passkey" + m + " --bogus 1", "unknown option '--bogus'"},
      {"synth" + m, "needs --task"},
      {"synth" + m + " --task bogus", "unknown task 'bogus'"},
      {"synth" + m + " --task kv --needles 3", "--needles only applies"},
      {"perplexity" + m + " -f /nonexistent/file.txt", "cannot open '/nonexistent/file.txt'"},
      {"perplexity" + m, "needs --file"},
      {"perplexity" + m + " -f " + txt + " --mode bogus", "--mode must be"},
      {"perplexity" + m + " -f " + txt + " --ctx 8 --stride 9", "--stride"},
      {"perplexity" + m + " -f " + txt + " --mode stream --ctx 8", "--mode window only"},
  };
  for (const auto& c : cases) {
    std::string text;
    EXPECT_NE(test::run_cmd(cli() + " " + c.args + " 2>&1", &text), 0) << c.args;
    EXPECT_NE(text.find(c.message), std::string::npos) << c.args << "\n" << text;
    EXPECT_EQ(text.find("not implemented"), std::string::npos);
  }
  for (const char* cmd : {"passkey", "synth", "perplexity"}) {
    std::string text;
    EXPECT_EQ(test::run_cmd(cli() + " " + cmd + " --help", &text), 0);
    EXPECT_NE(text.find("usage: longctx"), std::string::npos);
  }
}

TEST(EvalCli, PlotWritesPng) {
  if (test::run_cmd("/usr/bin/python3 -c 'import matplotlib' 2>/dev/null") != 0)
    GTEST_SKIP() << "python3-matplotlib not installed (scripts/setup.sh installs it)";
  const std::string png = test::tmp_dir() + "/pk.png";
  ASSERT_EQ(test::run_cmd(cli() + " passkey" + model_flags("llama_mha") +
                          " --lengths 128,160 --depths 0,0.5,1 --trials 1 --plot " + png + " >/dev/null 2>&1"),
            0);
  const std::string data = test::read_file(png);
  ASSERT_GT(data.size(), 8u);
  EXPECT_EQ(data.substr(1, 3), "PNG");
}

}  // namespace
}  // namespace lcx::eval
