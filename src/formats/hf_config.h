// Hugging Face config.json (LlamaForCausalLM, LongLlamaForCausalLM) -> ModelConfig.
#pragma once
#include <string>

#include "model/config.h"

namespace lcx {

// text: the file's contents; where: its path, for error messages.
ModelConfig parse_hf_config(const std::string& text, const std::string& where);

}  // namespace lcx
