// safetensors reader: 8-byte little-endian header length, JSON header, raw tensor bytes.
// Tensors are views into the memory-mapped file; every offset is checked against the file.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "runtime/mmap_file.h"
#include "runtime/tensor.h"

namespace lcx {

struct SafetensorsFile {
  std::shared_ptr<MappedFile> file;
  std::map<std::string, TensorView> tensors;
};

// Throws lcx::Error naming the file and the problem (truncated, bad JSON, unknown dtype,
// offsets past the end, size not matching the shape).
SafetensorsFile open_safetensors(const std::string& path, FileLoad how = FileLoad::Map);

// A Hugging Face model directory's weights: model.safetensors, or the shards named by
// model.safetensors.index.json. Returns every tensor by name; keeps the mappings alive.
struct SafetensorsSet {
  std::vector<std::shared_ptr<MappedFile>> files;
  std::map<std::string, TensorView> tensors;
};
SafetensorsSet open_safetensors_dir(const std::string& dir, FileLoad how = FileLoad::Map);

}  // namespace lcx
