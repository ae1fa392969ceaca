// The mutation driver the fuzz targets are linked with: runs every input file given
// (files or directories), then -runs=N inputs made by mutating them, deterministically from
// -seed. Flags follow libFuzzer's spelling so the same command works with either:
//
//   fuzz_gguf -runs=2000 -seed=1 -max_len=65536 -dict=fuzz/dicts/json.dict CORPUS_DIR...
//
// Mutations: bit flips, random and "interesting" bytes, 2/4/8-byte integers (0, 1, -1, 2^31,
// 2^32, 2^62, the input size ...), truncation, erasing, duplicating or inserting ranges,
// splicing another input, dictionary words. Half of the byte positions fall in the first 4 KiB,
// where the headers are. When a target crashes, the input is written to
// fuzz-crash-<pid>.bin (signal handler) before the process dies: rerun the target on it.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

const uint8_t* g_cur = nullptr;  // the input being run, for the crash handler
size_t g_cur_size = 0;

void dump_current() {
  if (g_cur == nullptr) return;
  char name[64];
  std::snprintf(name, sizeof name, "fuzz-crash-%d.bin", int(getpid()));
  const int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < g_cur_size) {
    const ssize_t w = write(fd, g_cur + off, g_cur_size - off);
    if (w <= 0) break;
    off += size_t(w);
  }
  close(fd);
  const char msg[] = "\nfuzz driver: the crashing input is in fuzz-crash-<pid>.bin\n";
  (void)!write(2, msg, sizeof msg - 1);
}

void on_signal(int sig) {
  dump_current();
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

// AddressSanitizer calls this before it exits with a report.
extern "C" void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));

namespace {

Bytes read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// libFuzzer dictionary: one "word" per line, optionally name="word", with \xNN, \\ and \" escapes.
std::vector<Bytes> read_dict(const std::string& path) {
  std::vector<Bytes> out;
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "fuzz driver: cannot read dictionary %s\n", path.c_str());
    std::exit(2);
  }
  std::string line;
  while (std::getline(in, line)) {
    const size_t q0 = line.find('"'), q1 = line.rfind('"');
    if (line.empty() || line[0] == '#' || q0 == std::string::npos || q1 <= q0) continue;
    Bytes w;
    for (size_t i = q0 + 1; i < q1; ++i) {
      if (line[i] == '\\' && i + 1 < q1) {
        if (line[i + 1] == 'x' && i + 3 < q1) {
          w.push_back(uint8_t(std::stoi(line.substr(i + 2, 2), nullptr, 16)));
          i += 3;
        } else {
          w.push_back(uint8_t(line[++i]));
        }
      } else {
        w.push_back(uint8_t(line[i]));
      }
    }
    if (!w.empty()) out.push_back(std::move(w));
  }
  return out;
}

struct Mutator {
  std::mt19937_64 rng;
  const std::vector<Bytes>& corpus;
  const std::vector<Bytes>& dict;
  size_t max_len;

  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng() % n; }
  // A position in [0, n): half of them in the first 4 KiB (headers).
  size_t pos(size_t n) { return n == 0 ? 0 : (rng() & 1) ? size_t(below(std::min<size_t>(n, 4096))) : size_t(below(n)); }

  void mutate_once(Bytes& b) {
    static const uint64_t kInteresting[] = {0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000ull,
                                            0xffffffffull, 0x100000000ull, 1ull << 62, ~0ull, 32, 64, 4096};
    switch (below(10)) {
      case 0:
        if (!b.empty()) b[pos(b.size())] ^= uint8_t(1u << below(8));
        break;
      case 1:
        if (!b.empty()) b[pos(b.size())] = uint8_t(rng());
        break;
      case 2: {  // an integer of 1, 2, 4 or 8 bytes, little-endian
        const size_t w = size_t(1) << below(4);
        if (b.size() < w) break;
        uint64_t v = (rng() & 3) == 0 ? uint64_t(b.size()) + below(3) - 1
                                      : kInteresting[below(sizeof kInteresting / sizeof kInteresting[0])];
        if (rng() & 1) v = ~v + 1;  // negative
        const size_t at = std::min(pos(b.size()), b.size() - w);
        std::memcpy(b.data() + at, &v, w);
        break;
      }
      case 3:  // truncate
        if (!b.empty()) b.resize(below(b.size()));
        break;
      case 4: {  // erase a range
        if (b.empty()) break;
        const size_t at = pos(b.size()), n = 1 + below(std::min<size_t>(64, b.size() - at));
        b.erase(b.begin() + long(at), b.begin() + long(at + n));
        break;
      }
      case 5: {  // duplicate a range
        if (b.empty()) break;
        const size_t at = pos(b.size()), n = 1 + below(std::min<size_t>(64, b.size() - at));
        const Bytes piece(b.begin() + long(at), b.begin() + long(at + n));
        b.insert(b.begin() + long(pos(b.size())), piece.begin(), piece.end());
        break;
      }
      case 6: {  // insert random bytes
        const size_t n = 1 + below(8);
        Bytes piece(n);
        for (auto& x : piece) x = uint8_t(rng());
        b.insert(b.begin() + long(pos(b.size() + 1)), piece.begin(), piece.end());
        break;
      }
      case 7: {  // splice: a range of another input over or into this one
        const Bytes& o = corpus[below(corpus.size())];
        if (o.empty()) break;
        const size_t at = below(o.size()), n = 1 + below(std::min<size_t>(256, o.size() - at));
        const size_t dst = pos(b.size() + 1);
        if (rng() & 1) {
          b.insert(b.begin() + long(dst), o.begin() + long(at), o.begin() + long(at + n));
        } else {
          if (b.size() < dst + n) b.resize(dst + n);
          std::copy(o.begin() + long(at), o.begin() + long(at + n), b.begin() + long(dst));
        }
        break;
      }
      default: {  // dictionary word, inserted or overwriting
        if (dict.empty()) {
          if (!b.empty()) b[pos(b.size())] = uint8_t(rng());
          break;
        }
        const Bytes& w = dict[below(dict.size())];
        const size_t dst = pos(b.size() + 1);
        if (rng() & 1) {
          b.insert(b.begin() + long(dst), w.begin(), w.end());
        } else {
          if (b.size() < dst + w.size()) b.resize(dst + w.size());
          std::copy(w.begin(), w.end(), b.begin() + long(dst));
        }
        break;
      }
    }
  }

  Bytes next() {
    Bytes b = corpus[below(corpus.size())];
    const int n = 1 + int(below(4));
    for (int i = 0; i < n; ++i) mutate_once(b);
    if (b.size() > max_len) b.resize(max_len);
    return b;
  }
};

void run_one(const Bytes& b) {
  g_cur = b.data();
  g_cur_size = b.size();
  // A copy of exactly the input's size, so ASan sees any read past its end.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[b.size() + (b.empty() ? 1 : 0)]);
  if (!b.empty()) std::memcpy(copy.get(), b.data(), b.size());
  LLVMFuzzerTestOneInput(copy.get(), b.size());
  g_cur = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  long long runs = 1000;
  uint64_t seed = 1;
  size_t max_len = 1 << 20;
  std::vector<Bytes> dict;
  std::vector<fs::path> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* flag) -> const char* {
      const size_t n = std::strlen(flag);
      return a.compare(0, n, flag) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = val("-runs=")) runs = std::atoll(v);
    else if (const char* v = val("-seed=")) seed = std::strtoull(v, nullptr, 10);
    else if (const char* v = val("-max_len=")) max_len = size_t(std::atoll(v));
    else if (const char* v = val("-dict=")) dict = read_dict(v);
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [-runs=N] [-seed=S] [-max_len=BYTES] [-dict=FILE] CORPUS_FILE_OR_DIR...\n", argv[0]);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "fuzz driver: unknown flag %s (see -help)\n", a.c_str());
      return 2;
    } else {
      paths.emplace_back(a);
    }
  }
  std::vector<Bytes> corpus;
  for (const fs::path& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // same order on every machine: same mutations
      for (const fs::path& f : files) corpus.push_back(read_all(f));
    } else if (fs::is_regular_file(p, ec)) {
      corpus.push_back(read_all(p));
    } else {
      std::fprintf(stderr, "fuzz driver: no such file or directory: %s\n", p.c_str());
      return 2;
    }
  }
  if (corpus.empty()) corpus.push_back({});
  if (__sanitizer_set_death_callback) {
    __sanitizer_set_death_callback(dump_current);  // keep the sanitizer's own SEGV report
  } else {
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) signal(sig, on_signal);
  }

  const auto t0 = std::chrono::steady_clock::now();
  for (const Bytes& b : corpus) run_one(b);
  Mutator m{std::mt19937_64(seed), corpus, dict, max_len};
  for (long long r = 0; r < runs; ++r) run_one(m.next());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz driver: %zu corpus inputs + %lld mutations in %.1f s, no crash\n", corpus.size(), runs, s);
  return 0;
}
