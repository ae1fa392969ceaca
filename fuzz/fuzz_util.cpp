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

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c >> 5) == 0x6) { n = 2; cp = c & 0x1F; }
    else if ((c >> 4) == 0xE) { n = 3; cp = c & 0x0F; }
    else if ((c >> 3) == 0x1E) { n = 4; cp = c & 0x07; }
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

}  // namespace lcx::fuzz
