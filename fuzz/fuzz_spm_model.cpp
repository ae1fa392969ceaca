// A tokenizer.model (SentencePiece ModelProto) as `--tokenizer` or an HF directory provides it:
// libsentencepiece parses it; our wrapper reads the vocabulary and normalizer flags and must
// answer any file with lcx::Error or a working tokenizer (then encoded and decoded).
#include "fuzz.h"
#include "model/tokenizer.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lcx::fuzz::scratch_path("tokenizer.model");
  lcx::fuzz::write_file(path, data, size);
  try {
    const auto tok = lcx::load_sentencepiece_tokenizer(path);
    const auto ids = tok->encode("Hello world, caf\xc3\xa9 \xff", true);
    (void)tok->decode(ids);
    (void)lcx::make_vocab_tokenizer(tok->vocab());
  } catch (const lcx::Error&) {
  }
  return 0;
}
