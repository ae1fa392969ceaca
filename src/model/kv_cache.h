// Per-session state of one sequence: the local KV cache of every layer and, for LongLLaMA
// memory layers, the FoT memory cache. Owned by a session, never shared; copying is explicit.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "model/config.h"
#include "model/memory_index.h"
#include "model/rope.h"
#include "runtime/byte_buffer.h"

namespace lcx {

struct LayerCache {
  // Local context, one row per (token, kv head) of head_dim values in KvState::local_fmt:
  // [n_local, n_head_kv, head_dim]. F32 by default (bit-exact with the reference); F16/BF16/Q8
  // (--cache-type, llama.cpp's -ctk/-ctv) halve or quarter the bytes decode reads at depth.
  std::vector<uint8_t> k;    // keys as rotated for the current rotation (see KvState)
  std::vector<float> k_raw;  // keys before RoPE (f32), kept when the rotation can change
  std::vector<uint8_t> v;
  // FoT memory (memory layers only): [n_mem, n_head_kv, head_dim] in MemConfig::dtype.
  // Keys are stored rotated as position 0 (mem_positionals) or unrotated, as LongLLaMA does.
  ByteBuffer mem_k;
  ByteBuffer mem_v;
  // --mem-index hnsw: approximate kNN over mem_k, one graph per kv head; follows the memory
  // lazily (built on the first forward that searches it, so loaded states rebuild it there).
  MemoryIndex mem_index;
};

struct KvState {
  std::vector<LayerCache> layers;
  kernels::KvFormat local_fmt = kernels::KvFormat::F32;  // storage of LayerCache::k and ::v
  std::vector<int64_t> pos;  // absolute position of each local token [n_local]
  int64_t n_mem = 0;         // tokens in memory (same for every memory layer)
  int64_t next_pos = 0;      // absolute position of the next token

  // The rotation the cached keys carry: positions relative to rot_offset, frequencies for
  // rot_seq_len (Dynamic NTK). Re-rotated from k_raw when either must change.
  int64_t rot_offset = 0;
  int64_t rot_seq_len = -1;
  // transformers' stateful Dynamic NTK (DynamicCacheMode::HF): the largest length seen.
  int64_t hf_max_seq_len = 0;
  int64_t hf_initial_len = 0;  // max_position_embeddings: where hf_max_seq_len starts

  int64_t n_local() const { return int64_t(pos.size()); }
  void clear() {
    for (auto& l : layers) {
      l.k.clear(); l.k_raw.clear(); l.v.clear(); l.mem_k.clear(); l.mem_v.clear(); l.mem_index.clear();
    }
    pos.clear();
    n_mem = 0;
    next_pos = 0;
    rot_offset = 0;
    rot_seq_len = -1;
    hf_max_seq_len = hf_initial_len;
  }
};

}  // namespace lcx
