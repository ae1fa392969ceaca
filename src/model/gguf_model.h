// GGUF <-> Model: reading llama.cpp-style metadata into ModelConfig / SpmVocab, loading a
// model from a .gguf file (load_gguf_model, declared in model.h) and converting a loaded
// model to GGUF. Key names and the LongLLaMA / extra-RoPE extensions are documented in
// docs/GGUF.md.
#pragma once
#include <string>

#include "formats/gguf.h"
#include "model/model.h"

namespace lcx {

// general.architecture must be "llama". Throws lcx::Error naming the key that is missing or
// inconsistent with the tensors. tie_embeddings is true when the file has no output.weight.
ModelConfig gguf_read_config(const GgufFile& g);

// tokenizer.ggml.* (SentencePiece "llama" vocabularies). Throws when the file has no
// tokenizer.ggml.tokens or the arrays disagree.
SpmVocab gguf_read_vocab(const GgufFile& g);

// Writes m as a llama.cpp-compatible GGUF v3 file (architecture "llama"; LongLLaMA memory
// settings under longllama.*). dtype: F32, F16, BF16, Q8_0 or Q4_0 for 2-D weights; norms are
// always F32. Streams tensor by tensor; the output appears atomically.
void convert_to_gguf(const Model& m, const std::string& out_path, DType dtype);

}  // namespace lcx
