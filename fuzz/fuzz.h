// Fuzz targets: each fuzz_*.cpp defines LLVMFuzzerTestOneInput (libFuzzer's entry point, so a
// clang build could link them with -fsanitize=fuzzer) and is run by our own mutation driver
// (driver.cpp: g++, a fixed number of deterministic mutations; what CTest runs, also under
// ASan/UBSan). A target feeds the bytes to one parser the way a user's file
// or request reaches it. lcx::Error (or the server's ApiError) is the expected outcome for bad
// input; anything else escaping - another exception, a crash, a sanitizer report, an
// allocation the size of a corrupt count - is a bug the run reports by aborting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lcx::fuzz {

// A path in this process's scratch directory (RAM-backed /dev/shm when available), removed at
// exit. The same name is reused across inputs.
std::string scratch_path(const std::string& name);

// Writes data to path (truncating); throws std::runtime_error when it cannot.
void write_file(const std::string& path, const uint8_t* data, size_t size);

// The fixtures directory (../shared/fixtures or $LONGCTX_FIXTURES), "" when absent.
std::string fixtures_or_empty();

// Whether s is well-formed UTF-8 (shortest forms, no surrogates, at most U+10FFFF).
bool valid_utf8(const std::string& s);

}  // namespace lcx::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
