#include "runtime/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/error.h"

namespace lcx {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;

// Reads the whole file into anonymous memory aligned to 2 MiB and advised for transparent huge
// pages. Returns false (nothing allocated) when the kernel refuses the mapping.
bool read_into_huge_pages(int fd, const std::string& path, size_t size, void** base, size_t* len,
                          const uint8_t** data) {
  const size_t want = (size + kHugePage - 1) / kHugePage * kHugePage + kHugePage;  // + alignment slack
  // No MAP_NORESERVE: the kernel's overcommit check may refuse a copy that cannot fit, and the
  // caller then maps the file instead.
  void* p = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  auto* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1));
  madvise(aligned, want - size_t(aligned - static_cast<uint8_t*>(p)), MADV_HUGEPAGE);
  size_t done = 0;
  while (done < size) {
    const size_t chunk = std::min(size - done, size_t(64) << 20);
    const ssize_t r = pread(fd, aligned + done, chunk, off_t(done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      munmap(p, want);
      std::string msg = "cannot read '";
      msg += path;
      msg += "' (" + std::to_string(done) + " of " + std::to_string(size) + " bytes read): ";
      msg += r == 0 ? "unexpected end of file" : std::strerror(e);
      fail(msg);
    }
    done += size_t(r);
  }
  mprotect(p, want, PROT_READ);  // weights are read-only from here on, as with the file mapping
  *base = p;
  *len = want;
  *data = aligned;
  return true;
}
}  // namespace

FileLoad parse_file_load(const std::string& s) {
  if (s == "auto" || s.empty()) return FileLoad::Auto;
  if (s == "mmap" || s == "map") return FileLoad::Map;
  if (s == "copy" || s == "no-mmap") return FileLoad::Copy;
  fail("unknown weight loading mode '" + s + "': use auto, mmap or copy");
}

bool transparent_huge_pages_enabled() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!in || !std::getline(in, line)) return false;
  return line.find("[always]") != std::string::npos || line.find("[madvise]") != std::string::npos;
}

size_t memory_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, FileLoad how) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("'" + path + "' is not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    bool copy = how == FileLoad::Copy;
    if (how == FileLoad::Auto) {
      const size_t avail = memory_available_bytes();
      copy = transparent_huge_pages_enabled() && f->size_ >= (size_t(32) << 20) && avail > 0 &&
             double(f->size_) <= 0.6 * double(avail);
    }
    bool copied = false;
    if (copy) {
      try {
        copied = read_into_huge_pages(fd, path, f->size_, &f->map_base_, &f->map_len_, &f->data_);
      } catch (...) {
        ::close(fd);
        throw;
      }
    }
    f->copied_ = copied;
    if (!copied) {
      void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        fail("cannot memory-map '" + path + "': " + std::strerror(errno));
      }
      f->data_ = static_cast<const uint8_t*>(p);
      f->map_base_ = p;
      f->map_len_ = f->size_;
    }
  }
  ::close(fd);
  return f;
}

void MappedFile::set_writable(bool writable) {
  if (map_base_ == nullptr) return;
  if (mprotect(map_base_, map_len_, PROT_READ | (writable ? PROT_WRITE : 0)) != 0)
    fail("cannot change the protection of the weights of '" + path_ + "': " + std::strerror(errno));
}

void MappedFile::drop_pages(size_t offset, size_t n) const {
  if (copied_ || map_base_ == nullptr || offset >= size_) return;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t end = std::min(size_, offset + n) / page * page, begin = (offset + page - 1) / page * page;
  if (end <= begin) return;
  // Advice only: a failure leaves the pages resident, which is merely what happened before.
  (void)madvise(static_cast<uint8_t*>(map_base_) + begin, end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (map_base_) munmap(map_base_, map_len_);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot open '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("'" + path + "' is a directory, not a file");
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > max_bytes)
    fail("'" + path + "' is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(max_bytes) +
         " this reads as text");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '" + path + "': " + std::strerror(errno));
  // Pipes and devices have no size: read in pieces up to the limit (/dev/zero would never end).
  std::string out;
  std::vector<char> buf(size_t(1) << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    out.append(buf.data(), size_t(in.gcount()));
    if (out.size() > max_bytes)
      fail("'" + path + "' holds more than " + std::to_string(max_bytes) + " bytes, the most this reads as text");
  }
  if (in.bad()) fail("cannot read '" + path + "': " + std::strerror(errno));
  return out;
}

}  // namespace lcx
