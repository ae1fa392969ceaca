#include "model/weights.h"

#include <cstring>
#include <set>
#include <stdexcept>

#include "kernels/ops.h"
#include "runtime/error.h"

namespace lcx {

std::vector<TensorSlot> tensor_slots(const ModelConfig& c, ModelWeights& w) {
  std::vector<TensorSlot> s;
  w.layers.resize(size_t(c.n_layer));
  const int64_t q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
  s.push_back({"model.embed_tokens.weight", "token_embd.weight", {c.n_vocab, c.n_embd}, &w.tok_embd});
  for (int64_t il = 0; il < c.n_layer; ++il) {
    LayerWeights& l = w.layers[size_t(il)];
    const std::string hp = "model.layers." + std::to_string(il) + ".";
    const std::string gp = "blk." + std::to_string(il) + ".";
    s.push_back({hp + "input_layernorm.weight", gp + "attn_norm.weight", {c.n_embd}, &l.attn_norm, true});
    s.push_back({hp + "self_attn.q_proj.weight", gp + "attn_q.weight", {q_dim, c.n_embd}, &l.wq, false, false, QkPermute::Q});
    s.push_back({hp + "self_attn.k_proj.weight", gp + "attn_k.weight", {kv_dim, c.n_embd}, &l.wk, false, false, QkPermute::K});
    s.push_back({hp + "self_attn.v_proj.weight", gp + "attn_v.weight", {kv_dim, c.n_embd}, &l.wv});
    s.push_back({hp + "self_attn.o_proj.weight", gp + "attn_output.weight", {c.n_embd, q_dim}, &l.wo});
    s.push_back({hp + "post_attention_layernorm.weight", gp + "ffn_norm.weight", {c.n_embd}, &l.ffn_norm, true});
    s.push_back({hp + "mlp.gate_proj.weight", gp + "ffn_gate.weight", {c.n_ff, c.n_embd}, &l.w_gate});
    s.push_back({hp + "mlp.up_proj.weight", gp + "ffn_up.weight", {c.n_ff, c.n_embd}, &l.w_up});
    s.push_back({hp + "mlp.down_proj.weight", gp + "ffn_down.weight", {c.n_embd, c.n_ff}, &l.w_down});
    // Biases keep HF order; GGUF q/k biases are permuted like the rows of their weights.
    if (c.attn_bias) {
      s.push_back({hp + "self_attn.q_proj.bias", gp + "attn_q.bias", {q_dim}, &l.bq, true, false, QkPermute::Q, true});
      s.push_back({hp + "self_attn.k_proj.bias", gp + "attn_k.bias", {kv_dim}, &l.bk, true, false, QkPermute::K, true});
      s.push_back({hp + "self_attn.v_proj.bias", gp + "attn_v.bias", {kv_dim}, &l.bv, true, false, QkPermute::None, true});
      s.push_back({hp + "self_attn.o_proj.bias", gp + "attn_output.bias", {c.n_embd}, &l.bo, true, false, QkPermute::None, true});
    }
    if (c.mlp_bias) {
      s.push_back({hp + "mlp.gate_proj.bias", gp + "ffn_gate.bias", {c.n_ff}, &l.b_gate, true, false, QkPermute::None, true});
      s.push_back({hp + "mlp.up_proj.bias", gp + "ffn_up.bias", {c.n_ff}, &l.b_up, true, false, QkPermute::None, true});
      s.push_back({hp + "mlp.down_proj.bias", gp + "ffn_down.bias", {c.n_embd}, &l.b_down, true, false, QkPermute::None, true});
    }
  }
  s.push_back({"model.norm.weight", "output_norm.weight", {c.n_embd}, &w.output_norm, true});
  s.push_back({"lm_head.weight", "output.weight", {c.n_vocab, c.n_embd}, &w.output, false, c.tie_embeddings});
  return s;
}

int repack_weights_for_kernels(ModelWeights& w) {
  std::vector<TensorView*> todo;
  const auto consider = [&](TensorView& t) {
    const bool r16_type = t.dtype == DType::Q4_0 ||
                          ((t.dtype == DType::Q4_K || t.dtype == DType::Q5_0) && kernels::q4_k_r16_preferred());
    if (r16_type && t.shape.size() == 2 && t.rows() % kR16Rows == 0 && t.cols() % dtype_block_values(t.dtype) == 0 &&
        t.data != nullptr && t.data != w.tok_embd.data)
      todo.push_back(&t);
  };
  for (LayerWeights& l : w.layers) {
    for (TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) consider(*t);
  }
  consider(w.output);
  if (todo.empty()) return 0;
  // Every view must point into memory this model owns: a file (private mapping or copy) or an
  // owned buffer. Anything else is left alone.
  const auto owner_file = [&](const TensorView& t) -> MappedFile* {
    for (const auto& f : w.files)
      if (f->contains(t.data, t.nbytes)) return f.get();
    return nullptr;
  };
  const auto owned = [&](const TensorView& t) {
    for (const auto& b : w.owned) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      if (p >= b.data() && p + t.nbytes <= b.data() + b.size()) return true;
    }
    return false;
  };
  // Repacking a mapped file's tensors turns their pages into private memory (copy-on-write). A
  // file is mapped rather than copied when it is large for this machine (FileLoad::Auto), so keep
  // such tensors in the file's layout when they would take more than half the available memory:
  // a model that loads mapped must still load.
  size_t mapped_bytes = 0;
  for (const TensorView* t : todo) {
    const MappedFile* f = owner_file(*t);
    if (f != nullptr && !f->copied()) mapped_bytes += t->nbytes;
  }
  const bool repack_mapped = mapped_bytes == 0 || double(mapped_bytes) <= 0.5 * double(memory_available_bytes());
  try {
    for (const auto& f : w.files) f->set_writable(true);
  } catch (const std::exception&) {  // cannot write the pages: keep the file layout (slower, correct)
    for (const auto& f : w.files) {
      try { f->set_writable(false); } catch (const std::exception&) {}
    }
    return 0;
  }
  int n = 0;
  std::vector<uint8_t> panel;
  try {
    for (TensorView* t : todo) {
      const MappedFile* f = owner_file(*t);
      if (f == nullptr && !owned(*t)) continue;
      if (f != nullptr && !f->copied() && !repack_mapped) continue;
      // One panel of 16 rows occupies the same bytes in both layouts: repack panel by panel.
      const int64_t cols = t->cols();
      const DType r16 = dtype_r16_of(t->dtype);
      const size_t panel_bytes = dtype_row_bytes(t->dtype, cols) * size_t(kR16Rows);
      panel.resize(panel_bytes);
      auto* data = static_cast<uint8_t*>(const_cast<void*>(t->data));
      for (int64_t p = 0; p < t->rows() / kR16Rows; ++p) {
        std::memcpy(panel.data(), data + size_t(p) * panel_bytes, panel_bytes);
        repack_r16(r16, panel.data(), data + size_t(p) * panel_bytes, kR16Rows, cols);
      }
      t->dtype = r16;
      ++n;
    }
  } catch (...) {
    for (const auto& f : w.files) f->set_writable(false);
    throw;
  }
  for (const auto& f : w.files) f->set_writable(false);
  return n;
}

std::vector<uint8_t> permute_qk_rows(const TensorView& t, int64_t n_head, bool to_gguf) {
  // llama.cpp's converter reshapes rows as [n_head, 2, head_dim/2] and swaps the middle axes:
  // GGUF row (h, i, j) = HF row (h, j, i), i in {0,1}, j < head_dim/2. The inverse maps back.
  // A bias vector [rows] is permuted as rows of one value.
  const bool vec = t.shape.size() == 1;
  const int64_t rows = vec ? t.shape[0] : t.rows();
  const int64_t hd = rows / n_head, half = hd / 2;
  const size_t rb = dtype_row_bytes(t.dtype, vec ? 1 : t.cols());
  std::vector<uint8_t> out(rb * size_t(rows));
  const auto* src = static_cast<const uint8_t*>(t.data);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t i = 0; i < 2; ++i) {
        const int64_t gguf_row = h * hd + j * 2 + i;  // interleaved pairs
        const int64_t hf_row = h * hd + i * half + j;  // rotate-half pairs
        const int64_t from = to_gguf ? hf_row : gguf_row, to = to_gguf ? gguf_row : hf_row;
        std::memcpy(out.data() + size_t(to) * rb, src + size_t(from) * rb, rb);
      }
  return out;
}

void bind_weights(const ModelConfig& c, const std::map<std::string, TensorView>& tensors, NameKind kind,
                  ModelWeights& w) {
  std::set<std::string> used;
  for (TensorSlot& slot : tensor_slots(c, w)) {
    const std::string& name = kind == NameKind::HF ? slot.hf_name : slot.gguf_name;
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (slot.optional || (kind == NameKind::GGUF && slot.gguf_optional)) continue;
      fail("missing tensor '" + name + "' (expected shape " + shape_str(slot.shape) +
           "): the checkpoint does not match its config (num_hidden_layers, tie_word_embeddings?)");
    }
    used.insert(name);
    TensorView v = it->second;
    if (v.shape != slot.shape)
      fail("tensor '" + name + "' has shape " + shape_str(v.shape) + " but the config implies " +
           shape_str(slot.shape) + ": the weights do not belong to this config");
    if (dtype_is_quantized(v.dtype) && v.cols() % dtype_block_values(v.dtype) != 0)
      fail("tensor '" + name + "': " + dtype_name(v.dtype) + " rows must be a multiple of " +
           std::to_string(dtype_block_values(v.dtype)) + " values");
    if (slot.is_norm && v.dtype != DType::F32) {
      std::vector<uint8_t> f(size_t(v.numel()) * 4);
      kernels::dequantize_row(v.dtype, v.data, reinterpret_cast<float*>(f.data()), v.numel());
      v.dtype = DType::F32;
      v.nbytes = f.size();
      v.data = w.own(std::move(f));
    }
    if (kind == NameKind::GGUF && slot.permute != QkPermute::None) {
      const int64_t nh = slot.permute == QkPermute::Q ? c.n_head : c.n_head_kv;
      v.data = w.own(permute_qk_rows(v, nh, /*to_gguf=*/false));
    }
    *slot.dst = v;
  }
  if (c.tie_embeddings || !w.output.data) {
    if (!c.tie_embeddings)
      fail("missing tensor 'lm_head.weight' and tie_word_embeddings is false");
    w.output = w.tok_embd;
  }
  for (const auto& [name, v] : tensors) {
    if (used.count(name)) continue;
    // Old LLaMA checkpoints save RoPE's inv_freq buffers; they carry no information.
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    fail("unexpected tensor '" + name + "' " + shape_str(v.shape) +
         ": this checkpoint has weights a LLaMA model does not use (wrong architecture or config?)");
  }
}

}  // namespace lcx
