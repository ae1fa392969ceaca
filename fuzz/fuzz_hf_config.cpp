// A Hugging Face config.json: architecture, sizes, rope_scaling (every type and its keys),
// LongLLaMA memory fields. The parser validates; a config it accepts must be self-consistent.
#include "formats/hf_config.h"
#include "fuzz.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    lcx::ModelConfig c = lcx::parse_hf_config(text, "fuzz/config.json");
    c.validate();
  } catch (const lcx::Error&) {
  }
  return 0;
}
