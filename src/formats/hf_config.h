// Hugging Face config.json (LlamaForCausalLM, LongLlamaForCausalLM) -> ModelConfig.
#pragma once
#include <string>

#include "model/config.h"

namespace lcx {

// text: the file's contents; where: its path, for error messages.
ModelConfig parse_hf_config(const std::string& text, const std::string& where);

// A Hugging Face directory's chat template, where transformers and llama.cpp's converter look:
// tokenizer_config.json `chat_template` (a string, or the "default" entry of a list of named
// templates), else chat_template.jinja (transformers >= 4.52 saves it there), else
// chat_template.json's `chat_template`.
struct HfChatTemplate {
  std::string text;     // "" when there is none
  std::string where;    // the file it came from (or the first file looked at)
  std::string problem;  // why a file that is there gave no template ("" if none)
};
HfChatTemplate read_hf_chat_template(const std::string& dir);

}  // namespace lcx
