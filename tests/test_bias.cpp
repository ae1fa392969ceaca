// LLaMA checkpoints with attention_bias / mlp_bias (transformers' LlamaConfig): every Linear of
// the attention (q, k, v, o) or of the MLP (gate, up, down) adds its bias after the matmul.
// The fixtures have no such model, so the tests build them from llama_gqa's weights and check
// the semantics through identities that hold exactly in real arithmetic:
//   * softmax weights sum to 1, so a v bias b_v adds b_v to every head's attention output, and
//     the o projection turns that into W_o b_v: a v bias equals an o bias of W_o b_v;
//   * with W_gate = W_up = 0 the MLP outputs W_down (silu(b_gate) * b_up) + b_down whatever its
//     input, which an o bias of that constant reproduces;
//   * zero biases change nothing.
// q/k biases go through RoPE (no identity); they are checked against an independent numpy
// reference (tools/bias_reference.py) and through the GGUF round trip (their rows permuted like
// the q/k weight rows).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "runtime/error.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

fs::path fixture_model(const std::string& name) { return fs::path(fixtures_dir()) / "models" / name; }

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
using Tensors = std::map<std::string, Tensor>;

Tensors read_fixture(const std::string& name) {
  auto st = lcx::open_safetensors((fixture_model(name) / "model.safetensors").string());
  Tensors out;
  for (const auto& [n, v] : st.tensors) {
    Tensor t{v.shape, std::vector<float>(size_t(v.numel()))};
    lcx::kernels::dequantize_row(v.dtype, v.data, t.data.data(), v.numel());
    out[n] = std::move(t);
  }
  return out;
}

// A model directory: the fixture's config with the bias flags set, and these tensors (F32).
fs::path write_model(const std::string& tag, const Tensors& ts, bool attn_bias, bool mlp_bias) {
  const fs::path d = fs::path(tmp_dir()) / ("bias_" + tag);
  fs::remove_all(d);
  fs::create_directories(d);
  std::ifstream ci(fixture_model("llama_gqa") / "config.json");
  nlohmann::json cfg = nlohmann::json::parse(ci);
  cfg["attention_bias"] = attn_bias;
  cfg["mlp_bias"] = mlp_bias;
  std::ofstream(d / "config.json") << cfg.dump(2);
  nlohmann::json header;
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, t] : ts) {
    const size_t bytes = t.data.size() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(reinterpret_cast<const char*>(t.data.data()), bytes);
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string out(8, '\0');
  for (int b = 0; b < 8; ++b) out[size_t(b)] = char((uint64_t(h.size()) >> (8 * b)) & 0xff);
  std::ofstream(d / "model.safetensors", std::ios::binary) << out << h << data;
  fs::copy_file(fs::path(fixtures_dir()) / "tokenizer.model", d / "tokenizer.model");
  return d;
}

// Zero biases for every Linear the flags give bias to (HF names, HF shapes).
void add_zero_biases(Tensors& ts, const lcx::ModelConfig& c, bool attn, bool mlp) {
  const int64_t q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
  for (int64_t il = 0; il < c.n_layer; ++il) {
    const std::string p = "model.layers." + std::to_string(il) + ".";
    const auto zero = [&](const std::string& n, int64_t len) { ts[p + n] = {{len}, std::vector<float>(size_t(len))}; };
    if (attn) {
      zero("self_attn.q_proj.bias", q_dim);
      zero("self_attn.k_proj.bias", kv_dim);
      zero("self_attn.v_proj.bias", kv_dim);
      zero("self_attn.o_proj.bias", c.n_embd);
    }
    if (mlp) {
      zero("mlp.gate_proj.bias", c.n_ff);
      zero("mlp.up_proj.bias", c.n_ff);
      zero("mlp.down_proj.bias", c.n_embd);
    }
  }
}

std::vector<float> logits_of(const fs::path& dir, const std::vector<int32_t>& ids) {
  longctx::Session s(longctx::Model::load(dir.string()));
  std::vector<float> all;
  s.feed(ids, &all);
  return all;
}

float max_abs(const std::vector<float>& v) {
  float a = 0;
  for (float x : v) a = std::max(a, std::fabs(x));
  return a;
}
float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

const std::vector<int32_t> kIds = {1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 2};

class Bias : public testing::Test {
 protected:
  void SetUp() override {
    base_ = read_fixture("llama_gqa");
    cfg_ = lcx::load_model(fixture_model("llama_gqa").string())->config;
  }
  Tensors base_;
  lcx::ModelConfig cfg_;
};

TEST_F(Bias, ConfigFlagsLoadBiasesAndZeroBiasesChangeNothing) {
  Tensors ts = base_;
  add_zero_biases(ts, cfg_, true, true);
  const fs::path d = write_model("zero", ts, true, true);
  auto m = lcx::load_model(d.string());
  EXPECT_TRUE(m->config.attn_bias);
  EXPECT_TRUE(m->config.mlp_bias);
  EXPECT_NE(m->weights.layers[1].bk.data, nullptr);
  EXPECT_NE(m->weights.layers[1].b_down.data, nullptr);
  EXPECT_EQ(logits_of(d, kIds), logits_of(fixture_model("llama_gqa"), kIds));
}

// v bias b_v == o bias W_o b_v (see the top of the file).
TEST_F(Bias, VBiasEqualsOBias) {
  const int64_t kv_dim = cfg_.n_head_kv * cfg_.head_dim, q_dim = cfg_.n_head * cfg_.head_dim;
  const int64_t group = cfg_.n_head / cfg_.n_head_kv;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  Tensors tv = base_, to = base_;
  add_zero_biases(tv, cfg_, true, false);
  add_zero_biases(to, cfg_, true, false);
  for (int64_t il = 0; il < cfg_.n_layer; ++il) {
    const std::string p = "model.layers." + std::to_string(il) + ".";
    std::vector<float>& bv = tv[p + "self_attn.v_proj.bias"].data;
    ASSERT_EQ(bv.size(), size_t(kv_dim));
    for (float& x : bv) x = nd(rng);
    // o bias = W_o [n_embd, q_dim] times b_v broadcast to every query head of its kv group
    const std::vector<float>& wo = base_[p + "self_attn.o_proj.weight"].data;
    std::vector<float>& ob = to[p + "self_attn.o_proj.bias"].data;
    for (int64_t r = 0; r < cfg_.n_embd; ++r) {
      double s = 0;
      for (int64_t c = 0; c < q_dim; ++c) {
        const int64_t kvh = c / cfg_.head_dim / group;
        s += double(wo[size_t(r * q_dim + c)]) * bv[size_t(kvh * cfg_.head_dim + c % cfg_.head_dim)];
      }
      ob[size_t(r)] = float(s);
    }
  }
  const auto lv = logits_of(write_model("v", tv, true, false), kIds);
  const auto lo = logits_of(write_model("o", to, true, false), kIds);
  const auto plain = logits_of(fixture_model("llama_gqa"), kIds);
  const float scale = max_abs(plain);
  EXPECT_GT(max_diff(lv, plain), 0.05f * scale);  // the biases matter
  EXPECT_LT(max_diff(lv, lo), 1e-4f * scale);
}

// With W_gate = W_up = 0 an MLP outputs a constant whatever its input:
// W_down (silu(b_gate) * b_up) + b_down. So (A) random gate/up/down biases equal (B) a down bias
// of that constant alone, and, the MLP's input no longer mattering, (C) an o bias of the same
// constant (added one step earlier into the same residual sum).
TEST_F(Bias, MlpBiasesThroughAConstantMlp) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  Tensors zeroed = base_;
  for (int64_t il = 0; il < cfg_.n_layer; ++il) {
    const std::string p = "model.layers." + std::to_string(il) + ".";
    for (const char* w : {"mlp.gate_proj.weight", "mlp.up_proj.weight"})
      std::fill(zeroed[p + w].data.begin(), zeroed[p + w].data.end(), 0.0f);
  }
  Tensors ta = zeroed, tb = zeroed, tc = zeroed;
  add_zero_biases(ta, cfg_, false, true);
  add_zero_biases(tb, cfg_, false, true);
  add_zero_biases(tc, cfg_, true, false);
  for (int64_t il = 0; il < cfg_.n_layer; ++il) {
    const std::string p = "model.layers." + std::to_string(il) + ".";
    std::vector<float>& g = ta[p + "mlp.gate_proj.bias"].data;
    std::vector<float>& u = ta[p + "mlp.up_proj.bias"].data;
    std::vector<float>& d = ta[p + "mlp.down_proj.bias"].data;
    for (auto* v : {&g, &u, &d})
      for (float& x : *v) x = nd(rng);
    const std::vector<float>& wd = base_[p + "mlp.down_proj.weight"].data;  // [n_embd, n_ff]
    std::vector<float> out(size_t(cfg_.n_embd));
    for (int64_t r = 0; r < cfg_.n_embd; ++r) {
      double s = d[size_t(r)];
      for (int64_t c = 0; c < cfg_.n_ff; ++c) {
        const double gv = g[size_t(c)];
        s += double(wd[size_t(r * cfg_.n_ff + c)]) * (gv / (1.0 + std::exp(-gv))) * u[size_t(c)];
      }
      out[size_t(r)] = float(s);
    }
    tb[p + "mlp.down_proj.bias"].data = out;
    tc[p + "self_attn.o_proj.bias"].data = out;
  }
  const auto la = logits_of(write_model("mlp_a", ta, false, true), kIds);
  const auto lb = logits_of(write_model("mlp_b", tb, false, true), kIds);
  const auto lc = logits_of(write_model("mlp_c", tc, true, false), kIds);
  const auto plain = logits_of(write_model("mlp_plain", zeroed, false, false), kIds);
  const float scale = max_abs(plain);
  EXPECT_GT(max_diff(la, plain), 0.05f * scale);
  EXPECT_LT(max_diff(la, lb), 1e-4f * scale);
  EXPECT_LT(max_diff(lb, lc), 1e-5f * scale);
}

// A GGUF file made from a biased checkpoint carries the biases (q/k permuted like their
// weights' rows, as llama.cpp's converter does), says so by their presence, and gives the same
// logits; a GGUF with only q/k/v biases (no o bias) loads too.
TEST_F(Bias, GgufRoundTripWithEveryBias) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  Tensors ts = base_;
  add_zero_biases(ts, cfg_, true, true);
  for (auto& [name, t] : ts)
    if (name.ends_with(".bias"))
      for (float& x : t.data) x = nd(rng);
  const fs::path d = write_model("all", ts, true, true);
  const auto hf = logits_of(d, kIds);
  EXPECT_GT(max_diff(hf, logits_of(fixture_model("llama_gqa"), kIds)), 0.05f * max_abs(hf));
  auto m = lcx::load_model(d.string());
  const std::string out = tmp_dir() + "/bias_all.gguf";
  lcx::convert_to_gguf(*m, out, lcx::DType::F32);
  auto g = lcx::load_model(out);
  EXPECT_TRUE(g->config.attn_bias);
  EXPECT_TRUE(g->config.mlp_bias);
  EXPECT_LT(max_diff(logits_of(fs::path(out), kIds), hf), 1e-5f * max_abs(hf));
  fs::remove(out);
}

TEST_F(Bias, MissingBiasTensorIsNamed) {
  Tensors ts = base_;
  add_zero_biases(ts, cfg_, true, false);
  ts.erase("model.layers.1.self_attn.k_proj.bias");
  const fs::path d = write_model("missing", ts, true, false);
  try {
    lcx::load_model(d.string());
    ADD_FAILURE() << "accepted";
  } catch (const lcx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.k_proj.bias"), std::string::npos) << e.what();
  }
  // ... and biases a config does not announce are refused, as other unexpected tensors are.
  Tensors extra = base_;
  add_zero_biases(extra, cfg_, false, true);
  try {
    lcx::load_model(write_model("unannounced", extra, false, false).string());
    ADD_FAILURE() << "accepted";
  } catch (const lcx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp"), std::string::npos) << e.what();
  }
}

}  // namespace
