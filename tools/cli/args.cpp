#include "args.h"

#include <cstdint>
#include <sstream>

#include "longctx/longctx.h"
#include "runtime/error.h"

namespace lcx::cli {

Args::Args(const std::string& cmd, int argc, char** argv, const std::set<std::string>& value_flags,
           const std::set<std::string>& switches, const std::map<std::string, std::string>& aliases,
           bool accept_overrides)
    : cmd_(cmd) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i], v;
    bool has_v = false;
    if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      v = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      has_v = true;
    }
    if (auto it = aliases.find(a); it != aliases.end()) a = it->second;
    // Every command that loads a model takes llama.cpp's --mmap / --no-mmap (see lcx::FileLoad).
    if ((a == "--mmap" || a == "--no-mmap") && value_flags.count("--model")) {
      values_.emplace("--weights-load", a == "--mmap" ? "mmap" : "copy");
      continue;
    }
    if (a == "--no-repack" && value_flags.count("--model")) {
      values_.emplace("--repack", "no");
      continue;
    }
    if (switches.count(a)) {
      values_.emplace(a, "1");
      continue;
    }
    const bool is_override = accept_overrides && longctx::is_override_flag(a);
    if (!value_flags.count(a) && !is_override)
      fail("unknown option '" + a + "' for `longctx " + cmd + "`: see `longctx " + cmd + " --help`");
    if (!has_v) {
      if (i + 1 >= argc) fail("option " + a + " needs a value");
      v = argv[++i];
    }
    if (is_override) overrides_.emplace_back(a, v);
    else values_.emplace(a, v);
  }
}

std::string Args::str(const std::string& f, const std::string& dflt) const {
  auto it = values_.find(f);
  return it == values_.end() ? dflt : it->second;
}

std::vector<std::string> Args::all(const std::string& f) const {
  std::vector<std::string> out;
  for (auto [b, e] = values_.equal_range(f); b != e; ++b) out.push_back(b->second);
  return out;
}

long long Args::integer(const std::string& f, long long dflt) const {
  if (!has(f)) return dflt;
  const std::string s = str(f);
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  fail("option " + f + " expects an integer, got '" + s + "'");
}

double Args::number(const std::string& f, double dflt) const {
  if (!has(f)) return dflt;
  const std::string s = str(f);
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  fail("option " + f + " expects a number, got '" + s + "'");
}

std::string Args::required(const std::string& f) const {
  if (!has(f)) fail("`longctx " + cmd_ + "` needs " + f + ": see `longctx " + cmd_ + " --help`");
  return str(f);
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t\n[]"), e = item.find_last_not_of(" \t\n[]");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      fail("--ids: '" + item + "' is not a token id (expected comma-separated non-negative integers)");
    }
  }
  if (ids.empty()) fail("--ids: no token ids given");
  return ids;
}

}  // namespace lcx::cli
