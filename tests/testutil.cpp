#include "testutil.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lcx::test {

std::string fixtures_dir() {
  if (const char* e = std::getenv("LONGCTX_FIXTURES")) return e;
  return LONGCTX_DEFAULT_FIXTURES;
}

std::string bin_dir() { return LONGCTX_BIN_DIR; }

namespace {
// The scratch directory of this test process and the pid that made it: a forked child (death
// tests, popen helpers) must not delete its parent's files when it exits.
std::string g_tmp_dir;
pid_t g_tmp_owner = 0;

void remove_tmp_dir() {
  if (g_tmp_dir.empty() || getpid() != g_tmp_owner) return;
  if (std::getenv("LONGCTX_KEEP_TEST_TMP")) return;  // keep the files to debug a failure
  std::error_code ec;
  std::filesystem::remove_all(g_tmp_dir, ec);
}
}  // namespace

std::string tmp_dir() {
  // One directory per test process (ctest runs each test in its own process), removed at exit:
  // the converted GGUF files and generation dumps come to ~1 GB per full run.
  static std::string dir = [] {
    auto p = std::filesystem::temp_directory_path() / ("longctx-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(p);
    g_tmp_dir = p.string();
    g_tmp_owner = getpid();
    std::atexit(remove_tmp_dir);
    return p.string();
  }();
  return dir;
}

std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  in.seekg(0, std::ios::end);
  const auto n = size_t(in.tellg());
  in.seekg(0);
  std::vector<float> v(n / 4);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 4));
  return v;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_cmd(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  std::string s;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) s.append(buf.data(), n);
  const int st = pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace lcx::test
