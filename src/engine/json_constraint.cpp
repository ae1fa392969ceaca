#include "engine/json_constraint.h"

namespace lcx {

namespace {
bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
}  // namespace

bool JsonPrefix::space(uint8_t c) {
  if (!is_ws(c)) return false;
  return ++ws_ <= (started_ ? kMaxWhitespace : kMaxLeading);
}

bool JsonPrefix::close(uint8_t c) {
  if (depth_ == 0 || stack_[size_t(depth_ - 1)] != (c == '}' ? '{' : '[')) return false;
  --depth_;
  if (depth_ == 0) done_ = true;
  lex_ = Lex::After;
  return true;
}

bool JsonPrefix::value_start(uint8_t c) {
  switch (c) {
    case '{':
    case '[':
      if (depth_ == kMaxDepth) return false;
      stack_[size_t(depth_++)] = c;
      lex_ = c == '{' ? Lex::Key : Lex::ArrayFirst;
      return true;
    case '"':
      lex_ = Lex::String;
      key_string_ = false;
      return true;
    case 't': literal_ = "true"; break;
    case 'f': literal_ = "false"; break;
    case 'n': literal_ = "null"; break;
    case '-': lex_ = Lex::NumSign; return true;
    case '0': lex_ = Lex::NumZero; return true;
    default:
      if (c >= '1' && c <= '9') {
        lex_ = Lex::NumInt;
        return true;
      }
      return false;
  }
  lex_ = Lex::Literal;
  lit_ = 1;
  return true;
}

bool JsonPrefix::after_value(uint8_t c) {
  lex_ = Lex::After;
  if (is_ws(c)) return space(c);
  if (c == ',') {
    if (depth_ == 0) return false;
    lex_ = stack_[size_t(depth_ - 1)] == '{' ? Lex::KeyOnly : Lex::Value;
    return true;
  }
  if (c == '}' || c == ']') return close(c);
  return false;
}

bool JsonPrefix::feed(uint8_t c) {
  if (done_) return false;  // one object, nothing after it
  if (lex_ != Lex::String && lex_ != Lex::Escape && lex_ != Lex::Unicode && !is_ws(c)) ws_ = 0;
  switch (lex_) {
    case Lex::Value:
      if (is_ws(c)) return space(c);
      if (!started_) {  // json_object: the top level is an object
        if (c != '{') return false;
        started_ = true;
      }
      return value_start(c);
    case Lex::ArrayFirst:
      if (is_ws(c)) return space(c);
      if (c == ']') return close(c);
      return value_start(c);
    case Lex::Key:
      if (is_ws(c)) return space(c);
      if (c == '}') return close(c);
      [[fallthrough]];
    case Lex::KeyOnly:
      if (is_ws(c)) return space(c);
      if (c != '"') return false;
      lex_ = Lex::String;
      key_string_ = true;
      return true;
    case Lex::Colon:
      if (is_ws(c)) return space(c);
      if (c != ':') return false;
      lex_ = Lex::Value;
      return true;
    case Lex::After:
      return after_value(c);
    case Lex::String:
      if (c == '"') {
        lex_ = key_string_ ? Lex::Colon : Lex::After;
        return true;
      }
      if (c == '\\') {
        lex_ = Lex::Escape;
        return true;
      }
      return c >= 0x20;  // control characters must be escaped
    case Lex::Escape:
      if (c == 'u') {
        lex_ = Lex::Unicode;
        lit_ = 0;
        return true;
      }
      lex_ = Lex::String;
      return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't';
    case Lex::Unicode:
      if (!is_hex(c)) return false;
      if (++lit_ == 4) lex_ = Lex::String;
      return true;
    case Lex::Literal:
      if (c != uint8_t(literal_[lit_])) return false;
      if (literal_[++lit_] == '\0') lex_ = Lex::After;
      return true;
    case Lex::NumSign:
      if (c == '0') {
        lex_ = Lex::NumZero;
        return true;
      }
      if (c >= '1' && c <= '9') {
        lex_ = Lex::NumInt;
        return true;
      }
      return false;
    case Lex::NumZero:
    case Lex::NumInt:
      if (is_digit(c) && lex_ == Lex::NumInt) return true;
      if (c == '.') {
        lex_ = Lex::NumDot;
        return true;
      }
      if (c == 'e' || c == 'E') {
        lex_ = Lex::NumExp;
        return true;
      }
      return after_value(c);
    case Lex::NumDot:
      if (!is_digit(c)) return false;
      lex_ = Lex::NumFrac;
      return true;
    case Lex::NumFrac:
      if (is_digit(c)) return true;
      if (c == 'e' || c == 'E') {
        lex_ = Lex::NumExp;
        return true;
      }
      return after_value(c);
    case Lex::NumExp:
      if (c == '+' || c == '-') {
        lex_ = Lex::NumExpSign;
        return true;
      }
      [[fallthrough]];
    case Lex::NumExpSign:
      if (!is_digit(c)) return false;
      lex_ = Lex::NumExpDigit;
      return true;
    case Lex::NumExpDigit:
      if (is_digit(c)) return true;
      return after_value(c);
  }
  return false;
}

void json_allowed_tokens(const JsonPrefix& state, const std::vector<std::string>& token_bytes, int32_t eos_id,
                         std::vector<uint8_t>& mask) {
  mask.assign(token_bytes.size(), 0);
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    const std::string& b = token_bytes[id];
    if (b.empty()) continue;
    JsonPrefix s = state;
    mask[id] = s.feed(b) ? 1 : 0;
  }
  if (state.complete() && eos_id >= 0 && size_t(eos_id) < mask.size()) mask[size_t(eos_id)] = 1;
}

}  // namespace lcx
