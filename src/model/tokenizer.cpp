// Two SentencePiece tokenizers with one decoding path.
//
// * SentencePieceTokenizer wraps libsentencepiece (the reference) for tokenizer.model files.
// * VocabTokenizer re-implements SentencePiece's encoding from the vocabulary alone (what GGUF
//   stores): the identity Normalizer (normalizer.cc), the BPE model (bpe_model.cc) and the
//   byte fallback of SentencePieceProcessor::PopulateSentencePieceText, as in sentencepiece
//   v0.1.97 (the version that produced the fixtures and that Debian ships).
// * StreamDecoder reproduces SentencePieceProcessor::Decode incrementally; VocabTokenizer's
//   decode() is a StreamDecoder run over all ids, so streaming and batch decoding cannot drift.
#include "model/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "runtime/error.h"

namespace lcx {

namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, SentencePiece's escaped ' '
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";  // U+FFFD
constexpr std::string_view kUnkSurface = " \xe2\x81\x87 ";     // " ⁇ ", trainer_spec.unk_surface default

bool is_trail_byte(char c) { return (uint8_t(c) & 0xC0) == 0x80; }

// How many bytes sentencepiece's string_util::DecodeUTF8 wants for a character starting with
// `lead` (0: never a valid start). The lead byte alone picks the branch there.
size_t utf8_needed(char lead) {
  const uint8_t b = uint8_t(lead);
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 0;
}

// Length of the character at the front of `s` if sentencepiece's IsValidDecodeUTF8 accepts it
// (shortest form, no surrogates, at most U+10FFFF; a literal U+FFFD is valid), else 0 —
// malformed or truncated, which SentencePiece replaces by U+FFFD consuming one byte.
size_t valid_utf8_len(std::string_view s) {
  if (s.empty()) return 0;
  const size_t need = utf8_needed(s[0]);
  if (need == 0 || s.size() < need) return 0;
  if (need == 1) return 1;
  uint32_t cp = uint8_t(s[0]) & (0x7F >> need);
  for (size_t i = 1; i < need; ++i) {
    if (!is_trail_byte(s[i])) return 0;
    cp = (cp << 6) | (uint8_t(s[i]) & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[need] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return 0;
  return need;
}

// sentencepiece's string_util::OneCharLen: character length from the lead byte's high nibble.
size_t one_char_len(char lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[uint8_t(lead) >> 4];
}

// "<0xNN>" -> NN, anything else -> -1 (sentencepiece's PieceToByte).
int byte_of_piece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = p[i];
    const int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// A piece's text with every ▁ turned back into a space (StrReplaceAll in Decode).
std::string unescape_spaces(std::string_view p) {
  std::string s;
  s.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    if (p.substr(i, 3) == kSpaceSymbol) {
      s += ' ';
      i += 3;
    } else {
      s += p[i++];
    }
  }
  return s;
}

void check_id(const SpmVocab& v, int32_t id) {
  if (id < 0 || size_t(id) >= v.pieces.size())
    fail("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(v.pieces.size()) +
         "): the ids do not belong to this tokenizer");
}

// --- Minimal protobuf wire-format reader --------------------------------------------------------
// libsentencepiece 0.1.97 exposes neither USER_DEFINED piece types nor the NormalizerSpec flags
// through its API; the model file is a serialized ModelProto, so read those few fields directly
// (field numbers from sentencepiece_model.proto).
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view buf) : buf_(buf) {}
  // Advances to the next field; false at the end or on malformed input (then ok() is false).
  bool next() {
    if (pos_ >= buf_.size()) return false;
    uint64_t key = 0;
    if (!varint(key)) return ok_ = false;
    field_ = uint32_t(key >> 3);
    wire_ = uint32_t(key & 7);
    switch (wire_) {
      case 0: return varint(value_) || (ok_ = false);
      case 1: return skip(8);
      case 5:
        if (pos_ + 4 > buf_.size()) return ok_ = false;
        bytes_ = buf_.substr(pos_, 4);
        pos_ += 4;
        return true;
      case 2: {
        uint64_t n = 0;
        if (!varint(n) || n > buf_.size() - pos_) return ok_ = false;
        bytes_ = buf_.substr(pos_, size_t(n));
        pos_ += size_t(n);
        return true;
      }
      default: return ok_ = false;
    }
  }
  uint32_t field() const { return field_; }
  uint32_t wire() const { return wire_; }
  uint64_t varint_value() const { return value_; }
  std::string_view bytes() const { return bytes_; }
  bool ok() const { return ok_; }

 private:
  bool varint(uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64 && pos_ < buf_.size(); shift += 7) {
      const uint8_t c = uint8_t(buf_[pos_++]);
      out |= uint64_t(c & 0x7F) << shift;
      if (c < 0x80) return true;
    }
    return false;
  }
  bool skip(size_t n) {
    if (pos_ + n > buf_.size()) return ok_ = false;
    pos_ += n;
    return true;
  }
  std::string_view buf_;
  size_t pos_ = 0;
  uint32_t field_ = 0, wire_ = 0;
  uint64_t value_ = 0;
  std::string_view bytes_;
  bool ok_ = true;
};

struct ModelProtoInfo {
  std::vector<TokenType> types;  // ModelProto.pieces[i].type (default NORMAL)
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
  int model_type = 1;  // TrainerSpec.model_type: UNIGRAM = 1 (the proto default), BPE = 2, WORD, CHAR
  bool ok = false;
};

ModelProtoInfo read_model_proto(std::string_view serialized) {
  ModelProtoInfo info;
  ProtoReader top(serialized);
  while (top.next()) {
    if (top.field() == 1 && top.wire() == 2) {  // repeated SentencePiece pieces
      TokenType type = TokenType::Normal;
      ProtoReader piece(top.bytes());
      while (piece.next())
        if (piece.field() == 3 && piece.wire() == 0) type = TokenType(int32_t(piece.varint_value()));
      if (!piece.ok()) return info;
      info.types.push_back(type);
    } else if (top.field() == 2 && top.wire() == 2) {  // TrainerSpec trainer_spec
      ProtoReader spec(top.bytes());
      while (spec.next())
        if (spec.field() == 3 && spec.wire() == 0) info.model_type = int(spec.varint_value());
      if (!spec.ok()) return info;
    } else if (top.field() == 3 && top.wire() == 2) {  // NormalizerSpec normalizer_spec
      ProtoReader spec(top.bytes());
      while (spec.next()) {
        if (spec.wire() != 0) continue;
        if (spec.field() == 3) info.add_dummy_prefix = spec.varint_value() != 0;
        if (spec.field() == 4) info.remove_extra_whitespaces = spec.varint_value() != 0;
      }
      if (!spec.ok()) return info;
    }
  }
  info.ok = top.ok();
  return info;
}

// --- libsentencepiece ---------------------------------------------------------------------------
class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto st = sp_.Load(path);
    if (!st.ok())
      fail("cannot load tokenizer '" + path + "': " + st.ToString() +
           " (expected a SentencePiece tokenizer.model; pass another one with --tokenizer)");
    const int n = sp_.GetPieceSize();
    if (n <= 0) fail("tokenizer '" + path + "' has an empty vocabulary");
    const ModelProtoInfo info = read_model_proto(sp_.serialized_model_proto());
    vocab_.pieces.resize(size_t(n));
    vocab_.scores.resize(size_t(n));
    vocab_.types.resize(size_t(n));
    for (int i = 0; i < n; ++i) {
      vocab_.pieces[size_t(i)] = sp_.IdToPiece(i);
      vocab_.scores[size_t(i)] = sp_.GetScore(i);
      vocab_.types[size_t(i)] = sp_.IsUnknown(i)   ? TokenType::Unknown
                                : sp_.IsControl(i) ? TokenType::Control
                                : sp_.IsUnused(i)  ? TokenType::Unused
                                : sp_.IsByte(i)    ? TokenType::Byte
                                                   : TokenType::Normal;
      // The API cannot tell USER_DEFINED from NORMAL; the proto can.
      if (info.ok && info.types.size() == size_t(n) && info.types[size_t(i)] == TokenType::UserDefined)
        vocab_.types[size_t(i)] = TokenType::UserDefined;
    }
    vocab_.bos_id = sp_.bos_id();
    vocab_.eos_id = sp_.eos_id();
    vocab_.unk_id = sp_.unk_id();
    vocab_.pad_id = sp_.pad_id();
    if (info.ok) {
      vocab_.spm_unigram = info.model_type == 1;
      vocab_.add_dummy_prefix = info.add_dummy_prefix;
      vocab_.remove_extra_whitespaces = info.remove_extra_whitespaces;
    }
  }
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int> ids;
    const auto st = sp_.Encode(text, &ids);
    if (!st.ok()) fail("sentencepiece cannot encode the text: " + st.ToString());
    std::vector<int32_t> out;
    if (add_bos) {
      if (vocab_.bos_id < 0) fail("this tokenizer has no BOS token; encode without BOS");
      out.push_back(vocab_.bos_id);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    for (const int32_t id : ids) check_id(vocab_, id);
    const std::vector<int> v(ids.begin(), ids.end());
    std::string out;
    const auto st = sp_.Decode(v, &out);
    if (!st.ok()) fail("sentencepiece cannot decode the ids: " + st.ToString());
    return out;
  }
  const SpmVocab& vocab() const override { return vocab_; }
  void set_add_bos(bool on) override { vocab_.add_bos = on; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  SpmVocab vocab_;
};

// --- Vocabulary-only SentencePiece BPE ----------------------------------------------------------
class VocabTokenizer : public Tokenizer {
 public:
  explicit VocabTokenizer(SpmVocab vocab) : vocab_(std::move(vocab)) {
    const size_t n = vocab_.pieces.size();
    if (n == 0) fail("tokenizer vocabulary is empty (GGUF tokenizer.ggml.tokens missing?)");
    if (vocab_.scores.size() != n || vocab_.types.size() != n)
      fail("tokenizer vocabulary is inconsistent: " + std::to_string(n) + " pieces, " +
           std::to_string(vocab_.scores.size()) + " scores, " + std::to_string(vocab_.types.size()) +
           " token types (GGUF tokenizer.ggml.tokens/scores/token_type must have equal lengths)");
    for (const int32_t id : {vocab_.bos_id, vocab_.eos_id, vocab_.pad_id})
      if (id < -1 || id >= int32_t(n))
        fail("special token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n));

    byte_ids_.fill(-1);
    for (size_t i = 0; i < n; ++i) {
      const std::string_view p = vocab_.pieces[i];
      const TokenType t = vocab_.types[i];
      const int ti = int(t);
      if (ti < int(TokenType::Normal) || ti > int(TokenType::Byte))
        fail("token " + std::to_string(i) + " has unknown token type " + std::to_string(ti));
      if (p.empty()) continue;  // never matchable (SentencePiece rejects such models)
      // bpe::Model merges only into NORMAL / USER_DEFINED / UNUSED pieces (model_interface.cc
      // InitializePieces); CONTROL / UNKNOWN / BYTE go to a reserved map that PieceToId also
      // consults. First definition wins on duplicates.
      const bool mergeable = t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Unused;
      (mergeable ? pieces_ : reserved_).emplace(p, int32_t(i));
      if (mergeable) max_piece_len_ = std::max(max_piece_len_, p.size());
      if (t == TokenType::UserDefined) {
        user_defined_.insert(p);
        if (std::find(user_lens_.begin(), user_lens_.end(), p.size()) == user_lens_.end()) user_lens_.push_back(p.size());
      }
      if (t == TokenType::Unused) has_unused_ = true;
      if (mergeable && p.find(kSpaceSymbol, 1) != std::string_view::npos) split_at_spaces_ = false;
      if (t == TokenType::Unknown && unk_id_ < 0) unk_id_ = int32_t(i);
      if (t == TokenType::Byte) {
        const int b = byte_of_piece(p);
        if (b < 0) fail("byte token " + std::to_string(i) + " '" + std::string(p) + "' is not of the form <0xNN>");
        if (byte_ids_[size_t(b)] < 0) byte_ids_[size_t(b)] = int32_t(i);
        byte_fallback_ = true;
      }
    }
    std::sort(user_lens_.rbegin(), user_lens_.rend());  // longest match first
    if (has_unused_) split_at_spaces_ = false;
    if (vocab_.unk_id >= 0 && vocab_.unk_id < int32_t(n)) unk_id_ = vocab_.unk_id;
    if (unk_id_ < 0) fail("tokenizer vocabulary has no unknown token (no token of type UNKNOWN and no unk_id)");
    vocab_.unk_id = unk_id_;
    // A missing byte piece falls back to <unk>, as PieceToId(ByteToPiece(b)) does.
    for (auto& id : byte_ids_)
      if (id < 0) id = unk_id_;
  }

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos) {
      if (vocab_.bos_id < 0) fail("this tokenizer has no BOS token; encode without BOS");
      out.push_back(vocab_.bos_id);
    }
    const std::string normalized = normalize(text);
    encode_normalized(normalized, out);
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    for (const int32_t id : ids) check_id(vocab_, id);  // as DecodeIds: "Invalid id"
    StreamDecoder dec(*this);
    std::string out;
    for (const int32_t id : ids) out += dec.push(id);
    out += dec.flush();
    return out;
  }

  const SpmVocab& vocab() const override { return vocab_; }
  void set_add_bos(bool on) override { vocab_.add_bos = on; }

 private:
  // Length of the longest user-defined piece at the front of `s`, 0 if none
  // (normalizer::PrefixMatcher, a trie over the USER_DEFINED pieces).
  size_t match_user_defined(std::string_view s) const {
    for (const size_t len : user_lens_)
      if (len <= s.size() && user_defined_.count(s.substr(0, len))) return len;
    return 0;
  }

  // Normalizer::Normalize with no precompiled charsmap (name "identity"), escape_whitespaces on
  // and treat_whitespace_as_suffix off. Only ' ' counts as whitespace; tabs/newlines stay.
  std::string normalize(std::string_view input) const {
    // NormalizePrefix: a user-defined piece, else one UTF-8 character, else one malformed byte
    // that becomes U+FFFD. Returns {normalized text, input bytes consumed}.
    const auto prefix = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
      if (const size_t len = match_user_defined(s)) return {s.substr(0, len), len};
      if (const size_t len = valid_utf8_len(s)) return {s.substr(0, len), len};
      return {kReplacementChar, 1};
    };
    const bool remove_ws = vocab_.remove_extra_whitespaces;
    size_t i = 0;
    if (remove_ws)  // leading spaces
      while (i < input.size()) {
        const auto [sp, len] = prefix(input.substr(i));
        if (sp != " ") break;
        i += len;
      }
    std::string out;
    if (i == input.size()) return out;  // empty or all spaces
    out.reserve((input.size() - i) * 3 + 3);
    if (vocab_.add_dummy_prefix) out += kSpaceSymbol;
    bool prev_space = remove_ws;
    while (i < input.size()) {
      auto [sp, len] = prefix(input.substr(i));
      // Collapses a run of spaces: drop leading spaces of this piece if the last one ended with one.
      while (prev_space && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
      if (!sp.empty()) {
        for (const char c : sp) {
          if (c == ' ') out += kSpaceSymbol;
          else out += c;
        }
        prev_space = sp.back() == ' ';
      }
      i += len;
      if (!remove_ws) prev_space = false;
    }
    if (remove_ws)  // trailing spaces (this may also eat the dummy prefix, as SentencePiece does)
      while (out.size() >= kSpaceSymbol.size() && std::string_view(out).substr(out.size() - 3) == kSpaceSymbol)
        out.resize(out.size() - 3);
    return out;
  }

  // PieceToId: reserved pieces first, then mergeable ones, else <unk>.
  int32_t piece_to_id(std::string_view p) const {
    if (auto it = reserved_.find(p); it != reserved_.end()) return it->second;
    if (auto it = pieces_.find(p); it != pieces_.end()) return it->second;
    return unk_id_;
  }

  // Candidate merge of two adjacent symbols.
  struct Pair {
    float score;
    int32_t left, right;
    uint32_t len;  // length of the merged piece when the pair was queued
  };
  // std::push_heap keeps the largest on top: larger score first, then smaller `left` — the
  // order of bpe_model.cc's SymbolPairComparator (ties go to the leftmost pair).
  static bool pair_lower(const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
  struct Symbol {
    int32_t prev, next;   // neighbours, -1 at the ends
    uint32_t begin, len;  // bytes of the segment; len 0 once merged into the left neighbour
    bool freeze;          // user-defined piece: never merged
  };
  // Buffers reused across the segments of one encode() call.
  struct Scratch {
    std::vector<Symbol> sym;
    std::vector<Pair> agenda;
    // Merged piece -> the two pieces it was built from, for UNUSED pieces only (resegmentation).
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
    // Segment -> its ids: running text repeats words, and equal segments encode equally.
    std::unordered_map<std::string_view, std::vector<int32_t>> cache;
  };

  // Encodes the normalized text. SentencePiece runs BPE over the whole text at once. When no
  // mergeable piece has ▁ anywhere but at its start (true for OpenLLaMA/LLaMA), no merge can cross
  // the boundary before a ▁, so every "▁word" segment evolves on its own and in the same relative
  // order as in the whole-text run; encoding segment by segment then gives identical ids with
  // small heaps and lets repeated words hit a cache. With UNUSED pieces the resegmentation map is
  // shared across the text (last writer wins), so those vocabularies take the whole-text path.
  void encode_normalized(std::string_view text, std::vector<int32_t>& out) const {
    Scratch scratch;
    if (!split_at_spaces_) {
      bpe(text, scratch, out);
      return;
    }
    for (size_t begin = 0; begin < text.size();) {
      size_t end = text.find(kSpaceSymbol, begin + 1);
      if (end == std::string_view::npos) end = text.size();
      const std::string_view seg = text.substr(begin, end - begin);
      begin = end;
      if (seg.size() > 64) {  // long runs (no spaces: CJK, code) are rarely repeated
        bpe(seg, scratch, out);
        continue;
      }
      if (const auto it = scratch.cache.find(seg); it != scratch.cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
      const size_t first = out.size();
      bpe(seg, scratch, out);
      scratch.cache.emplace(seg, std::vector<int32_t>(out.begin() + std::ptrdiff_t(first), out.end()));
    }
  }

  // bpe::Model::SampleEncode with alpha = 0, then PopulateSentencePieceText's byte fallback.
  // Symbols form a doubly linked list over `text`; an agenda (max-heap) holds candidate adjacent
  // pairs whose concatenation is a vocabulary piece. The best pair is merged; entries made stale
  // by earlier merges are recognised by their recorded length and skipped. O(n log n).
  void bpe(std::string_view text, Scratch& scratch, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::vector<Symbol>& sym = scratch.sym;
    std::vector<Pair>& agenda = scratch.agenda;
    auto& rev_merge = scratch.rev_merge;
    sym.clear();
    agenda.clear();

    const auto piece_of = [&](const Symbol& s) { return text.substr(s.begin, s.len); };
    const auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0 || sym[size_t(l)].freeze || sym[size_t(r)].freeze) return;
      const size_t len = sym[size_t(l)].len + sym[size_t(r)].len;
      if (len > max_piece_len_) return;  // cannot be in the vocabulary
      const std::string_view piece = text.substr(sym[size_t(l)].begin, len);
      const auto it = pieces_.find(piece);
      if (it == pieces_.end()) return;
      agenda.push_back({vocab_.scores[size_t(it->second)], l, r, uint32_t(len)});
      std::push_heap(agenda.begin(), agenda.end(), pair_lower);
      if (has_unused_ && vocab_.types[size_t(it->second)] == TokenType::Unused)
        rev_merge[piece] = {piece_of(sym[size_t(l)]), piece_of(sym[size_t(r)])};
    };

    // Split into characters (user-defined pieces stay whole and frozen).
    for (size_t pos = 0; pos < text.size();) {
      const std::string_view rest = text.substr(pos);
      size_t len = match_user_defined(rest);
      const bool freeze = len > 0;
      if (!freeze) len = std::min(rest.size(), one_char_len(rest[0]));
      const int32_t idx = int32_t(sym.size());
      sym.push_back({idx - 1, pos + len < text.size() ? idx + 1 : -1, uint32_t(pos), uint32_t(len), freeze});
      pos += len;
    }
    for (size_t i = 1; i < sym.size(); ++i) try_add(int32_t(i - 1), int32_t(i));

    while (!agenda.empty()) {
      std::pop_heap(agenda.begin(), agenda.end(), pair_lower);
      const Pair top = agenda.back();
      agenda.pop_back();
      Symbol& l = sym[size_t(top.left)];
      Symbol& r = sym[size_t(top.right)];
      // Stale: a side was merged away, or grew (symbols only grow), since the pair was queued.
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.len) continue;
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = top.left;
      r.len = 0;
      try_add(l.prev, top.left);
      try_add(top.left, l.next);
    }

    // Emit ids; UNUSED pieces are split back into what they were merged from; unknown pieces
    // become one <0xNN> token per UTF-8 byte.
    const auto emit = [&](auto&& self, std::string_view w) -> void {
      const int32_t id = piece_to_id(w);
      if (has_unused_ && vocab_.types[size_t(id)] == TokenType::Unused) {
        if (const auto it = rev_merge.find(w); it != rev_merge.end()) {
          self(self, it->second.first);
          self(self, it->second.second);
          return;
        }
      }
      if (byte_fallback_ && (id == unk_id_ || vocab_.types[size_t(id)] == TokenType::Unknown)) {
        for (const char c : w) out.push_back(byte_ids_[uint8_t(c)]);
      } else {
        out.push_back(id);
      }
    };
    for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) emit(emit, piece_of(sym[size_t(i)]));
  }

  SpmVocab vocab_;
  std::unordered_map<std::string_view, int32_t> pieces_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string_view, int32_t> reserved_;  // CONTROL, UNKNOWN, BYTE
  std::unordered_set<std::string_view> user_defined_;
  std::vector<size_t> user_lens_;  // distinct lengths of user-defined pieces, longest first
  std::array<int32_t, 256> byte_ids_{};
  size_t max_piece_len_ = 0;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool has_unused_ = false;
  bool split_at_spaces_ = true;  // see encode_normalized
};

}  // namespace

std::string Tokenizer::token_bytes(int32_t id) const {
  const SpmVocab& v = vocab();
  if (id < 0 || size_t(id) >= v.pieces.size()) return "";
  const std::string& p = v.pieces[size_t(id)];
  switch (v.types[size_t(id)]) {
    case TokenType::Control: return "";
    case TokenType::Unknown: return std::string(kUnkSurface);
    case TokenType::Byte:
      if (const int b = byte_of_piece(p); b >= 0) return std::string(1, char(b));
      break;
    default: break;
  }
  return unescape_spaces(p);
}

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<Tokenizer> make_vocab_tokenizer(SpmVocab vocab) {
  return std::make_unique<VocabTokenizer>(std::move(vocab));
}

// --- StreamDecoder: SentencePieceProcessor::Decode, one id at a time ----------------------------

void StreamDecoder::drain(bool final, std::string& out) {
  // Decode walks a finished run of byte pieces with IsValidDecodeUTF8: a valid character is
  // copied, anything else becomes U+FFFD and consumes one byte. The verdict for a position
  // depends only on the bytes its lead byte asks for, so wait until they are all here (or the
  // run has ended, or one of them already is not a continuation byte).
  size_t i = 0;
  while (i < pending_.size()) {
    const std::string_view rest = std::string_view(pending_).substr(i);
    const size_t need = utf8_needed(rest[0]);
    if (!final && need > rest.size()) {
      bool broken = false;
      for (size_t k = 1; k < rest.size(); ++k) broken = broken || !is_trail_byte(rest[k]);
      if (!broken) break;
    }
    if (const size_t len = valid_utf8_len(rest)) {
      out.append(rest.substr(0, len));
      i += len;
    } else {
      out.append(kReplacementChar);
      i += 1;
    }
  }
  pending_.erase(0, i);
  if (!out.empty()) emitted_ = true;
}

std::string StreamDecoder::push(int32_t id) {
  const SpmVocab& v = tok_.vocab();
  if (v.byte_level) {  // every token is bytes: complete characters leave, the rest waits
    std::string out;
    pending_ += tok_.token_bytes(id);
    drain(false, out);
    return out;
  }
  const bool in_range = id >= 0 && size_t(id) < v.pieces.size();
  static const std::string kNone;
  const std::string& piece = in_range ? v.pieces[size_t(id)] : kNone;
  const TokenType type = in_range ? v.types[size_t(id)] : TokenType::Control;
  std::string out;
  if (type == TokenType::Byte) {
    if (const int b = byte_of_piece(piece); b >= 0) {
      pending_ += char(b);
      drain(false, out);
      return out;
    }
  }
  drain(true, out);  // any other piece ends a run of byte pieces
  // Decode's is_bos_ws: while the text is empty, each visible piece loses one leading ▁
  // (with remove_extra_whitespaces; otherwise only the first that has one).
  if (bos_ws_seen_ || emitted_) strip_space_ = false;
  bool consumed = false;
  if (type == TokenType::Control) {
    // invisible (<s>, </s>)
  } else if (type == TokenType::Unknown) {
    out += kUnkSurface;
  } else {
    std::string_view p = piece;
    if (strip_space_ && (v.add_dummy_prefix || v.remove_extra_whitespaces) && p.substr(0, 3) == kSpaceSymbol) {
      p.remove_prefix(3);
      consumed = !v.remove_extra_whitespaces;
    }
    out += unescape_spaces(p);
  }
  bos_ws_seen_ = consumed;
  if (!out.empty()) emitted_ = true;
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  drain(true, out);
  return out;
}

}  // namespace lcx
