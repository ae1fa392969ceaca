#include "synthetic_model.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "model/tokenizer.h"
#include "model/weights.h"

namespace lcx::test {

std::unique_ptr<Model> synthetic_model(const SyntheticOptions& opt) {
  auto m = std::make_unique<Model>();
  ModelConfig& c = m->config;
  c.arch = Arch::LongLlama;
  c.n_vocab = opt.byte_tokens ? 40 + 256 : 40;
  c.n_embd = opt.n_embd;
  c.n_ff = 64;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim = 8;
  c.n_ctx_train = 32;
  c.rope.head_dim = 8;
  c.rope.max_pos = 32;
  c.rope.type = RopeScaling::Yarn;
  c.rope.factor = 4.0f;
  c.rope.orig_ctx = 16;
  c.rope.attention_factor = 1.5f;
  c.mem.layers = {1};
  c.mem.positionals = false;
  c.mem.dtype = DType::F16;
  c.mem.last_context_length = 8;
  c.mem.attention_grouping_groups = 1;
  c.mem.attention_grouping_size = 4;
  c.validate();
  m->path = opt.path;
  std::mt19937 rng(opt.seed);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  for (TensorSlot& s : tensor_slots(c, m->weights)) {
    if (s.optional && c.tie_embeddings) continue;
    std::vector<float> f(size_t(s.shape.size() == 1 ? s.shape[0] : s.shape[0] * s.shape[1]));
    for (auto& x : f) x = (s.is_norm ? 1.0f : 0.0f) + nd(rng);
    std::vector<uint8_t> bytes(f.size() * 4);
    std::memcpy(bytes.data(), f.data(), bytes.size());
    s.dst->dtype = DType::F32;
    s.dst->shape = s.shape;
    s.dst->nbytes = bytes.size();
    s.dst->data = m->weights.own(std::move(bytes));
  }
  SpmVocab v;
  for (int i = 0; i < 40; ++i) {
    v.pieces.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "\xe2\x96\x81p" + std::to_string(i));
    v.scores.push_back(-float(i));
    v.types.push_back(i == 0 ? TokenType::Unknown : i < 3 ? TokenType::Control : TokenType::Normal);
  }
  if (opt.byte_tokens) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      v.pieces.push_back(name);
      v.scores.push_back(0.0f);
      v.types.push_back(TokenType::Byte);
    }
  }
  m->tokenizer = make_vocab_tokenizer(std::move(v));
  return m;
}

}  // namespace lcx::test
