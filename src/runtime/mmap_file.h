// Read-only memory-mapped file. Weights are used in place from the mapping (no copy) where the
// stored dtype has a kernel, so a 7B checkpoint costs page cache, not heap.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lcx {

class MappedFile {
 public:
  // Throws lcx::Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Whole-file read for small text files (config.json, index). Throws on failure.
std::string read_text_file(const std::string& path);
// Writes via a temporary file in the same directory and rename(), so readers never see a
// half-written file and a crash never destroys the old one.
void write_file_atomic(const std::string& path, const void* data, size_t n);

}  // namespace lcx
