#include "model/model.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "kernels/ops.h"
#include "runtime/error.h"

namespace lcx {

namespace fs = std::filesystem;

const Tokenizer& Model::tok() const {
  if (!tokenizer)
    fail("model '" + path + "' has no tokenizer (no tokenizer.model or tokenizer.json beside it, or a GGUF "
         "vocabulary longctx cannot read): pass --tokenizer FILE (tokenizer.model or tokenizer.json)");
  return *tokenizer;
}

// Fine-tunes that add tokens to a SentencePiece model (Llama-2 ChatML tunes: <|im_start|>,
// <|im_end|> at 32000, 32001) or pad the embedding matrix have vocab_size above tokenizer.model's
// piece count. transformers appends tokenizer.json's added_tokens (or added_tokens.json); ids
// nobody names become "[PADn]" pieces, as llama.cpp's converter writes them. The result is the
// vocabulary a GGUF of the same checkpoint holds, tokenized the same way (make_vocab_tokenizer).
static std::unique_ptr<Tokenizer> extend_spm_vocab(const fs::path& dir, const Tokenizer& tok, int64_t n_vocab) {
  SpmVocab v = tok.vocab();
  const size_t n_sp = v.pieces.size();
  v.pieces.resize(size_t(n_vocab));
  v.scores.resize(size_t(n_vocab), 0.0f);
  v.types.resize(size_t(n_vocab), TokenType::Unused);
  for (size_t i = n_sp; i < v.pieces.size(); ++i) v.pieces[i] = "[PAD" + std::to_string(i) + "]";
  auto add = [&](const nlohmann::json& id, const nlohmann::json& content, bool special) {
    if (!id.is_number_integer() || !content.is_string()) return;
    const int64_t i = id.get<int64_t>();
    if (i < int64_t(n_sp) || i >= n_vocab) return;  // re-listed base pieces, or beyond the model
    v.pieces[size_t(i)] = content.get<std::string>();
    v.types[size_t(i)] = special ? TokenType::Control : TokenType::UserDefined;
  };
  const fs::path tj = dir / "tokenizer.json", at = dir / "added_tokens.json";
  if (fs::exists(tj)) {
    const nlohmann::json j = nlohmann::json::parse(read_text_file(tj.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("added_tokens") && j["added_tokens"].is_array())
      for (const nlohmann::json& a : j["added_tokens"])
        if (a.is_object() && a.contains("id") && a.contains("content"))
          add(a["id"], a["content"], a.value("special", false));
  } else if (fs::exists(at)) {
    const nlohmann::json j = nlohmann::json::parse(read_text_file(at.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_object())
      for (auto it = j.begin(); it != j.end(); ++it) add(it.value(), it.key(), false);
  }
  return make_vocab_tokenizer(std::move(v));
}

static void load_hf_model(const std::string& dir, Model& m, FileLoad how) {
  const fs::path cfg = fs::path(dir) / "config.json";
  if (!fs::exists(cfg)) {
    // Meta's own format (params.json + consolidated.00.pth), e.g. the original/ folder of the
    // Llama 3.x repositories: the Hugging Face files are one level up.
    if (fs::exists(fs::path(dir) / "params.json"))
      fail("'" + dir + "' is Meta's original checkpoint format (params.json, consolidated.*.pth), which longctx does "
           "not read: pass the Hugging Face version (config.json + *.safetensors; in Meta's repositories the folder "
           "above original/) or a .gguf file");
    fail("no config.json in '" + dir + "': pass a Hugging Face model directory or a .gguf file");
  }
  m.config = parse_hf_config(read_text_file(cfg.string()), cfg.string());
  SafetensorsSet st = open_safetensors_dir(dir, how);
  m.weights.files = st.files;
  bind_weights(m.config, st.tensors, NameKind::HF, m.weights);
  m.format = "hf";
  const fs::path tok = fs::path(dir) / "tokenizer.model";
  const fs::path tok_json = fs::path(dir) / "tokenizer.json";
  // transformers' generate() stops at generation_config.json's eos_token_id (an id or a list),
  // which may name more ids than config.json does.
  const fs::path gen = fs::path(dir) / "generation_config.json";
  if (fs::exists(gen)) {
    const nlohmann::json g = nlohmann::json::parse(read_text_file(gen.string()), nullptr, /*allow_exceptions=*/false);
    if (g.is_object() && g.contains("eos_token_id")) {
      const nlohmann::json& e = g["eos_token_id"];
      for (const nlohmann::json& id : e.is_array() ? e : nlohmann::json::array({e}))
        if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < m.config.n_vocab)
          m.config.eog_ids.push_back(int32_t(id.get<int64_t>()));
    }
  }
  if (fs::exists(tok)) {
    m.tokenizer = load_sentencepiece_tokenizer(tok.string());
    m.tokenizer_source = tok.string();
    if (m.tokenizer->n_vocab() < m.config.n_vocab) {
      const int64_t n_sp = m.tokenizer->n_vocab();
      m.tokenizer = extend_spm_vocab(dir, *m.tokenizer, m.config.n_vocab);
      m.tokenizer_source += " + " + std::to_string(m.config.n_vocab - n_sp) + " added/padding tokens";
    }
    // LlamaTokenizer's add_bos_token (default true; false e.g. for Yi-6B-200K), as
    // transformers and llama.cpp's converter (tokenizer.ggml.add_bos_token) take it.
    const fs::path tc = fs::path(dir) / "tokenizer_config.json";
    if (fs::exists(tc)) {
      const nlohmann::json t = nlohmann::json::parse(read_text_file(tc.string()), nullptr, /*allow_exceptions=*/false);
      if (t.is_object() && t.contains("add_bos_token") && t["add_bos_token"].is_boolean())
        m.tokenizer->set_add_bos(t["add_bos_token"].get<bool>());
    }
  } else if (fs::exists(tok_json)) {  // byte-level BPE (Llama 3): no tokenizer.model
    m.tokenizer = load_hf_tokenizer_json(tok_json.string(), m.config.bos_id, m.config.eos_id, m.config.n_vocab);
    m.tokenizer_source = tok_json.string() + " (byte-level BPE)";
  }
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt) {
  auto m = std::make_unique<Model>();
  m->path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("model path '" + path + "' does not exist");
  if (fs::is_directory(path, ec)) {
    load_hf_model(path, *m, opt.weights);
  } else {
    load_gguf_model(path, *m, opt.weights);
  }
  if (opt.repack && kernels::q4_0_r16_preferred()) m->n_repacked = repack_weights_for_kernels(m->weights);
  if (!opt.tokenizer_path.empty()) {
    const bool json = fs::path(opt.tokenizer_path).extension() == ".json";
    m->tokenizer = json ? load_hf_tokenizer_json(opt.tokenizer_path, m->config.bos_id, m->config.eos_id, m->config.n_vocab)
                        : load_sentencepiece_tokenizer(opt.tokenizer_path);
    m->tokenizer_source = opt.tokenizer_path;
  }
  if (m->tokenizer && m->tokenizer->n_vocab() != m->config.n_vocab)
    fail("tokenizer '" + m->tokenizer_source + "' has " + std::to_string(m->tokenizer->n_vocab()) +
         " tokens but the model's vocab_size is " + std::to_string(m->config.n_vocab));
  // End-of-turn control tokens end generation too (instruct models emit them instead of eos).
  if (m->tokenizer) {
    const SpmVocab& v = m->tokenizer->vocab();
    for (size_t i = 0; i < v.pieces.size(); ++i) {
      if (v.types[i] != TokenType::Control) continue;
      const std::string& p = v.pieces[i];
      if (p == "<|eot_id|>" || p == "<|eom_id|>" || p == "<|im_end|>" || p == "<|end|>" || p == "<end_of_turn>" ||
          p == "<|endoftext|>")
        m->config.eog_ids.push_back(int32_t(i));
    }
  }
  // The config's eos list (Llama 3.1: 128001, 128008, 128009) names the same control tokens:
  // each id once.
  std::vector<int32_t>& eog = m->config.eog_ids;
  std::erase_if(eog, [&](int32_t id) { return id < 0 || id >= m->config.n_vocab || id == m->config.eos_id; });
  std::set<int32_t> seen;  // (a GGUF's longctx.eog_token_ids can be long: no quadratic scan)
  std::erase_if(eog, [&](int32_t id) { return !seen.insert(id).second; });
  return m;
}

}  // namespace lcx
