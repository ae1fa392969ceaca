// Golden tests against ../shared/fixtures: every case, through the real CLI (`longctx logits`
// and `longctx generate-ids`), from the Hugging Face directory and from the same model
// converted to GGUF F32. Logits within each case's recommended tolerance, greedy ids exact.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "testutil.h"

using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

struct Case {
  std::string name;
  fs::path dir;
  json j;
};

std::vector<std::string> case_names() {
  std::vector<std::string> out;
  const fs::path manifest = fs::path(fixtures_dir()) / "manifest.json";
  if (!fs::exists(manifest)) return out;
  json m = json::parse(read_file(manifest.string()));
  for (auto it = m["cases"].begin(); it != m["cases"].end(); ++it) out.push_back(it.key());
  return out;
}

Case load_case(const std::string& name) {
  Case c;
  c.name = name;
  c.dir = fs::path(fixtures_dir()) / "cases" / name;
  c.j = json::parse(read_file((c.dir / "case.json").string()));
  return c;
}

std::string join_ids(const std::vector<int>& ids, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);  // appended, not "," + ...: g++ 12 warns (-Wrestrict) on that
  }
  return s;
}

std::string cli() { return bin_dir() + "/longctx"; }

// The model as the test runs it: the HF directory, or a GGUF F32 converted once per model.
std::string model_path(const Case& c, const std::string& format) {
  const fs::path hf = fs::weakly_canonical(c.dir / c.j["model_dir"].get<std::string>());
  if (format == "hf") return hf.string();
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  const fs::path out = fs::path(tmp_dir()) / (hf.filename().string() + ".f32.gguf");
  if (!fs::exists(out)) {
    const std::string tok = (fs::path(fixtures_dir()) / "tokenizer.model").string();
    const std::string cmd = cli() + " convert -m " + hf.string() + " --tokenizer " + tok + " --outtype f32 -o " +
                            out.string() + " 2>&1";
    std::string log;
    EXPECT_EQ(run_cmd(cmd, &log), 0) << cmd << "\n" << log;
  }
  return out.string();
}

// Flags a case needs beyond the model: LongLLaMA's last_context_length (a call argument in
// the reference), and the Dynamic NTK cache mode.
std::string case_flags(const Case& c) {
  std::string f;
  if (c.j["run"].contains("last_context_length"))
    f += " --last-context-length " + std::to_string(c.j["run"]["last_context_length"].get<int>());
  return f;
}

std::vector<float> run_logits(const Case& c, const std::string& model, const std::vector<int>& ids,
                              const std::string& extra) {
  const std::string out = (fs::path(tmp_dir()) / (c.name + "_" + std::to_string(std::hash<std::string>()(model + extra)) + ".f32")).string();
  const std::string cmd = cli() + " logits -m " + model + " --ids " + join_ids(ids, ids.size()) + " --out " + out +
                          case_flags(c) + extra + " 2>&1";
  std::string log;
  EXPECT_EQ(run_cmd(cmd, &log), 0) << cmd << "\n" << log;
  return read_f32(out);
}

std::vector<int> run_generate(const Case& c, const std::string& model, const std::vector<int>& prompt, int n,
                              const std::string& extra) {
  const std::string cmd = cli() + " generate-ids -m " + model + " --ids " + join_ids(prompt, prompt.size()) +
                          " -n " + std::to_string(n) + case_flags(c) + extra + " 2>/dev/null";
  std::string out;
  EXPECT_EQ(run_cmd(cmd, &out), 0) << cmd;
  try {
    return json::parse(out).get<std::vector<int>>();
  } catch (...) {
    ADD_FAILURE() << "bad output from " << cmd << ": " << out;
    return {};
  }
}

constexpr int kVocab = 32000;

// Compares engine logits [rows, kVocab] (row offset `row0`) with a stored output.
void expect_logits(const Case& c, const std::string& output, const std::vector<float>& got, size_t row0,
                   const std::string& what, bool last_row_only = false) {
  const json& o = c.j["outputs"][output];
  const std::vector<float> want = read_f32((c.dir / o["file"].get<std::string>()).string());
  const double tol = c.j["tolerance"]["recommended_abs"].get<double>();
  const auto shape = o["shape"].get<std::vector<size_t>>();
  std::vector<int> cols;
  if (shape.size() == 1) {
    for (int i = 0; i < kVocab; ++i) cols.push_back(i);
  } else {
    const std::string key = output.rfind("gen_step", 0) == 0 ? "gen_vocab_ids" : "vocab_ids";
    cols = (key == "gen_vocab_ids" ? c.j["expected"][key] : c.j[key]).get<std::vector<int>>();
  }
  const size_t rows = shape.size() == 1 ? 1 : shape[0];
  ASSERT_EQ(want.size(), rows * cols.size());
  ASSERT_GE(got.size(), (row0 + rows) * kVocab) << what;
  double worst = 0;
  for (size_t r = last_row_only ? rows - 1 : 0; r < rows; ++r)
    for (size_t j = 0; j < cols.size(); ++j) {
      const double d = std::fabs(double(got[(row0 + r) * kVocab + size_t(cols[j])]) - double(want[r * cols.size() + j]));
      worst = std::max(worst, d);
    }
  EXPECT_LE(worst, tol) << c.name << " " << what << ": max |diff| " << worst << " over " << rows << " rows";
  if (o.contains("argmax_full_vocab") && !last_row_only) {
    const auto am = o["argmax_full_vocab"].get<std::vector<int>>();
    for (size_t r = 0; r < am.size(); ++r) {
      const float* row = got.data() + (row0 + r) * kVocab;
      EXPECT_EQ(int(std::max_element(row, row + kVocab) - row), am[r]) << c.name << " " << what << " row " << r;
    }
  }
  std::printf("[ %s ] %s %s: max |diff| %.3g (tolerance %.0e)\n", c.name.c_str(), what.c_str(), output.c_str(), worst, tol);
}

class FixtureTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(FixtureTest, MatchesReference) {
  const auto& [name, format] = GetParam();
  const Case c = load_case(name);
  const std::string model = model_path(c, format);
  const auto ids = c.j["input_ids"].get<std::vector<int>>();
  const json& run = c.j["run"];
  const bool dynamic = run["kind"] == "dynamic";
  const std::string what = format;

  // Full forward (no KV cache): `logits` and `last_logits`.
  if (c.j["outputs"].contains("logits")) {
    const auto got = run_logits(c, model, ids, "");
    expect_logits(c, "logits", got, 0, what);
    if (c.j["outputs"].contains("last_logits")) expect_logits(c, "last_logits", got, ids.size() - 1, what);
  }
  if (dynamic) {
    const int prefill = run["prefill"].get<int>();
    // transformers' cached behaviour, reproduced on request.
    const auto hf = run_logits(c, model, ids, " --feed " + std::to_string(prefill) + " --rope-dynamic-cache hf");
    expect_logits(c, "logits_cached_incremental", hf, 0, what + " hf-cache");
    // Default (consistent): fed incrementally, each row equals a full recomputation of its
    // prefix; so the last row equals the no-cache reference's last row (the other rows of a
    // full forward use the table for the whole length; gen_step_logits_nocache checks them).
    const auto cons = run_logits(c, model, ids, " --feed " + std::to_string(prefill));
    expect_logits(c, "logits", cons, 0, what + " consistent --feed (last row)", true);
    // A prompt fed in several batches (-b) is still one sequence: every row uses the table of
    // the whole length, as the reference's single forward does.
    const int batch = std::max(1, int(ids.size()) / 3);
    expect_logits(c, "logits", run_logits(c, model, ids, " -b " + std::to_string(batch)), 0,
                  what + " consistent -b " + std::to_string(batch));
    const std::vector<int> prompt(ids.begin(), ids.begin() + prefill);
    const int n_new = run["n_new"].get<int>();
    const auto want_hf = c.j["expected"]["generated_ids"].get<std::vector<int>>();
    const auto want_nc = c.j["expected"]["generated_ids_nocache"].get<std::vector<int>>();
    EXPECT_EQ(run_generate(c, model, prompt, n_new, " --rope-dynamic-cache hf"), want_hf) << what;
    EXPECT_EQ(run_generate(c, model, prompt, n_new, ""), want_nc) << what;
    // Step logits: prompt + generated ids fed incrementally.
    std::vector<int> seq = prompt;
    seq.insert(seq.end(), want_hf.begin(), want_hf.end() - 1);
    expect_logits(c, "gen_step_logits", run_logits(c, model, seq, " --feed " + std::to_string(prefill) + " --rope-dynamic-cache hf"),
                  size_t(prefill - 1), what + " hf-cache");
    if (c.j["outputs"].contains("gen_step_logits_nocache")) {
      std::vector<int> seq2 = prompt;
      seq2.insert(seq2.end(), want_nc.begin(), want_nc.end() - 1);
      expect_logits(c, "gen_step_logits_nocache", run_logits(c, model, seq2, " --feed " + std::to_string(prefill)),
                    size_t(prefill - 1), what + " consistent");
    }
    return;
  }
  if (c.j.contains("expected") && c.j["expected"].contains("generated_ids")) {
    const auto want = c.j["expected"]["generated_ids"].get<std::vector<int>>();
    EXPECT_EQ(run_generate(c, model, ids, int(want.size()), ""), want) << what;
    if (c.j["outputs"].contains("gen_step_logits")) {
      std::vector<int> seq = ids;
      seq.insert(seq.end(), want.begin(), want.end() - 1);
      expect_logits(c, "gen_step_logits", run_logits(c, model, seq, " --feed " + std::to_string(ids.size())),
                    ids.size() - 1, what);
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<FixtureTest::ParamType>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureTest,
                         ::testing::Combine(::testing::ValuesIn(case_names()), ::testing::Values("hf", "gguf")),
                         param_name);

// Quantised conversions: Q8_0 and Q4_0 GGUF against the reference logits of the plain LLaMA
// cases. Bounds: Q8_0 max |diff| < 0.15 and argmax agreement >= 85% of positions (Q8_0 weights
// with int8-quantised activations, as llama.cpp computes them: measured 0.053-0.114); Q4_0 max
// |diff| < 1.0 and the reference argmax within Q4_0's top 10 at >= 50% of positions (measured 64-67%). These tiny
// random models (hidden 32, one quantisation block per row) have top-1/top-2 logit gaps of a
// few hundredths, far below Q4_0's error, so exact argmax agreement is no measure for Q4_0 here.
class QuantTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(QuantTest, BoundedError) {
  const auto& [name, qtype] = GetParam();
  const Case c = load_case(name);
  const fs::path hf = fs::weakly_canonical(c.dir / c.j["model_dir"].get<std::string>());
  const fs::path out = fs::path(tmp_dir()) / (hf.filename().string() + "." + qtype + ".gguf");
  const std::string tok = (fs::path(fixtures_dir()) / "tokenizer.model").string();
  std::string log;
  ASSERT_EQ(run_cmd(cli() + " convert -m " + hf.string() + " --tokenizer " + tok + " --outtype " + qtype + " -o " +
                        out.string() + " 2>&1", &log), 0) << log;
  const auto ids = c.j["input_ids"].get<std::vector<int>>();
  const auto got = run_logits(c, out.string(), ids, "");
  const json& o = c.j["outputs"]["logits"];
  const std::vector<float> want = read_f32((c.dir / o["file"].get<std::string>()).string());
  const auto cols = c.j["vocab_ids"].get<std::vector<int>>();
  const auto am = o["argmax_full_vocab"].get<std::vector<int>>();
  double worst = 0;
  size_t agree = 0, top10 = 0;
  for (size_t r = 0; r < ids.size(); ++r) {
    for (size_t j = 0; j < cols.size(); ++j)
      worst = std::max(worst, double(std::fabs(got[r * kVocab + size_t(cols[j])] - want[r * cols.size() + j])));
    const float* row = got.data() + r * kVocab;
    agree += int(std::max_element(row, row + kVocab) - row) == am[r];
    // rank of the reference argmax among the quantised model's logits
    size_t rank = 0;
    for (int v = 0; v < kVocab; ++v) rank += row[v] > row[am[r]];
    top10 += rank < 10;
  }
  const double frac = double(agree) / double(ids.size()), frac10 = double(top10) / double(ids.size());
  std::printf("[ %s %s ] max |diff| %.3g, argmax agreement %.0f%%, reference argmax in top-10 %.0f%%\n", name.c_str(),
              qtype.c_str(), worst, 100 * frac, 100 * frac10);
  if (qtype == "q8_0") {
    EXPECT_LT(worst, 0.15);
    EXPECT_GE(frac, 0.85);
  } else {
    EXPECT_LT(worst, 1.0);
    EXPECT_GE(frac10, 0.5);
  }
}

INSTANTIATE_TEST_SUITE_P(Quantized, QuantTest,
                         ::testing::Combine(::testing::Values("llama_mha_len64", "llama_gqa_len17", "llama_mha_text"),
                                            ::testing::Values("q8_0", "q4_0")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

TEST(Fixtures, ManifestFound) {
  ASSERT_FALSE(case_names().empty()) << "no fixtures at " << fixtures_dir() << " (set LONGCTX_FIXTURES)";
}

}  // namespace
