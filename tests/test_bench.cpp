// `longctx bench` on the tiny fixture model: the JSON carries llama-bench's fields with their
// meanings (one object per test, t/s per repetition = tokens / seconds, mean and sample stddev
// over repetitions), the markdown table has one row per test, and bad flags fail clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;
using json = nlohmann::json;

namespace {

std::string bench(const std::string& args) {
  const std::string model = (fs::path(fixtures_dir()) / "models" / "llama_mha").string();
  return bin_dir() + "/longctx bench -m " + model + " " + args;
}

TEST(Bench, JsonSchema) {
  std::string out;
  ASSERT_EQ(run_cmd(bench("-p 8 -n 4 -d 0,4 -r 2 -t 1 --json"), &out), 0) << out;
  const json j = json::parse(out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 4u);  // (pp8, tg4) x (d0, d4)
  const int64_t want[4][3] = {{8, 0, 0}, {0, 4, 0}, {8, 0, 4}, {0, 4, 4}};
  for (size_t i = 0; i < j.size(); ++i) {
    const json& t = j[i];
    for (const char* k : {"model_filename", "model_type", "model_size", "model_n_params", "backends", "n_batch",
                          "n_threads", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns",
                          "avg_ts", "stddev_ts", "samples_ns", "samples_ts"})
      ASSERT_TRUE(t.contains(k)) << "test " << i << " lacks " << k;
    EXPECT_EQ(t["n_prompt"].get<int64_t>(), want[i][0]);
    EXPECT_EQ(t["n_gen"].get<int64_t>(), want[i][1]);
    EXPECT_EQ(t["n_depth"].get<int64_t>(), want[i][2]);
    EXPECT_EQ(t["n_threads"].get<int>(), 1);
    EXPECT_EQ(t["backends"].get<std::string>(), "CPU");
    EXPECT_GT(t["model_size"].get<uint64_t>(), 0u);
    // llama_mha: vocab 32000, hidden 32, ff 64, 2 layers, untied head.
    EXPECT_EQ(t["model_n_params"].get<uint64_t>(), 2u * 32000 * 32 + 32 + 2 * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32));
    const auto ns = t["samples_ns"].get<std::vector<uint64_t>>();
    const auto ts = t["samples_ts"].get<std::vector<double>>();
    ASSERT_EQ(ns.size(), 2u);
    ASSERT_EQ(ts.size(), 2u);
    const double n_tok = double(want[i][0] + want[i][1]);
    double mean = 0;
    for (size_t r = 0; r < 2; ++r) {
      EXPECT_GT(ns[r], 0u);
      EXPECT_NEAR(ts[r], 1e9 * n_tok / double(ns[r]), 1e-6 * ts[r]);
      mean += ts[r] / 2;
    }
    EXPECT_NEAR(t["avg_ts"].get<double>(), mean, 1e-9 * mean);
    EXPECT_NEAR(t["stddev_ts"].get<double>(), std::abs(ts[0] - ts[1]) / std::sqrt(2.0), 1e-6 * mean);
  }
}

TEST(Bench, MarkdownTable) {
  std::string out;
  ASSERT_EQ(run_cmd(bench("-p 4 -n 2 -d 3 -r 1 -t 1"), &out), 0) << out;
  EXPECT_NE(out.find("| model"), std::string::npos) << out;
  EXPECT_NE(out.find("pp4 @ d3"), std::string::npos) << out;
  EXPECT_NE(out.find("tg2 @ d3"), std::string::npos) << out;
  EXPECT_NE(out.find("CPU"), std::string::npos) << out;
}

TEST(Bench, BadFlagsFail) {
  std::string out;
  EXPECT_NE(run_cmd(bench("-p 8 -r 0 2>&1"), &out), 0);
  EXPECT_NE(out.find("--repetitions"), std::string::npos) << out;
  EXPECT_NE(run_cmd(bench("-p x 2>&1"), &out), 0);
  EXPECT_NE(out.find("--n-prompt"), std::string::npos) << out;
  EXPECT_NE(run_cmd(bench("-p 0 -n 0 2>&1"), &out), 0);
  EXPECT_NE(out.find("nothing to measure"), std::string::npos) << out;
}

// --mem-fill (LongLLaMA): the memory a depth left is repeated to N tokens before the timed part;
// the JSON says so, and models without memory or runs without a depth are refused.
TEST(Bench, MemFill) {
  const std::string fot = (fs::path(fixtures_dir()) / "models" / "longllama_mem").string();
  std::string out;
  ASSERT_EQ(run_cmd(bin_dir() + "/longctx bench -m " + fot + " -p 0 -n 2 -d 160 --mem-fill 5000 -r 1 -t 1 --json", &out),
            0)
      << out;
  const json j = json::parse(out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["n_mem"].get<int64_t>(), 5000);
  EXPECT_EQ(j[0]["n_depth"].get<int64_t>(), 160);
  EXPECT_NE(run_cmd(bin_dir() + "/longctx bench -m " + fot + " -n 2 -p 0 --mem-fill 500 2>&1", &out), 0);
  EXPECT_NE(out.find("give -d"), std::string::npos) << out;
  EXPECT_NE(run_cmd(bench("-n 2 -p 0 -d 8 --mem-fill 500 2>&1"), &out), 0);
  EXPECT_NE(out.find("LongLLaMA"), std::string::npos) << out;
}

}  // namespace
