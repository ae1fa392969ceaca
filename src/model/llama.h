// The LLaMA forward pass, with LongLLaMA's Focused Transformer memory as configuration.
#pragma once
#include <cstdint>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "runtime/thread_pool.h"

namespace lcx {

// How a chunk of tokens meets the caches (LongLLaMA, modeling_longllama.py):
//   Cached: append to the local cache. For LongLLaMA, if the local cache would grow past
//           max_position_embeddings, the previous local cache is first moved to memory
//           (memory layers) or dropped (other layers), and the local context restarts.
//   Window: a prefix window fed without a local cache (`_handle_long_input`): the window
//           attends to itself and the memory, then memory layers append its keys/values.
enum class ChunkMode { Cached, Window };

// Reusable activations for one forward call, grown on demand (no allocation once warm).
struct Scratch {
  std::vector<float> x, h, q, k, v, attn, gate, up, logits_in;
  // RoPE tables by the sequence length they were computed for (decode reuses them: no
  // allocation per token).
  RopeFreqs freqs0;        // rotation "as if at position 0" for memory keys
  int64_t freqs0_len = -1;
  RopeFreqs freqs;         // the current call's table
  int64_t freqs_len = -2;
  std::vector<int32_t> mem_cand;  // --mem-index hnsw: [n, n_head, mem_topk] memory rows
};

struct ForwardArgs {
  const int32_t* tokens = nullptr;  // [n]
  int64_t n = 0;
  ChunkMode mode = ChunkMode::Cached;
  bool all_logits = false;  // logits for every token, or only the last n_out
  int64_t n_out = 1;
  float* logits = nullptr;  // [n or 1, n_vocab], may be null (no LM head)
  int64_t mem_topk = 0;     // >0: attend to the top-k memory keys per query and head
  MemIndexKind mem_index = MemIndexKind::Exact;  // how those top-k keys are found
  HnswParams hnsw;          // mem_index == Hnsw
  // LLaMA with a length-dependent table (consistent Dynamic NTK, the LongRoPE switch): the
  // sequence length this call's prompt will reach once all of its batches are fed (0: this
  // call's end). A prompt fed in several calls then uses the table for its whole length in every
  // call, as one forward over it does (transformers: seq_len = max(position_ids) + 1).
  int64_t rot_len_hint = 0;
};

// Runs the model over args.tokens at positions state.next_pos.., updating state.
void llama_forward(const Model& m, KvState& state, Scratch& s, ThreadPool& pool, const ForwardArgs& args);

// True when appending n_new tokens changes the RoPE frequency table the cached keys were
// computed with (consistent Dynamic NTK past the trained context, the LongRoPE switch). Every
// layer's cached keys and values then depend on the old table, not just the rotation, so the
// only exact continuation is a recomputation of the whole sequence.
bool rotation_changes(const Model& m, const KvState& st, int64_t n_new, int64_t rot_len_hint = 0);

// Creates an empty state for a model.
KvState make_state(const Model& m);

// What is inconsistent in a state read from a file (sizes of the local and memory caches and
// of the pre-RoPE keys against the token counts, positions), or nullptr when the forward pass
// can run on it. Everything the forward pass indexes by is covered.
const char* state_problem(const Model& m, const KvState& st);

// FoT memory bytes per token (keys and values of every memory layer).
size_t memory_bytes_per_token(const ModelConfig& c);

// Memory footprint of the caches, for statistics.
size_t state_bytes(const KvState& st);

}  // namespace lcx
