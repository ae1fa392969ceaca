// The training pipeline of models/longctx-fot-tiny (tools/train/, docs/TRAINING.md):
// a few CPU training steps of a tiny configuration, exported in Hugging Face format, must give
// the same logits in longctx as in the PyTorch training forward -- otherwise a passkey score
// measured with longctx would say nothing about what was trained. Skipped (not failed) where
// Debian's python3-torch is missing; the shipped model's passkey check needs only longctx.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "testutil.h"

namespace fs = std::filesystem;
using lcx::test::bin_dir;
using lcx::test::run_cmd;
using lcx::test::tmp_dir;

namespace {

// The repository root: this file is tests/test_train.cpp.
std::string repo_dir() { return fs::path(__FILE__).parent_path().parent_path().string(); }

bool have_torch() {
  return run_cmd("/usr/bin/python3 -c 'import torch, sentencepiece, numpy' >/dev/null 2>&1") == 0;
}

std::string shipped_model() { return repo_dir() + "/models/longctx-fot-tiny"; }

}  // namespace

TEST(Train, SmokeStepsExportAndMatchLongctx) {
  if (!have_torch()) GTEST_SKIP() << "python3-torch not installed (scripts/setup.sh installs it)";
  const std::string out = tmp_dir() + "/smoke_model";
  const std::string cmd = "cd '" + repo_dir() + "' && /usr/bin/python3 tools/train/train.py --smoke --threads 1 --out '" +
                          out + "' --longctx '" + bin_dir() + "/longctx' 2>&1";
  std::string log;
  ASSERT_EQ(run_cmd(cmd, &log), 0) << log;
  EXPECT_NE(log.find("done: 3 steps"), std::string::npos) << log;
  // two checks (prompt only, prompt + cached decode) for the trained and the sharpened model
  size_t n = 0;
  for (size_t p = log.find("argmax agreement 1.000"); p != std::string::npos; p = log.find("argmax agreement", p + 1)) ++n;
  EXPECT_EQ(n, 4u) << log;
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
}

TEST(Train, ShippedModelMatchesTrainingForward) {
  if (!fs::exists(shipped_model() + "/config.json")) GTEST_SKIP() << "no models/longctx-fot-tiny";
  if (!have_torch()) GTEST_SKIP() << "python3-torch not installed";
  const std::string cmd = "cd '" + repo_dir() + "' && /usr/bin/python3 tools/train/train.py --check-only --threads 1 --out '" +
                          shipped_model() + "' --longctx '" + bin_dir() + "/longctx' 2>&1";
  std::string log;
  EXPECT_EQ(run_cmd(cmd, &log), 0) << log;
}
