// A loaded model: validated config, const weights and (when available) its tokenizer.
// Weights are shared by every session; sessions own their caches.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "model/config.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace lcx {

struct Model {
  ModelConfig config;
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model has none and none was given
  std::string path;
  std::string format;                    // "hf" or "gguf"
  std::string tokenizer_source;          // where the tokenizer came from, for `info`

  // Throws a helpful error when there is no tokenizer.
  const Tokenizer& tok() const;
};

struct LoadOptions {
  std::string tokenizer_path;  // --tokenizer: overrides the model's own
  FileLoad weights = FileLoad::Auto;  // --mmap / --no-mmap
};

// MODEL is a Hugging Face directory or a .gguf file.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt = {});

// Implemented by the GGUF loader (model/gguf_model.cpp).
void load_gguf_model(const std::string& path, Model& m, FileLoad how = FileLoad::Map);

}  // namespace lcx
