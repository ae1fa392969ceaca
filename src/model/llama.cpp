// The LLaMA forward pass (Touvron et al. 2023), as transformers' LlamaForCausalLM computes it,
// with LongLLaMA's Focused Transformer memory layers (Tworkowski et al. 2023) as configuration:
// for a plain LLaMA the memory is simply never used.
//
// Per layer:  h = RMSNorm(x);  q,k,v = h Wq (+ bq), h Wk (+ bk), h Wv (+ bv);  RoPE(q, k);
//             x += Attention(q, [local k; memory k], [local v; memory v]) Wo
//             h = RMSNorm(x);  x += (silu(h Wgate) * (h Wup)) Wdown
#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "runtime/error.h"

namespace lcx {

namespace {

using kernels::MatRef;

MatRef mat(const TensorView& t) { return MatRef{t.dtype, t.rows(), t.cols(), t.data}; }

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

bool is_longllama(const ModelConfig& c) { return c.arch == Arch::LongLlama; }

// Whether cached keys may need a new rotation later, so their pre-RoPE values are kept:
// LongLLaMA caches keys before RoPE and rotates them relative to the oldest local token on
// every call (its local cache moves to memory, which changes that offset).
bool keeps_raw_keys(const ModelConfig& c) { return is_longllama(c); }

// The sequence length whose frequency table the whole sequence uses (consistent mode),
// normalised so that lengths giving the same table compare equal.
int64_t rotation_len(const RopeConfig& r, int64_t seq_len) {
  if (r.type == RopeScaling::Dynamic) return std::max(seq_len, r.max_pos);
  if (r.type == RopeScaling::LongRope && r.longrope_switch && r.orig_ctx > 0)
    return seq_len > r.orig_ctx ? r.orig_ctx + 1 : r.orig_ctx;
  return 0;
}

// Memory layers with mem_positionals=false use no RoPE at all (modeling_longllama.py).
bool layer_uses_rope(const ModelConfig& c, int il) {
  return !(is_longllama(c) && c.mem.is_mem_layer(il) && !c.mem.positionals);
}

// FoT memory rows: one row per (token, kv head) of head_dim values in mem_dtype. "q8_0" memory
// is per-row int8 (kernels::KvFormat::Q8Row: a float32 scale and head_dim int8 values), so any
// head_dim works and each head vector keeps its own scale.
kernels::KvFormat mem_format(DType t) {
  switch (t) {
    case DType::F16: return kernels::KvFormat::F16;
    case DType::BF16: return kernels::KvFormat::BF16;
    case DType::Q8_0: return kernels::KvFormat::Q8Row;
    default: return kernels::KvFormat::F32;
  }
}

// Moves the local context of every layer into FoT memory (memory layers: keys rotated as if at
// position 0, i.e. `rotate_as_if_first`, stored in mem_dtype) or drops it (other layers).
void move_local_to_memory(const ModelConfig& c, KvState& st, const RopeFreqs& freqs0) {
  const int64_t n_loc = st.n_local();
  if (n_loc == 0) return;
  const int64_t kv_dim = c.n_head_kv * c.head_dim;
  const kernels::KvFormat fmt = mem_format(c.mem.dtype);
  const size_t head_bytes = kernels::kv_row_bytes(fmt, c.head_dim);
  const size_t row_bytes = head_bytes * size_t(c.n_head_kv);
  const size_t local_head_bytes = kernels::kv_row_bytes(st.local_fmt, c.head_dim);
  std::vector<float> row(static_cast<size_t>(kv_dim)), vrow(static_cast<size_t>(c.head_dim));
  for (int il = 0; il < int(c.n_layer); ++il) {
    LayerCache& L = st.layers[size_t(il)];
    if (c.mem.is_mem_layer(il)) {
      const size_t old = L.mem_k.size();
      L.mem_k.resize(old + size_t(n_loc) * row_bytes);
      L.mem_v.resize(old + size_t(n_loc) * row_bytes);
      for (int64_t t = 0; t < n_loc; ++t) {
        std::memcpy(row.data(), L.k_raw.data() + t * kv_dim, size_t(kv_dim) * 4);
        if (layer_uses_rope(c, il)) rope_apply(row.data(), c.n_head_kv, c.head_dim, 0, freqs0);
        for (int64_t g = 0; g < c.n_head_kv; ++g) {
          const size_t at = old + size_t(t) * row_bytes + size_t(g) * head_bytes;
          kernels::kv_encode(fmt, row.data() + g * c.head_dim, c.head_dim, L.mem_k.data() + at);
          kernels::kv_decode(st.local_fmt, L.v.data() + size_t(t * c.n_head_kv + g) * local_head_bytes, c.head_dim,
                             vrow.data());
          kernels::kv_encode(fmt, vrow.data(), c.head_dim, L.mem_v.data() + at);
        }
      }
    }
    L.k.clear();
    L.k_raw.clear();
    L.v.clear();
  }
  if (!c.mem.layers.empty()) st.n_mem += n_loc;
  st.pos.clear();
}

// Appends n_rows rows of head_dim floats to a local cache in format f.
void append_rows(std::vector<uint8_t>& dst, kernels::KvFormat f, const float* src, int64_t n_rows, int64_t hd) {
  const size_t rb = kernels::kv_row_bytes(f, hd);
  const size_t old = dst.size();
  dst.resize(old + size_t(n_rows) * rb);
  if (f == kernels::KvFormat::F32) {
    std::memcpy(dst.data() + old, src, size_t(n_rows) * rb);
    return;
  }
  for (int64_t r = 0; r < n_rows; ++r) kernels::kv_encode(f, src + r * hd, hd, dst.data() + old + size_t(r) * rb);
}

// y[i, :] += b for n rows of dim values: a Linear's bias (attention_bias / mlp_bias), added
// after the matmul as torch's F.linear does. b: [dim] F32, or absent (data == nullptr).
void add_bias(float* y, int64_t n, int64_t dim, const TensorView& b) {
  if (b.data == nullptr) return;
  const float* bb = static_cast<const float*>(b.data);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) y[i * dim + j] += bb[j];
}

}  // namespace

bool rotation_changes(const Model& m, const KvState& st, int64_t n_new, int64_t rot_len_hint) {
  const ModelConfig& c = m.config;
  if (is_longllama(c) || st.n_local() == 0) return false;
  if (c.rope.type == RopeScaling::Dynamic && c.rope.dynamic_mode == DynamicCacheMode::HF) return false;
  return rotation_len(c.rope, std::max(st.next_pos + n_new, rot_len_hint)) != st.rot_seq_len;
}

KvState make_state(const Model& m) {
  KvState st;
  st.layers.resize(size_t(m.config.n_layer));
  st.hf_initial_len = st.hf_max_seq_len = m.config.rope.max_pos;
  return st;
}

const char* state_problem(const Model& m, const KvState& st) {
  const ModelConfig& c = m.config;
  const int64_t kMaxPos = int64_t(1) << 40;
  if (st.layers.size() != size_t(c.n_layer)) return "layer count";
  if (st.n_mem < 0 || st.n_mem > kMaxPos || (c.mem.layers.empty() && st.n_mem != 0)) return "memory size";
  if (st.next_pos < 0 || st.next_pos > kMaxPos || st.rot_offset < 0 || st.rot_offset > kMaxPos ||
      st.rot_seq_len < -1 || st.rot_seq_len > kMaxPos || st.hf_max_seq_len < 0 || st.hf_max_seq_len > kMaxPos)
    return "positions";
  for (int64_t p : st.pos)
    if (p < 0 || p >= st.next_pos) return "positions";
  const uint64_t n_local = st.pos.size(), n_kv = uint64_t(c.n_head_kv), kv_dim = n_kv * uint64_t(c.head_dim);
  const uint64_t local_row = kernels::kv_row_bytes(st.local_fmt, c.head_dim) * n_kv;
  const uint64_t mem_row = kernels::kv_row_bytes(mem_format(c.mem.dtype), c.head_dim) * n_kv;
  const bool raw = keeps_raw_keys(c);
  for (size_t il = 0; il < st.layers.size(); ++il) {
    const LayerCache& L = st.layers[il];
    if (L.k.size() != n_local * local_row || L.v.size() != L.k.size()) return "local cache size";
    if (L.k_raw.size() != (raw ? n_local * kv_dim : 0)) return "local key rows";
    const uint64_t mem_bytes = c.mem.is_mem_layer(int(il)) ? uint64_t(st.n_mem) * mem_row : 0;
    if (L.mem_k.size() != mem_bytes || L.mem_v.size() != mem_bytes) return "memory size";
  }
  return nullptr;
}

size_t memory_bytes_per_token(const ModelConfig& c) {
  return 2 * c.mem.layers.size() * kernels::kv_row_bytes(mem_format(c.mem.dtype), c.head_dim) * size_t(c.n_head_kv);
}

size_t state_bytes(const KvState& st) {
  size_t b = 0;
  for (const auto& l : st.layers)
    b += l.k.capacity() + l.k_raw.capacity() * 4 + l.v.capacity() + l.mem_k.capacity() + l.mem_v.capacity() +
         l.mem_index.bytes();
  return b;
}

void llama_forward(const Model& m, KvState& st, Scratch& s, ThreadPool& pool, const ForwardArgs& args) {
  const ModelConfig& c = m.config;
  const ModelWeights& W = m.weights;
  const int64_t n = args.n, n_embd = c.n_embd, hd = c.head_dim;
  const int64_t q_dim = c.n_head * hd, kv_dim = c.n_head_kv * hd;
  LCX_CHECK(n > 0, "forward called with no tokens");
  for (int64_t i = 0; i < n; ++i)
    if (args.tokens[i] < 0 || args.tokens[i] >= c.n_vocab)
      fail("token id " + std::to_string(args.tokens[i]) + " is outside the vocabulary [0, " +
           std::to_string(c.n_vocab) + ")");
  const bool raw = keeps_raw_keys(c);
  const RopeConfig& rc = c.rope;

  // --- Local context bookkeeping (LongLLaMA: the cache never exceeds max_position_embeddings
  // across calls; the whole previous local cache moves to memory instead).
  if (s.freqs0_len != 0) {
    s.freqs0 = rope_frequencies(rc, 0);
    s.freqs0_len = 0;
  }
  const RopeFreqs& freqs0 = s.freqs0;
  if (is_longllama(c) && st.n_local() > 0 && st.n_local() + n > c.n_ctx_train) move_local_to_memory(c, st, freqs0);
  const int64_t n_past = st.n_local();
  for (int64_t i = 0; i < n; ++i) st.pos.push_back(st.next_pos + i);
  st.next_pos += n;
  const int64_t n_loc = st.n_local();

  // --- Rotation for this call. LongLLaMA rotates by position relative to the oldest local
  // token; LLaMA by absolute position.
  const int64_t offset = is_longllama(c) ? st.pos.front() : 0;
  auto table_for = [&](int64_t len) -> const RopeFreqs& {
    if (s.freqs_len != len) {
      s.freqs = rope_frequencies(rc, len);
      s.freqs_len = len;
    }
    return s.freqs;
  };
  const RopeFreqs* fp = nullptr;
  bool rerotate = false;
  if (rc.type == RopeScaling::Dynamic && rc.dynamic_mode == DynamicCacheMode::HF) {
    // transformers v4.49 `_dynamic_frequency_update`: grow on a longer call, reset to the
    // original on a call shorter than max_position_embeddings after growth; cached keys keep
    // the rotation they were given.
    const int64_t seq_len = st.pos.back() - offset + 1;
    if (seq_len > st.hf_max_seq_len) st.hf_max_seq_len = seq_len;
    if (seq_len < rc.max_pos && st.hf_max_seq_len > rc.max_pos) st.hf_max_seq_len = rc.max_pos;
    fp = &table_for(st.hf_max_seq_len);
  } else {
    const int64_t len = st.pos.back() - offset + 1;
    const int64_t rlen = rotation_len(rc, is_longllama(c) ? len : std::max(len, args.rot_len_hint));
    fp = &table_for(rlen);
    // Only LongLLaMA's offset can change under a live cache: a LLaMA whose frequency table
    // changes (consistent Dynamic NTK, LongRoPE switch) is recomputed by the engine instead,
    // see rotation_changes().
    rerotate = raw && n_past > 0 && (rlen != st.rot_seq_len || offset != st.rot_offset);
    st.rot_seq_len = rlen;
    st.rot_offset = offset;
  }
  const RopeFreqs& freqs = *fp;
  const size_t local_row = kernels::kv_row_bytes(st.local_fmt, hd) * size_t(c.n_head_kv);  // bytes per token
  if (rerotate) {
    float* row = grow(s.k, size_t(kv_dim));
    for (int il = 0; il < int(c.n_layer); ++il) {
      LayerCache& L = st.layers[size_t(il)];
      L.k.resize(size_t(n_past) * local_row);
      for (int64_t t = 0; t < n_past; ++t) {
        std::memcpy(row, L.k_raw.data() + t * kv_dim, size_t(kv_dim) * 4);
        if (layer_uses_rope(c, il)) rope_apply(row, c.n_head_kv, hd, st.pos[size_t(t)] - offset, freqs);
        uint8_t* dst = L.k.data() + size_t(t) * local_row;  // [n_head_kv, head_dim] in local_fmt
        for (int64_t g = 0; g < c.n_head_kv; ++g)
          kernels::kv_encode(st.local_fmt, row + g * hd, hd, dst + size_t(g) * (local_row / size_t(c.n_head_kv)));
      }
    }
  }

  // --- Embedding. x: [n, n_embd]
  float* x = grow(s.x, size_t(n * n_embd));
  const size_t emb_row = dtype_row_bytes(W.tok_embd.dtype, n_embd);
  for (int64_t i = 0; i < n; ++i)
    kernels::dequantize_row(W.tok_embd.dtype, static_cast<const uint8_t*>(W.tok_embd.data) + size_t(args.tokens[i]) * emb_row,
                            x + i * n_embd, n_embd);

  float* h = grow(s.h, size_t(n * n_embd));      // [n, n_embd]
  float* q = grow(s.q, size_t(n * q_dim));       // [n, n_head, head_dim]
  float* k = grow(s.k, size_t(n * kv_dim));      // [n, n_head_kv, head_dim]
  float* v = grow(s.v, size_t(n * kv_dim));      // [n, n_head_kv, head_dim]
  float* att = grow(s.attn, size_t(n * q_dim));  // [n, n_head, head_dim]
  float* gate = grow(s.gate, size_t(n * c.n_ff));
  float* up = grow(s.up, size_t(n * c.n_ff));

  for (int il = 0; il < int(c.n_layer); ++il) {
    const LayerWeights& L = W.layers[size_t(il)];
    LayerCache& C = st.layers[size_t(il)];
    const bool rope_on = layer_uses_rope(c, il);

    // Attention block.
    for (int64_t i = 0; i < n; ++i)
      kernels::rmsnorm(x + i * n_embd, static_cast<const float*>(L.attn_norm.data), n_embd, c.rms_eps, h + i * n_embd);
    {
      const MatRef w3[3] = {mat(L.wq), mat(L.wk), mat(L.wv)};
      float* const y3[3] = {q, k, v};
      kernels::matmul_multi(w3, 3, h, n, y3, pool);  // one fork-join at decode
    }
    add_bias(q, n, q_dim, L.bq);  // before RoPE (and before LongLLaMA keeps the raw keys)
    add_bias(k, n, kv_dim, L.bk);
    add_bias(v, n, kv_dim, L.bv);
    if (raw) C.k_raw.insert(C.k_raw.end(), k, k + n * kv_dim);
    if (rope_on) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = st.pos[size_t(n_past + i)] - offset;
        rope_apply(q + i * q_dim, c.n_head, hd, p, freqs);
        rope_apply(k + i * kv_dim, c.n_head_kv, hd, p, freqs);
      }
    }
    append_rows(C.k, st.local_fmt, k, n * c.n_head_kv, hd);
    append_rows(C.v, st.local_fmt, v, n * c.n_head_kv, hd);

    // One softmax over [local keys (causal); memory keys] (modeling_longllama.py), scale
    // 1/sqrt(head_dim); memory scores clamped below at -1e6 as the reference does.
    kernels::AttentionArgs a;
    a.q = q;
    a.n_q = n;
    a.n_head = c.n_head;
    a.n_head_kv = c.n_head_kv;
    a.head_dim = hd;
    a.scale = 1.0f / std::sqrt(float(hd));
    a.local = {st.local_fmt, C.k.data(), C.v.data(), n_loc, local_row, local_row / size_t(c.n_head_kv)};
    a.n_past = n_past;
    if (is_longllama(c) && c.mem.is_mem_layer(il) && st.n_mem > 0) {
      const size_t hb = kernels::kv_row_bytes(mem_format(c.mem.dtype), hd);
      a.mem = {mem_format(c.mem.dtype), C.mem_k.data(), C.mem_v.data(), st.n_mem, hb * size_t(c.n_head_kv), hb};
    }
    a.mem_topk = args.mem_topk;
    if (args.mem_index == MemIndexKind::Hnsw && args.mem_topk > 0 && args.mem_topk < a.mem.n) {
      // Approximate kNN: the layer's HNSW index (brought up to date with the memory first)
      // proposes each query's top-k memory rows; the kernel scores only those.
      C.mem_index.sync(a.mem, c.n_head_kv, hd, args.hnsw, pool);
      int32_t* cand = grow(s.mem_cand, size_t(n * c.n_head * args.mem_topk));  // [n, n_head, k]
      C.mem_index.search(q, n, c.n_head, args.mem_topk, args.hnsw.ef_search, cand, pool);
      a.mem_cand = cand;
      a.mem_n_cand = args.mem_topk;
    }
    a.out = att;
    kernels::attention(a, pool);
    kernels::matmul(mat(L.wo), att, n, h, pool);
    add_bias(h, n, n_embd, L.bo);
    for (int64_t i = 0; i < n * n_embd; ++i) x[i] += h[i];

    // SwiGLU MLP.
    for (int64_t i = 0; i < n; ++i)
      kernels::rmsnorm(x + i * n_embd, static_cast<const float*>(L.ffn_norm.data), n_embd, c.rms_eps, h + i * n_embd);
    {
      const MatRef w2[2] = {mat(L.w_gate), mat(L.w_up)};
      float* const y2[2] = {gate, up};
      kernels::matmul_multi(w2, 2, h, n, y2, pool);
    }
    add_bias(gate, n, c.n_ff, L.b_gate);
    add_bias(up, n, c.n_ff, L.b_up);
    kernels::swiglu(gate, up, n * c.n_ff, gate);
    kernels::matmul(mat(L.w_down), gate, n, h, pool);
    add_bias(h, n, n_embd, L.b_down);
    for (int64_t i = 0; i < n * n_embd; ++i) x[i] += h[i];
  }

  // A prefix window goes to memory once every layer has attended to it.
  if (args.mode == ChunkMode::Window) move_local_to_memory(c, st, freqs0);

  if (args.logits) {
    const int64_t first = args.all_logits ? 0 : n - std::clamp<int64_t>(args.n_out, 1, n);
    const int64_t rows = n - first;
    for (int64_t i = 0; i < rows; ++i)
      kernels::rmsnorm(x + (first + i) * n_embd, static_cast<const float*>(W.output_norm.data), n_embd, c.rms_eps,
                       h + i * n_embd);
    kernels::matmul(mat(W.output), h, rows, args.logits, pool);
  }
}

}  // namespace lcx
