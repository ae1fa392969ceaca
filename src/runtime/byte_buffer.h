// A growable byte buffer for caches that reach gigabytes (FoT memory: 128k tokens of a 3B
// LongLLaMA is ~5 GB). std::vector doubles and copies, so growing it needs up to 3x the data in
// RAM at the moment of reallocation; this buffer grows its anonymous mapping with mremap(),
// which moves page tables, never the bytes, and reserves in 64 MiB steps. Past 4 MiB the mapping
// is advised for transparent huge pages.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lcx {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  ~ByteBuffer();
  ByteBuffer(const ByteBuffer& o);             // deep copy (sessions clone explicitly)
  ByteBuffer& operator=(const ByteBuffer& o);
  ByteBuffer(ByteBuffer&& o) noexcept;
  ByteBuffer& operator=(ByteBuffer&& o) noexcept;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  bool empty() const { return size_ == 0; }

  void resize(size_t n);          // new bytes are zero
  void append(const void* p, size_t n);
  void erase_front(size_t n);     // drop the first n bytes (memory caps: oldest first)
  void clear();                   // size 0, pages returned to the OS

 private:
  void reserve(size_t n);
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t cap_ = 0;
};

}  // namespace lcx
