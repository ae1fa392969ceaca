// Loader robustness: every malformed Hugging Face checkpoint gives lcx::Error with a message
// that names the problem — never a crash (this binary also runs under ASan/UBSan in CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <cstring>
#include <tuple>
#include <nlohmann/json.hpp>

#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "runtime/error.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

fs::path model_dir(const std::string& name) { return fs::path(fixtures_dir()) / "models" / name; }

// A writable copy of a fixture model directory.
fs::path copy_model(const std::string& name, const std::string& tag) {
  const fs::path dst = fs::path(tmp_dir()) / ("loader_" + tag);
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(model_dir(name)))
    fs::copy_file(e.path(), dst / e.path().filename());
  for (const auto& e : fs::directory_iterator(dst))
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
  return dst;
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream o(p, std::ios::binary | std::ios::trunc);
  o << s;
}

std::string load_error(const fs::path& dir) {
  try {
    lcx::load_model(dir.string());
  } catch (const lcx::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Loader, LoadsFixtureModels) {
  for (const char* m : {"llama_mha", "llama_gqa", "llama_rope_longrope", "longllama_mem", "longllama_bf16mem"}) {
    auto model = lcx::load_model(model_dir(m).string());
    EXPECT_GT(model->config.n_layer, 0) << m;
    EXPECT_EQ(model->weights.layers.size(), size_t(model->config.n_layer));
  }
}

// Weights read into huge pages (--no-mmap) are the same bytes as the mapping, give the same
// model, and a file that cannot be read is an error naming it.
TEST(Loader, CopyIntoHugePagesMatchesMapping) {
  const std::string st = (model_dir("llama_gqa") / "model.safetensors").string();
  auto mapped = lcx::MappedFile::open(st, lcx::FileLoad::Map);
  auto copied = lcx::MappedFile::open(st, lcx::FileLoad::Copy);
  EXPECT_FALSE(mapped->copied());
  EXPECT_TRUE(copied->copied());
  ASSERT_EQ(mapped->size(), copied->size());
  EXPECT_EQ(std::memcmp(mapped->data(), copied->data(), mapped->size()), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(copied->data()) % (2u << 20), 0u);  // huge-page aligned
  // Auto maps small files (the fixtures are a few MB): huge pages pay from 32 MiB.
  EXPECT_FALSE(lcx::MappedFile::open(st, lcx::FileLoad::Auto)->copied());

  lcx::LoadOptions lo;
  lo.weights = lcx::FileLoad::Copy;
  auto a = lcx::load_model(model_dir("llama_gqa").string());
  auto b = lcx::load_model(model_dir("llama_gqa").string(), lo);
  ASSERT_EQ(b->weights.files.size(), 1u);
  EXPECT_TRUE(b->weights.files[0]->copied());
  const auto& wa = a->weights.layers[1].wq;
  const auto& wb = b->weights.layers[1].wq;
  EXPECT_NE(wa.data, wb.data);
  ASSERT_EQ(wa.nbytes, wb.nbytes);
  EXPECT_EQ(std::memcmp(wa.data, wb.data, wa.nbytes), 0);

  EXPECT_EQ(lcx::parse_file_load("auto"), lcx::FileLoad::Auto);
  EXPECT_EQ(lcx::parse_file_load("mmap"), lcx::FileLoad::Map);
  EXPECT_EQ(lcx::parse_file_load("copy"), lcx::FileLoad::Copy);
  EXPECT_THROW(lcx::parse_file_load("mlock"), lcx::Error);
  EXPECT_THROW(lcx::MappedFile::open(tmp_dir() + "/no_such_file", lcx::FileLoad::Copy), lcx::Error);
  const fs::path dir = fs::path(tmp_dir()) / "not_a_file";
  fs::create_directories(dir);
  EXPECT_THROW(lcx::MappedFile::open(dir.string(), lcx::FileLoad::Copy), lcx::Error);
}

TEST(Loader, ConfigFields) {
  auto m = lcx::load_model(model_dir("longllama_mem").string());
  EXPECT_EQ(m->config.arch, lcx::Arch::LongLlama);
  EXPECT_EQ(m->config.mem.layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(m->config.mem.dtype, lcx::DType::F32);
  EXPECT_EQ(m->config.mem.last_context_length, 16);
  auto g = lcx::load_model(model_dir("llama_gqa").string());
  EXPECT_LT(g->config.n_head_kv, g->config.n_head);
}

// Llama 3's config.json lists several eos ids; every one ends generation (llama.cpp's EOG set).
TEST(Loader, EosListEndsGeneration) {
  const fs::path dir = copy_model("llama_mha", "eoslist");
  nlohmann::json cfg = nlohmann::json::parse(lcx::test::read_file((dir / "config.json").string()));
  auto base = lcx::load_model(model_dir("llama_mha").string());
  const int32_t eos = base->config.eos_id;
  cfg["eos_token_id"] = {eos, 7, 9};
  write(dir / "config.json", cfg.dump());
  auto m = lcx::load_model(dir.string());
  EXPECT_EQ(m->config.eos_id, eos);
  EXPECT_EQ(m->config.eog_ids, (std::vector<int32_t>{7, 9}));
  EXPECT_TRUE(m->config.is_eog(9));
  EXPECT_FALSE(m->config.is_eog(8));
  // Generation stops at the first end-of-generation id.
  auto model = longctx::Model::load(dir.string());
  longctx::Session s(model, {});
  s.feed({1, 5, 9, 13});
  longctx::GenerateOptions go;
  go.n_predict = 1;
  go.sampling.temperature = 0.0f;
  go.ignore_eos = true;
  const int32_t first = s.generate(go).ids.at(0);
  auto m2 = longctx::Model::load(dir.string());
  const_cast<lcx::Model&>(m2->impl()).config.eog_ids = {first};
  longctx::Session s2(m2, {});
  s2.feed({1, 5, 9, 13});
  go.ignore_eos = false;
  go.n_predict = 5;
  const auto r = s2.generate(go);
  EXPECT_TRUE(r.ids.empty());
  EXPECT_EQ(r.stop_reason, "eos");
}

// generation_config.json's eos_token_id ends generation too (transformers' generate() stops
// there); every id is listed once, also when config.json's list and the vocabulary's end-of-turn
// pieces name it again (Llama 3.1 listed 128008 128009 twice).
TEST(Loader, GenerationConfigEosAndEachIdOnce) {
  const fs::path dir = copy_model("llama_mha", "geneos");
  nlohmann::json cfg = nlohmann::json::parse(lcx::test::read_file((dir / "config.json").string()));
  const int32_t eos = cfg["eos_token_id"].get<int32_t>();
  cfg["eos_token_id"] = {eos, 7, 9, 7};
  write(dir / "config.json", cfg.dump());
  write(dir / "generation_config.json", nlohmann::json{{"bos_token_id", 1}, {"eos_token_id", {eos, 9, 11}}}.dump());
  auto m = lcx::load_model(dir.string());
  EXPECT_EQ(m->config.eos_id, eos);
  EXPECT_EQ(m->config.eog_ids, (std::vector<int32_t>{7, 9, 11}));
  // A single id, and a file that is not JSON (ignored, as it only adds stop ids).
  write(dir / "generation_config.json", nlohmann::json{{"eos_token_id", 13}}.dump());
  EXPECT_EQ(lcx::load_model(dir.string())->config.eog_ids, (std::vector<int32_t>{7, 9, 13}));
  write(dir / "generation_config.json", "{not json");
  EXPECT_EQ(lcx::load_model(dir.string())->config.eog_ids, (std::vector<int32_t>{7, 9}));
}

// tokenizer_config.json's add_bos_token (LlamaTokenizer; false for Yi-6B-200K) decides whether a
// prompt starts with BOS, as in transformers; the converted GGUF keeps it.
TEST(Loader, TokenizerConfigAddBosToken) {
  const fs::path dir = copy_model("llama_mha", "addbos");
  fs::copy_file(fs::path(fixtures_dir()) / "tokenizer.model", dir / "tokenizer.model");
  auto with_bos = longctx::Model::load(dir.string());
  const std::vector<int32_t> ids = with_bos->tokenize("Hello world");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  write(dir / "tokenizer_config.json", R"({"add_bos_token": false, "add_eos_token": false, "legacy": true,
    "model_max_length": 1000000000000000019884624838656, "tokenizer_class": "LlamaTokenizer"})");
  auto no_bos = longctx::Model::load(dir.string());
  EXPECT_EQ(no_bos->tokenize("Hello world"), std::vector<int32_t>(ids.begin() + 1, ids.end()));
  EXPECT_EQ(no_bos->tokenize("Hello world", false), std::vector<int32_t>(ids.begin() + 1, ids.end()));
  const std::string gguf = (fs::path(tmp_dir()) / "addbos.gguf").string();
  lcx::convert_to_gguf(no_bos->impl(), gguf, lcx::DType::F32);
  EXPECT_EQ(longctx::Model::load(gguf)->tokenize("Hello world"), std::vector<int32_t>(ids.begin() + 1, ids.end()));
  fs::remove(gguf);
}

// LongLLaMA and OpenLLaMA publish pytorch_model.bin only: the error names the file and the way out.
TEST(Loader, PickleWeightsNameTheConverter) {
  auto d = copy_model("llama_mha", "pickle");
  fs::remove(d / "model.safetensors");
  write(d / "pytorch_model.bin", "PK");
  std::string e = load_error(d);
  EXPECT_NE(e.find("pytorch_model.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("tools/bin_to_safetensors.py"), std::string::npos) << e;
  fs::remove(d / "pytorch_model.bin");
  write(d / "pytorch_model-00002-of-00002.bin", "PK");
  write(d / "pytorch_model-00001-of-00002.bin", "PK");
  e = load_error(d);
  EXPECT_NE(e.find("pytorch_model-00001-of-00002.bin"), std::string::npos) << e;
}

// Llama 3.x repositories carry Meta's own format in original/: the error says what it is.
TEST(Loader, MetaOriginalFormatNamed) {
  const fs::path d = fs::path(tmp_dir()) / "loader_meta_original";
  fs::create_directories(d);
  write(d / "params.json", R"({"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256})");
  write(d / "consolidated.00.pth", "PK");
  const std::string e = load_error(d);
  EXPECT_NE(e.find("Meta's original checkpoint format"), std::string::npos) << e;
  fs::remove(d / "params.json");
  EXPECT_NE(load_error(d).find("no config.json"), std::string::npos) << load_error(d);
}

TEST(Loader, MissingPath) {
  EXPECT_NE(load_error("/nonexistent/model").find("does not exist"), std::string::npos);
}

TEST(Loader, MissingWeights) {
  auto d = copy_model("llama_mha", "noweights");
  fs::remove(d / "model.safetensors");
  EXPECT_NE(load_error(d).find("no model.safetensors"), std::string::npos);
}

TEST(Loader, MalformedConfig) {
  auto d = copy_model("llama_mha", "badjson");
  write(d / "config.json", "{\"hidden_size\": 32,,}");
  EXPECT_NE(load_error(d).find("malformed JSON"), std::string::npos);
  write(d / "config.json", "[1,2]");
  EXPECT_NE(load_error(d).find("JSON object"), std::string::npos);
  // A number outside double's range is a parse error too (nlohmann reports it as
  // out_of_range; found by fuzz_hf_config).
  write(d / "config.json", "{\"hidden_size\": 32, \"rope_theta\": 1e999}");
  EXPECT_NE(load_error(d).find("malformed JSON"), std::string::npos);
  // Numbers that do not fit the field's type (converting them was undefined behaviour; found by
  // fuzz_hf_config under libFuzzer/UBSan).
  const nlohmann::json good = nlohmann::json::parse(read_file((model_dir("llama_mha") / "config.json").string()));
  for (auto [key, value, expect] : {std::tuple{"hidden_size", nlohmann::json(3.3e24), "whole number"},
                                    {"hidden_size", nlohmann::json(32.5), "whole number"},
                                    {"max_position_embeddings", nlohmann::json(18446744073709551615ull), "out of range"},
                                    {"rope_theta", nlohmann::json(1e39), "out of range"},
                                    {"eos_token_id", nlohmann::json::array({1e12}), "whole number"}}) {
    nlohmann::json j = good;
    j[key] = value;
    write(d / "config.json", j.dump());
    EXPECT_NE(load_error(d).find(expect), std::string::npos) << key << " = " << value.dump() << ": " << load_error(d);
  }
}

TEST(Loader, UnsupportedArchitecture) {
  auto d = copy_model("llama_mha", "arch");
  std::string cfg = read_file((d / "config.json").string());
  cfg.replace(cfg.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel0");
  cfg.replace(cfg.find("\"llama\""), 7, "\"gpt2\" ");
  write(d / "config.json", cfg);
  EXPECT_NE(load_error(d).find("unsupported architecture"), std::string::npos);
}

TEST(Loader, WrongShapeFromConfig) {
  auto d = copy_model("llama_mha", "shape");
  std::string cfg = read_file((d / "config.json").string());
  cfg.replace(cfg.find("\"intermediate_size\": 64"), 23, "\"intermediate_size\": 65");
  write(d / "config.json", cfg);
  EXPECT_NE(load_error(d).find("has shape"), std::string::npos);
}

TEST(Loader, MissingTensor) {
  auto d = copy_model("llama_mha", "missing");
  std::string cfg = read_file((d / "config.json").string());
  cfg.replace(cfg.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 3");
  write(d / "config.json", cfg);
  EXPECT_NE(load_error(d).find("missing tensor 'model.layers.2"), std::string::npos);
}

TEST(Loader, ExtraTensor) {
  auto d = copy_model("llama_mha", "extra");
  std::string cfg = read_file((d / "config.json").string());
  cfg.replace(cfg.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 1");
  write(d / "config.json", cfg);
  EXPECT_NE(load_error(d).find("unexpected tensor 'model.layers.1"), std::string::npos);
}

TEST(Loader, TruncatedSafetensors) {
  auto d = copy_model("llama_mha", "trunc");
  const std::string full = read_file((d / "model.safetensors").string());
  for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(100), full.size() / 2, full.size() - 1}) {
    write(d / "model.safetensors", full.substr(0, cut));
    const std::string err = load_error(d);
    EXPECT_FALSE(err.empty()) << "cut at " << cut;
    EXPECT_NE(err.find("safetensors"), std::string::npos) << err;
  }
}

TEST(Loader, UnknownDtype) {
  auto d = copy_model("llama_mha", "dtype");
  std::string st = read_file((d / "model.safetensors").string());
  const size_t p = st.find("\"F32\"");
  ASSERT_NE(p, std::string::npos);
  st.replace(p, 5, "\"F64\"");
  write(d / "model.safetensors", st);
  EXPECT_NE(load_error(d).find("dtype F64 is not supported"), std::string::npos);
}

TEST(Loader, OffsetsPastEnd) {
  auto d = copy_model("llama_mha", "offsets");
  std::string st = read_file((d / "model.safetensors").string());
  const size_t p = st.find("\"data_offsets\":[");
  ASSERT_NE(p, std::string::npos);
  st.replace(p + 16, 1, "9");  // first digit of the first offset: now far beyond the data
  write(d / "model.safetensors", st);
  EXPECT_FALSE(load_error(d).empty());
}

// The fixture's safetensors header (JSON text) and data, to rewrite the header of a copy.
std::pair<std::string, std::string> split_safetensors(const fs::path& file) {
  const std::string full = read_file(file.string());
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(full[size_t(i)]);
  return {full.substr(8, size_t(hlen)), full.substr(8 + size_t(hlen))};
}
void write_safetensors(const fs::path& file, const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int b = 0; b < 8; ++b) out[size_t(b)] = char((uint64_t(header.size()) >> (8 * b)) & 0xff);
  write(file, out + header + data);
}

// A zero-weight LLaMA (hidden 8, one layer) with vocab_size n_vocab and the OpenLLaMA
// tokenizer.model (32000 pieces) beside it.
fs::path tiny_model_with_vocab(const std::string& tag, int64_t n_vocab) {
  const fs::path d = fs::path(tmp_dir()) / ("loader_" + tag);
  fs::remove_all(d);
  fs::create_directories(d);
  write(d / "config.json", nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                          {"hidden_size", 8}, {"intermediate_size", 8}, {"num_hidden_layers", 1},
                                          {"num_attention_heads", 2}, {"vocab_size", n_vocab},
                                          {"max_position_embeddings", 64}}.dump());
  nlohmann::json h = nlohmann::json::object();
  int64_t off = 0;
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 4;
    for (int64_t x : shape) n *= x;
    h[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {off, off + n}}};
    off += n;
  };
  tensor("model.embed_tokens.weight", {n_vocab, 8});
  for (const char* w : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                        "mlp.up_proj", "mlp.down_proj"})
    tensor(std::string("model.layers.0.") + w + ".weight", {8, 8});
  for (const char* w : {"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                        "model.norm.weight"})
    tensor(w, {8});
  tensor("lm_head.weight", {n_vocab, 8});
  write_safetensors(d / "model.safetensors", h.dump(), std::string(size_t(off), '\0'));
  fs::copy_file(fs::path(fixtures_dir()) / "tokenizer.model", d / "tokenizer.model");
  return d;
}

// Llama-2 ChatML fine-tunes: vocab_size 32002, tokenizer.model with 32000 pieces, the two added
// tokens in tokenizer.json (or added_tokens.json); padded embeddings (32128) name nothing.
// Both load with the vocabulary a GGUF of them holds, and tokenize as the SentencePiece model.
TEST(Loader, SentencePieceWithAddedAndPaddingTokens) {
  const std::vector<int32_t> plain = longctx::Model::load(tiny_model_with_vocab("vocab32000", 32000).string())->tokenize("Hello world");
  const fs::path d = tiny_model_with_vocab("vocab32002", 32002);
  write(d / "added_tokens.json", R"({"<|im_end|>": 32001, "<|im_start|>": 32000})");
  auto m = lcx::load_model(d.string());
  ASSERT_EQ(m->tok().n_vocab(), 32002);
  EXPECT_EQ(m->tok().vocab().pieces[32000], "<|im_start|>");
  EXPECT_EQ(m->tok().vocab().types[32001], lcx::TokenType::UserDefined);
  EXPECT_EQ(m->tok().encode("Hello world", true), plain);
  // tokenizer.json's added_tokens win (with their special flag); base ids listed there are kept.
  write(d / "tokenizer.json", R"({"added_tokens": [{"id": 2, "content": "</s>", "special": true},
    {"id": 32000, "content": "<|im_start|>", "special": true}, {"id": 32001, "content": "<|im_end|>", "special": true}],
    "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  m = lcx::load_model(d.string());
  EXPECT_EQ(m->tok().vocab().pieces[2], "</s>");
  EXPECT_EQ(m->tok().vocab().types[32001], lcx::TokenType::Control);
  EXPECT_TRUE(m->config.is_eog(32001));  // <|im_end|> ends generation
  EXPECT_EQ(m->tok().decode({32000, 16644}), "Hello");
  auto padded = lcx::load_model(tiny_model_with_vocab("vocab32128", 32128).string());
  EXPECT_EQ(padded->tok().vocab().pieces[32127], "[PAD32127]");
  EXPECT_EQ(padded->tok().encode("Hello world", true), plain);
  // More pieces than vocab_size is still an error.
  EXPECT_NE(load_error(tiny_model_with_vocab("vocab31999", 31999)).find("tokens but the model's vocab_size is 31999"),
            std::string::npos);
}

// A tensor named twice: nlohmann would keep one silently; the reference reader refuses it.
TEST(Loader, DuplicateTensorName) {
  auto d = copy_model("llama_mha", "duptensor");
  const auto [header, data] = split_safetensors(d / "model.safetensors");
  const nlohmann::json h = nlohmann::json::parse(header);
  ASSERT_EQ(header[0], '{');
  write_safetensors(d / "model.safetensors",
                    "{\"model.norm.weight\":" + h["model.norm.weight"].dump() + "," + header.substr(1), data);
  EXPECT_NE(load_error(d).find("tensor 'model.norm.weight' is listed twice"), std::string::npos) << load_error(d);
  // A key repeated inside one entry is as ambiguous.
  nlohmann::json e = h["model.norm.weight"];
  std::string entry = e.dump();
  entry.insert(1, "\"dtype\":\"F16\",");
  nlohmann::json rest = h;
  rest.erase("model.norm.weight");
  write_safetensors(d / "model.safetensors", "{\"model.norm.weight\":" + entry + "," + rest.dump().substr(1), data);
  EXPECT_NE(load_error(d).find("key 'dtype' appears twice"), std::string::npos) << load_error(d);
}

// Tensors sharing bytes are refused with both names; reversed offsets are called reversed; a
// gap between tensors (as a writer that aligns tensors leaves) still loads.
TEST(Loader, OverlappingAndReversedOffsets) {
  auto d = copy_model("llama_mha", "overlap");
  const auto [header, data] = split_safetensors(d / "model.safetensors");
  const nlohmann::json h = nlohmann::json::parse(header);
  const std::string a = "model.layers.0.input_layernorm.weight", b = "model.layers.1.input_layernorm.weight";
  nlohmann::json j = h;
  j[a]["data_offsets"] = h[b]["data_offsets"];
  write_safetensors(d / "model.safetensors", j.dump(), data);
  std::string err = load_error(d);
  EXPECT_NE(err.find("overlap"), std::string::npos) << err;
  EXPECT_NE(err.find("'" + a + "'"), std::string::npos) << err;
  EXPECT_NE(err.find("'" + b + "'"), std::string::npos) << err;
  // Partly overlapping: a range shifted by one element into its neighbour.
  j = h;
  const uint64_t b0 = h[b]["data_offsets"][0].get<uint64_t>(), b1 = h[b]["data_offsets"][1].get<uint64_t>();
  j[b]["data_offsets"] = {b0 - 4, b1 - 4};
  write_safetensors(d / "model.safetensors", j.dump(), data);
  EXPECT_NE(load_error(d).find("overlap"), std::string::npos) << load_error(d);
  j = h;
  j[b]["data_offsets"] = {b1, b0};
  write_safetensors(d / "model.safetensors", j.dump(), data);
  err = load_error(d);
  EXPECT_NE(err.find("reversed"), std::string::npos) << err;
  EXPECT_EQ(err.find("past the end"), std::string::npos) << err;
  // Gaps: every tensor moved 64 bytes further than the last, the data padded to match.
  j = h;
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto it = h.begin(); it != h.end(); ++it)
    if (it.key() != "__metadata__") order.emplace_back(it.value()["data_offsets"][0].get<uint64_t>(), it.key());
  std::sort(order.begin(), order.end());
  std::string gapped;
  for (const auto& [begin, name] : order) {
    gapped.append(64, '\0');
    const uint64_t n = h[name]["data_offsets"][1].get<uint64_t>() - begin;
    j[name]["data_offsets"] = {gapped.size(), gapped.size() + n};
    gapped += data.substr(size_t(begin), size_t(n));
  }
  write_safetensors(d / "model.safetensors", j.dump(), gapped);
  EXPECT_EQ(load_error(d), "");
}

// Random bit flips in the header and data: any outcome but a crash is acceptable (an error,
// or a successful load when the flip only touched weight values or JSON whitespace).
TEST(Loader, BitFlipsNeverCrash) {
  auto d = copy_model("llama_gqa", "flips");
  const std::string full = read_file((d / "model.safetensors").string());
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(full[size_t(i)]);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s = full;
    const size_t span = size_t(std::min<uint64_t>(hlen + 8, s.size()));
    const size_t at = rng() % span;
    s[at] = char(s[at] ^ (1 << (rng() % 8)));
    write(d / "model.safetensors", s);
    try {
      lcx::load_model(d.string());
    } catch (const lcx::Error&) {
    }
  }
}

// Splits llama_mha's tensors into two shards with an index in tmp_dir()/tag, as save_pretrained
// does; returns the index.
nlohmann::json write_sharded(const std::string& tag) {
  auto src = lcx::open_safetensors((model_dir("llama_mha") / "model.safetensors").string());
  const fs::path d = fs::path(tmp_dir()) / tag;
  fs::remove_all(d);
  fs::create_directories(d);
  fs::copy_file(model_dir("llama_mha") / "config.json", d / "config.json");
  nlohmann::json index;
  std::vector<std::pair<std::string, std::string>> files = {{"model-00001-of-00002.safetensors", ""},
                                                            {"model-00002-of-00002.safetensors", ""}};
  nlohmann::json headers[2];
  std::string data[2];
  int i = 0;
  for (const auto& [name, v] : src.tensors) {
    const int s = (i++ % 2);
    headers[s][name] = {{"dtype", "F32"}, {"shape", v.shape},
                        {"data_offsets", {data[s].size(), data[s].size() + v.nbytes}}};
    data[s].append(static_cast<const char*>(v.data), v.nbytes);
    index["weight_map"][name] = files[size_t(s)].first;
  }
  for (int s = 0; s < 2; ++s) {
    std::string h = headers[s].dump();
    while (h.size() % 8) h += ' ';
    std::string out(8, '\0');
    for (int b = 0; b < 8; ++b) out[size_t(b)] = char((uint64_t(h.size()) >> (8 * b)) & 0xff);
    write(d / files[size_t(s)].first, out + h + data[s]);
  }
  write(d / "model.safetensors.index.json", index.dump());
  return index;
}

TEST(Loader, ShardedIndex) {
  write_sharded("sharded");
  const fs::path d = fs::path(tmp_dir()) / "sharded";
  auto a = lcx::load_model(model_dir("llama_mha").string());
  auto b = lcx::load_model(d.string());
  ASSERT_EQ(a->weights.layers.size(), b->weights.layers.size());
  EXPECT_EQ(0, std::memcmp(a->weights.layers[1].w_down.data, b->weights.layers[1].w_down.data, a->weights.layers[1].w_down.nbytes));
}

// An index that disagrees with its shards names the shard and the tensor.
TEST(Loader, ShardIndexDisagreesWithShards) {
  nlohmann::json index = write_sharded("sharded_mismatch");
  const fs::path d = fs::path(tmp_dir()) / "sharded_mismatch";
  const std::string name = index["weight_map"].begin().key();
  const std::string right = index["weight_map"][name].get<std::string>();
  const std::string wrong = right == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors"
                                                                          : "model-00001-of-00002.safetensors";
  nlohmann::json j = index;
  j["weight_map"][name] = wrong;
  write(d / "model.safetensors.index.json", j.dump());
  std::string err = load_error(d);
  EXPECT_NE(err.find("names shard '" + wrong + "' for tensor '" + name + "' but that shard does not contain it: it is in '" +
                     right + "'"),
            std::string::npos)
      << err;
  j = index;
  j["weight_map"]["model.layers.9.mlp.up_proj.weight"] = right;
  write(d / "model.safetensors.index.json", j.dump());
  err = load_error(d);
  EXPECT_NE(err.find("for tensor 'model.layers.9.mlp.up_proj.weight' but that shard does not contain it (nor does any other)"),
            std::string::npos)
      << err;
}

// A broken index names the file and the problem.
TEST(Loader, ShardIndexErrors) {
  auto d = copy_model("llama_mha", "badindex");
  fs::remove(d / "model.safetensors");
  const fs::path idx = d / "model.safetensors.index.json";
  const auto expect = [&](const std::string& text, const std::string& what) {
    write(idx, text);
    const std::string err = load_error(d);
    EXPECT_NE(err.find(what), std::string::npos) << err;
    EXPECT_NE(err.find("model.safetensors.index.json'"), std::string::npos) << err;
  };
  expect("{\"weight_map\": {", "malformed JSON");
  expect("{\"metadata\": {}}", "has no weight_map object");
  expect("{\"weight_map\": {\"a\": 3}}", "weight_map values must be file names");
  expect("{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "must be a plain file name");
  expect("{\"weight_map\": {}}", "lists no shards");
}

}  // namespace

namespace {
nlohmann::json fixture_json(const std::string& model) {
  return nlohmann::json::parse(read_file((model_dir(model) / "config.json").string()));
}
std::string parse_error(const nlohmann::json& j) {
  try {
    lcx::parse_hf_config(j.dump(), "config.json");
  } catch (const lcx::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// Config keys read as each reference reads them: LongLLaMA's modeling code derives head_dim
// from hidden_size / num_attention_heads and ignores head_dim and num_key_value_heads keys;
// LlamaConfig reads them.
TEST(HfConfig, HeadDimKeyPerArchitecture) {
  nlohmann::json ll = fixture_json("longllama_mem");
  ll["head_dim"] = 99;
  ll["num_key_value_heads"] = 1;  // also ignored: modeling_longllama.py has no GQA
  const lcx::ModelConfig c = lcx::parse_hf_config(ll.dump(), "config.json");
  EXPECT_EQ(c.head_dim, c.n_embd / c.n_head);
  EXPECT_EQ(c.n_head_kv, c.n_head);
  nlohmann::json l = fixture_json("llama_mha");
  l["head_dim"] = 2 * l["hidden_size"].get<int>() / l["num_attention_heads"].get<int>();
  EXPECT_EQ(lcx::parse_hf_config(l.dump(), "config.json").head_dim, l["head_dim"].get<int64_t>());
}

// What the references refuse is refused with the key named.
TEST(HfConfig, RefusedWithTheKeyNamed) {
  nlohmann::json ll = fixture_json("longllama_grouped");
  ll["mem_attention_grouping"] = {0, 4};  // modeling_longllama.py: "Attention grouping should be positive"
  EXPECT_NE(parse_error(ll).find("mem_attention_grouping values must be positive"), std::string::npos) << parse_error(ll);
  nlohmann::json lr = fixture_json("llama_rope_longrope");
  lr["rope_scaling"].erase("long_factor");
  EXPECT_NE(parse_error(lr).find("needs a 'long_factor' list"), std::string::npos) << parse_error(lr);
}

// GPTQ / AWQ / bitsandbytes checkpoints are refused for being quantized, not for a missing tensor.
TEST(HfConfig, QuantizedCheckpointRefused) {
  nlohmann::json j = fixture_json("llama_mha");
  j["quantization_config"] = {{"bits", 4}, {"group_size", 128}, {"desc_act", false}, {"quant_method", "gptq"}};
  std::string e = parse_error(j);
  EXPECT_NE(e.find("quantized checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find("'gptq'"), std::string::npos) << e;
  EXPECT_NE(e.find("--outtype"), std::string::npos) << e;
  j["quantization_config"] = {{"load_in_4bit", true}, {"bnb_4bit_quant_type", "nf4"}};
  e = parse_error(j);
  EXPECT_NE(e.find("'bitsandbytes'"), std::string::npos) << e;
  j["quantization_config"] = nullptr;  // null: not quantized
  EXPECT_EQ(parse_error(j), "");
}

// YaRN-Llama-2-7b-64k: rope_scaling.original_max_position_embeddings 4096 with
// max_position_embeddings 65536. transformers v4.49 ignores the key; it is kept for `info`.
TEST(HfConfig, YarnOriginalContextKeptForTheNote) {
  nlohmann::json j = fixture_json("llama_rope_yarn");
  j["rope_scaling"]["original_max_position_embeddings"] = 16;
  j["rope_scaling"]["finetuned"] = true;
  const lcx::ModelConfig c = lcx::parse_hf_config(j.dump(), "config.json");
  EXPECT_EQ(c.rope.orig_ctx, 0);
  EXPECT_EQ(lcx::rope_original_ctx(c.rope), c.n_ctx_train);
  EXPECT_EQ(c.yarn_unused_orig_ctx, 16);
  const fs::path dir = copy_model("llama_rope_yarn", "yarnnote");
  write(dir / "config.json", j.dump());
  const std::string info = longctx::Model::load(dir.string())->describe();
  EXPECT_NE(info.find("original_max_position_embeddings 16 is not used"), std::string::npos) << info;
  EXPECT_NE(info.find("--rope-orig-ctx 16"), std::string::npos) << info;
}

// A config without a shape key says which key is missing (not "hidden_size must be > 0").
TEST(HfConfig, MissingShapeKeyIsNamed) {
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    nlohmann::json j = fixture_json("llama_mha");
    j.erase(key);
    EXPECT_NE(parse_error(j).find(std::string("key '") + key + "' is missing"), std::string::npos) << parse_error(j);
    EXPECT_NE(parse_error(j).find("save_pretrained"), std::string::npos) << parse_error(j);
    j[key] = nullptr;
    EXPECT_NE(parse_error(j).find(std::string("key '") + key + "' is missing"), std::string::npos) << parse_error(j);
  }
  EXPECT_NE(parse_error(nlohmann::json::object()).find("is missing"), std::string::npos)
      << parse_error(nlohmann::json::object());
}

// Absurd shapes are refused by name before anything is sized by them (num_hidden_layers = 10^9
// ended in std::bad_alloc), and shapes whose product passes any model are refused as a whole.
TEST(HfConfig, ImplausibleShapesRefused) {
  for (auto [key, value] : {std::pair{"num_hidden_layers", int64_t(1000000000)}, {"hidden_size", int64_t(1) << 40},
                            {"intermediate_size", int64_t(1) << 40}, {"num_attention_heads", int64_t(1) << 40},
                            {"vocab_size", int64_t(1) << 40}, {"head_dim", int64_t(1) << 40}}) {
    nlohmann::json j = fixture_json("llama_mha");
    j[key] = value;
    if (std::string(key) == "num_attention_heads") j["num_key_value_heads"] = value;
    const std::string err = parse_error(j);
    EXPECT_NE(err.find(std::string(key) + " = " + std::to_string(value) + " is implausibly large"), std::string::npos)
        << key << ": " << err;
  }
  // Each within its cap, together 2^16 layers of 2^20 x 2^22 matrices.
  nlohmann::json j = fixture_json("llama_mha");
  j["num_hidden_layers"] = 1 << 16;
  j["hidden_size"] = 1 << 20;
  j["intermediate_size"] = 1 << 22;
  j["num_attention_heads"] = j["num_key_value_heads"] = 1 << 10;
  j.erase("head_dim");
  EXPECT_NE(parse_error(j).find("parameters, far more than any model"), std::string::npos) << parse_error(j);
  // The whole load path: an error naming the key, not std::bad_alloc.
  auto d = copy_model("llama_mha", "hugelayers");
  j = fixture_json("llama_mha");
  j["num_hidden_layers"] = 1000000000;
  write(d / "config.json", j.dump());
  EXPECT_NE(load_error(d).find("num_hidden_layers = 1000000000 is implausibly large"), std::string::npos) << load_error(d);
}

// Token ids must name a token (the GGUF loader already refused the same); null keeps LLaMA's
// defaults, as before. LongLLaMA's last_context_length must fit a cache.
TEST(HfConfig, TokenIdsAndLastContextLengthChecked) {
  const nlohmann::json good = fixture_json("llama_mha");
  auto with = [&](const char* key, nlohmann::json value) {
    nlohmann::json j = good;
    j[key] = std::move(value);
    return j;
  };
  EXPECT_NE(parse_error(with("bos_token_id", 99999)).find("bos_token_id 99999 is outside the vocabulary [0, 32000)"),
            std::string::npos)
      << parse_error(with("bos_token_id", 99999));
  EXPECT_NE(parse_error(with("eos_token_id", 32000)).find("eos_token_id 32000 is outside the vocabulary"), std::string::npos)
      << parse_error(with("eos_token_id", 32000));
  for (const auto& [key, value] : {std::pair{"bos_token_id", nlohmann::json(-1)}, {"eos_token_id", nlohmann::json(-5)},
                                   {"eos_token_id", nlohmann::json::array({2, -1})}}) {
    const std::string err = parse_error(with(key, value));
    EXPECT_NE(err.find(std::string(key) + " -"), std::string::npos) << err;
    EXPECT_NE(err.find("is negative"), std::string::npos) << err;
  }
  const lcx::ModelConfig nulls = lcx::parse_hf_config(with("bos_token_id", nullptr).dump(), "config.json");
  EXPECT_EQ(nulls.bos_id, 1);
  EXPECT_EQ(lcx::parse_hf_config(with("eos_token_id", nullptr).dump(), "config.json").eos_id, 2);
  EXPECT_EQ(lcx::parse_hf_config(with("eos_token_id", {2, 7}).dump(), "config.json").eog_ids, (std::vector<int32_t>{7}));

  for (int64_t bad : {int64_t(0), int64_t(-16), (int64_t(1) << 30) + 1}) {
    nlohmann::json ll = fixture_json("longllama_mem");
    ll["last_context_length"] = bad;
    EXPECT_NE(parse_error(ll).find("last_context_length must be in [1, 2^30], got " + std::to_string(bad)), std::string::npos)
        << parse_error(ll);
  }
}
