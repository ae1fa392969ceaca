// Output files that never lose data: written to a temporary file beside the target, flushed
// and renamed over it on commit(), removed if abandoned (an exception, a full disk), so readers
// never see a half-written file and a failure never destroys the old one.
//
// Where the bytes go (output_target): a symbolic link is followed, so the file it names is
// replaced and the link stays a link; an existing file that is not a regular file (/dev/null,
// /dev/stdout, a FIFO) is written in place, since renaming over it would replace the device
// node; a directory is an error.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

namespace lcx {

struct OutputTarget {
  std::string path;       // the file that receives the bytes
  bool in_place = false;  // a device or FIFO: written directly, no temporary file
};
OutputTarget output_target(const std::string& path);

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);  // throws lcx::Error when it cannot be created
  ~AtomicFile();                                 // not committed: the temporary file is removed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* p, size_t n);  // throws lcx::Error (disk full, I/O error)
  void commit();                        // flush, fsync, rename over the target
  const std::string& path() const { return path_; }

 private:
  std::string path_;  // as given (messages)
  OutputTarget target_;
  std::string tmp_;   // what is being written: a temporary name, or target_.path in place
  std::FILE* f_ = nullptr;
};

// The whole buffer through an AtomicFile.
void write_file_atomic(const std::string& path, const void* data, size_t n);

}  // namespace lcx
