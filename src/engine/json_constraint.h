// JSON mode (OpenAI's response_format {"type": "json_object"}): generation is constrained so
// that the output is always a prefix of one JSON object (RFC 8259), and ends when the object
// closes. Every sampling step masks the tokens whose bytes would leave the JSON grammar; the
// check runs a byte-level pushdown automaton (JsonPrefix) from the current state over each
// candidate token, which for a 32000-token vocabulary is well under a millisecond because most
// tokens fail on their first byte.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace lcx {

// Byte-level recogniser of JSON object prefixes. A plain value type (no allocation), so a
// candidate token is tested on a copy. Whitespace outside strings is limited to
// kMaxWhitespace bytes in a row (llama.cpp's JSON grammar allows a newline and 20 blanks), and
// to kMaxLeading before the object, so that a model cannot stall in indentation.
class JsonPrefix {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxWhitespace = 24;
  static constexpr int kMaxLeading = 2;

  // false (and the state is then unspecified) when `c` cannot continue a JSON object prefix.
  bool feed(uint8_t c);
  bool feed(const std::string& bytes) {
    for (unsigned char c : bytes)
      if (!feed(c)) return false;
    return true;
  }
  // The top-level object has closed: the output is one complete JSON object.
  bool complete() const { return done_; }

 private:
  enum class Lex : uint8_t {
    Value,       // before a value (after ':' or ',' in an array)
    ArrayFirst,  // after '[': a value or ']' 
    Key,         // before a key or '}' (after '{')
    KeyOnly,     // before a key (after ',' in an object)
    Colon,       // after a key
    After,       // after a value: ',' or the container's close
    String,      // inside a string
    Escape,      // after a backslash in a string
    Unicode,     // inside \uXXXX (lit_ counts the hex digits)
    Literal,     // inside true / false / null (lit_ = index of the next char)
    NumSign,     // after '-'
    NumZero,     // after a leading 0
    NumInt,      // in the integer digits
    NumDot,      // after '.'
    NumFrac,     // in the fraction digits
    NumExp,      // after 'e' / 'E'
    NumExpSign,  // after the exponent's sign
    NumExpDigit, // in the exponent digits
  };
  bool value_start(uint8_t c);
  bool after_value(uint8_t c);  // ',' ']' '}' or whitespace after a finished value
  bool close(uint8_t c);
  bool space(uint8_t c);

  std::array<uint8_t, kMaxDepth> stack_{};  // '{' or '['
  int depth_ = 0;
  Lex lex_ = Lex::Value;
  bool started_ = false;   // the top-level '{' was seen
  bool done_ = false;
  bool key_string_ = false;  // the current string is an object key
  uint8_t lit_ = 0;
  const char* literal_ = nullptr;
  uint8_t ws_ = 0;         // whitespace bytes in a row
};

// The tokens that may come next in JSON mode: mask[id] = 1 when the token's bytes continue the
// prefix (EOS only once the object is complete). token_bytes[id]: the bytes each token stands
// for in running text (control tokens: empty, never allowed).
void json_allowed_tokens(const JsonPrefix& state, const std::vector<std::string>& token_bytes, int32_t eos_id,
                         std::vector<uint8_t>& mask);

}  // namespace lcx
