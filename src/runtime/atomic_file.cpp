#include "runtime/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace lcx {

OutputTarget output_target(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) fail("empty output path");
  std::error_code ec;
  fs::path p = path;
  // Follow the chain of links by hand: a dangling link still names where the file should go
  // (canonical() would fail on it).
  for (int hops = 0; fs::is_symlink(fs::symlink_status(p, ec)); ++hops) {
    if (hops == 40) fail("cannot resolve the symbolic link '" + path + "': too many levels of links");
    const fs::path t = fs::read_symlink(p, ec);
    if (ec) fail("cannot resolve the symbolic link '" + path + "': " + ec.message());
    p = t.is_absolute() ? t : p.parent_path() / t;
  }
  struct stat st {};
  if (::stat(p.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail("'" + path + "' is a directory: give a file name to write");
    if (!S_ISREG(st.st_mode)) return {p.string(), true};
  }
  return {p.string(), false};
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), target_(output_target(path)) {
  tmp_ = target_.in_place ? target_.path : target_.path + ".tmp." + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail("cannot create '" + tmp_ + "': " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!f_) return;
  std::fclose(f_);
  if (!target_.in_place) std::remove(tmp_.c_str());
}

void AtomicFile::write(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n)
    fail("cannot write '" + path_ + "': " + std::strerror(errno) + " (disk full?)");
}

void AtomicFile::commit() {
  bool ok = std::fflush(f_) == 0;
  int err = errno;
  // fsync: the data is on disk before the rename makes it visible (devices and FIFOs have none).
  if (ok && !target_.in_place && ::fsync(::fileno(f_)) != 0) {
    ok = false;
    err = errno;
  }
  const bool closed = std::fclose(f_) == 0;
  if (ok && !closed) err = errno;
  f_ = nullptr;
  if (!ok || !closed) {
    if (!target_.in_place) std::remove(tmp_.c_str());
    fail("cannot write '" + path_ + "': " + std::strerror(err) + " (disk full?)");
  }
  if (target_.in_place) return;
  if (std::rename(tmp_.c_str(), target_.path.c_str()) != 0) {
    const std::string e = std::strerror(errno);
    std::remove(tmp_.c_str());
    fail("cannot rename '" + tmp_ + "' to '" + target_.path + "': " + e);
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  AtomicFile f(path);
  f.write(data, n);
  f.commit();
}

}  // namespace lcx
