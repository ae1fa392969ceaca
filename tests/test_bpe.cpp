// Byte-level BPE (GGUF "gpt2" vocabularies: GPT-2, Llama 3). The oracle is llama.cpp's own
// tokenizer test for the GPT-2 vocabulary (tests/data/vocab/ggml-vocab-gpt-2.gguf with its .inp
// texts and .out ids, from llama.cpp's models/ directory, MIT licence): the ids HF tokenizers
// produce for those texts.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "model/gguf_model.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "testutil.h"

namespace lcx {
namespace {

namespace fs = std::filesystem;

std::string vocab_dir() { return (fs::path(__FILE__).parent_path() / "data" / "vocab").string(); }

// llama.cpp's test-tokenizer-0 files: texts separated by "\n__ggml_vocab_test__\n", one line of
// space-separated ids per text.
std::vector<std::string> split_inputs(const std::string& all) {
  std::vector<std::string> out;
  const std::string sep = "\n__ggml_vocab_test__\n";
  size_t pos = 0;
  while (true) {
    const size_t next = all.find(sep, pos);
    if (next == std::string::npos) break;
    out.push_back(all.substr(pos, next - pos));
    pos = next + sep.size();
  }
  return out;
}

std::vector<std::vector<int32_t>> read_ids(const std::string& all) {
  std::vector<std::vector<int32_t>> out;
  std::istringstream in(all);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t v;
    while (ls >> v) ids.push_back(v);
    out.push_back(ids);
  }
  return out;
}

std::unique_ptr<Tokenizer> gpt2() {
  const GgufFile g = GgufFile::open(vocab_dir() + "/ggml-vocab-gpt-2.gguf");
  return make_bpe_tokenizer(gguf_read_vocab(g));
}

TEST(Bpe, Gpt2MatchesLlamaCppTestVectors) {
  const auto tok = gpt2();
  EXPECT_TRUE(tok->byte_level());
  const std::vector<std::string> texts = split_inputs(test::read_file(vocab_dir() + "/ggml-vocab-gpt-2.gguf.inp"));
  const std::vector<std::vector<int32_t>> want = read_ids(test::read_file(vocab_dir() + "/ggml-vocab-gpt-2.gguf.out"));
  ASSERT_GE(texts.size(), 30u);
  ASSERT_EQ(texts.size(), want.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(tok->encode(texts[i], /*add_bos=*/false), want[i]) << "case " << i << ": '" << texts[i] << "'";
    // Decoding gives the text back (byte-level BPE is lossless).
    EXPECT_EQ(tok->decode(want[i]), texts[i]) << "case " << i;
  }
}

TEST(Bpe, StreamingDecodeSplitsNoCharacter) {
  const auto tok = gpt2();
  const std::string text = "Grüße aus Köln 🦙 — 東京\n\t  end";
  const std::vector<int32_t> ids = tok->encode(text, false);
  StreamDecoder dec(*tok);
  std::string out;
  for (int32_t id : ids) {
    const std::string part = dec.push(id);
    // every piece handed out is whole UTF-8
    for (size_t i = 0; i < part.size();) {
      const unsigned char c = static_cast<unsigned char>(part[i]);
      const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
      ASSERT_LE(i + n, part.size()) << "split character in '" << part << "'";
      i += n;
    }
    out += part;
  }
  out += dec.flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(tok->decode(ids), text);
  // Invalid UTF-8 in: the bytes still round-trip through the byte alphabet; decoding shows
  // U+FFFD for what is not UTF-8, as HF's decode(errors="replace").
  const std::string bad = "a\xff" "b";
  EXPECT_EQ(tok->decode(tok->encode(bad, false)), "a\xef\xbf\xbd" "b");
  EXPECT_THROW(tok->decode({-1}), Error);
  EXPECT_THROW(tok->decode({tok->n_vocab()}), Error);
}

TEST(Bpe, UnknownPreTokenizerAndBadMergesRefused) {
  const GgufFile g = GgufFile::open(vocab_dir() + "/ggml-vocab-gpt-2.gguf");
  SpmVocab v = gguf_read_vocab(g);
  SpmVocab unknown = v;
  unknown.pre = "deepseek-coder";
  try {
    make_bpe_tokenizer(unknown);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deepseek-coder"), std::string::npos) << e.what();
  }
  SpmVocab bad = v;
  bad.merges[3] = "nospace";
  EXPECT_THROW(make_bpe_tokenizer(bad), Error);
  // Llama 3's pre-tokenizer: digits in threes, contractions case-insensitive, one leading
  // non-letter joins a word (the rules of its tokenizer.json Split pattern).
  SpmVocab l3 = v;
  l3.pre = "llama-bpe";
  const auto t3 = make_bpe_tokenizer(l3);
  const auto pieces = [&](const std::string& s) {
    std::vector<std::string> out;
    for (int32_t id : t3->encode(s, false)) out.push_back(t3->token_bytes(id));
    return out;
  };
  std::string joined;
  for (const auto& p : pieces("1234567")) joined += p + "|";
  EXPECT_EQ(joined.substr(0, 4), "123|") << joined;  // never more than three digits in a piece
  EXPECT_EQ(t3->decode(t3->encode("I'M here\n\n  ok", false)), "I'M here\n\n  ok");
}

// tokenizer.json (Hugging Face directories of Llama 3-style models): the same vocabulary written
// as HF writes it tokenizes the llama.cpp test texts identically; Llama 3's pre-tokenizer and BOS
// template are recognised; other tokenizer kinds are refused by name.
TEST(Bpe, TokenizerJson) {
  const GgufFile g = GgufFile::open(vocab_dir() + "/ggml-vocab-gpt-2.gguf");
  const SpmVocab v = gguf_read_vocab(g);
  nlohmann::json j;
  j["model"]["type"] = "BPE";
  j["model"]["vocab"] = nlohmann::json::object();
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    if (v.types[i] == TokenType::Normal) j["model"]["vocab"][v.pieces[i]] = i;
  }
  j["model"]["merges"] = v.merges;
  j["added_tokens"] = nlohmann::json::array();
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    if (v.types[i] != TokenType::Normal)
      j["added_tokens"].push_back({{"id", i}, {"content", v.pieces[i]}, {"special", v.types[i] == TokenType::Control}});
  }
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const std::string dir = test::tmp_dir();
  const auto write = [&](const nlohmann::json& x, const std::string& name) {
    std::ofstream(dir + "/" + name) << x.dump();
    return dir + "/" + name;
  };
  const auto tj = load_hf_tokenizer_json(write(j, "gpt2.json"), 50256, 50256, int64_t(v.pieces.size()));
  const auto tg = make_bpe_tokenizer(v);
  EXPECT_FALSE(tj->vocab().add_bos);
  const std::vector<std::string> texts = split_inputs(test::read_file(vocab_dir() + "/ggml-vocab-gpt-2.gguf.inp"));
  for (const std::string& t : texts) EXPECT_EQ(tj->encode(t, false), tg->encode(t, false)) << t;

  nlohmann::json l3 = j;
  l3["pre_tokenizer"] = {{"type", "Sequence"},
                         {"pretokenizers",
                          {{{"type", "Split"},
                            {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                            {"behavior", "Isolated"}},
                           {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  l3["post_processor"] = {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<|endoftext|>"}}}}, {{"Sequence", {{"id", "A"}}}}}}};
  const auto t3 = load_hf_tokenizer_json(write(l3, "llama3.json"), 50256, 50256, int64_t(v.pieces.size()) + 10);
  EXPECT_EQ(t3->vocab().pre, "llama-bpe");
  EXPECT_TRUE(t3->vocab().add_bos);
  EXPECT_EQ(t3->n_vocab(), int32_t(v.pieces.size()) + 10);  // padded to the model's vocab_size
  EXPECT_EQ(t3->encode("hi", true).front(), 50256);

  nlohmann::json uni = j;
  uni["model"]["type"] = "Unigram";
  try {
    load_hf_tokenizer_json(write(uni, "uni.json"), 1, 2, 0);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("BPE"), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/broken.json") << "{\"model\": ";
  EXPECT_THROW(load_hf_tokenizer_json(dir + "/broken.json", 1, 2, 0), Error);

  // As the tokenizers library refuses them: a merge of pieces the vocabulary lacks, and (ours)
  // one id given to two pieces.
  const auto expect_error = [&](const nlohmann::json& bad, const std::string& what) {
    try {
      load_hf_tokenizer_json(write(bad, "bad.json"), 50256, 50256, 0);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  nlohmann::json bad_merge = j;
  bad_merge["model"]["merges"].push_back("zzq\u00e9 xq");
  expect_error(bad_merge, "not in model.vocab");
  nlohmann::json dup = j;
  dup["model"]["vocab"]["a-new-piece"] = 0;
  expect_error(dup, "gives id 0 to both");
}

}  // namespace
}  // namespace lcx
