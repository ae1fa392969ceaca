// Tokenizers. The reference is SentencePiece itself (tokenizer.model through libsentencepiece);
// GGUF files carry the vocabulary (pieces, scores, token types) instead, and VocabTokenizer
// reproduces SentencePiece's BPE encoding from it, id for id. See docs/TOKENIZER.md.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lcx {

// SentencePiece token types, as GGUF's tokenizer.ggml.token_type stores them
// (must match sentencepiece_model.proto's SentencePiece::Type).
enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct SpmVocab {
  std::vector<std::string> pieces;  // raw pieces ("▁the", "<0x0A>", "<s>")
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos_id = 1, eos_id = 2, unk_id = 0, pad_id = -1;
  bool add_bos = true;
  // NormalizerSpec flags (GGUF: tokenizer.ggml.add_space_prefix and
  // tokenizer.ggml.remove_extra_whitespaces). The defaults are SentencePiece's defaults and
  // OpenLLaMA's values; Meta's LLaMA tokenizer has remove_extra_whitespaces = false.
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;  // strip leading/trailing spaces, collapse runs of ' '
  // A SentencePiece Unigram model (TrainerSpec.model_type): libsentencepiece segments it by
  // Viterbi over piece scores, while a GGUF "llama" vocabulary is tokenized by BPE-style merges
  // (llama.cpp, and make_vocab_tokenizer here), which can segment text differently.
  bool spm_unigram = false;

  // Byte-level BPE (GPT-2 style: GGUF tokenizer.ggml.model = "gpt2", e.g. Llama 3). Pieces are
  // then strings over GPT-2's byte-to-unicode alphabet ("Ġthe"), merges are "left right" in
  // rank order (tokenizer.ggml.merges) and `pre` names the pre-tokenizer regex
  // (tokenizer.ggml.pre: "default"/"gpt-2", "llama-bpe" for Llama 3). scores are unused.
  bool byte_level = false;
  std::vector<std::string> merges;
  std::string pre = "default";
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // [bos] + sentencepiece encode(text) when add_bos.
  virtual std::vector<int32_t> encode(const std::string& text, bool add_bos) const = 0;
  // The bytes a token stands for in running text: ▁ -> space, <0xNN> -> that byte, control
  // tokens -> "", the unknown token -> " ⁇ " (SentencePiece's unk surface). decode() is these
  // concatenated, except that the first visible piece loses its leading space and runs of byte
  // tokens that are not valid UTF-8 become U+FFFD per bad byte (StreamDecoder does exactly that).
  // Out-of-range ids give "". Shared by every tokenizer: it depends on vocab() only.
  virtual std::string token_bytes(int32_t id) const;
  // Throws lcx::Error on an id outside [0, n_vocab).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual const SpmVocab& vocab() const = 0;
  // Whether the model's tokenizer puts BOS first (tokenizer_config.json add_bos_token, GGUF
  // tokenizer.ggml.add_bos_token); Model::tokenize and Session::feed_text follow it.
  virtual void set_add_bos(bool on) = 0;
  // Byte-level BPE: token_bytes are arbitrary byte strings (pieces of UTF-8 characters too),
  // no leading-space handling in decoding.
  bool byte_level() const { return vocab().byte_level; }
  int32_t n_vocab() const { return int32_t(vocab().pieces.size()); }
  int32_t bos_id() const { return vocab().bos_id; }
  int32_t eos_id() const { return vocab().eos_id; }
};

// tokenizer.model via libsentencepiece. Throws lcx::Error when the file is missing or invalid.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
// From a vocabulary (GGUF metadata). Encodes like libsentencepiece's BPE model with an identity
// normalizer (no precompiled charsmap); decodes like its DecodeIds. Throws lcx::Error when the
// vocabulary is inconsistent (sizes differ, no unknown piece, bad special ids).
std::unique_ptr<Tokenizer> make_vocab_tokenizer(SpmVocab vocab);
// Byte-level BPE from a vocabulary with byte_level set (GGUF "gpt2" vocabularies): the `pre`
// regex splits the text (PCRE2, Unicode properties), each piece's bytes are mapped to GPT-2's
// byte alphabet and merged by rank, as llama.cpp's llm_tokenizer_bpe and HF tokenizers do.
// User-defined pieces in the text are kept whole; control pieces are plain text. Throws
// lcx::Error for an unknown `pre` or an inconsistent vocabulary.
std::unique_ptr<Tokenizer> make_bpe_tokenizer(SpmVocab vocab);
// A Hugging Face tokenizer.json holding a byte-level BPE model (Llama 3, GPT-2 style): vocab,
// merges, added tokens (special -> control, others user-defined), the pre-tokenizer recognised
// by its regex, BOS added when the post-processor template starts with a special token. bos_id /
// eos_id come from config.json; n_vocab pads the vocabulary to the model's vocab_size. Throws
// lcx::Error naming what it cannot read (other model types: use tokenizer.model).
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, int32_t bos_id, int32_t eos_id,
                                                  int64_t n_vocab);

// UTF-8-safe incremental detokenisation for streaming: push ids one at a time, get back only
// complete UTF-8 characters (byte-fallback tokens of one character arrive one byte each).
// Everything push() returned followed by flush() equals tok.decode(ids) for any id sequence:
// this class *is* the decoder (VocabTokenizer::decode runs it), mirroring SentencePiece's
// Decode: byte runs are decoded as UTF-8 with U+FFFD per invalid byte, and while nothing has
// been output yet each visible piece loses one leading ▁.
//
// strip_leading_space = false keeps the ▁ of the first piece as a space: use it when the ids
// continue earlier text (generation after a prompt), where " world" must stay " world".
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool strip_leading_space = true)
      : tok_(tok), strip_space_(strip_leading_space) {}
  // An id outside [0, n_vocab) (e.g. from a padded output layer) is invisible, like a control
  // token; it never throws, so it is safe in the generation loop.
  std::string push(int32_t id);
  std::string flush();  // whatever is pending (invalid UTF-8 replaced by U+FFFD)

 private:
  // Appends to `out` the complete characters at the front of pending_; with `final` the run of
  // byte tokens has ended and incomplete sequences become U+FFFD.
  void drain(bool final, std::string& out);

  const Tokenizer& tok_;
  std::string pending_;        // bytes of byte tokens not yet forming a whole character
  bool emitted_ = false;       // some text has been output (SentencePiece: !text.empty())
  bool strip_space_ = true;    // SentencePiece's is_bos_ws: strip one leading ▁ from the next piece
  bool bos_ws_seen_ = false;   // the previous visible piece had its ▁ stripped (no remove_extra_ws)
};

}  // namespace lcx
