// Shared helpers for tests: fixture paths, reading .f32 files, running the CLI.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lcx::test {

std::string fixtures_dir();                 // $LONGCTX_FIXTURES or ../shared/fixtures
std::string bin_dir();                      // build/bin
std::string tmp_dir();                      // a fresh per-process scratch directory
std::vector<float> read_f32(const std::string& path);
std::string read_file(const std::string& path);
// Runs a shell command, returns its exit status; stdout into *out when given.
int run_cmd(const std::string& cmd, std::string* out = nullptr);

}  // namespace lcx::test
