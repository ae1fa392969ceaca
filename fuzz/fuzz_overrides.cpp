// Command-line configuration overrides (`--rope-scaling yarn --rope-scale 4 ...`, the LongLLaMA
// --mem-* and --last-context-length flags) applied to a small synthetic LongLLaMA (odd input
// size) or LLaMA model as `longctx run` would. Each line is one flag: its first character picks
// the flag from kFlags (by value modulo the count; 'a' is the first), the rest is the value, so
// mutations change values and combinations rather than spell flag names wrong. A combination the validation accepts must compute: 40 tokens (past the trained
// context of 32, so scaling and memory windows are in play) must give finite logits.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "fuzz.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "synthetic_model.h"

namespace {

const char* const kFlags[] = {"--rope-scaling", "--rope-scale", "--rope-freq-base", "--rope-ntk-alpha",
                              "--rope-orig-ctx", "--yarn-beta-fast", "--yarn-beta-slow", "--yarn-attn-factor",
                              "--rope-low-freq-factor", "--rope-high-freq-factor", "--rope-dynamic-cache",
                              "--longrope-switch", "--last-context-length", "--mem-dtype", "--mem-layers",
                              "--mem-positionals"};
constexpr size_t kNumFlags = sizeof kFlags / sizeof kFlags[0];

struct Models {
  std::string llama = lcx::fuzz::scratch_path("overrides_llama.gguf");
  std::string longllama = lcx::fuzz::scratch_path("overrides_longllama.gguf");
  Models() {
    auto m = lcx::test::synthetic_model({.byte_tokens = true});
    lcx::convert_to_gguf(*m, longllama, lcx::DType::F32);
    m->config.arch = lcx::Arch::Llama;
    m->config.mem = {};
    m->config.rope.type = lcx::RopeScaling::None;
    m->config.rope.factor = 1.0f;
    m->config.validate();
    lcx::convert_to_gguf(*m, llama, lcx::DType::F32);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Models models;
  longctx::LoadOptions lo;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lo.overrides.emplace_back(kFlags[(uint8_t(line[0]) - uint8_t('a')) % kNumFlags], line.substr(1));
  }
  const bool longllama = size % 2 == 1;
  std::shared_ptr<longctx::Model> model;
  try {
    model = longctx::Model::load(longllama ? models.longllama : models.llama, lo);
  } catch (const lcx::Error& e) {
    if (std::getenv("LONGCTX_FUZZ_VERBOSE")) std::fprintf(stderr, "rejected: %s\n", e.what());
    return 0;
  }
  if (std::getenv("LONGCTX_FUZZ_VERBOSE")) std::fprintf(stderr, "accepted\n");
  longctx::SessionOptions so;
  so.n_threads = 1;
  longctx::Session s(model, so);
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(3 + (i * 11) % 290);
  s.feed(ids);
  for (float x : s.logits()) {
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "fuzz_overrides: non-finite logit with accepted overrides:\n%.*s\n", int(size),
                   reinterpret_cast<const char*>(data));
      std::abort();
    }
  }
  return 0;
}
