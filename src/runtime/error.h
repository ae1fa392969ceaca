// Errors at boundaries (files, configs, requests): always checked, always explained.
// Hot loops use LCX_DASSERT, compiled out in release builds.
#pragma once
#include <cassert>
#include <stdexcept>
#include <string>

namespace lcx {

// Thrown for anything a user can fix: bad file, bad flag, bad request. The message says what
// is wrong and, where possible, what to do about it.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& msg) { throw Error(msg); }

}  // namespace lcx

#define LCX_CHECK(cond, msg)                    \
  do {                                          \
    if (!(cond)) ::lcx::fail(std::string(msg)); \
  } while (0)

#ifdef NDEBUG
#define LCX_DASSERT(cond) ((void)0)
#else
#define LCX_DASSERT(cond) assert(cond)
#endif
