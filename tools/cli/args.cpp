#include "args.h"

#include <cstdint>
#include <filesystem>
#include <iterator>
#include <sstream>
#include <system_error>

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
  const auto [b, e] = values_.equal_range(f);  // in the order given (multimap insertion order)
  return b == e ? dflt : std::prev(e)->second;
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

long long Args::integer(const std::string& f, long long dflt, long long lo, long long hi) const {
  const long long v = integer(f, dflt);
  if (v < lo || v > hi)
    fail("option " + f + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + str(f));
  return v;
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
  // A trailing newline or "]" after the last id is fine; an empty item between two commas is
  // a typo that would silently drop an id.
  std::vector<std::string> items;
  while (std::getline(ss, item, ',')) items.push_back(item);
  for (size_t k = 0; k < items.size(); ++k) {
    item = items[k];
    size_t b = item.find_first_not_of(" \t\r\n[]"), e = item.find_last_not_of(" \t\r\n[]");
    if (b == std::string::npos) {
      if (k + 1 < items.size()) fail("--ids: empty item between two commas (after id " + std::to_string(ids.size()) + ")");
      continue;
    }
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

void check_output(const Args& a, const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  const fs::path dir = fs::path(path).parent_path();
  if (!dir.empty() && !fs::is_directory(dir))
    fail(flag + ": directory '" + dir.string() + "' does not exist; create it or choose another path");
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::vector<std::pair<std::string, std::string>> inputs;  // (path, what it is)
  const std::string model = a.str("--model");
  if (!model.empty() && fs::is_directory(model, ec)) {
    for (const auto& e : fs::directory_iterator(model, ec))
      if (e.is_regular_file(ec)) inputs.emplace_back(e.path().string(), "a file of the model directory");
  } else if (!model.empty()) {
    inputs.emplace_back(model, "the model");
  }
  for (const char* f : {"--tokenizer", "--file", "--ids-file", "--memory"})
    if (a.has(f)) inputs.emplace_back(a.str(f), std::string("the ") + f + " input");
  for (const auto& [in, what] : inputs)
    if (fs::exists(in, ec) && fs::equivalent(path, in, ec))
      fail(flag + " '" + path + "' is " + what + " ('" + in + "'): writing it would destroy an input; choose another path");
}

}  // namespace lcx::cli
