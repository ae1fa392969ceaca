// Chat templates: a conversation (system / user / assistant messages) -> the token ids the
// model was tuned on. Shared by `longctx serve` (/v1/chat/completions) and `longctx chat`.
//
// We do not run Jinja. A model's template (tokenizer_config.json `chat_template`, GGUF
// `tokenizer.chat_template`) is recognised by the markers it contains and mapped to one of a
// few hand-written formats; `--chat-template NAME` picks one explicitly. See docs/SERVER.md.
//
// Rendering produces Parts, not one string: a marker such as `<|im_start|>` becomes its token
// id when the vocabulary has it as a special piece (text otherwise), BOS/EOS are ids, and
// LongLLaMA-Instruct's pieces are tokenized one by one as its fine-tuning code did.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "longctx/longctx.h"

namespace lcx::server {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct Part {
  // What the part is, so the interactive chat can feed only what follows its last reply.
  enum class Kind { Prefix, Open, Content, CloseMarker, CloseTail, GenPrompt };
  Kind kind = Kind::Content;
  int msg = -1;           // message index (-1: the conversation prefix or generation prompt)
  std::string text;       // when id < 0
  int32_t id = -1;        // a token id (BOS, EOS, special marker)
  bool separate = false;  // tokenize on its own instead of joined with neighbouring text
};

class ChatTemplate {
 public:
  // NAME: llama2, llama3, chatml, zephyr, longllama. Throws lcx::Error listing the names otherwise.
  ChatTemplate(const std::string& name, const longctx::Model& model);
  static std::vector<std::string> names();
  // The template name whose markers the Jinja text contains, or "" when none matches.
  static std::string detect_from_jinja(const std::string& jinja);
  // The model's own template (tokenizer_config.json beside an HF model, GGUF metadata
  // tokenizer.chat_template), mapped through detect_from_jinja; "" when absent or unknown.
  // *what receives a short description of what was found (for error messages and logs).
  static std::string detect(const longctx::Model& model, std::string* what = nullptr);

  const std::string& name() const { return name_; }

  // The whole conversation; with add_generation_prompt, ends where the assistant's reply
  // starts. Roles other than system/user/assistant throw lcx::Error.
  std::vector<Part> render(const std::vector<ChatMessage>& msgs, bool add_generation_prompt) const;
  // Token ids of parts (consecutive text parts are joined and tokenized together).
  std::vector<int32_t> tokenize(const std::vector<Part>& parts) const;

  // Text that ends an assistant turn when the template's end marker is not a special token
  // (added to the request's stop strings), and token ids that end it (checked in the
  // stream callback; EOS is handled by the engine itself).
  const std::vector<std::string>& stop_strings() const { return stop_strings_; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  Part marker(const std::string& piece, Part::Kind kind, int msg) const;
  int32_t special_id(const std::string& piece) const;

  std::string name_;
  const longctx::Model& model_;
  std::vector<std::string> stop_strings_;
  std::vector<int32_t> stop_ids_;
};

}  // namespace lcx::server
