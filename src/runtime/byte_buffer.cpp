#include "runtime/byte_buffer.h"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <utility>

namespace lcx {

namespace {
constexpr size_t kStep = size_t(64) << 20;
constexpr size_t kHugeFrom = size_t(4) << 20;  // small memories stay in 4 KiB pages
size_t round_up(size_t n) { return (n + kStep - 1) / kStep * kStep; }
}  // namespace

ByteBuffer::~ByteBuffer() {
  if (data_) munmap(data_, cap_);
}

ByteBuffer::ByteBuffer(const ByteBuffer& o) { *this = o; }

ByteBuffer& ByteBuffer::operator=(const ByteBuffer& o) {
  if (this == &o) return *this;
  clear();
  append(o.data_, o.size_);
  return *this;
}

ByteBuffer::ByteBuffer(ByteBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), cap_(std::exchange(o.cap_, 0)) {}

ByteBuffer& ByteBuffer::operator=(ByteBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) munmap(data_, cap_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    cap_ = std::exchange(o.cap_, 0);
  }
  return *this;
}

void ByteBuffer::reserve(size_t n) {
  if (n <= cap_) return;
  const size_t cap = round_up(n);
  void* p = data_ ? mremap(data_, cap_, cap, MREMAP_MAYMOVE)
                  : mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<uint8_t*>(p);
  cap_ = cap;
  // Decode scans the whole FoT memory once per token per memory layer: 2 MiB pages keep the
  // hardware prefetchers running across what would be 4 KiB page boundaries (bench_attention
  // LongLLaMA3B_decode_mem32k, one thread: 38.5 -> 34.4 ms). Advice only; ignored without THP.
  if (n >= kHugeFrom) madvise(data_, cap_, MADV_HUGEPAGE);
}

void ByteBuffer::resize(size_t n) {
  reserve(n);
  if (n > size_) std::memset(data_ + size_, 0, n - size_);  // fresh pages are zero already; reused ones may not be
  size_ = n;
}

void ByteBuffer::append(const void* p, size_t n) {
  if (n == 0) return;
  reserve(size_ + n);
  std::memcpy(data_ + size_, p, n);
  size_ += n;
}

void ByteBuffer::erase_front(size_t n) {
  if (n >= size_) {
    size_ = 0;
    return;
  }
  std::memmove(data_, data_ + n, size_ - n);
  size_ -= n;
}

void ByteBuffer::clear() {
  if (data_) munmap(data_, cap_);
  data_ = nullptr;
  size_ = cap_ = 0;
}

}  // namespace lcx
