// Chat rendering as /v1/chat/completions and `longctx chat` do it: a conversation (roles and
// contents from the input) rendered with every template on a small synthetic model and
// tokenized; the input as a Jinja template text goes through template detection. Input: the
// first byte picks the template, then messages separated by NUL bytes, each starting with a
// role byte (s, u, a; anything else is an invalid role and must be refused).
#include <memory>

#include "fuzz.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "server/chat_template.h"
#include "synthetic_model.h"

namespace {

std::shared_ptr<longctx::Model> model() {
  static const std::shared_ptr<longctx::Model> m = [] {
    const std::string path = lcx::fuzz::scratch_path("chat_model.gguf");
    lcx::convert_to_gguf(*lcx::test::synthetic_model({.byte_tokens = true}), path, lcx::DType::F32);
    return longctx::Model::load(path);
  }();
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  (void)lcx::server::ChatTemplate::detect_from_jinja(in);
  if (size == 0) return 0;
  const auto names = lcx::server::ChatTemplate::names();
  const lcx::server::ChatTemplate t(names[data[0] % names.size()], *model());
  std::vector<lcx::server::ChatMessage> msgs;
  size_t at = 1;
  while (at < in.size()) {
    size_t end = in.find('\0', at);
    if (end == std::string::npos) end = in.size();
    const std::string m = in.substr(at, end - at);
    if (!m.empty()) {
      const char r = m[0];
      msgs.push_back({r == 's' ? "system" : r == 'u' ? "user" : r == 'a' ? "assistant" : m.substr(0, 1), m.substr(1)});
    }
    at = end + 1;
  }
  try {
    for (bool gen : {true, false}) (void)t.tokenize(t.render(msgs, gen));
  } catch (const lcx::Error&) {
  }
  return 0;
}
