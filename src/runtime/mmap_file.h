// A read-only file in memory: memory-mapped, or (weights, by default when the machine allows)
// read into anonymous memory backed by 2 MiB transparent huge pages. Weights are used in place
// (no conversion) where the stored dtype has a kernel.
//
// Why the copy: decode streams every weight byte once per token, and the hardware prefetchers
// stop at every 4 KiB page boundary of a file mapping (page cache pages are 4 KiB here). On the
// 2-core Zen 4 VM: read bandwidth of one thread 24 -> 32 GB/s, two threads 32 -> 35.5 GB/s;
// TinyLlama-1.1B tg64 Q4_0 40.4 -> 50.2 tok/s, F16 13.5 -> 14.7 tok/s (docs/PERFORMANCE.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lcx {

// How to bring a file into memory. Auto copies into huge pages when transparent huge pages are
// enabled ("always" or "madvise"), the file is at least 32 MiB, and it takes at most 60 % of the
// memory the kernel reports available; otherwise it maps the file.
enum class FileLoad { Map, Copy, Auto };

// "auto" / "mmap" / "copy" -> FileLoad; throws lcx::Error for anything else.
FileLoad parse_file_load(const std::string& s);
// True when /sys/kernel/mm/transparent_hugepage/enabled selects "always" or "madvise".
bool transparent_huge_pages_enabled();
// MemAvailable from /proc/meminfo in bytes (0 when unknown).
size_t memory_available_bytes();

class MappedFile {
 public:
  // Throws lcx::Error naming the path when it cannot be opened, mapped or read.
  static std::shared_ptr<MappedFile> open(const std::string& path, FileLoad how = FileLoad::Map);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool copied() const { return copied_; }  // read into huge-page memory rather than mapped
  bool contains(const void* p, size_t n) const {
    const auto* b = static_cast<const uint8_t*>(p);
    return data_ != nullptr && b >= data_ && n <= size_ && size_t(b - data_) <= size_ - n;
  }
  // Lets the loader rewrite weights in place (repacking for the kernels): the mapping is private,
  // so written pages become this process's copies and the file never changes. Throws on failure.
  void set_writable(bool writable);
  // Drops this process's pages of [offset, offset + n) of a mapped (not copied) file; reading
  // them again faults them back in from the page cache. Bounds the resident set of a one-pass
  // read of a large file (a 6 GB state file is otherwise resident twice while it is copied out).
  void drop_pages(size_t offset, size_t n) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_base_ = nullptr;  // what munmap gets: the file mapping, or the anonymous copy
  size_t map_len_ = 0;
  bool copied_ = false;
  std::string path_;
};

// Whole-file read for small text files (config.json, index). Throws on failure.
// Directories are refused; so is more than max_bytes (default 4 GiB), also from a pipe or device.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t(4) << 30);

}  // namespace lcx
