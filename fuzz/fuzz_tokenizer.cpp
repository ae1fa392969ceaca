// Text to ids and back, differentially: the GGUF vocabulary tokenizer (our BPE, used for every
// GGUF model) against libsentencepiece on the same OpenLLaMA vocabulary (the fixtures'
// tokenizer.model). docs/TOKENIZER.md promises identical ids and text for any input, malformed
// UTF-8 included; a difference aborts with both sides printed. The streaming decoder must
// reproduce decode() piece by piece. Without the fixtures only our tokenizer runs (on a small
// vocabulary with byte fallback).
// The byte-level BPE tokenizer (GPT-2's vocabulary from tests/data/vocab, with the GPT-2 and the
// Llama 3 pre-tokenizers) must be lossless: decode(encode(text)) == text for valid UTF-8, and
// streamed decoding equals decode() for any ids.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "formats/gguf.h"
#include "fuzz.h"
#include "model/gguf_model.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "synthetic_model.h"

namespace {

struct Tokenizers {
  std::unique_ptr<lcx::Tokenizer> spm, ours, gpt2, llama3;
  Tokenizers() {
    const auto vocab = std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "data" / "vocab" / "ggml-vocab-gpt-2.gguf";
    if (std::filesystem::exists(vocab)) {
      lcx::SpmVocab v = lcx::gguf_read_vocab(lcx::GgufFile::open(vocab.string()));
      gpt2 = lcx::make_bpe_tokenizer(v);
      v.pre = "llama-bpe";
      llama3 = lcx::make_bpe_tokenizer(v);
    }
    const std::string fx = lcx::fuzz::fixtures_or_empty();
    if (!fx.empty()) {
      spm = lcx::load_sentencepiece_tokenizer(fx + "/tokenizer.model");
      ours = lcx::make_vocab_tokenizer(spm->vocab());
    } else {
      ours = lcx::make_vocab_tokenizer(lcx::test::synthetic_model({.byte_tokens = true})->tokenizer->vocab());
    }
  }
};

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

[[noreturn]] void mismatch(const char* what, const std::string& a, const std::string& b) {
  std::fprintf(stderr, "fuzz_tokenizer: %s differ\n  sentencepiece: %s\n  ours:          %s\n", what, a.c_str(),
               b.c_str());
  std::abort();
}

std::string streamed(const lcx::Tokenizer& t, const std::vector<int32_t>& ids) {
  lcx::StreamDecoder d(t);
  std::string out;
  for (int32_t id : ids) out += d.push(id);
  return out + d.flush();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizers tk;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tk.ours->encode(text, true);
  const std::string back = tk.ours->decode(ids);
  if (streamed(*tk.ours, ids) != back) mismatch("decode and streamed decode", back, streamed(*tk.ours, ids));
  if (tk.spm) {
    const std::vector<int32_t> ref = tk.spm->encode(text, true);
    if (ref != ids) mismatch("ids", ids_str(ref), ids_str(ids));
    const std::string ref_back = tk.spm->decode(ref);
    if (ref_back != back) mismatch("decoded text", ref_back, back);
  }
  for (const lcx::Tokenizer* b : {tk.gpt2.get(), tk.llama3.get()}) {
    if (b == nullptr) continue;
    const std::vector<int32_t> bi = b->encode(text, false);
    const std::string bt = b->decode(bi);
    if (streamed(*b, bi) != bt) mismatch("BPE decode and streamed decode", bt, streamed(*b, bi));
    if (lcx::fuzz::valid_utf8(text) && bt != text) mismatch("BPE round trip", text, bt);
  }
  // The same bytes read as token ids (any value): decode throws lcx::Error outside the
  // vocabulary, the streaming decoder never throws.
  std::vector<int32_t> raw(size / 4);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = int32_t(uint32_t(data[4 * i]) | uint32_t(data[4 * i + 1]) << 8 |
                                                         uint32_t(data[4 * i + 2]) << 16 | uint32_t(data[4 * i + 3]) << 24);
  (void)streamed(*tk.ours, raw);
  try {
    (void)tk.ours->decode(raw);
  } catch (const lcx::Error&) {
  }
  return 0;
}
