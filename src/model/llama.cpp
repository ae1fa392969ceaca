// The LLaMA forward pass (Touvron et al. 2023), as transformers' LlamaForCausalLM computes it,
// with LongLLaMA's Focused Transformer memory layers (Tworkowski et al. 2023) as configuration:
// for a plain LLaMA the memory is simply never used.
//
// Per layer:  h = RMSNorm(x);  q,k,v = h Wq, h Wk, h Wv;  RoPE(q, k);
//             x += Attention(q, [local k; memory k], [local v; memory v]) Wo
//             h = RMSNorm(x);  x += (silu(h Wgate) * (h Wup)) Wdown
#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

// FoT memory rows: one row per (token, kv head) of head_dim values, in mem_dtype. Q8_0 here means
// per-row int8: a float32 scale (max |x| / 127) and head_dim int8 values, so any head_dim works
// and each head vector keeps its own scale.
size_t mem_row_bytes(DType t, int64_t hd) {
  return t == DType::Q8_0 ? sizeof(float) + size_t(hd) : dtype_row_bytes(t, hd);
}

void mem_encode(DType t, const float* x, int64_t hd, uint8_t* dst) {
  if (t != DType::Q8_0) {
    kernels::quantize_row(t, x, dst, hd);
    return;
  }
  float amax = 0.0f;
  for (int64_t i = 0; i < hd; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
  std::memcpy(dst, &d, sizeof d);
  auto* q = reinterpret_cast<int8_t*>(dst + sizeof d);
  for (int64_t i = 0; i < hd; ++i) q[i] = int8_t(std::lround(x[i] * id));
}

void mem_decode(DType t, const uint8_t* src, int64_t hd, float* x) {
  if (t != DType::Q8_0) {
    kernels::dequantize_row(t, src, x, hd);
    return;
  }
  float d;
  std::memcpy(&d, src, sizeof d);
  const auto* q = reinterpret_cast<const int8_t*>(src + sizeof d);
  for (int64_t i = 0; i < hd; ++i) x[i] = d * float(q[i]);
}

// Moves the local context of every layer into FoT memory (memory layers: keys rotated as if at
// position 0, i.e. `rotate_as_if_first`, stored in mem_dtype) or drops it (other layers).
void move_local_to_memory(const ModelConfig& c, KvState& st, const RopeFreqs& freqs0) {
  const int64_t n_loc = st.n_local();
  if (n_loc == 0) return;
  const int64_t kv_dim = c.n_head_kv * c.head_dim;
  const size_t head_bytes = mem_row_bytes(c.mem.dtype, c.head_dim);
  const size_t row_bytes = head_bytes * size_t(c.n_head_kv);
  std::vector<float> row(static_cast<size_t>(kv_dim));
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
          mem_encode(c.mem.dtype, row.data() + g * c.head_dim, c.head_dim, L.mem_k.data() + at);
          mem_encode(c.mem.dtype, L.v.data() + t * kv_dim + g * c.head_dim, c.head_dim, L.mem_v.data() + at);
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

struct AttnArgs {
  const ModelConfig* c;
  const float* q;        // [n, n_head, head_dim], rotated
  const float* k;        // [n_loc, n_head_kv, head_dim], rotated
  const float* v;        // [n_loc, n_head_kv, head_dim]
  int64_t n;             // queries (the last n local tokens)
  int64_t n_loc;         // local keys
  const uint8_t* mem_k;  // [n_mem, n_head_kv * head_dim] in mem_dtype, or null
  const uint8_t* mem_v;
  int64_t n_mem;
  int64_t mem_topk;      // 0: dense
  float* out;            // [n, n_head, head_dim]
};

// One softmax over [local keys (causal); memory keys], in float32, scale 1/sqrt(head_dim).
void attention(const AttnArgs& a, Scratch& s, ThreadPool& pool) {
  const ModelConfig& c = *a.c;
  const int64_t hd = c.head_dim, n_head = c.n_head, kv_dim = c.n_head_kv * hd;
  const int64_t group = n_head / c.n_head_kv;
  const int64_t n_past = a.n_loc - a.n;
  const float scale = 1.0f / std::sqrt(float(hd));
  const DType mdt = c.mem.dtype;
  const size_t mhead = mem_row_bytes(mdt, hd);  // bytes of one (token, kv head) memory row
  const size_t mrow = mhead * size_t(c.n_head_kv);
  if (s.scores.size() < size_t(pool.size())) s.scores.resize(size_t(pool.size()));
  const int64_t n_work = n_head * a.n;
  pool.run([&](int ith, int nth) {
    std::vector<float>& sc = s.scores[size_t(ith)];
    if (sc.size() < size_t(a.n_loc + a.n_mem + 2 * hd)) sc.resize(size_t(a.n_loc + a.n_mem + 2 * hd));
    float* tmp = sc.data() + a.n_loc + a.n_mem;  // [head_dim] dequantized memory row
    const int64_t chunk = (n_work + nth - 1) / nth;
    const int64_t w0 = std::min(n_work, ith * chunk), w1 = std::min(n_work, w0 + chunk);
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t h = w / a.n, i = w % a.n, g = h / group;
      const float* qv = a.q + (i * n_head + h) * hd;
      const int64_t n_vis = n_past + i + 1;  // causal: local keys 0..n_past+i
      float* p = sc.data();
      for (int64_t j = 0; j < n_vis; ++j) p[j] = kernels::dot_f32(qv, a.k + j * kv_dim + g * hd, hd) * scale;
      float* pm = p + n_vis;
      for (int64_t j = 0; j < a.n_mem; ++j) {
        mem_decode(mdt, a.mem_k + size_t(j) * mrow + size_t(g) * mhead, hd, tmp);
        pm[j] = std::max(kernels::dot_f32(qv, tmp, hd) * scale, -1e6f);  // LongLLaMA clamps at -1e6
      }
      if (a.mem_topk > 0 && a.mem_topk < a.n_mem) {
        // kNN memory attention (Memorizing Transformers, Wu et al. 2022; FoT): keep the top-k
        // memory scores for this query and head, drop the rest from the softmax.
        std::vector<float> sorted(pm, pm + a.n_mem);
        std::nth_element(sorted.begin(), sorted.begin() + (a.mem_topk - 1), sorted.end(), std::greater<float>());
        const float thr = sorted[size_t(a.mem_topk - 1)];
        int64_t kept = 0;
        for (int64_t j = 0; j < a.n_mem; ++j) {
          if (pm[j] > thr || (pm[j] == thr && kept < a.mem_topk)) ++kept;
          else pm[j] = -INFINITY;
        }
      }
      kernels::softmax(p, n_vis + a.n_mem);
      float* o = a.out + (i * n_head + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t j = 0; j < n_vis; ++j) kernels::axpy(p[j], a.v + j * kv_dim + g * hd, o, hd);
      for (int64_t j = 0; j < a.n_mem; ++j) {
        if (pm[j] == 0.0f) continue;
        mem_decode(mdt, a.mem_v + size_t(j) * mrow + size_t(g) * mhead, hd, tmp);
        kernels::axpy(pm[j], tmp, o, hd);
      }
    }
  });
}

}  // namespace

bool rotation_changes(const Model& m, const KvState& st, int64_t n_new) {
  const ModelConfig& c = m.config;
  if (is_longllama(c) || st.n_local() == 0) return false;
  if (c.rope.type == RopeScaling::Dynamic && c.rope.dynamic_mode == DynamicCacheMode::HF) return false;
  return rotation_len(c.rope, st.next_pos + n_new) != st.rot_seq_len;
}

KvState make_state(const Model& m) {
  KvState st;
  st.layers.resize(size_t(m.config.n_layer));
  st.hf_max_seq_len = m.config.rope.max_pos;
  return st;
}

size_t memory_bytes_per_token(const ModelConfig& c) {
  return 2 * c.mem.layers.size() * mem_row_bytes(c.mem.dtype, c.head_dim) * size_t(c.n_head_kv);
}

size_t state_bytes(const KvState& st) {
  size_t b = 0;
  for (const auto& l : st.layers)
    b += (l.k.capacity() + l.k_raw.capacity() + l.v.capacity()) * 4 + l.mem_k.capacity() + l.mem_v.capacity();
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
  const RopeFreqs freqs0 = rope_frequencies(rc, 0);
  if (is_longllama(c) && st.n_local() > 0 && st.n_local() + n > c.n_ctx_train) move_local_to_memory(c, st, freqs0);
  const int64_t n_past = st.n_local();
  for (int64_t i = 0; i < n; ++i) st.pos.push_back(st.next_pos + i);
  st.next_pos += n;
  const int64_t n_loc = st.n_local();

  // --- Rotation for this call. LongLLaMA rotates by position relative to the oldest local
  // token; LLaMA by absolute position.
  const int64_t offset = is_longllama(c) ? st.pos.front() : 0;
  RopeFreqs freqs;
  bool rerotate = false;
  if (rc.type == RopeScaling::Dynamic && rc.dynamic_mode == DynamicCacheMode::HF) {
    // transformers v4.49 `_dynamic_frequency_update`: grow on a longer call, reset to the
    // original on a call shorter than max_position_embeddings after growth; cached keys keep
    // the rotation they were given.
    const int64_t seq_len = st.pos.back() - offset + 1;
    if (seq_len > st.hf_max_seq_len) st.hf_max_seq_len = seq_len;
    if (seq_len < rc.max_pos && st.hf_max_seq_len > rc.max_pos) st.hf_max_seq_len = rc.max_pos;
    freqs = rope_frequencies(rc, st.hf_max_seq_len);
  } else {
    const int64_t rlen = rotation_len(rc, st.pos.back() - offset + 1);
    freqs = rope_frequencies(rc, rlen);
    // Only LongLLaMA's offset can change under a live cache: a LLaMA whose frequency table
    // changes (consistent Dynamic NTK, LongRoPE switch) is recomputed by the engine instead,
    // see rotation_changes().
    rerotate = raw && n_past > 0 && (rlen != st.rot_seq_len || offset != st.rot_offset);
    st.rot_seq_len = rlen;
    st.rot_offset = offset;
  }
  if (rerotate) {
    for (int il = 0; il < int(c.n_layer); ++il) {
      LayerCache& L = st.layers[size_t(il)];
      std::copy(L.k_raw.begin(), L.k_raw.begin() + n_past * kv_dim, L.k.begin());
      if (!layer_uses_rope(c, il)) continue;
      for (int64_t t = 0; t < n_past; ++t)
        rope_apply(L.k.data() + t * kv_dim, c.n_head_kv, hd, st.pos[size_t(t)] - offset, freqs);
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
    kernels::matmul(mat(L.wq), h, n, q, pool);
    kernels::matmul(mat(L.wk), h, n, k, pool);
    kernels::matmul(mat(L.wv), h, n, v, pool);
    if (raw) C.k_raw.insert(C.k_raw.end(), k, k + n * kv_dim);
    if (rope_on) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = st.pos[size_t(n_past + i)] - offset;
        rope_apply(q + i * q_dim, c.n_head, hd, p, freqs);
        rope_apply(k + i * kv_dim, c.n_head_kv, hd, p, freqs);
      }
    }
    C.k.insert(C.k.end(), k, k + n * kv_dim);
    C.v.insert(C.v.end(), v, v + n * kv_dim);

    const bool mem_on = is_longllama(c) && c.mem.is_mem_layer(il) && st.n_mem > 0;
    AttnArgs a{&c, q, C.k.data(), C.v.data(), n, n_loc,
               mem_on ? C.mem_k.data() : nullptr, mem_on ? C.mem_v.data() : nullptr, mem_on ? st.n_mem : 0,
               args.mem_topk, att};
    attention(a, s, pool);
    kernels::matmul(mat(L.wo), att, n, h, pool);
    for (int64_t i = 0; i < n * n_embd; ++i) x[i] += h[i];

    // SwiGLU MLP.
    for (int64_t i = 0; i < n; ++i)
      kernels::rmsnorm(x + i * n_embd, static_cast<const float*>(L.ffn_norm.data), n_embd, c.rms_eps, h + i * n_embd);
    kernels::matmul(mat(L.w_gate), h, n, gate, pool);
    kernels::matmul(mat(L.w_up), h, n, up, pool);
    kernels::swiglu(gate, up, n * c.n_ff, gate);
    kernels::matmul(mat(L.w_down), gate, n, h, pool);
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
