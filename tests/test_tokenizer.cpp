// Tokenizers against the reference: libsentencepiece (v0.1.97) with the OpenLLaMA
// tokenizer.model. The vocabulary-only tokenizer (what a GGUF file gives us) must produce the
// same ids and the same decoded text; the stream decoder must agree with decode().
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "runtime/error.h"
#include "testutil.h"

namespace lcx {
namespace {

namespace fs = std::filesystem;

std::string model_path() { return test::fixtures_dir() + "/tokenizer.model"; }
std::string data_dir() { return (fs::path(__FILE__).parent_path() / "data").string(); }

// One SentencePiece and one vocab tokenizer for the whole test binary (loading takes ~50 ms).
struct Toks {
  std::unique_ptr<Tokenizer> sp = load_sentencepiece_tokenizer(model_path());
  std::unique_ptr<Tokenizer> vt = make_vocab_tokenizer(sp->vocab());
};
const Toks& toks() {
  static const Toks t;
  return t;
}

std::string printable(const std::string& s) {
  std::string o;
  for (const unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F) o += char(c);
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      o += buf;
    }
  }
  return o;
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder dec(tok);
  std::string out;
  for (const int32_t id : ids) out += dec.push(id);
  return out + dec.flush();
}

// Both tokenizers encode `text` identically, decode identically, and streaming agrees.
void expect_same(const std::string& text) {
  const auto& t = toks();
  const auto want = t.sp->encode(text, true);
  const auto got = t.vt->encode(text, true);
  ASSERT_EQ(got, want) << "text: " << printable(text);
  const std::string dec = t.sp->decode(want);
  EXPECT_EQ(t.vt->decode(want), dec) << "text: " << printable(text);
  EXPECT_EQ(stream_decode(*t.vt, want), dec) << "text: " << printable(text);
  EXPECT_EQ(stream_decode(*t.sp, want), dec) << "text: " << printable(text);
}

TEST(Tokenizer, FixtureCasesBothTokenizers) {
  const auto j = nlohmann::json::parse(test::read_file(test::fixtures_dir() + "/tokenizer_cases.json"));
  const auto& t = toks();
  ASSERT_EQ(t.sp->n_vocab(), j.at("vocab_size").get<int>());
  EXPECT_EQ(t.sp->bos_id(), j.at("bos_id").get<int>());
  EXPECT_EQ(t.sp->eos_id(), j.at("eos_id").get<int>());
  EXPECT_EQ(t.vt->vocab().unk_id, j.at("unk_id").get<int>());
  int n = 0;
  for (const auto& c : j.at("cases")) {
    const std::string text = c.at("text");
    const auto want = c.at("ids_with_bos").get<std::vector<int32_t>>();
    EXPECT_EQ(t.sp->encode(text, true), want) << "sentencepiece, text: " << printable(text);
    EXPECT_EQ(t.vt->encode(text, true), want) << "vocab, text: " << printable(text);
    const auto pieces = c.at("pieces").get<std::vector<std::string>>();
    ASSERT_EQ(pieces.size() + 1, want.size());
    for (size_t i = 0; i < pieces.size(); ++i) EXPECT_EQ(t.vt->vocab().pieces[size_t(want[i + 1])], pieces[i]);
    expect_same(text);
    ++n;
  }
  EXPECT_GT(n, 5);
}

TEST(Tokenizer, VocabMatchesModelProto) {
  const auto& v = toks().sp->vocab();
  // OpenLLaMA: identity normalizer with dummy prefix and remove_extra_whitespaces (read from
  // the model's NormalizerSpec), <unk>, <s>, </s>, 256 byte pieces.
  EXPECT_TRUE(v.add_dummy_prefix);
  EXPECT_TRUE(v.remove_extra_whitespaces);
  EXPECT_EQ(v.types[0], TokenType::Unknown);
  EXPECT_EQ(v.types[1], TokenType::Control);
  EXPECT_EQ(v.types[2], TokenType::Control);
  int n_byte = 0;
  for (auto ty : v.types) n_byte += ty == TokenType::Byte;
  EXPECT_EQ(n_byte, 256);
  EXPECT_EQ(v.pieces[13], "<0x0A>");
}

TEST(Tokenizer, CorpusLinesAndWholeText) {
  const std::string raw = test::read_file(data_dir() + "/tokenizer_corpus.txt");
  ASSERT_GT(raw.size(), 1000u);
  std::string whole;
  size_t lines = 0;
  for (size_t pos = 0; pos < raw.size();) {
    size_t end = raw.find('\n', pos);
    if (end == std::string::npos) end = raw.size();
    // "\n" inside a line stands for a newline (one case per line).
    std::string line;
    for (size_t k = pos; k < end; ++k) {
      if (raw[k] == '\\' && k + 1 < end && raw[k + 1] == 'n') {
        line += '\n';
        ++k;
      } else {
        line += raw[k];
      }
    }
    pos = end + 1;
    expect_same(line);
    whole += line + "\n";
    ++lines;
  }
  EXPECT_GT(lines, 50u);
  expect_same(raw);
  expect_same(whole);
  // Glue every line to the next without separators, and with a space run.
  std::string glued, spaced;
  for (size_t i = 0; i < whole.size(); i += 37) glued += whole.substr(i, 37);
  for (size_t i = 0; i < whole.size(); i += 53) spaced += whole.substr(i, 53) + "   ";
  expect_same(glued);
  expect_same(spaced);
}

// Random strings built from fragments that stress normalization, merging and byte fallback,
// including malformed UTF-8 (lone continuation bytes, truncated sequences, overlong forms,
// surrogates, bytes above U+10FFFF) and NUL.
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> frags = {
      "a", "b", "e", "the", "ing", " ", " ", "  ", "   ", "\t", "\n", "\r\n", ".", ",", "!", "?", "0", "1", "42",
      "3.14", "Hello", "world", "token", "izer", "(", ")", "{", "}", "_", "-", "'", "\"", "\\", "/", "::", "<s>",
      "</s>", "<unk>", "<0x41>", "\xe2\x96\x81", "\xe2\x96\x81\xe2\x96\x81", "\xc3\xa9", "e\xcc\x81", "\xcc\x81",
      "\xe4\xb8\xad", "\xe6\x96\x87", "\xe3\x81\x82", "\xed\x95\x9c", "\xd0\xbf\xd1\x80\xd0\xb8",
      "\xd9\x85\xd8\xb1", "\xf0\x9f\x98\x80", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "\xe2\x80\x8d", "\xef\xbb\xbf",
      "\xef\xbf\xbd", "\xc2\xa0", "\xe3\x80\x80", "\xf0\x90\x80\x80", "\xf3\xb0\x80\x80", "\xf4\x8f\xbf\xbd",
      // malformed
      "\x80", "\xbf", "\xc3", "\xe4\xb8", "\xf0\x9f\x98", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
      "\xf8\x88\x80\x80\x80", "\xfe", "\xff", std::string(1, '\0'), "\x01", "\x7f"};
  std::uniform_int_distribution<size_t> len(0, 24), pick(0, frags.size() - 1);
  std::string s;
  for (size_t n = len(rng), i = 0; i < n; ++i) s += frags[pick(rng)];
  return s;
}

TEST(Tokenizer, RandomStringsMatchSentencePiece) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = random_text(rng);
    expect_same(s);
    if (HasFatalFailure()) return;
  }
}

TEST(Tokenizer, EveryPieceAloneAndInContext) {
  // Each vocabulary piece's text (▁ -> space) encoded alone and between words: exercises every
  // merge path at least once.
  const auto& v = toks().sp->vocab();
  std::string batch;
  for (size_t id = 3; id < v.pieces.size(); ++id) {
    if (v.types[id] != TokenType::Normal) continue;
    std::string text;
    for (size_t i = 0; i < v.pieces[id].size(); ++i) {
      if (v.pieces[id].compare(i, 3, "\xe2\x96\x81") == 0) { text += ' '; i += 2; } else text += v.pieces[id][i];
    }
    if (id % 16 == 0) expect_same(text);
    batch += "x" + text + (id % 3 ? " " : "");
    if (batch.size() > 4000) {
      expect_same(batch);
      batch.clear();
    }
    if (HasFatalFailure()) return;
  }
  expect_same(batch);
}

TEST(Tokenizer, DecodeRandomIdSequences) {
  // Arbitrary id sequences (not from encode): byte tokens forming broken UTF-8, control tokens,
  // <unk>, "▁"-only pieces at the start. Vocab decode == DecodeIds == streaming, for both.
  const auto& t = toks();
  const int32_t n = t.sp->n_vocab();
  const auto& pieces = t.sp->vocab().pieces;
  const int32_t space = int32_t(std::find(pieces.begin(), pieces.end(), "\xe2\x96\x81") - pieces.begin());
  ASSERT_LT(space, n);
  std::mt19937 rng(99);
  std::uniform_int_distribution<int32_t> any(0, n - 1), byte(3, 258), kind(0, 9), len(0, 12);
  // Bytes that matter for UTF-8 decoding: ASCII, continuation, leads of every length, invalid.
  const int lead_bytes[] = {0x41, 0x20, 0x80, 0xBF, 0xA9, 0x98, 0xC3, 0xC0, 0xE4, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF};
  for (int it = 0; it < 4000; ++it) {
    std::vector<int32_t> ids;
    for (int k = len(rng); k > 0; --k) {
      switch (kind(rng)) {
        case 0: case 1: ids.push_back(any(rng)); break;
        case 2: case 3: ids.push_back(byte(rng)); break;
        case 4: case 5: ids.push_back(3 + lead_bytes[size_t(any(rng)) % std::size(lead_bytes)]); break;
        case 6: ids.push_back(space); break;
        case 7: ids.push_back(int32_t(any(rng) % 3)); break;  // <unk>, <s>, </s>
        default: {  // a whole emoji as bytes: F0 9F 98 80
          for (int b : {0xF0, 0x9F, 0x98, 0x80}) ids.push_back(3 + b);
        }
      }
    }
    const std::string want = t.sp->decode(ids);
    ASSERT_EQ(t.vt->decode(ids), want) << "iteration " << it;
    ASSERT_EQ(stream_decode(*t.vt, ids), want) << "iteration " << it;
    ASSERT_EQ(stream_decode(*t.sp, ids), want) << "iteration " << it;
  }
}

TEST(Tokenizer, TokenBytesShared) {
  const auto& t = toks();
  for (int32_t id = 0; id < t.sp->n_vocab(); ++id) ASSERT_EQ(t.sp->token_bytes(id), t.vt->token_bytes(id)) << id;
  EXPECT_EQ(t.vt->token_bytes(1), "");                   // <s>
  EXPECT_EQ(t.vt->token_bytes(0), " \xe2\x81\x87 ");     // <unk> -> " ⁇ "
  EXPECT_EQ(t.vt->token_bytes(13), "\n");                // <0x0A>
  EXPECT_EQ(t.vt->token_bytes(3 + 0xF0), "\xF0");        // <0xF0>
  EXPECT_EQ(t.vt->token_bytes(16644), " Hello");         // ▁Hello
  EXPECT_EQ(t.vt->token_bytes(-1), "");
  EXPECT_EQ(t.vt->token_bytes(t.vt->n_vocab()), "");
}

TEST(Tokenizer, StreamDecoderWholeCharacters) {
  const auto& t = toks();
  // "▁" then an emoji that only exists as byte fallback, then a word.
  const std::string text = "\xf0\x9f\xa6\x99 ok";  // U+1F999 (not in the vocabulary)
  const auto ids = t.vt->encode(text, false);
  ASSERT_EQ(ids, t.sp->encode(text, false));
  StreamDecoder dec(*t.vt);
  std::vector<std::string> outs;
  for (const int32_t id : ids) outs.push_back(dec.push(id));
  // ▁ (leading space dropped) -> "", 3 bytes -> "", last byte -> the whole emoji, ▁ok -> " ok"
  ASSERT_EQ(outs.size(), 6u) << "ids: " << ::testing::PrintToString(ids);
  EXPECT_EQ(outs[0], "");
  EXPECT_EQ(outs[1], "");
  EXPECT_EQ(outs[2], "");
  EXPECT_EQ(outs[3], "");
  EXPECT_EQ(outs[4], "\xf0\x9f\xa6\x99");
  EXPECT_EQ(outs[5], " ok");
  EXPECT_EQ(dec.flush(), "");

  // An incomplete character at the end is flushed as one U+FFFD per byte (DecodeIds does too).
  StreamDecoder d2(*t.vt);
  EXPECT_EQ(d2.push(16644), "Hello");  // first piece: leading ▁ dropped
  EXPECT_EQ(d2.push(3 + 0xE4), "");
  EXPECT_EQ(d2.push(3 + 0xB8), "");
  EXPECT_EQ(d2.flush(), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(t.sp->decode({16644, 3 + 0xE4, 3 + 0xB8}), "Hello\xef\xbf\xbd\xef\xbf\xbd");

  // A byte that cannot continue the pending character resolves it at once.
  StreamDecoder d3(*t.vt);
  EXPECT_EQ(d3.push(3 + 0xE4), "");
  EXPECT_EQ(d3.push(3 + 0x41), "\xef\xbf\xbd" "A");
  // Control tokens are invisible but end a byte run.
  EXPECT_EQ(d3.push(3 + 0xC3), "");
  EXPECT_EQ(d3.push(2), "\xef\xbf\xbd");
  EXPECT_EQ(d3.push(3 + 0xA9), "\xef\xbf\xbd");
  EXPECT_EQ(d3.flush(), "");
}

TEST(Tokenizer, StreamDecoderContinuation) {
  // Generation after a prompt keeps the space of the first generated piece.
  const auto& t = toks();
  StreamDecoder dec(*t.vt, /*strip_leading_space=*/false);
  EXPECT_EQ(dec.push(924), " world");  // ▁world
  EXPECT_EQ(dec.push(31905), "!");
  const auto prompt = t.vt->encode("Hello", true);
  std::vector<int32_t> all = prompt;
  all.push_back(924);
  EXPECT_EQ(t.sp->decode(all), t.sp->decode(prompt) + " world");
}

TEST(Tokenizer, StreamDecoderManySequences) {
  // Encode many texts, stream their ids (and their ids without BOS, and with EOS) one by one.
  const auto& t = toks();
  std::mt19937 rng(7);
  for (int i = 0; i < 1500; ++i) {
    const std::string s = random_text(rng);
    auto ids = t.vt->encode(s, i % 2 == 0);
    if (i % 3 == 0) ids.push_back(t.vt->eos_id());
    const std::string want = t.sp->decode(ids);
    StreamDecoder dec(*t.vt);
    std::string got;
    for (const int32_t id : ids) {
      const std::string piece = dec.push(id);
      got += piece;
    }
    got += dec.flush();
    ASSERT_EQ(got, want) << printable(s);
  }
}

TEST(Tokenizer, Errors) {
  EXPECT_THROW(load_sentencepiece_tokenizer("/nonexistent/tokenizer.model"), Error);
  const std::string dir = test::tmp_dir();
  {
    std::ofstream(dir + "/garbage.model", std::ios::binary) << "this is not a sentencepiece model \x01\x02\xff";
  }
  EXPECT_THROW(load_sentencepiece_tokenizer(dir + "/garbage.model"), Error);
  { std::ofstream(dir + "/empty.model", std::ios::binary); }
  EXPECT_THROW(load_sentencepiece_tokenizer(dir + "/empty.model"), Error);
  {  // a truncated real model
    const std::string m = test::read_file(model_path());
    std::ofstream(dir + "/truncated.model", std::ios::binary) << m.substr(0, m.size() / 2);
  }
  EXPECT_THROW(load_sentencepiece_tokenizer(dir + "/truncated.model"), Error);

  const auto& t = toks();
  EXPECT_THROW(t.vt->decode({1, -5}), Error);
  EXPECT_THROW(t.sp->decode({1, 32000}), Error);
  StreamDecoder dec(*t.vt);
  EXPECT_EQ(dec.push(40000), "");  // streaming never throws: out-of-range ids are invisible
  EXPECT_EQ(dec.push(-1), "");
  EXPECT_EQ(dec.push(16644), "Hello");

  SpmVocab bad = t.sp->vocab();
  bad.scores.pop_back();
  EXPECT_THROW(make_vocab_tokenizer(bad), Error);
  EXPECT_THROW(make_vocab_tokenizer(SpmVocab{}), Error);
  SpmVocab no_unk = t.sp->vocab();
  no_unk.types[0] = TokenType::Control;
  no_unk.unk_id = -1;
  EXPECT_THROW(make_vocab_tokenizer(no_unk), Error);
  SpmVocab bad_bos = t.sp->vocab();
  bad_bos.bos_id = 99999;
  EXPECT_THROW(make_vocab_tokenizer(bad_bos), Error);
}

// --- Variants of the model file: user-defined / unused pieces, other normalizer flags. -------
// The model is a serialized protobuf (sentencepiece_model.proto); rewrite a few fields and
// check the vocab tokenizer still matches libsentencepiece on the modified model.
struct Field {
  uint32_t num, wire;
  uint64_t v = 0;
  std::string bytes;
};
bool read_varint(const std::string& b, size_t& p, uint64_t& out) {
  out = 0;
  for (int s = 0; s < 64 && p < b.size(); s += 7) {
    const uint8_t c = uint8_t(b[p++]);
    out |= uint64_t(c & 0x7F) << s;
    if (c < 0x80) return true;
  }
  return false;
}
std::vector<Field> parse(const std::string& b) {
  std::vector<Field> out;
  for (size_t p = 0; p < b.size();) {
    uint64_t key = 0;
    EXPECT_TRUE(read_varint(b, p, key));
    Field f{uint32_t(key >> 3), uint32_t(key & 7), 0, {}};
    if (f.wire == 0) read_varint(b, p, f.v);
    else if (f.wire == 2) {
      uint64_t n = 0;
      read_varint(b, p, n);
      f.bytes = b.substr(p, n);
      p += n;
    } else if (f.wire == 5) { f.bytes = b.substr(p, 4); p += 4; }
    else if (f.wire == 1) { f.bytes = b.substr(p, 8); p += 8; }
    else ADD_FAILURE() << "bad wire type";
    out.push_back(f);
  }
  return out;
}
void put_varint(std::string& o, uint64_t v) {
  do {
    o += char((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
    v >>= 7;
  } while (v);
}
std::string serialize(const std::vector<Field>& fs) {
  std::string o;
  for (const auto& f : fs) {
    put_varint(o, (uint64_t(f.num) << 3) | f.wire);
    if (f.wire == 0) put_varint(o, f.v);
    else if (f.wire == 2) { put_varint(o, f.bytes.size()); o += f.bytes; }
    else o += f.bytes;
  }
  return o;
}
std::string piece_message(const std::string& piece, float score, int type) {
  std::vector<Field> f{{1, 2, 0, piece}, {2, 5, 0, std::string(4, '\0')}, {3, 0, uint64_t(type), {}}};
  std::memcpy(f[1].bytes.data(), &score, 4);
  return serialize(f);
}

// Writes a modified copy of the model: `retype` pieces get a new type (UNUSED = 5,
// USER_DEFINED = 4), `user_defined` pieces are appended as USER_DEFINED, normalizer flags set.
std::string write_variant(const std::string& name, const std::vector<std::pair<std::string, int>>& retype,
                          const std::vector<std::string>& user_defined, bool add_dummy_prefix,
                          bool remove_extra_ws) {
  auto top = parse(test::read_file(model_path()));
  std::vector<Field> out;
  size_t last_piece = 0;
  for (auto& f : top) {
    if (f.num == 1) {
      auto pf = parse(f.bytes);
      for (const auto& [piece, type] : retype)
        if (pf[0].bytes == piece) {
          bool has_type = false;
          for (auto& x : pf)
            if (x.num == 3) { x.v = uint64_t(type); has_type = true; }
          if (!has_type) pf.push_back({3, 0, uint64_t(type), {}});
          f.bytes = serialize(pf);
        }
    }
    if (f.num == 3) {  // normalizer_spec
      auto nf = parse(f.bytes);
      std::vector<Field> keep;
      for (auto& x : nf)
        if (x.num != 3 && x.num != 4) keep.push_back(x);
      keep.push_back({3, 0, add_dummy_prefix ? 1u : 0u, {}});
      keep.push_back({4, 0, remove_extra_ws ? 1u : 0u, {}});
      f.bytes = serialize(keep);
    }
    out.push_back(f);
    if (f.num == 1) last_piece = out.size();
  }
  std::vector<Field> extra;
  for (const auto& u : user_defined) extra.push_back({1, 2, 0, piece_message(u, 0.0f, 4)});
  out.insert(out.begin() + std::ptrdiff_t(last_piece), extra.begin(), extra.end());
  const std::string path = test::tmp_dir() + "/" + name + ".model";
  std::ofstream(path, std::ios::binary) << serialize(out);
  return path;
}

void expect_variant_matches(const std::string& path, const std::vector<std::string>& texts) {
  const auto sp = load_sentencepiece_tokenizer(path);
  const auto vt = make_vocab_tokenizer(sp->vocab());
  std::mt19937 rng(5);
  std::vector<std::string> all = texts;
  for (int i = 0; i < 800; ++i) all.push_back(random_text(rng));
  for (const auto& s : all) {
    const auto want = sp->encode(s, true);
    ASSERT_EQ(vt->encode(s, true), want) << path << " text: " << printable(s);
    const std::string dec = sp->decode(want);
    ASSERT_EQ(vt->decode(want), dec) << path << " text: " << printable(s);
    ASSERT_EQ(stream_decode(*vt, want), dec) << path << " text: " << printable(s);
  }
}

TEST(Tokenizer, UserDefinedAndUnusedPieces) {
  // New user-defined pieces (one with a space, one of two ▁), an existing piece ("thing")
  // retyped USER_DEFINED, and common merge targets retyped UNUSED (resegmentation).
  const std::vector<std::string> user = {"<|im_start|>", "<|im_end|>", "<tool>", "ab c", "\xe2\x96\x81\xe2\x96\x81", "qqq"};
  const std::vector<std::pair<std::string, int>> retype = {
      {"thing", 4}, {"\xe2\x96\x81the", 5}, {"ing", 5}, {"\xe2\x96\x81token", 5}, {"izer", 5}, {"\xe2\x96\x81" "and", 5}};
  const std::string path = write_variant("user_unused", retype, user, true, true);
  const auto sp = load_sentencepiece_tokenizer(path);
  int n_user = 0, n_unused = 0;
  for (auto ty : sp->vocab().types) {
    n_user += ty == TokenType::UserDefined;
    n_unused += ty == TokenType::Unused;
  }
  EXPECT_EQ(n_user, int(user.size()) + 1);
  EXPECT_EQ(n_unused, 5);
  expect_variant_matches(path, {"<|im_start|>user\nthe thing and the tokenizer<|im_end|>", "ab cab c ab  c",
                                "  the  theme  <tool><tool> qqqq nothing things ", "running and singing the tokenizers", "a\xe2\x96\x81\xe2\x96\x81" "b"});
}

TEST(Tokenizer, UserDefinedPiecesWordSplitPath) {
  // User-defined pieces without an inner ▁ and no UNUSED pieces: the vocab tokenizer encodes
  // word by word (see encode_normalized); it must still match the whole-text reference.
  const std::vector<std::string> user = {"<|im_start|>", "<|im_end|>", "ab c", "\xe2\x96\x81<tool>", "qqq"};
  const std::string path = write_variant("user_only", {{"thing", 4}, {"\xe2\x96\x81Hello", 4}}, user, true, true);
  expect_variant_matches(path, {"<|im_start|>user\nthe thing<|im_end|>", "ab cab c ab  c", " <tool><tool> <tool>",
                                "Hello Hello, qqqq nothing things"});
}

TEST(Tokenizer, NormalizerFlagVariants) {
  const std::vector<std::string> texts = {"  Hello   world  ", "a", " ", "\t x \n", "  \xf0\x9f\x98\x80  end "};
  expect_variant_matches(write_variant("keep_ws", {}, {}, true, false), texts);
  expect_variant_matches(write_variant("no_prefix", {}, {}, false, true), texts);
  expect_variant_matches(write_variant("raw", {}, {}, false, false), texts);
}

void time_one_megabyte(const std::string& label, const std::string& text) {
  const auto& t = toks();
  // CPU time (the machine is shared; wall time would measure the neighbours).
  const std::clock_t c0 = std::clock();
  auto t0 = std::chrono::steady_clock::now();
  const auto ids = t.vt->encode(text, true);
  auto t1 = std::chrono::steady_clock::now();
  const std::clock_t c1 = std::clock();
  const auto want = t.sp->encode(text, true);
  auto t2 = std::chrono::steady_clock::now();
  const std::string dec = t.vt->decode(ids);
  auto t3 = std::chrono::steady_clock::now();
  const double ms_vt = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double cpu_ms_vt = 1000.0 * double(c1 - c0) / CLOCKS_PER_SEC;
  const double ms_sp = std::chrono::duration<double, std::milli>(t2 - t1).count();
  const double ms_dec = std::chrono::duration<double, std::milli>(t3 - t2).count();
  std::printf("%s (%zu bytes, %zu tokens): vocab encode %.1f ms (cpu %.1f ms), libsentencepiece encode %.1f ms, "
              "vocab decode %.1f ms\n",
              label.c_str(), text.size(), ids.size(), ms_vt, cpu_ms_vt, ms_sp, ms_dec);
  EXPECT_EQ(ids, want);
  EXPECT_EQ(dec, t.sp->decode(want));
  EXPECT_LT(cpu_ms_vt, 2000.0);  // typically well under 500 ms; generous for slow machines
}

TEST(Tokenizer, SpeedOneMegabyte) {
  // 1 MB texts: the vocab tokenizer must be O(n log n) and agree with sentencepiece.
  std::mt19937 rng(3);
  {  // corpus-like: mixed-language lines with repeats, plus random fragments
    const std::string raw = test::read_file(data_dir() + "/tokenizer_corpus.txt");
    std::string text;
    while (text.size() < (1u << 20)) {
      text += raw.substr(rng() % 1000, 2000 + rng() % 3000);
      text += random_text(rng);
    }
    time_one_megabyte("1 MB corpus-like", text);
  }
  {  // few repeats: random vocabulary pieces glued into random "words"
    const auto& v = toks().sp->vocab();
    std::string text;
    while (text.size() < (1u << 20)) {
      const size_t id = 259 + rng() % (v.pieces.size() - 259);
      for (size_t i = 0; i < v.pieces[id].size(); ++i) {
        if (v.pieces[id].compare(i, 3, "\xe2\x96\x81") == 0) { text += ' '; i += 2; } else text += v.pieces[id][i];
      }
      if (rng() % 7 == 0) text += random_text(rng);
    }
    time_one_megabyte("1 MB random pieces", text);
  }
  {  // one 256 KB "word" without spaces: a single BPE run with a large heap
    std::string text;
    while (text.size() < (1u << 18)) text += random_text(rng);
    std::string nospace;
    for (const char c : text) if (c != ' ') nospace += c;
    time_one_megabyte("256 KB without spaces", nospace);
  }
}

}  // namespace
}  // namespace lcx
