// Approximate kNN over FoT memory keys: one HNSW graph (Malkov & Yashunin 2018, hnswlib) per kv
// head of a memory layer, in inner-product space, so that kNN memory attention (Memorizing
// Transformers, Wu et al. 2022 — who also use an approximate index) can pick each query's top-k
// memory keys without scoring the whole memory.
//
// The index follows the memory it covers rather than owning it: sync() appends the rows the
// memory gained since the last call (labels = absolute row numbers), drop_front() mirrors the
// FIFO cap. So a freshly loaded or cleared state simply rebuilds on its next forward.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/attention.h"
#include "runtime/thread_pool.h"

namespace lcx {

// How kNN memory attention (mem_topk > 0) finds its keys.
enum class MemIndexKind : uint8_t {
  Exact,  // score every memory key, keep the exact top-k (kernels::AttentionArgs::mem_topk)
  Hnsw,   // top-k candidates from an HNSW index per kv head (approximate)
};

struct HnswParams {
  int m = 16;                // graph degree (hnswlib M): memory ~ 2*M*4 bytes per row and head
  int ef_construction = 128;  // build-time beam width
  int ef_search = 0;          // query-time beam width; 0: max(128, 4 * k); never below k
};

class MemoryIndex {
 public:
  MemoryIndex();
  ~MemoryIndex();
  // Explicit cost: a copy duplicates every graph (used by Session::clone).
  MemoryIndex(const MemoryIndex& o);
  MemoryIndex& operator=(const MemoryIndex& o);
  MemoryIndex(MemoryIndex&&) noexcept;
  MemoryIndex& operator=(MemoryIndex&&) noexcept;

  // Brings the index up to date with mem (rows [0, mem.n) of n_head_kv heads of head_dim
  // values): appends the rows it lacks, decoded to float32 exactly as attention decodes them.
  // Rebuilds from mem when dropped rows outnumber live ones (hnswlib only marks deletions).
  void sync(const kernels::KvSpan& mem, int64_t n_head_kv, int64_t head_dim, const HnswParams& p,
            ThreadPool& pool);

  // The memory lost its oldest n rows: they leave the results, later rows keep their numbers
  // relative to the new front.
  void drop_front(int64_t n);

  // For every query row i and head h of q [n_q, n_head, head_dim] (kv head h / (n_head /
  // n_head_kv)): the k memory rows with the largest q.k found, into out [n_q, n_head, k]
  // (-1 pads when the index holds fewer). Call sync() first.
  void search(const float* q, int64_t n_q, int64_t n_head, int64_t k, int ef_search, int32_t* out,
              ThreadPool& pool) const;

  int64_t size() const;  // live rows indexed
  size_t bytes() const;  // approximate heap footprint
  void clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lcx
