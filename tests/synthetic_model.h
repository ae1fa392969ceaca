// A small random model with every optional feature on (LongLLaMA memory with a memory layer,
// YaRN keys, GQA, a vocabulary), built in memory: for GGUF round trips in the tests and the
// seed corpus of the fuzz targets (fuzz/). No files are read.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "model/model.h"

namespace lcx::test {

struct SyntheticOptions {
  int64_t n_embd = 32;
  uint32_t seed = 7;
  bool byte_tokens = false;  // add <0x00>..<0xFF> pieces (byte fallback: any text encodes)
  std::string path = "synthetic";  // Model::path (used in messages only)
};

std::unique_ptr<Model> synthetic_model(const SyntheticOptions& opt = {});

}  // namespace lcx::test
