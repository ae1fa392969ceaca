// A small command-line parser: `--flag value`, `-f value`, `--flag=value`, boolean switches.
// Unknown flags are errors that name the subcommand's --help.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace lcx::cli {

class Args {
 public:
  // value_flags: flags that take a value; switches: flags that don't. Aliases map short->long.
  Args(const std::string& cmd, int argc, char** argv, const std::set<std::string>& value_flags,
       const std::set<std::string>& switches, const std::map<std::string, std::string>& aliases,
       bool accept_overrides);

  bool has(const std::string& f) const { return values_.count(f) > 0; }
  // A flag given more than once: the last one wins, as in llama.cpp (all() for repeatable ones).
  std::string str(const std::string& f, const std::string& dflt = "") const;
  std::vector<std::string> all(const std::string& f) const;  // repeated flags
  long long integer(const std::string& f, long long dflt) const;
  // An integer that must lie in [lo, hi] (what the caller stores it in, or a stricter rule).
  long long integer(const std::string& f, long long dflt, long long lo, long long hi) const;
  double number(const std::string& f, double dflt) const;
  std::string required(const std::string& f) const;
  // Rope / memory overrides in the order given, for longctx::LoadOptions.
  const std::vector<std::pair<std::string, std::string>>& overrides() const { return overrides_; }

 private:
  std::string cmd_;
  std::multimap<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> overrides_;
};

std::vector<int32_t> parse_ids(const std::string& s);

// Refuses to write `path` (the value of `flag`) when it is one of the command's inputs — the
// model's files, --tokenizer, -f/--file, --ids-file, --memory — which writing would destroy, or
// when its directory does not exist.
void check_output(const Args& a, const std::string& flag, const std::string& path);

}  // namespace lcx::cli
