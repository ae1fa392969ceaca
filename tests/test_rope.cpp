// RoPE frequencies for every scaling method against values computed independently by
// tools/rope_reference.py (numpy re-expression of transformers v4.49's float32 / float64 mix),
// the fixture configs parsed end to end, rope_apply against a double-precision rotation, the
// CLI overrides and the report/warning helpers.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "formats/hf_config.h"
#include "model/config.h"
#include "model/rope.h"
#include "model/rope_options.h"
#include "runtime/error.h"
#include "testutil.h"

namespace lcx {
namespace {

struct Expected {
  std::vector<float> inv_freq;
  float attn_scale;
};

// Distance in units in the last place between two finite floats of the same sign.
int64_t ulp_diff(float a, float b) {
  return std::llabs(int64_t(std::bit_cast<int32_t>(a)) - int64_t(std::bit_cast<int32_t>(b)));
}

// The reference reproduces transformers' arithmetic step by step, so the tables should be
// bit-identical; one ulp is allowed for libm differences between machines.
void expect_freqs(const RopeFreqs& got, const Expected& want, const char* what) {
  ASSERT_EQ(got.inv_freq.size(), want.inv_freq.size()) << what;
  for (size_t i = 0; i < want.inv_freq.size(); ++i)
    EXPECT_LE(ulp_diff(got.inv_freq[i], want.inv_freq[i]), 1)
        << what << " inv_freq[" << i << "] got " << got.inv_freq[i] << " want " << want.inv_freq[i];
  EXPECT_LE(ulp_diff(got.attn_scale, want.attn_scale), 1) << what << " attn_scale";
}

RopeConfig base_cfg(int64_t head_dim, float theta, int64_t max_pos) {
  RopeConfig c;
  c.head_dim = head_dim;
  c.theta = theta;
  c.max_pos = max_pos;
  return c;
}

// ---- expected values: output of /usr/bin/python3 tools/rope_reference.py ----
const Expected kDefaultD16 = {{0x1p+0f, 0x1.43d136p-2f, 0x1.99999ap-4f, 0x1.030dc6p-5f, 0x1.47ae14p-7f, 0x1.9e7c7p-9f,
                               0x1.0624dep-10f, 0x1.4b96cp-12f}, 0x1p+0f};
const Expected kThetaNtkD8 = {{0x1p+0f, 0x1.99999ap-5f, 0x1.47ae14p-9f, 0x1.0624dep-13f}, 0x1p+0f};
const Expected kLinearD16F4 = {{0x1p-2f, 0x1.43d136p-4f, 0x1.99999ap-6f, 0x1.030dc6p-7f, 0x1.47ae14p-9f, 0x1.9e7c7p-11f,
                                0x1.0624dep-12f, 0x1.4b96cp-14f}, 0x1p+0f};
const Expected kDynSeq20 = {{0x1p+0f, 0x1.99999ap-4f, 0x1.47ae14p-7f, 0x1.0624dep-10f}, 0x1p+0f};
const Expected kDynSeq33 = {{0x1p+0f, 0x1.9167e2p-4f, 0x1.3ab34ep-7f, 0x1.ed7292p-11f}, 0x1p+0f};
const Expected kDynSeq48 = {{0x1p+0f, 0x1.451988p-4f, 0x1.9cd9d6p-8f, 0x1.0624dep-11f}, 0x1p+0f};
const Expected kDynSeq80 = {{0x1p+0f, 0x1.020826p-4f, 0x1.04146ep-8f, 0x1.0624dep-12f}, 0x1p+0f};
const Expected kDynSeq1000 = {{0x1p+0f, 0x1.9f139cp-6f, 0x1.508048p-11f, 0x1.10ccdcp-16f}, 0x1p+0f};
const Expected kYarnD16F4 = {{0x1p+0f, 0x1.94c584p-3f, 0x1.99999ap-6f, 0x1.030dc6p-7f, 0x1.47ae14p-9f, 0x1.9e7c7p-11f,
                              0x1.0624dep-12f, 0x1.4b96cp-14f}, 0x1.237d38p+0f};
const Expected kYarnD64 = {
    {0x1p+0f,        0x1.53c38cp-1f, 0x1.c2ef78p-2f, 0x1.2b3dc6p-2f, 0x1.8d276p-3f,  0x1.078d4p-3f,  0x1.5dc95ap-4f,
     0x1.d03ccep-5f, 0x1.34119p-5f,  0x1.98de92p-6f, 0x1.cf8404p-7f, 0x1.fe260ap-8f, 0x1.0cd638p-8f, 0x1.084c02p-9f,
     0x1.c8021cp-11f, 0x1.175482p-12f, 0x1.72ba42p-13f, 0x1.ec07d4p-14f, 0x1.46831ap-14f, 0x1.b15902p-15f,
     0x1.1f91fp-15f, 0x1.7da9e8p-16f, 0x1.fa8b86p-17f, 0x1.5024d6p-17f, 0x1.be2188p-18f, 0x1.280d96p-18f,
     0x1.88ec2p-19f, 0x1.04be68p-19f, 0x1.5a0f4ep-20f, 0x1.cb4a9ap-21f, 0x1.30c94ep-21f, 0x1.94836p-22f},
    0x1.353bd4p+0f};
const Expected kYarnMscale = {{0x1p+0f, 0x1.94c584p-3f, 0x1.99999ap-6f, 0x1.030dc6p-7f, 0x1.47ae14p-9f, 0x1.9e7c7p-11f,
                               0x1.0624dep-12f, 0x1.4b96cp-14f}, 0x1.edbc42p-1f};
const Expected kLlama3D16 = {{0x1p+0f, 0x1.888f8p-4f, 0x1.99999ap-7f, 0x1.030dc6p-8f, 0x1.47ae14p-10f, 0x1.9e7c7p-12f,
                              0x1.0624dep-13f, 0x1.4b96cp-15f}, 0x1p+0f};
const Expected kLlama3D64 = {
    {0x1p+0f,        0x1.53c38cp-1f, 0x1.c2ef78p-2f, 0x1.2b3dc6p-2f, 0x1.8d276p-3f,  0x1.078d4p-3f,  0x1.5dc95ap-4f,
     0x1.d03ccep-5f, 0x1.34119p-5f,  0x1.98de92p-6f, 0x1.0f5386p-6f, 0x1.681adap-7f, 0x1.ddee9ep-8f, 0x1.3d2804p-8f,
     0x1.a4ee4p-9f,  0x1.67a23ap-10f, 0x1.132ba4p-11f, 0x1.765ba4p-13f, 0x1.46831ap-14f, 0x1.b15902p-15f,
     0x1.1f91fp-15f, 0x1.7da9e8p-16f, 0x1.fa8b86p-17f, 0x1.5024d6p-17f, 0x1.be2188p-18f, 0x1.280d96p-18f,
     0x1.88ec2p-19f, 0x1.04be68p-19f, 0x1.5a0f4ep-20f, 0x1.cb4a9ap-21f, 0x1.30c94ep-21f, 0x1.94836p-22f},
    0x1p+0f};
const Expected kLongShort = {{0x1p+0f, 0x1.47ae14p-4f, 0x1.b4e81cp-8f, 0x1.0624dep-11f}, 0x1.2ee73ep+0f};
const Expected kLongLong = {{0x1p+0f, 0x1.99999ap-5f, 0x1.47ae14p-9f, 0x1.0624dep-13f}, 0x1.2ee73ep+0f};

ModelConfig fixture_config(const std::string& model) {
  const std::string path = test::fixtures_dir() + "/models/" + model + "/config.json";
  return parse_hf_config(test::read_file(path), path);
}

// ---------------------------------------------------------------- methods

TEST(RopeFreq, Default) {
  expect_freqs(rope_frequencies(base_cfg(16, 10000.0f, 32), 5), kDefaultD16, "default d16");
}

TEST(RopeFreq, Linear) {
  RopeConfig c = base_cfg(16, 10000.0f, 32);
  c.type = RopeScaling::Linear;
  c.factor = 4.0f;
  expect_freqs(rope_frequencies(c, 100), kLinearD16F4, "linear");
}

TEST(RopeFreq, DynamicDependsOnSeqLen) {
  RopeConfig c = base_cfg(8, 10000.0f, 32);
  c.type = RopeScaling::Dynamic;
  c.factor = 2.0f;
  expect_freqs(rope_frequencies(c, 0), kDynSeq20, "dynamic seq 0");
  expect_freqs(rope_frequencies(c, 20), kDynSeq20, "dynamic seq 20");
  expect_freqs(rope_frequencies(c, 32), kDynSeq20, "dynamic seq 32 (== max_pos: plain)");
  expect_freqs(rope_frequencies(c, 33), kDynSeq33, "dynamic seq 33");
  expect_freqs(rope_frequencies(c, 48), kDynSeq48, "dynamic seq 48");
  expect_freqs(rope_frequencies(c, 80), kDynSeq80, "dynamic seq 80");
  expect_freqs(rope_frequencies(c, 1000), kDynSeq1000, "dynamic seq 1000");
  // Longer sequences get a larger base: every non-first frequency decreases monotonically.
  float prev = 1.0f;
  for (int64_t s = 33; s < 400; s += 7) {
    const float v = rope_frequencies(c, s).inv_freq[3];
    EXPECT_LT(v, prev) << s;
    prev = v;
  }
}

TEST(RopeFreq, Yarn) {
  RopeConfig c = base_cfg(16, 10000.0f, 32);
  c.type = RopeScaling::Yarn;
  c.factor = 4.0f;
  expect_freqs(rope_frequencies(c, 20), kYarnD16F4, "yarn d16");
  expect_freqs(rope_frequencies(c, 5000), kYarnD16F4, "yarn ignores seq_len");
  // Attention factor 0.1 ln 4 + 1, rounded to float32.
  EXPECT_EQ(rope_frequencies(c, 1).attn_scale, float(0.1 * std::log(4.0) + 1.0));

  RopeConfig big = base_cfg(64, 500000.0f, 4096);
  big.type = RopeScaling::Yarn;
  big.factor = 8.0f;
  big.beta_fast = 16.0f;
  big.beta_slow = 2.0f;
  expect_freqs(rope_frequencies(big, 1), kYarnD64, "yarn d64 betas 16/2");

  RopeConfig ms = c;
  ms.mscale = 0.707f;
  ms.mscale_all_dim = 1.0f;
  expect_freqs(rope_frequencies(ms, 1), kYarnMscale, "yarn mscale/mscale_all_dim");

  RopeConfig given = c;
  given.attention_factor = 1.5f;
  EXPECT_EQ(rope_frequencies(given, 1).attn_scale, 1.5f);

  // orig_ctx (GGUF / --rope-orig-ctx) replaces max_pos in the correction range: same as a
  // config whose max_pos is that value.
  RopeConfig o1 = big, o2 = big;
  o1.max_pos = 32768;
  o1.orig_ctx = 4096;
  EXPECT_EQ(rope_frequencies(o1, 1).inv_freq, rope_frequencies(o2, 1).inv_freq);
}

TEST(RopeFreq, Llama3) {
  RopeConfig c = base_cfg(16, 10000.0f, 256);
  c.type = RopeScaling::Llama3;
  c.factor = 8.0f;
  c.orig_ctx = 32;
  expect_freqs(rope_frequencies(c, 120), kLlama3D16, "llama3 d16");
  RopeConfig big = base_cfg(64, 500000.0f, 131072);
  big.type = RopeScaling::Llama3;
  big.factor = 8.0f;
  big.orig_ctx = 8192;
  expect_freqs(rope_frequencies(big, 1), kLlama3D64, "llama3 d64 (Llama 3.1 shape)");
}

TEST(RopeFreq, LongRopeAlwaysShortByDefault) {
  RopeConfig c = base_cfg(8, 10000.0f, 128);
  c.type = RopeScaling::LongRope;
  c.orig_ctx = 32;
  c.short_factor = {1.0f, 1.25f, 1.5f, 2.0f};
  c.long_factor = {1.0f, 2.0f, 4.0f, 8.0f};
  // transformers v4.49: short_factor at every length.
  for (int64_t s : {1, 20, 32, 33, 64, 1000}) expect_freqs(rope_frequencies(c, s), kLongShort, "longrope v4.49");
  // The switch: long_factor strictly past orig_ctx.
  c.longrope_switch = true;
  expect_freqs(rope_frequencies(c, 32), kLongShort, "longrope switch at orig");
  expect_freqs(rope_frequencies(c, 33), kLongLong, "longrope switch past orig");
  expect_freqs(rope_frequencies(c, 64), kLongLong, "longrope switch 64");
  // attention factor sqrt(1 + ln(128/32) / ln 32)
  EXPECT_EQ(rope_frequencies(c, 1).attn_scale, float(std::sqrt(1.0 + std::log(4.0) / std::log(32.0))));
  // Without original_max_position_embeddings: factor from rope_scaling, orig = max_pos.
  RopeConfig nf = c;
  nf.orig_ctx = 0;
  nf.factor = 1.0f;
  EXPECT_EQ(rope_frequencies(nf, 1).attn_scale, 1.0f);
}

TEST(RopeFreq, NtkAlphaTheta) {
  // The fixture's rope_theta was written by Python as 10000 * 8 ** (8 / 6).
  EXPECT_EQ(rope_ntk_alpha_theta(10000.0, 8.0, 8), 159999.99999999997);
  RopeConfig c = base_cfg(8, float(rope_ntk_alpha_theta(10000.0, 8.0, 8)), 32);
  expect_freqs(rope_frequencies(c, 70), kThetaNtkD8, "ntk alpha theta");
  EXPECT_THROW(rope_ntk_alpha_theta(10000.0, 0.0, 8), Error);
  EXPECT_THROW(rope_ntk_alpha_theta(10000.0, 2.0, 2), Error);
}

// ---------------------------------------------------------------- fixture configs end to end

TEST(RopeFixtures, ConfigsParseToReferenceTables) {
  struct Case {
    const char* model;
    int64_t seq_len;
    const Expected* want;
  };
  const Case cases[] = {
      {"llama_rope_linear", 100, &kLinearD16F4}, {"llama_rope_dynamic", 48, &kDynSeq48},
      {"llama_rope_dynamic", 80, &kDynSeq80},    {"llama_rope_dynamic", 20, &kDynSeq20},
      {"llama_rope_yarn", 96, &kYarnD16F4},      {"llama_rope_llama3", 120, &kLlama3D16},
      {"llama_rope_longrope", 64, &kLongShort},  {"llama_rope_theta", 70, &kThetaNtkD8},
  };
  for (const auto& k : cases) {
    const ModelConfig mc = fixture_config(k.model);
    expect_freqs(rope_frequencies(mc.rope, k.seq_len), *k.want, k.model);
  }
  const ModelConfig lr = fixture_config("llama_rope_longrope");
  EXPECT_EQ(lr.rope.orig_ctx, 32);  // top-level original_max_position_embeddings
  EXPECT_FALSE(lr.rope.longrope_switch);
  const ModelConfig y = fixture_config("llama_rope_yarn");
  EXPECT_EQ(y.rope.orig_ctx, 0);  // v4.49: yarn's original context is max_position_embeddings
  EXPECT_EQ(rope_original_ctx(y.rope), 32);
}

// ---------------------------------------------------------------- rope_apply

TEST(RopeApply, MatchesDoubleRotationAndLayout) {
  RopeConfig c = base_cfg(16, 10000.0f, 32);
  c.type = RopeScaling::Yarn;
  c.factor = 4.0f;
  const RopeFreqs f = rope_frequencies(c, 1);
  const int64_t n_head = 3, hd = 16, half = 8;
  std::vector<float> x(size_t(n_head * hd));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i)) + 0.1f;
  for (int64_t pos : {0, 1, 7, 95, 4000}) {
    std::vector<float> y = x;
    rope_apply(y.data(), n_head, hd, pos, f);
    for (int64_t h = 0; h < n_head; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const float ang = float(pos) * f.inv_freq[size_t(i)];  // float32 angle, as transformers
        const double cs = std::cos(double(ang)) * f.attn_scale, sn = std::sin(double(ang)) * f.attn_scale;
        const double a = x[size_t(h * hd + i)], b = x[size_t(h * hd + i + half)];
        EXPECT_NEAR(y[size_t(h * hd + i)], a * cs - b * sn, 1e-6) << pos << " " << h << " " << i;
        EXPECT_NEAR(y[size_t(h * hd + i + half)], b * cs + a * sn, 1e-6) << pos << " " << h << " " << i;
      }
  }
  // Position 0 only scales.
  std::vector<float> z = x;
  rope_apply(z.data(), n_head, hd, 0, f);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(z[i], x[i] * f.attn_scale);
}

TEST(RopeApply, ScoresDependOnRelativePosition) {
  const RopeFreqs f = rope_frequencies(base_cfg(8, 10000.0f, 32), 0);
  const std::vector<float> q0 = {0.3f, -1.0f, 0.5f, 0.25f, 0.7f, 0.1f, -0.4f, 0.9f};
  const std::vector<float> k0 = {-0.2f, 0.6f, 0.8f, -0.5f, 0.3f, 0.4f, 0.2f, -0.7f};
  auto score = [&](int64_t m, int64_t n) {
    std::vector<float> q = q0, k = k0;
    rope_apply(q.data(), 1, 8, m, f);
    rope_apply(k.data(), 1, 8, n, f);
    double s = 0;
    for (int i = 0; i < 8; ++i) s += double(q[size_t(i)]) * k[size_t(i)];
    return s;
  };
  EXPECT_NEAR(score(10, 3), score(17, 10), 1e-5);
  EXPECT_NEAR(score(5, 5), score(0, 0), 1e-5);
}

// ---------------------------------------------------------------- validation

TEST(RopeValidate, ClearErrors) {
  RopeConfig c = base_cfg(15, 10000.0f, 32);
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  c = base_cfg(16, 10000.0f, 32);
  c.type = RopeScaling::Linear;
  c.factor = 0.0f;
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  c.type = RopeScaling::Llama3;
  c.factor = 8.0f;
  c.low_freq_factor = 4.0f;
  c.high_freq_factor = 4.0f;
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  c = base_cfg(8, 10000.0f, 32);
  c.type = RopeScaling::LongRope;
  c.short_factor = {1, 1, 1};
  c.long_factor = {1, 1, 1, 1};
  try {
    rope_frequencies(c, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("short_factor"), std::string::npos) << e.what();
  }
  c = base_cfg(16, 10000.0f, 32);
  c.type = RopeScaling::Yarn;
  c.factor = 4.0f;
  c.beta_fast = 1.0f;
  c.beta_slow = 32.0f;
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  // YaRN's correction range divides by ln(rope_theta): theta 1 made it infinite and its
  // integer conversion undefined (libFuzzer + UBSan, fuzz_overrides): refused.
  {
    RopeConfig y = base_cfg(16, 1.0f, 32);
    y.type = RopeScaling::Yarn;
    y.factor = 3.0f;
    y.beta_fast = 16.0f;
    y.beta_slow = 2.0f;
    try {
      rope_frequencies(y, 1);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rope_theta"), std::string::npos) << e.what();
    }
    y.theta = 1.5f;  // just above 1: a valid, finite table
    const RopeFreqs f = rope_frequencies(y, 1);
    for (float x : f.inv_freq) EXPECT_TRUE(std::isfinite(x));
  }
  // An attention factor multiplies every score by its square: huge ones overflowed to NaN
  // logits (found by fuzz_overrides), so they are refused.
  c.beta_fast = 32.0f;
  c.beta_slow = 1.0f;
  c.attention_factor = 1.2f;
  EXPECT_NO_THROW(rope_frequencies(c, 1));
  c.attention_factor = 1e30f;
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  c.attention_factor = 0.0f;
  c.factor = 2e31f;  // overflowed the context arithmetic (fuzz_overrides)
  EXPECT_THROW(rope_frequencies(c, 1), Error);
}

// ---------------------------------------------------------------- overrides

TEST(RopeOverridesTest, ParseEveryFlag) {
  RopeOverrides ov;
  EXPECT_FALSE(parse_rope_flag("--ctx-size", "4096", ov));
  EXPECT_FALSE(ov.any());
  EXPECT_TRUE(parse_rope_flag("--rope-scaling", "yarn", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-scale", "4", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-freq-base", "500000", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-ntk-alpha", "2.5", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-orig-ctx", "8192", ov));
  EXPECT_TRUE(parse_rope_flag("--yarn-beta-fast", "16", ov));
  EXPECT_TRUE(parse_rope_flag("--yarn-beta-slow", "2", ov));
  EXPECT_TRUE(parse_rope_flag("--yarn-attn-factor", "1.1", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-low-freq-factor", "1", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-high-freq-factor", "4", ov));
  EXPECT_TRUE(parse_rope_flag("--rope-dynamic-cache", "hf", ov));
  EXPECT_TRUE(parse_rope_flag("--longrope-switch", "on", ov));
  EXPECT_EQ(*ov.type, RopeScaling::Yarn);
  EXPECT_EQ(*ov.factor, 4.0f);
  EXPECT_EQ(*ov.freq_base, 500000.0f);
  EXPECT_EQ(*ov.ntk_alpha, 2.5);
  EXPECT_EQ(*ov.orig_ctx, 8192);
  EXPECT_EQ(*ov.yarn_beta_fast, 16.0f);
  EXPECT_EQ(*ov.yarn_beta_slow, 2.0f);
  EXPECT_EQ(*ov.yarn_attn_factor, 1.1f);
  EXPECT_EQ(*ov.low_freq_factor, 1.0f);
  EXPECT_EQ(*ov.high_freq_factor, 4.0f);
  EXPECT_EQ(*ov.dynamic_mode, DynamicCacheMode::HF);
  EXPECT_TRUE(*ov.longrope_switch);
  EXPECT_TRUE(parse_rope_flag("--rope-dynamic-cache", "consistent", ov));
  EXPECT_EQ(*ov.dynamic_mode, DynamicCacheMode::Consistent);
  EXPECT_TRUE(parse_rope_flag("--longrope-switch", "off", ov));
  EXPECT_FALSE(*ov.longrope_switch);
  for (const char* f : {"--rope-scaling", "--rope-scale", "--longrope-switch"}) EXPECT_TRUE(is_rope_flag(f));
  EXPECT_FALSE(is_rope_flag("--rope"));
  const std::string help = rope_flags_help();
  for (const char* f : {"--rope-scaling", "--rope-scale ", "--rope-freq-base", "--rope-ntk-alpha", "--rope-orig-ctx",
                        "--yarn-beta-fast", "--yarn-beta-slow", "--yarn-attn-factor", "--rope-low-freq-factor",
                        "--rope-high-freq-factor", "--rope-dynamic-cache", "--longrope-switch"})
    EXPECT_NE(help.find(f), std::string::npos) << f;
}

TEST(RopeOverridesTest, ValuesOutsideFloatRangeThrow) {
  RopeOverrides ov;
  EXPECT_THROW(parse_rope_flag("--rope-scale", "1e39", ov), Error);      // inf as float32
  EXPECT_THROW(parse_rope_flag("--yarn-attn-factor", "1e-50", ov), Error);  // 0 as float32
  EXPECT_TRUE(parse_rope_flag("--rope-scale", "3e38", ov));
  // Through the C++ API a value may hold a NUL: "3\0 4" is not 3.
  EXPECT_THROW(parse_rope_flag("--rope-scale", std::string("3\0\0" "4", 4), ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-orig-ctx", std::string("16\0", 3), ov), Error);
}

TEST(RopeOverridesTest, BadValuesThrow) {
  RopeOverrides ov;
  EXPECT_THROW(parse_rope_flag("--rope-scaling", "ntk-by-parts", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-scale", "0", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-scale", "-2", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-scale", "4x", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-scale", "", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-freq-base", "nan", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-orig-ctx", "8192.5", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-orig-ctx", "0", ov), Error);
  EXPECT_THROW(parse_rope_flag("--rope-dynamic-cache", "sometimes", ov), Error);
  EXPECT_THROW(parse_rope_flag("--longrope-switch", "maybe", ov), Error);
  try {
    parse_rope_flag("--rope-scale", "abc", ov);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--rope-scale"), std::string::npos);
  }
}

TEST(RopeOverridesTest, ApplyPrecedenceAndChecks) {
  // Command line beats config.json: yarn model switched to linear with a new factor.
  RopeConfig c = fixture_config("llama_rope_yarn").rope;
  RopeOverrides ov;
  ov.type = RopeScaling::Linear;
  ov.factor = 4.0f;
  apply_rope_overrides(c, ov);
  expect_freqs(rope_frequencies(c, 1), kLinearD16F4, "override to linear");

  // Switching method keeps the model's factor when no --rope-scale is given.
  c = fixture_config("llama_rope_yarn").rope;
  ov = {};
  ov.type = RopeScaling::Linear;
  apply_rope_overrides(c, ov);
  EXPECT_EQ(c.factor, 4.0f);

  // A plain model needs a factor for a scaling method.
  c = fixture_config("llama_rope_theta").rope;
  ov = {};
  ov.type = RopeScaling::Yarn;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);
  ov.factor = 4.0f;
  apply_rope_overrides(c, ov);
  EXPECT_EQ(c.type, RopeScaling::Yarn);

  // --rope-scale without any method.
  c = fixture_config("llama_rope_theta").rope;
  ov = {};
  ov.factor = 2.0f;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);

  // NTK alpha applies on top of the (overridden) base.
  c = fixture_config("llama_mha").rope;
  ov = {};
  ov.freq_base = 10000.0f;
  ov.ntk_alpha = 8.0;
  ASSERT_EQ(c.head_dim, 8) << "test assumes head_dim 8";
  apply_rope_overrides(c, ov);
  EXPECT_EQ(c.theta, 160000.0f);  // float(10000 * 8^(8/6)), the llama_rope_theta fixture

  // Method parameters for a method not in use.
  c = fixture_config("llama_rope_linear").rope;
  ov = {};
  ov.yarn_beta_fast = 16.0f;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);
  ov = {};
  ov.dynamic_mode = DynamicCacheMode::HF;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);
  c = fixture_config("llama_rope_dynamic").rope;
  apply_rope_overrides(c, ov);
  EXPECT_EQ(c.dynamic_mode, DynamicCacheMode::HF);
  ov = {};
  ov.orig_ctx = 16;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);  // dynamic uses max_position_embeddings

  // LongRoPE switch and the llama3 factors.
  c = fixture_config("llama_rope_longrope").rope;
  ov = {};
  ov.longrope_switch = true;
  apply_rope_overrides(c, ov);
  expect_freqs(rope_frequencies(c, 64), kLongLong, "override longrope switch");
  c = fixture_config("llama_rope_yarn").rope;
  ov = {};
  ov.type = RopeScaling::LongRope;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);  // no factor lists
  c = fixture_config("llama_rope_llama3").rope;
  ov = {};
  ov.low_freq_factor = 2.0f;
  ov.high_freq_factor = 2.0f;
  EXPECT_THROW(apply_rope_overrides(c, ov), Error);  // high must exceed low

  // YaRN parameters from the command line reach the table.
  c = base_cfg(64, 500000.0f, 4096);
  ov = {};
  ov.type = RopeScaling::Yarn;
  ov.factor = 8.0f;
  ov.yarn_beta_fast = 16.0f;
  ov.yarn_beta_slow = 2.0f;
  apply_rope_overrides(c, ov);
  expect_freqs(rope_frequencies(c, 1), kYarnD64, "yarn from flags");
}

// ---------------------------------------------------------------- report and warning

TEST(RopeReport, TableAndWarning) {
  const RopeConfig c = fixture_config("llama_rope_yarn").rope;
  const std::string t = rope_table_report(c, 96);
  EXPECT_NE(t.find("type=yarn"), std::string::npos) << t;
  EXPECT_NE(t.find("1.13862944"), std::string::npos) << t;  // 0.1 ln 4 + 1
  EXPECT_NE(t.find("wavelength"), std::string::npos) << t;
  EXPECT_NE(t.find("7,15"), std::string::npos) << t;

  const RopeConfig plain = fixture_config("llama_mha").rope;
  EXPECT_EQ(rope_context_warning(plain, plain.max_pos, plain.max_pos), "");
  const std::string w = rope_context_warning(plain, plain.max_pos, plain.max_pos * 3);
  EXPECT_NE(w.find("RoPE scaling is off"), std::string::npos) << w;
  EXPECT_NE(w.find("--rope-scale 3"), std::string::npos) << w;
  EXPECT_EQ(rope_context_warning(c, c.max_pos, 4 * c.max_pos), "");   // yarn x4 covers it
  EXPECT_NE(rope_context_warning(c, c.max_pos, 5 * c.max_pos), "");
}

}  // namespace
}  // namespace lcx
