// Checksums of saved session states (Session::save_state): the last 8 bytes of a state file are
// a checksum of every byte before them.
//
// Version 2 files use FNV-1a, one 64-bit multiply per byte: a dependency chain of ~4 cycles per
// byte, ~6 s of the ~16 s it takes to load a 6.2 GB LongLLaMA-3B state with 134k memory tokens.
// Version 3 files use StateHash: four FNV-style lanes over 64-bit words (lane i takes words i,
// i + 4, ...), so four independent multiplies cover 32 bytes and the pass runs at memory speed.
// Each step of a lane (xor with a word, multiply by an odd constant) is a bijection of its
// state, so any change to one word changes the result; the length is hashed last, so a
// truncated file does not verify either. Both are checks against corruption, not security.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace longctx {

inline constexpr uint64_t kFnvBasis = 1469598103934665603ull;
inline constexpr uint64_t kFnvPrime = 1099511628211ull;

inline uint64_t fnv1a(const void* p, size_t n, uint64_t h = kFnvBasis) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * kFnvPrime;
  return h;
}

// Streaming: add() any split of the bytes gives the same finish() as one add() of all of them.
class StateHash {
 public:
  void add(const void* p, size_t n) {
    if (n == 0) return;  // empty arrays: p may be null, and memcpy must not see it
    const auto* b = static_cast<const uint8_t*>(p);
    total_ += n;
    if (nbuf_ > 0) {  // complete a pending chunk first
      const size_t k = n < kChunk - nbuf_ ? n : kChunk - nbuf_;
      std::memcpy(buf_ + nbuf_, b, k);
      nbuf_ += k;
      b += k;
      n -= k;
      if (nbuf_ < kChunk) return;
      chunk(buf_);
      nbuf_ = 0;
    }
    for (; n >= kChunk; b += kChunk, n -= kChunk) chunk(b);
    if (n > 0) std::memcpy(buf_, b, n);
    nbuf_ = n;
  }
  uint64_t finish() const {
    uint64_t h = fnv1a(lane_, sizeof lane_);
    h = fnv1a(buf_, nbuf_, h);
    return fnv1a(&total_, sizeof total_, h);
  }

 private:
  static constexpr size_t kChunk = 32;
  void chunk(const uint8_t* p) {
    for (int i = 0; i < 4; ++i) {
      uint64_t w;
      std::memcpy(&w, p + 8 * i, 8);
      lane_[i] = (lane_[i] ^ w) * kFnvPrime;
    }
  }
  uint64_t lane_[4] = {kFnvBasis, kFnvBasis ^ 1, kFnvBasis ^ 2, kFnvBasis ^ 3};
  uint8_t buf_[kChunk] = {};
  size_t nbuf_ = 0;
  uint64_t total_ = 0;
};

// The checksum a state file of this format version carries over its first n bytes.
inline uint64_t state_checksum(uint32_t version, const void* p, size_t n) {
  if (version <= 2) return fnv1a(p, n);
  StateHash h;
  h.add(p, n);
  return h.finish();
}

}  // namespace longctx
