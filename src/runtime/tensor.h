// A non-owning view of one stored tensor: a weight in a mapped file or an owned buffer.
// Shapes are row-major with the Hugging Face convention: a linear weight is [n_out, n_in] and
// row r holds the n_in inputs of output r (GGUF stores ne[] innermost-first; its loader
// reverses them so every format looks the same here).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace lcx {

struct TensorView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // e.g. [n_out, n_in]
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.size() >= 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace lcx
