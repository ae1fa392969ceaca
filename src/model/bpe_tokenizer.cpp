// Byte-level BPE (GPT-2, Radford et al. 2019; the scheme of Llama 3's tokenizer): text is split
// by a pre-tokenizer regex, each piece's UTF-8 bytes are written in GPT-2's byte alphabet (every
// byte one printable character) and merged pairwise in the order of the merge list. Reference
// behaviour: HF tokenizers' ByteLevel + BPE models and llama.cpp's llm_tokenizer_bpe (the regex
// strings below are the tokenizers' own, as tokenizer.json / llama.cpp's pre-tokenizer table
// give them). Checked against llama.cpp's GPT-2 vocabulary test (tests/test_tokenizer.cpp).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <memory>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "model/tokenizer.h"
#include "runtime/error.h"

namespace lcx {

namespace {

// GPT-2's bytes_to_unicode(): bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ')
// stand for themselves, the other 68 (controls, space, 0x7f-0xa0, 0xad) for U+0100, U+0101, ...
// in byte order. So ' ' is 'Ġ' (U+0120) and '\n' is 'Ċ' (U+010A).
struct ByteAlphabet {
  std::string enc[256];                      // byte -> UTF-8 of its character
  std::unordered_map<uint32_t, uint8_t> dec;  // code point -> byte
};

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a = [] {
    ByteAlphabet m;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : next++;
      m.enc[b] = utf8_of(cp);
      m.dec[cp] = uint8_t(b);
    }
    return m;
  }();
  return a;
}

// Length of the UTF-8 character at s[i] (1 for a stray byte, so that any string splits).
size_t char_len(std::string_view s, size_t i) {
  const uint8_t c = uint8_t(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

uint32_t code_point(std::string_view c) {
  const auto u = [&](size_t k) { return uint32_t(uint8_t(c[k])); };
  switch (c.size()) {
    case 1: return u(0);
    case 2: return ((u(0) & 0x1F) << 6) | (u(1) & 0x3F);
    case 3: return ((u(0) & 0x0F) << 12) | ((u(1) & 0x3F) << 6) | (u(2) & 0x3F);
    default: return ((u(0) & 0x07) << 18) | ((u(1) & 0x3F) << 12) | ((u(2) & 0x3F) << 6) | (u(3) & 0x3F);
  }
}

// Pre-tokenizer regexes by GGUF tokenizer.ggml.pre name.
//   GPT-2 (HF ByteLevel's default; "default", "gpt-2"):
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
//   Llama 3 (tokenizer.json's Split pattern; "llama-bpe", "llama3"): case-insensitive
//   contractions, letters with one leading non-letter, digits in threes, newlines apart.
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(SpmVocab v) : v_(std::move(v)) {
    const size_t n = v_.pieces.size();
    if (n == 0) fail("tokenizer vocabulary is empty (GGUF tokenizer.ggml.tokens missing?)");
    if (v_.types.size() != n) fail("tokenizer vocabulary is inconsistent: token types and pieces differ in number");
    for (int32_t id : {v_.bos_id, v_.eos_id, v_.unk_id, v_.pad_id})
      if (id < -1 || id >= int32_t(n))
        fail("special token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n));
    const char* pattern = nullptr;
    if (v_.pre == "default" || v_.pre == "gpt-2" || v_.pre == "gpt2" || v_.pre.empty()) {
      pattern = kGpt2Pattern;
    } else if (v_.pre == "llama-bpe" || v_.pre == "llama3" || v_.pre == "llama-v3") {
      pattern = kLlama3Pattern;
      ignore_merges_ = true;  // tokenizer.json "ignore_merges": a piece in the vocabulary is one token
    } else {
      fail("byte-level BPE pre-tokenizer '" + v_.pre +
           "' (GGUF tokenizer.ggml.pre) is not supported: longctx knows 'default'/'gpt-2' and 'llama-bpe' (Llama 3)");
    }
    int err = 0;
    PCRE2_SIZE off = 0;
    // Owned from here on: a later check that throws must not leak it (found by LeakSanitizer).
    re_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr));
    if (!re_) fail("internal: pre-tokenizer regex does not compile (PCRE2 error " + std::to_string(err) + ")");
    ids_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      ids_.emplace(v_.pieces[i], int32_t(i));  // first id wins for duplicates
      if (v_.types[i] == TokenType::UserDefined && !v_.pieces[i].empty()) user_defined_.push_back(int32_t(i));
    }
    std::sort(user_defined_.begin(), user_defined_.end(),
              [&](int32_t a, int32_t b) { return v_.pieces[size_t(a)].size() > v_.pieces[size_t(b)].size(); });
    ranks_.reserve(v_.merges.size());
    for (size_t r = 0; r < v_.merges.size(); ++r) {
      const std::string& m = v_.merges[r];
      if (m.find(' ', 1) == std::string::npos)
        fail("tokenizer merge #" + std::to_string(r) + " '" + m + "' is not two pieces separated by a space");
      ranks_.emplace(m, int32_t(r));
    }
  }

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && v_.add_bos && v_.bos_id >= 0) out.push_back(v_.bos_id);
    // User-defined pieces are kept whole wherever they occur (longest first); the text between
    // them goes through the regex and the merges.
    size_t start = 0, i = 0;
    while (i < text.size()) {
      int32_t hit = -1;
      for (int32_t id : user_defined_) {
        const std::string& p = v_.pieces[size_t(id)];
        if (text.compare(i, p.size(), p) == 0) {
          hit = id;
          break;
        }
      }
      if (hit < 0) {
        ++i;
        continue;
      }
      encode_plain(std::string_view(text).substr(start, i - start), out);
      out.push_back(hit);
      i += v_.pieces[size_t(hit)].size();
      start = i;
    }
    encode_plain(std::string_view(text).substr(start), out);
    return out;
  }

  std::string token_bytes(int32_t id) const override {
    if (id < 0 || size_t(id) >= v_.pieces.size()) return "";
    const std::string& p = v_.pieces[size_t(id)];
    switch (v_.types[size_t(id)]) {
      case TokenType::Control: return "";
      case TokenType::UserDefined: return p;  // stored as text
      default: break;
    }
    const ByteAlphabet& a = byte_alphabet();
    std::string out;
    for (size_t i = 0; i < p.size();) {
      const size_t len = char_len(p, i);
      const std::string_view c = std::string_view(p).substr(i, len);
      const auto it = a.dec.find(code_point(c));
      if (it != a.dec.end()) {
        out += char(it->second);
      } else {
        out.append(c);  // not in the byte alphabet: the character itself
      }
      i += len;
    }
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    for (const int32_t id : ids) {
      if (id < 0 || size_t(id) >= v_.pieces.size())
        fail("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(v_.pieces.size()) +
             "): the ids do not belong to this tokenizer");
    }
    StreamDecoder dec(*this);
    std::string out;
    for (const int32_t id : ids) out += dec.push(id);
    out += dec.flush();
    return out;
  }

  const SpmVocab& vocab() const override { return v_; }
  void set_add_bos(bool on) override { v_.add_bos = on; }

 private:
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    struct DataFree {
      void operator()(pcre2_match_data* d) const { pcre2_match_data_free(d); }
    };
    const std::unique_ptr<pcre2_match_data, DataFree> owner(pcre2_match_data_create_from_pattern(re_.get(), nullptr));
    pcre2_match_data* md = owner.get();
    if (md == nullptr) fail("out of memory (tokenizer)");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(re_.get(), subject, text.size(), pos, 0, md, nullptr);
      if (rc < 0) {  // no further match (or invalid UTF-8 the pattern cannot cross): the rest is one piece
        encode_piece(text.substr(pos), out);
        break;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (b > pos) encode_piece(text.substr(pos, b - pos), out);  // text no alternative matched
      if (e == b) {  // empty match: take one character and go on
        const size_t len = char_len(text, b);
        encode_piece(text.substr(b, len), out);
        pos = b + len;
        continue;
      }
      encode_piece(text.substr(b, e - b), out);
      pos = e;
    }
  }

  // One pre-tokenized piece: bytes -> GPT-2 alphabet -> merges by rank -> ids.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.empty()) return;
    const ByteAlphabet& a = byte_alphabet();
    std::vector<std::string> sym;
    sym.reserve(piece.size());
    std::string word;
    for (char c : piece) {
      sym.push_back(a.enc[uint8_t(c)]);
      word += sym.back();
    }
    if (ignore_merges_) {
      if (auto it = ids_.find(word); it != ids_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    // Merge the adjacent pair of lowest rank (leftmost on ties) until none is in the list.
    std::string key;
    while (sym.size() > 1) {
      int32_t best = INT32_MAX;
      size_t at = 0;
      for (size_t k = 0; k + 1 < sym.size(); ++k) {
        key.assign(sym[k]).append(1, ' ').append(sym[k + 1]);
        if (auto it = ranks_.find(key); it != ranks_.end() && it->second < best) {
          best = it->second;
          at = k;
        }
      }
      if (best == INT32_MAX) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + std::ptrdiff_t(at) + 1);
    }
    for (const std::string& s : sym) {
      if (auto it = ids_.find(s); it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      // Not in the vocabulary (an incomplete one): its characters one by one, unk otherwise.
      for (size_t i = 0; i < s.size();) {
        const size_t len = char_len(s, i);
        if (auto it = ids_.find(s.substr(i, len)); it != ids_.end()) {
          out.push_back(it->second);
        } else if (v_.unk_id >= 0) {
          out.push_back(v_.unk_id);
        }
        i += len;
      }
    }
  }

  struct CodeFree {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  SpmVocab v_;
  std::unique_ptr<pcre2_code, CodeFree> re_;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<std::string, int32_t> ranks_;  // "left right" -> rank
  std::vector<int32_t> user_defined_;               // longest first
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(SpmVocab vocab) {
  vocab.byte_level = true;
  return std::make_unique<BpeTokenizer>(std::move(vocab));
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, int32_t bos_id, int32_t eos_id,
                                                  int64_t n_vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open tokenizer '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const std::exception& e) {
    fail("'" + path + "' is not valid JSON: " + e.what());
  }
  const auto why = [&](const std::string& w) -> void {
    fail("'" + path + "': " + w + " (longctx reads byte-level BPE tokenizer.json files such as Llama 3's; for "
         "SentencePiece models pass tokenizer.model)");
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) why("no \"model\" object");
  const nlohmann::json& model = j["model"];
  if (model.value("type", std::string()) != "BPE") why("model.type is not \"BPE\"");
  if (!model.contains("vocab") || !model["vocab"].is_object()) why("model.vocab is missing");
  // The pre-tokenizer: GPT-2's ByteLevel regex, or Llama 3's Split pattern before a ByteLevel.
  std::string pre;
  const nlohmann::json& pt = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json();
  std::vector<nlohmann::json> steps;
  if (pt.is_object() && pt.value("type", std::string()) == "Sequence" && pt.contains("pretokenizers") &&
      pt["pretokenizers"].is_array()) {
    for (const auto& p : pt["pretokenizers"]) steps.push_back(p);
  } else if (pt.is_object()) {
    steps.push_back(pt);
  }
  bool byte_level = false;
  for (const auto& p : steps) {
    if (!p.is_object()) continue;
    const std::string type = p.value("type", std::string());
    if (type == "ByteLevel") {
      byte_level = true;
      if (p.value("use_regex", true) && pre.empty()) pre = "default";
    } else if (type == "Split" && p.contains("pattern") && p["pattern"].is_object() && p["pattern"].contains("Regex")) {
      const std::string rx = p["pattern"]["Regex"].is_string() ? p["pattern"]["Regex"].get<std::string>() : "";
      if (rx == kLlama3Pattern) {
        pre = "llama-bpe";
      } else {
        why("pre-tokenizer regex '" + rx + "' is not one longctx knows (GPT-2's or Llama 3's)");
      }
    } else {
      why("pre-tokenizer step '" + type + "' is not supported");
    }
  }
  if (!byte_level || pre.empty()) why("the pre-tokenizer is not byte-level BPE");

  SpmVocab v;
  v.byte_level = true;
  v.pre = pre;
  int64_t n = 0;
  for (const auto& [piece, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) why("bad id for '" + piece + "'");
    n = std::max(n, id.get<int64_t>() + 1);
  }
  const nlohmann::json added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : nlohmann::json::array();
  for (const auto& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content")) why("bad added_tokens entry");
    const int64_t id = a["id"].get<int64_t>();
    if (id < 0 || id > (1 << 24)) why("added token id out of range");
    n = std::max(n, id + 1);
  }
  n = std::max(n, n_vocab);
  v.pieces.assign(size_t(n), std::string());
  v.types.assign(size_t(n), TokenType::Unused);
  v.scores.assign(size_t(n), 0.0f);
  for (const auto& [piece, id] : model["vocab"].items()) {
    const size_t i = size_t(id.get<int64_t>());
    if (v.types[i] == TokenType::Normal)
      why("model.vocab gives id " + std::to_string(i) + " to both '" + v.pieces[i] + "' and '" + piece + "'");
    v.pieces[i] = piece;
    v.types[i] = TokenType::Normal;
  }
  for (const auto& a : added) {
    const size_t id = size_t(a["id"].get<int64_t>());
    v.pieces[id] = a["content"].get<std::string>();
    v.types[id] = a.value("special", false) ? TokenType::Control : TokenType::UserDefined;
  }
  for (size_t i = 0; i < v.pieces.size(); ++i)
    if (v.types[i] == TokenType::Unused) v.pieces[i] = "[PAD" + std::to_string(i) + "]";  // as llama.cpp pads
  if (!model.contains("merges") || !model["merges"].is_array()) why("model.merges is missing");
  // As the tokenizers library (MergeTokenOutOfVocabulary): both sides of a merge and their
  // concatenation must be vocabulary pieces.
  std::unordered_set<std::string> known;
  for (const auto& [piece, id] : model["vocab"].items()) known.insert(piece);
  for (const auto& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string t = m.get<std::string>();
      const size_t sp = t.find(' ', 1);
      if (sp == std::string::npos) why("merges entry '" + t + "' is not two pieces separated by a space");
      a = t.substr(0, sp);
      b = t.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // newer files: pairs
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      why("bad merges entry");
    }
    for (const std::string& piece : {a, b, a + b})
      if (!known.count(piece)) why("merge '" + a + " " + b + "' uses '" + piece + "', which is not in model.vocab");
    v.merges.push_back(a + " " + b);
  }
  v.bos_id = bos_id >= 0 && bos_id < n ? bos_id : -1;
  v.eos_id = eos_id >= 0 && eos_id < n ? eos_id : -1;
  v.unk_id = -1;
  // BOS when the post-processor's template for one sequence starts with a special token.
  v.add_bos = false;
  const std::function<void(const nlohmann::json&)> scan = [&](const nlohmann::json& p) {
    if (!p.is_object()) return;
    if (p.value("type", std::string()) == "TemplateProcessing" && p.contains("single") && p["single"].is_array() &&
        !p["single"].empty() && p["single"][0].is_object() && p["single"][0].contains("SpecialToken"))
      v.add_bos = true;
    if (p.contains("processors") && p["processors"].is_array())
      for (const auto& q : p["processors"]) scan(q);
  };
  if (j.contains("post_processor")) scan(j["post_processor"]);
  return make_bpe_tokenizer(std::move(v));
}

}  // namespace lcx
