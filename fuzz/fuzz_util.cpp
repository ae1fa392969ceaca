#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "fuzz.h"
#include "testutil.h"

namespace lcx::fuzz {

namespace fs = std::filesystem;

std::string scratch_path(const std::string& name) {
  struct Dir {
    std::string path;
    bool shm = false;
    Dir() {
      std::error_code ec;
      const fs::path p = fs::path("/dev/shm") / ("longctx-fuzz-" + std::to_string(getpid()));
      shm = fs::is_directory("/dev/shm", ec) && fs::create_directories(p, ec);
      path = shm ? p.string() : test::tmp_dir();
    }
    ~Dir() {
      std::error_code ec;
      if (shm) fs::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path + "/" + name;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream o(path, std::ios::binary | std::ios::trunc);
  o.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!o) throw std::runtime_error("cannot write " + path);
}

std::string fixtures_or_empty() {
  const std::string d = test::fixtures_dir();
  std::error_code ec;
  return fs::is_directory(d, ec) ? d : "";
}

}  // namespace lcx::fuzz
