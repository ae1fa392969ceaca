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
  int n_repacked = 0;                    // weights rewritten for the kernels (repack_weights_for_kernels)

  // Throws a helpful error when there is no tokenizer.
  const Tokenizer& tok() const;
};

struct LoadOptions {
  std::string tokenizer_path;  // --tokenizer: overrides the model's own
  FileLoad weights = FileLoad::Auto;  // --mmap / --no-mmap
  // Repack weights into the layouts the active kernels read fastest (Q4_0 -> Q4_0_R16 with the
  // AVX-512 kernels); --no-repack keeps the file's layout (for A/B measurements).
  bool repack = true;
};

// MODEL is a Hugging Face directory or a .gguf file.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt = {});

// Implemented by the GGUF loader (model/gguf_model.cpp).
void load_gguf_model(const std::string& path, Model& m, FileLoad how = FileLoad::Map);

}  // namespace lcx
