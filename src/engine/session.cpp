// The engine: sessions over a shared model. Splits prompts the way each architecture needs
// (LongLLaMA: windows into memory, then the local context), runs generation with the sampler,
// and streams UTF-8-safe text through one callback.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "engine/json_constraint.h"
#include "engine/lookup.h"
#include "engine/sampler.h"
#include "engine/state_checksum.h"
#include "kernels/ops.h"
#include "longctx/longctx.h"
#include "model/llama.h"
#include "model/model.h"
#include "model/rope_options.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/mmap_file.h"
#include "runtime/thread_pool.h"

namespace longctx {

using lcx::fail;

// ---------------------------------------------------------------------------------------------
// Model

namespace {

int64_t parse_int(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    fail(flag + " expects an integer, got '" + v + "'");
  }
}

bool parse_bool(const std::string& flag, const std::string& v) {
  if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "off" || v == "no") return false;
  fail(flag + " expects on/off, got '" + v + "'");
}

const char* kMemFlagsHelp =
    "  --last-context-length N   LongLLaMA: tokens kept in the local cache at the end of a prompt\n"
    "  --mem-dtype T             LongLLaMA memory storage: float32, bfloat16, float16, q8_0\n"
    "  --mem-layers L1,L2,...    LongLLaMA: which layers attend to memory ('none' disables memory)\n"
    "  --mem-positionals on|off  LongLLaMA: rotate memory keys as position 0 (on) or use no RoPE\n";

void apply_overrides(lcx::ModelConfig& c, const LoadOptions& opt) {
  lcx::RopeOverrides rope;
  for (const auto& [flag, value] : opt.overrides) {
    if (lcx::parse_rope_flag(flag, value, rope)) continue;
    if (flag == "--last-context-length") {
      c.mem.last_context_length = parse_int(flag, value);
    } else if (flag == "--mem-dtype") {
      if (value == "float32" || value == "f32") c.mem.dtype = lcx::DType::F32;
      else if (value == "bfloat16" || value == "bf16") c.mem.dtype = lcx::DType::BF16;
      else if (value == "float16" || value == "f16") c.mem.dtype = lcx::DType::F16;
      else if (value == "q8_0" || value == "q8") c.mem.dtype = lcx::DType::Q8_0;
      else fail("--mem-dtype: unknown '" + value + "': use float32, bfloat16, float16 or q8_0");
    } else if (flag == "--mem-layers") {
      c.mem.layers.clear();
      if (value != "none" && !value.empty()) {
        std::stringstream ss(value);
        std::string item;
        while (std::getline(ss, item, ',')) c.mem.layers.push_back(int(parse_int(flag, item)));
      }
      lcx::normalize_mem_layers(c.mem.layers);
    } else if (flag == "--mem-positionals") {
      c.mem.positionals = parse_bool(flag, value);
    } else {
      fail("unknown option " + flag);
    }
  }
  lcx::apply_rope_overrides(c.rope, rope);
  c.validate();
}

}  // namespace

std::string override_flags_help() { return std::string(lcx::rope_flags_help()) + kMemFlagsHelp; }

std::string kernels_description() {
  const lcx::kernels::KernelIsa isa = lcx::kernels::active_kernel_isa();
  std::string d = lcx::kernels::kernel_isa_name(isa);
  if (isa == lcx::kernels::KernelIsa::Avx512 && lcx::kernels::amx_enabled()) d += " + amx (prompt GEMMs)";
  return d;
}

bool is_override_flag(const std::string& flag) {
  if (flag == "--last-context-length" || flag == "--mem-dtype" || flag == "--mem-layers" ||
      flag == "--mem-positionals")
    return true;
  return lcx::is_rope_flag(flag);
}

Model::~Model() = default;

std::shared_ptr<Model> Model::load(const std::string& path, const LoadOptions& opt) {
  std::shared_ptr<Model> m(new Model());
  lcx::LoadOptions lo;
  lo.tokenizer_path = opt.tokenizer_path;
  lo.weights = lcx::parse_file_load(opt.weights);
  lo.repack = opt.repack;
  m->m_ = lcx::load_model(path, lo);
  apply_overrides(m->m_->config, opt);
  return m;
}

std::vector<int32_t> Model::tokenize(const std::string& text, bool add_bos) const {
  const lcx::Tokenizer& tok = m_->tok();
  return tok.encode(text, add_bos && tok.vocab().add_bos);
}
std::string Model::detokenize(const std::vector<int32_t>& ids) const { return m_->tok().decode(ids); }
int32_t Model::n_vocab() const { return int32_t(m_->config.n_vocab); }
int64_t Model::n_ctx_train() const { return m_->config.n_ctx_train; }
bool Model::has_fot_memory() const { return m_->config.arch == lcx::Arch::LongLlama; }

std::string Model::describe() const {
  const lcx::ModelConfig& c = m_->config;
  const lcx::ModelWeights& w = m_->weights;
  std::ostringstream os;
  os << "model:        " << m_->path << " (" << m_->format << ")\n"
     << "architecture: " << lcx::arch_name(c.arch) << "\n"
     << "vocab:        " << c.n_vocab << "  (bos " << c.bos_id << ", eos " << c.eos_id;
  if (!c.eog_ids.empty()) {
    os << ", also ending generation:";
    for (int32_t id : c.eog_ids) os << " " << id;
  }
  os << ")\n"
     << "layers:       " << c.n_layer << "\n"
     << "n_embd:       " << c.n_embd << "\n"
     << "n_ff:         " << c.n_ff << "\n"
     << "heads:        " << c.n_head << " (kv " << c.n_head_kv << ", head_dim " << c.head_dim << ")\n"
     << "context:      " << c.n_ctx_train << " (trained)\n"
     << "rms_norm_eps: " << c.rms_eps << "\n"
     << "tied head:    " << (c.tie_embeddings ? "yes" : "no") << "\n"
     << "biases:       " << (c.attn_bias && c.mlp_bias ? "attention, mlp" : c.attn_bias ? "attention" : c.mlp_bias ? "mlp" : "none")
     << "\n"
     << "dtypes:       embed " << lcx::dtype_name(w.tok_embd.dtype) << ", attn_q "
     << lcx::dtype_name(w.layers[0].wq.dtype) << ", ffn_down " << lcx::dtype_name(w.layers[0].w_down.dtype)
     << ", output " << lcx::dtype_name(w.output.dtype) << "\n";
  {
    // Per dtype, how many matrices (mixed files such as llama-quantize's Q4_K_M: Q4_K + Q6_K).
    std::map<std::string, int> counts;
    const auto count = [&](const lcx::TensorView& t) {
      if (t.data != nullptr) ++counts[lcx::dtype_name(lcx::dtype_r16_source(t.dtype))];
    };
    for (const lcx::LayerWeights& l : w.layers)
      for (const lcx::TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) count(*t);
    if (!c.tie_embeddings) count(w.output);
    os << "matrices:     ";
    bool first = true;
    for (const auto& [name, n] : counts) {
      os << (first ? "" : ", ") << n << " " << name;
      first = false;
    }
    os << "\n";
  }
  os << "rope:         " << lcx::rope_describe(c.rope) << "\n";
  if (c.rope.type == lcx::RopeScaling::Yarn && c.yarn_unused_orig_ctx > 0 &&
      lcx::rope_original_ctx(c.rope) != c.yarn_unused_orig_ctx)
    os << "note:         rope_scaling.original_max_position_embeddings " << c.yarn_unused_orig_ctx
       << " is not used: transformers v4.49 takes YaRN's original context from max_position_embeddings ("
       << c.rope.max_pos << "), and so does longctx; the model's own code and llama.cpp use "
       << c.yarn_unused_orig_ctx << " (--rope-orig-ctx " << c.yarn_unused_orig_ctx << ")\n";
  {
    size_t copied = 0, mapped = 0;
    for (const auto& f : w.files) (f->copied() ? copied : mapped) += f->size();
    os << "weights:      ";
    if (copied) os << copied / (1 << 20) << " MiB in 2 MiB huge pages" << (mapped ? ", " : "");
    if (mapped) os << mapped / (1 << 20) << " MiB memory-mapped";
    if (m_->n_repacked) os << "; " << m_->n_repacked << " matrices (Q4_0, Q4_K, Q5_0) repacked in 16-row panels for the SIMD kernels";
    os << "\n";
  }
  if (c.arch == lcx::Arch::LongLlama) {
    os << "fot memory:   layers [";
    for (size_t i = 0; i < c.mem.layers.size(); ++i) os << (i ? "," : "") << c.mem.layers[i];
    os << "], positionals " << (c.mem.positionals ? "on" : "off") << ", dtype "
       << lcx::dtype_name(c.mem.dtype) << ", last_context_length " << c.mem.last_context_length
       << ", window " << c.n_ctx_train << "\n"
       << "memory cost:  " << lcx::memory_bytes_per_token(c) << " bytes per memory token ("
       << lcx::dtype_name(c.mem.dtype) << (c.mem.dtype == lcx::DType::Q8_0 ? ", per-row int8 + f32 scale" : "")
       << ")\n";
  }
  os << "tokenizer:    " << (m_->tokenizer ? m_->tokenizer_source : std::string("none (pass --tokenizer FILE)")) << "\n";
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Session

namespace {
lcx::kernels::KvFormat parse_cache_type(const std::string& t) {
  using lcx::kernels::KvFormat;
  if (t == "f32" || t == "float32") return KvFormat::F32;
  if (t == "f16" || t == "float16") return KvFormat::F16;
  if (t == "bf16" || t == "bfloat16") return KvFormat::BF16;
  if (t == "q8_0" || t == "q8") return KvFormat::Q8Row;
  fail("--cache-type: unknown '" + t + "': use f32, f16, bf16 or q8_0");
}
}  // namespace

namespace {

// Worker threads for a session: n > 0 as asked, 0 = every core. Thousands of threads would
// take minutes to start and then only contend (`-t 100000` looked like a hang): refused.
int thread_count(int n) {
  constexpr int kMaxThreads = 1024;
  if (n < 0 || n > kMaxThreads)
    fail("--threads " + std::to_string(n) + " is out of range: use 1.." + std::to_string(kMaxThreads) +
         " (this machine has " + std::to_string(std::thread::hardware_concurrency()) + " cores), or 0 for all cores");
  return n > 0 ? n : int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

struct Session::Impl {
  std::shared_ptr<const Model> model;
  const lcx::Model* m;
  SessionOptions opt;
  lcx::ThreadPool pool;
  lcx::KvState state;
  lcx::Scratch scratch;
  std::vector<float> last_logits;
  std::vector<int32_t> history;
  std::vector<std::string> token_bytes;  // JSON mode: each token's bytes (built on first use)
  std::vector<uint8_t> allowed;          // JSON mode: this step's token mask
  const Session* lent_by = nullptr;      // borrow_state: whose memory this session holds

  const std::vector<std::string>& vocab_bytes() {
    if (token_bytes.empty()) {
      const lcx::Tokenizer& tok = m->tok();
      token_bytes.resize(size_t(m->config.n_vocab));
      for (int32_t id = 0; id < int32_t(token_bytes.size()) && id < tok.n_vocab(); ++id)
        token_bytes[size_t(id)] = tok.token_bytes(id);
    }
    return token_bytes;
  }

  Impl(std::shared_ptr<const Model> mdl, const SessionOptions& o)
      : model(std::move(mdl)), m(&model->impl()), opt(o),
        pool(thread_count(o.n_threads)),
        state(lcx::make_state(*m)) {
    if (opt.n_batch <= 0) opt.n_batch = 512;
    if (opt.mem_index != "exact" && opt.mem_index != "hnsw")
      fail("--mem-index: unknown '" + opt.mem_index + "': use exact or hnsw");
    if (opt.mem_index == "hnsw" && opt.mem_topk <= 0)
      fail("--mem-index hnsw selects the top-k memory keys approximately: give --mem-topk K too");
    if (opt.hnsw_ef < 0 || opt.hnsw_m < 2)
      fail("--hnsw-ef must be >= 0 (0: automatic) and --hnsw-m >= 2");
    state.local_fmt = parse_cache_type(opt.cache_type);
    last_logits.resize(size_t(m->config.n_vocab));
  }

  bool fot() const { return m->config.arch == lcx::Arch::LongLlama; }

  // One forward call; logits rows go to `out` (all rows) or last_logits.
  // need_logits=false skips the LM head (prefix windows of a long prompt whose logits nobody
  // reads: a 32000 x n_embd matmul per window saved).
  void forward(const int32_t* ids, int64_t n, lcx::ChunkMode mode, float* out, bool need_logits = true) {
    lcx::ForwardArgs a;
    a.tokens = ids;
    a.n = n;
    a.mode = mode;
    a.all_logits = out != nullptr;
    a.logits = out ? out : (need_logits ? last_logits.data() : nullptr);
    a.mem_topk = opt.mem_topk;
    a.mem_index = opt.mem_index == "hnsw" ? lcx::MemIndexKind::Hnsw : lcx::MemIndexKind::Exact;
    a.hnsw.m = opt.hnsw_m;
    a.hnsw.ef_search = opt.hnsw_ef;
    a.rot_len_hint = rot_len_hint;
    std::vector<int32_t> all;
    if (lcx::rotation_changes(*m, state, n, rot_len_hint)) {
      // Consistent Dynamic NTK / LongRoPE switch: the whole sequence must see the table for
      // its new length, in every layer, so recompute it (exactly what a no-cache run does).
      all = history;
      all.insert(all.end(), ids, ids + n);
      state.clear();
      a.tokens = all.data();
      a.n = int64_t(all.size());
      a.all_logits = false;
      a.n_out = out ? n : 1;
    }
    lcx::llama_forward(*m, state, scratch, pool, a);
    if (out) std::copy(out + (n - 1) * m->config.n_vocab, out + n * m->config.n_vocab, last_logits.begin());
    history.insert(history.end(), ids, ids + n);
    enforce_mem_cap();
  }

  // --mem-max-tokens: the memory is a FIFO; the oldest tokens leave first.
  void enforce_mem_cap() {
    if (opt.mem_max_tokens <= 0 || state.n_mem <= opt.mem_max_tokens) return;
    const int64_t drop = state.n_mem - opt.mem_max_tokens;
    const lcx::ModelConfig& c = m->config;
    const size_t row = lcx::memory_bytes_per_token(c) / (2 * std::max<size_t>(1, c.mem.layers.size()));
    for (auto& L : state.layers) {
      if (L.mem_k.empty()) continue;
      L.mem_k.erase_front(size_t(drop) * row);
      L.mem_v.erase_front(size_t(drop) * row);
      L.mem_index.drop_front(drop);
    }
    state.n_mem = opt.mem_max_tokens;
  }

  // Lookup decoding (GenerateOptions::lookup) rolls back drafts the sampler did not pick. Exact
  // where a forward call changes nothing but the local cache, positions and history: not with
  // Dynamic NTK or LongRoPE (their frequency tables depend on the length seen); LongLLaMA is fine
  // as long as a draft call does not move the local context to memory (draft_room()).
  bool lookup_ok() const {
    const lcx::RopeScaling t = m->config.rope.type;
    return t != lcx::RopeScaling::Dynamic && t != lcx::RopeScaling::LongRope;
  }
  // How many drafts may follow the next token in one call. LongLLaMA feeds a token into a full
  // local cache by first moving that cache to memory, one token at a time as the reference
  // generates; a call of 1 + k tokens moves when they do not all fit, so k is held to what fits
  // after the move the next token makes anyway (or to the room left when it makes none).
  int64_t draft_room() const {
    if (!fot()) return INT64_MAX;
    const int64_t w = m->config.n_ctx_train, n_loc = state.n_local();
    return n_loc > 0 && n_loc + 1 > w ? w - 1 : w - n_loc - 1;
  }
  // Removes the last n fed tokens, all still in the local cache (every layer's rows, their
  // positions, the history): the state a call without them would have left.
  void drop_last(int64_t n) {
    if (n <= 0) return;
    LCX_CHECK(n <= state.n_local() && n <= int64_t(history.size()), "drop_last: more tokens than the local cache holds");
    const lcx::ModelConfig& c = m->config;
    const int64_t keep = state.n_local() - n;
    const size_t row = lcx::kernels::kv_row_bytes(state.local_fmt, c.head_dim) * size_t(c.n_head_kv);
    const size_t raw = size_t(c.n_head_kv * c.head_dim);
    for (lcx::LayerCache& L : state.layers) {
      L.k.resize(size_t(keep) * row);
      L.v.resize(size_t(keep) * row);
      if (!L.k_raw.empty()) L.k_raw.resize(size_t(keep) * raw);
    }
    state.pos.resize(size_t(keep));
    state.next_pos -= n;
    history.resize(history.size() - size_t(n));
  }

  // -c/--ctx-size is a hard limit. Without it, LLaMA runs on, warning once when it passes
  // the context it was trained for (times the RoPE scaling factor).
  bool warned = false;
  void check_llama_context(int64_t n) {
    if (fot()) return;
    const int64_t total = state.next_pos + n;
    if (opt.n_ctx > 0 && total > opt.n_ctx)
      fail("input of " + std::to_string(total) + " tokens exceeds the context size " +
           std::to_string(opt.n_ctx) + ": raise -c/--ctx-size (with RoPE scaling past the trained " +
           std::to_string(m->config.n_ctx_train) + ") or shorten the input");
    const lcx::RopeConfig& r = m->config.rope;
    const bool factor_scaled = r.type == lcx::RopeScaling::Linear || r.type == lcx::RopeScaling::Dynamic ||
                               r.type == lcx::RopeScaling::Yarn;
    // (clamped: a factor up to the validation's limit times max_pos still fits, but no cast of an
    // unbounded product)
    const int64_t trained = factor_scaled ? int64_t(std::min(double(r.max_pos) * std::max(1.0f, r.factor), 4e18))
                                          : m->config.n_ctx_train;
    if (!warned && total > trained && r.type == lcx::RopeScaling::None) {
      warned = true;
      if (opt.on_warning)
        opt.on_warning("input of " + std::to_string(total) + " tokens runs past the trained context of " +
                       std::to_string(trained) + " without RoPE scaling (rope_theta " + std::to_string(r.theta) + "): expect degraded output unless the base was raised for it; try --rope-scaling yarn --rope-scale " +
                       std::to_string((total + trained - 1) / trained));
    }
  }

  // rows: when set, receives every fed token's logits, one forward call at a time.
  // Refuses an input whose caches cannot fit in memory, before growing them: the kernel would
  // rather kill the process (overcommit) than let an allocation fail with a message.
  void check_cache_memory(int64_t n_new) const {
    const lcx::ModelConfig& c = m->config;
    const double local_row = double(lcx::kernels::kv_row_bytes(state.local_fmt, c.head_dim)) * double(c.n_head_kv);
    const double raw_row = fot() ? 4.0 * double(c.n_head_kv * c.head_dim) : 0.0;  // LongLLaMA keeps pre-RoPE keys
    const double per_local = double(c.n_layer) * (2 * local_row + raw_row);
    // Only inputs that add a lot are checked: reading /proc/meminfo allocates, and a decode step
    // must not (tests/test_alloc.cpp).
    if (double(n_new) * std::max(per_local, double(lcx::memory_bytes_per_token(c))) < double(64 << 20)) return;
    const double total = double(state.next_pos) + double(n_new);
    double need = 0;
    if (fot()) {
      // The local window is bounded; the rest goes to memory (dropped past --mem-max-tokens).
      const double local = std::min(total, double(std::max(c.n_ctx_train, c.mem.last_context_length)));
      double mem = std::max(0.0, total - local);
      if (opt.mem_max_tokens > 0) mem = std::min(mem, double(opt.mem_max_tokens));
      need = local * per_local + mem * double(lcx::memory_bytes_per_token(c));
    } else {
      need = total * per_local;
    }
    const size_t avail = lcx::memory_available_bytes();
    if (avail == 0) return;  // no /proc/meminfo: nothing to compare with
    const double have = double(lcx::state_bytes(state)) + double(avail);
    if (need > 0.9 * have) {
      const double gib = 1024.0 * 1024.0 * 1024.0;
      char buf[160];
      std::snprintf(buf, sizeof buf, "%.1f GiB of caches, more than the %.1f GiB this machine has free", need / gib,
                    have / gib);
      fail("a context of " + std::to_string(int64_t(total)) + " tokens needs " + buf +
           ": shorten the input, or use a smaller cache (-ctk f16/q8_0" +
           (fot() ? std::string("; LongLLaMA: --mem-dtype q8_0, --mem-max-tokens N") : std::string()) + ")");
    }
  }

  void feed(const std::vector<int32_t>& ids, const LogitsCallback& rows, const ProgressCallback& progress) {
    const int64_t L = int64_t(ids.size());
    if (L == 0) fail("empty prompt: give at least one token");
    check_cache_memory(L);
    const int64_t V = m->config.n_vocab;
    std::vector<float> buf;  // [e - b, n_vocab] of the current call
    auto step = [&](int64_t b, int64_t e, lcx::ChunkMode mode) {
      if (rows) {
        buf.resize(size_t((e - b) * V));
        forward(ids.data() + b, e - b, mode, buf.data());
        rows(b, e - b, buf.data());
      } else {
        forward(ids.data() + b, e - b, mode, nullptr, /*need_logits=*/e == L);
      }
      if (progress) progress(e, L);
    };
    if (fot()) {
      // LongLLaMA `_handle_long_input`: the first L - last_context_length tokens go in windows
      // of max_position_embeddings; without a local cache they are Window calls (each window
      // moves to memory afterwards), with one they are cached calls. The last tokens go in one
      // cached call.
      const int64_t lcl = m->config.mem.last_context_length;
      const int64_t mem_len = std::max<int64_t>(0, L - lcl);
      const lcx::ChunkMode mode = state.n_local() > 0 ? lcx::ChunkMode::Cached : lcx::ChunkMode::Window;
      for (int64_t b = 0; b < mem_len; b += m->config.n_ctx_train)
        step(b, std::min(mem_len, b + m->config.n_ctx_train), mode);
      step(mem_len, L, lcx::ChunkMode::Cached);
      return;
    }
    check_llama_context(L);
    // transformers' stateful Dynamic NTK depends on how the input is split into calls, so in
    // that mode a prompt is one call, as in the reference.
    const bool one_call = m->config.rope.type == lcx::RopeScaling::Dynamic &&
                          m->config.rope.dynamic_mode == lcx::DynamicCacheMode::HF;
    const int64_t nb = one_call ? L : opt.n_batch;
    // Every batch of the prompt uses the RoPE table of the prompt's whole length (consistent
    // Dynamic NTK / LongRoPE switch), so the rows do not depend on -b: as one forward call.
    rot_len_hint = state.next_pos + L;
    struct Reset {
      int64_t& v;
      ~Reset() { v = 0; }
    } reset{rot_len_hint};
    for (int64_t b = 0; b < L; b += nb) step(b, std::min(L, b + nb), lcx::ChunkMode::Cached);
  }
  int64_t rot_len_hint = 0;  // set while feed() runs a LLaMA prompt (see lcx::ForwardArgs)
};

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& opt)
    : impl_(std::make_unique<Impl>(std::move(model), opt)) {}
Session::~Session() = default;

void Session::feed(const std::vector<int32_t>& ids, std::vector<float>* all_logits, const ProgressCallback& progress) {
  if (!all_logits) return impl_->feed(ids, {}, progress);
  const int64_t V = impl_->m->config.n_vocab;
  all_logits->assign(ids.size() * size_t(V), 0.0f);
  impl_->feed(ids, [&](int64_t first, int64_t n, const float* rows) {
    std::copy(rows, rows + n * V, all_logits->begin() + first * V);
  }, progress);
}

void Session::feed_with_logits(const std::vector<int32_t>& ids, const LogitsCallback& on_logits,
                               const ProgressCallback& progress) {
  if (!on_logits) fail("feed_with_logits: no logits callback");
  impl_->feed(ids, on_logits, progress);
}

void Session::feed_split(const std::vector<int32_t>& ids, int64_t split, std::vector<float>* all_logits) {
  const int64_t L = int64_t(ids.size());
  split = std::clamp<int64_t>(split, 1, L);
  const int64_t V = impl_->m->config.n_vocab;
  std::vector<float> head;
  feed(std::vector<int32_t>(ids.begin(), ids.begin() + split), all_logits ? &head : nullptr, {});
  if (all_logits) {
    all_logits->assign(size_t(L * V), 0.0f);
    std::copy(head.begin(), head.end(), all_logits->begin());
  }
  for (int64_t i = split; i < L; ++i) {
    impl_->check_llama_context(1);
    impl_->forward(&ids[size_t(i)], 1, lcx::ChunkMode::Cached, all_logits ? all_logits->data() + i * V : nullptr);
  }
}

void Session::feed_text(const std::string& text, bool add_bos, const ProgressCallback& progress) {
  const lcx::Tokenizer& tok = impl_->m->tok();
  impl_->feed(tok.encode(text, add_bos && tok.vocab().add_bos), nullptr, progress);
}

const std::vector<float>& Session::logits() const { return impl_->last_logits; }

GenerateResult Session::generate(const GenerateOptions& opt, const StreamCallback& on_piece) {
  Impl& I = *impl_;
  if (I.history.empty()) fail("generate: feed a prompt first");
  GenerateResult r;
  const auto t0 = std::chrono::steady_clock::now();
  lcx::SamplingParams sp;
  sp.temperature = opt.sampling.temperature;
  sp.top_k = opt.sampling.top_k;
  sp.top_p = opt.sampling.top_p;
  sp.min_p = opt.sampling.min_p;
  sp.repeat_penalty = opt.sampling.repeat_penalty;
  sp.repeat_last_n = opt.sampling.repeat_last_n;
  sp.seed = opt.sampling.seed;
  sp.logit_bias = opt.sampling.logit_bias;
  lcx::Sampler sampler(sp);
  const lcx::Tokenizer* tok = I.m->tokenizer.get();
  std::unique_ptr<lcx::StreamDecoder> dec;
  // Generated text continues the prompt: keep the leading space of the first piece.
  if (tok) dec = std::make_unique<lcx::StreamDecoder>(*tok, false);
  size_t max_stop = 0;
  for (const auto& s : opt.stop) max_stop = std::max(max_stop, s.size());
  std::string held;  // text not yet emitted because it could start a stop string
  r.stop_reason = "length";
  auto emit = [&](int32_t id, const std::string& text, const TokenLogprob* lp = nullptr) {
    r.text += text;
    return on_piece ? on_piece(Piece{id, text, lp}) : true;
  };
  lcx::JsonPrefix json;
  if (opt.json_object && !I.m->tokenizer) fail("JSON mode needs the model's tokenizer (pass --tokenizer FILE)");
  if (opt.lookup < 0 || opt.lookup_min_ngram < 1)
    fail("lookup: the number of drafts must be >= 0 and the shortest n-gram >= 1");
  // Prompt lookup decoding (GenerateOptions::lookup). After a call that fed [id, d1 .. dk], row j
  // of spec_rows holds the logits after its j-th token and the drafts d(j+1).. sit in the cache
  // unconfirmed. The loop below samples from row j exactly as it would from the logits of a
  // one-token call; if the sample is d(j+1), that token is already fed and row j + 1 is next,
  // otherwise the unconfirmed drafts are rolled back (drop_last) before the sample is fed.
  constexpr int32_t kMaxLookup = 15;
  const int32_t n_lookup = opt.lookup > 0 && I.lookup_ok() ? std::min(opt.lookup, kMaxLookup) : 0;
  const int64_t V = I.m->config.n_vocab;
  std::vector<float> spec_rows;  // [1 + spec.size(), n_vocab]
  std::vector<int32_t> spec, drafts, batch;
  size_t spec_used = 0;          // drafts confirmed by the sampler
  // Drafts per call adapt between 1 and n_lookup (as transformers' assisted generation does):
  // one more after a call whose drafts were all confirmed, one fewer after a call with none. A
  // 4-token call costs ~2 one-token calls here, so long drafts must earn their place.
  int32_t n_cur = std::min<int32_t>(n_lookup, 1);
  const float* cur = I.last_logits.data();
  const auto pending = [&] { return spec.size() - spec_used; };
  const auto drop_pending = [&] {
    I.drop_last(int64_t(pending()));
    spec.clear();
    spec_used = 0;
  };
  for (int32_t i = 0; i < opt.n_predict; ++i) {
    const uint8_t* allowed = nullptr;
    if (opt.json_object) {
      lcx::json_allowed_tokens(json, I.vocab_bytes(), I.m->config.eos_id, I.allowed);
      if (std::find(I.allowed.begin(), I.allowed.end(), uint8_t(1)) == I.allowed.end()) {
        r.stop_reason = "stop";  // no token continues the object (cannot happen with a full vocabulary)
        break;
      }
      allowed = I.allowed.data();
    }
    // The history up to this token: drafts fed after it are not part of it yet.
    const std::span<const int32_t> hist(I.history.data(), I.history.size() - pending());
    const int32_t id = sampler.sample_history(cur, V, hist, allowed);
    if (I.m->config.is_eog(id) && !opt.ignore_eos) {
      r.stop_reason = "eos";
      break;
    }
    r.ids.push_back(id);
    const TokenLogprob* lp = nullptr;
    if (opt.logprobs >= 0) {
      r.logprobs.emplace_back();
      lcx::token_logprob(cur, V, id, opt.logprobs, r.logprobs.back());
      lp = &r.logprobs.back();
    }
    std::string text = dec ? dec->push(id) : std::string();
    bool stop_hit = false;
    if (!opt.stop.empty()) {
      held += text;
      size_t cut = std::string::npos;
      for (const auto& s : opt.stop) {
        const size_t p = s.empty() ? std::string::npos : held.find(s);
        if (p != std::string::npos) cut = std::min(cut, p);
      }
      if (cut != std::string::npos) {
        held.resize(cut);
        stop_hit = true;
        text = held;
        held.clear();
      } else {
        // Keep back the longest tail that could still grow into a stop string.
        size_t keep = std::min(held.size(), max_stop > 0 ? max_stop - 1 : 0);
        // don't split a UTF-8 character
        while (keep > 0 && keep < held.size() && (uint8_t(held[held.size() - keep]) & 0xC0) == 0x80) ++keep;
        text = held.substr(0, held.size() - keep);
        held.erase(0, held.size() - keep);
      }
    }
    if (!emit(id, text, lp)) {
      r.stop_reason = "callback";
      break;
    }
    if (stop_hit) {
      r.stop_reason = "stop";
      break;
    }
    if (opt.json_object && json.feed(I.vocab_bytes()[size_t(id)]) && json.complete()) {
      r.stop_reason = "json";  // the object is closed: nothing may follow it ("stop" below)
      break;
    }
    if (i + 1 == opt.n_predict) break;  // no need to compute logits nobody reads
    if (pending() > 0 && id == spec[spec_used]) {  // a confirmed draft: already fed
      ++spec_used;
      ++r.n_accepted;
      cur = spec_rows.data() + spec_used * size_t(V);
      continue;
    }
    if (!spec.empty()) {
      if (spec_used == spec.size()) n_cur = std::min(n_cur + 1, n_lookup);
      else if (spec_used == 0) n_cur = std::max(n_cur - 1, 1);
    }
    drop_pending();
    if (!I.fot() && I.opt.n_ctx > 0 && I.state.next_pos + 1 > I.opt.n_ctx) {
      r.stop_reason = "context";
      break;
    }
    // Drafts only for tokens that will be sampled: n_predict - i - 2 after the next one.
    int64_t room = std::min<int64_t>(n_cur, int64_t(opt.n_predict) - i - 2);
    if (!I.fot() && I.opt.n_ctx > 0) room = std::min<int64_t>(room, I.opt.n_ctx - I.state.next_pos - 1);
    room = std::min(room, I.draft_room());
    drafts.clear();
    if (room > 0) {
      I.history.push_back(id);
      lcx::lookup_drafts(I.history, opt.lookup_min_ngram, std::max(3, opt.lookup_min_ngram), int(room), drafts);
      I.history.pop_back();
    }
    if (drafts.empty()) {
      I.forward(&id, 1, lcx::ChunkMode::Cached, nullptr);
      cur = I.last_logits.data();
      continue;
    }
    batch.assign(1, id);
    batch.insert(batch.end(), drafts.begin(), drafts.end());
    spec_rows.resize(batch.size() * size_t(V));
    I.forward(batch.data(), int64_t(batch.size()), lcx::ChunkMode::Cached, spec_rows.data());
    spec = drafts;
    spec_used = 0;
    r.n_drafted += int64_t(drafts.size());
    cur = spec_rows.data();
  }
  // Leave the session as plain decoding would: no unconfirmed drafts in the cache, and logits()
  // those after the last token fed.
  drop_pending();
  if (cur != I.last_logits.data()) std::copy(cur, cur + V, I.last_logits.begin());
  if (r.stop_reason != "stop" && r.stop_reason != "callback") {
    std::string tail = held + (dec ? dec->flush() : std::string());
    if (!tail.empty()) emit(r.ids.empty() ? -1 : r.ids.back(), tail);
  }
  if (r.stop_reason == "json") r.stop_reason = "stop";
  r.gen_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

TokenLogprob token_logprob(const float* logits, int32_t n_vocab, int32_t id, int n_top) {
  if (logits == nullptr || n_vocab <= 0) fail("token_logprob: no logits");
  TokenLogprob t;
  lcx::token_logprob(logits, n_vocab, id, n_top, t);
  return t;
}

bool Session::can_draft() const { return impl_->lookup_ok(); }
void Session::check_memory_for(int64_t n_tokens) const { impl_->check_cache_memory(n_tokens); }

bool Session::can_truncate() const {
  const Impl& I = *impl_;
  const lcx::RopeScaling t = I.m->config.rope.type;
  return !I.fot() && t != lcx::RopeScaling::Dynamic && t != lcx::RopeScaling::LongRope && I.state.n_mem == 0 &&
         I.state.n_local() == I.state.next_pos && int64_t(I.history.size()) == I.state.next_pos;
}

void Session::truncate(int64_t n) {
  Impl& I = *impl_;
  const int64_t have = int64_t(I.history.size());
  if (n < 0 || n > have)
    fail("truncate: " + std::to_string(n) + " tokens asked, the session holds " + std::to_string(have));
  if (n == have) return;
  if (!can_truncate())
    fail("truncate: not exact for this model (LongLLaMA memory, Dynamic NTK or LongRoPE): reset() and feed again");
  if (n == 0) return reset();
  const lcx::ModelConfig& c = I.m->config;
  // Local cache rows are per token: [n_local, n_head_kv, head_dim] in local_fmt (k_raw: f32).
  const size_t row = lcx::kernels::kv_row_bytes(I.state.local_fmt, c.head_dim) * size_t(c.n_head_kv);
  const size_t raw = size_t(c.n_head_kv * c.head_dim);
  for (lcx::LayerCache& L : I.state.layers) {
    L.k.resize(size_t(n) * row);
    L.v.resize(size_t(n) * row);
    if (!L.k_raw.empty()) L.k_raw.resize(size_t(n) * raw);
  }
  I.state.pos.resize(size_t(n));
  I.state.next_pos = n;
  I.history.resize(size_t(n));
}

void Session::reset() {
  impl_->state.clear();
  impl_->history.clear();
  impl_->lent_by = nullptr;
}
std::unique_ptr<Session> Session::clone() const {
  auto s = std::make_unique<Session>(impl_->model, impl_->opt);
  s->impl_->state = impl_->state;  // explicit deep copy of every cache
  s->impl_->last_logits = impl_->last_logits;
  s->impl_->history = impl_->history;
  s->impl_->warned = impl_->warned;
  return s;
}
void Session::assign_state(const Session& other) {
  if (this == &other) return;
  if (impl_->model != other.impl_->model)
    fail("assign_state: the sessions run different models; copy state only between sessions of one model");
  impl_->state = other.impl_->state;  // vector assignment reuses this session's capacity
  impl_->last_logits = other.impl_->last_logits;
  impl_->history = other.impl_->history;
  impl_->warned = other.impl_->warned;
}
void Session::borrow_state(Session& other) {
  if (this == &other) fail("borrow_state: a session cannot borrow its own state");
  if (impl_->model != other.impl_->model)
    fail("borrow_state: the sessions run different models; copy state only between sessions of one model");
  if (impl_->opt.mem_max_tokens > 0)
    fail("borrow_state: this session caps its memory (mem_max_tokens), which drops the oldest rows; "
         "the borrowed rows could not be returned unchanged: use assign_state");
  lcx::KvState& src = other.impl_->state;
  // Move the memory out, copy the rest (local caches, positions), move the memory in.
  std::vector<lcx::LayerCache> mem(src.layers.size());
  for (size_t i = 0; i < src.layers.size(); ++i) {
    mem[i].mem_k = std::move(src.layers[i].mem_k);
    mem[i].mem_v = std::move(src.layers[i].mem_v);
    std::swap(mem[i].mem_index, src.layers[i].mem_index);  // a moved-from index is not usable
  }
  impl_->state = src;
  for (size_t i = 0; i < src.layers.size(); ++i) {
    impl_->state.layers[i].mem_k = std::move(mem[i].mem_k);
    impl_->state.layers[i].mem_v = std::move(mem[i].mem_v);
    std::swap(impl_->state.layers[i].mem_index, mem[i].mem_index);
  }
  impl_->last_logits = other.impl_->last_logits;
  impl_->history = other.impl_->history;
  impl_->warned = other.impl_->warned;
  impl_->lent_by = &other;
}
void Session::return_memory(Session& other) {
  lcx::KvState& st = impl_->state;
  lcx::KvState& dst = other.impl_->state;
  if (impl_->lent_by != &other || st.layers.size() != dst.layers.size() || st.n_mem < dst.n_mem)
    fail("return_memory: this session does not hold memory borrowed from that one (call borrow_state first)");
  for (size_t i = 0; i < st.layers.size(); ++i) {
    lcx::LayerCache& L = st.layers[i];
    lcx::LayerCache& D = dst.layers[i];
    // Rows [0, dst.n_mem) are the lent ones, unchanged: feeding appends after them.
    const size_t row = st.n_mem > 0 ? L.mem_k.size() / size_t(st.n_mem) : 0;
    L.mem_k.resize(row * size_t(dst.n_mem));
    L.mem_v.resize(row * size_t(dst.n_mem));
    D.mem_k = std::move(L.mem_k);
    D.mem_v = std::move(L.mem_v);
    // An index that took in the appended rows cannot drop them: rebuilt lazily instead.
    if (L.mem_index.size() > dst.n_mem) L.mem_index.clear();
    std::swap(D.mem_index, L.mem_index);
  }
  reset();
}
const std::vector<int32_t>& Session::history() const { return impl_->history; }
int64_t Session::n_past() const { return impl_->state.next_pos; }
int64_t Session::n_memory() const { return impl_->state.n_mem; }
size_t Session::cache_bytes() const { return lcx::state_bytes(impl_->state); }

void Session::fill_memory_for_benchmark(int64_t n_tokens) {
  lcx::KvState& st = impl_->state;
  const lcx::ModelConfig& c = impl_->m->config;
  if (c.arch != lcx::Arch::LongLlama) fail("--mem-fill needs a LongLLaMA model (this one has no FoT memory)");
  if (n_tokens <= st.n_mem) return;
  if (st.n_mem == 0)
    fail("--mem-fill: the memory is empty; give a depth longer than last_context_length (" +
         std::to_string(c.mem.last_context_length) + "; e.g. two windows: -d " + std::to_string(2 * c.n_ctx_train) +
         ") so there are rows to repeat");
  for (int il = 0; il < int(st.layers.size()); ++il) {
    if (!c.mem.is_mem_layer(il)) continue;
    lcx::LayerCache& L = st.layers[size_t(il)];
    const size_t row = L.mem_k.size() / size_t(st.n_mem);  // bytes per memory token (all kv heads)
    const size_t have = L.mem_k.size(), want = row * size_t(n_tokens);
    for (lcx::ByteBuffer* b : {&L.mem_k, &L.mem_v}) {
      b->resize(want);
      for (size_t off = have; off < want; off += std::min(have, want - off))
        std::memcpy(b->data() + off, b->data(), std::min(have, want - off));
    }
    L.mem_index.clear();
  }
  st.n_mem = n_tokens;
}

// ---------------------------------------------------------------------------------------------
// Saved state (`longctx ingest --save`, `run --memory`): ingest a long document once, ask many
// times. Layout (little-endian):
//   "LCXSTATE" u32 version | u64 model fingerprint | u64 payload bytes | payload | u64 FNV-1a
// The fingerprint covers the config (shapes, RoPE, memory settings) and samples of every
// weight, so a state is refused for another model or other settings. Written to a temporary
// file and renamed, so a crash never leaves a half-written state behind.

namespace {

constexpr char kStateMagic[8] = {'L', 'C', 'X', 'S', 'T', 'A', 'T', 'E'};
// 2: local cache format byte, local k/v as rows of that format; 3: same payload, word-parallel
// checksum (engine/state_checksum.h). Version 2 files are still read.
constexpr uint32_t kStateVersion = 3;
constexpr uint32_t kStateVersionMin = 2;

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  template <typename T>
  void pod(const T& v) { add(&v, sizeof v); }
};

uint64_t model_fingerprint(const lcx::Model& m) {
  const lcx::ModelConfig& c = m.config;
  Fnv f;
  for (int64_t v : {c.n_vocab, c.n_embd, c.n_ff, c.n_layer, c.n_head, c.n_head_kv, c.head_dim, c.n_ctx_train,
                    c.mem.last_context_length})
    f.pod(v);
  f.pod(int(c.arch));
  f.pod(c.rms_eps);
  f.pod(int(c.rope.type)); f.pod(c.rope.theta); f.pod(c.rope.factor);
  f.pod(int(c.mem.dtype)); f.pod(c.mem.positionals);
  for (int l : c.mem.layers) f.pod(l);
  // Sample every weight: its first and last 256 bytes.
  lcx::ModelWeights& w = const_cast<lcx::ModelWeights&>(m.weights);
  for (const auto& slot : lcx::tensor_slots(c, w)) {
    const lcx::TensorView& t = *slot.dst;
    if (!t.data) continue;
    const size_t n = std::min<size_t>(256, t.nbytes);
    if (lcx::dtype_is_r16(t.dtype)) {  // the file's bytes, not the kernels' layout
      uint8_t head[256], tail[256];
      lcx::r16_rowmajor_bytes(t.dtype, t.data, t.cols(), 0, n, head);
      lcx::r16_rowmajor_bytes(t.dtype, t.data, t.cols(), t.nbytes - n, n, tail);
      f.add(head, n);
      f.add(tail, n);
      continue;
    }
    f.add(t.data, n);
    f.add(static_cast<const uint8_t*>(t.data) + t.nbytes - n, n);
  }
  return f.h;
}

class StateWriter {
 public:
  explicit StateWriter(const std::string& path) : f_(path) {}
  void raw(const void* p, size_t n, bool hashed = true) {
    f_.write(p, n);
    if (hashed) hash_.add(p, n);
  }
  template <typename T>
  void pod(const T& v) { raw(&v, sizeof v); }
  template <typename T>
  void vec(const std::vector<T>& v) {
    pod(uint64_t(v.size()));
    raw(v.data(), v.size() * sizeof(T));
  }
  void bytes(const lcx::ByteBuffer& b) {
    pod(uint64_t(b.size()));
    raw(b.data(), b.size());
  }
  void commit() {
    const uint64_t h = hash_.finish();
    raw(&h, sizeof h, false);
    f_.commit();
  }

 private:
  lcx::AtomicFile f_;  // a temporary file renamed on commit: a crash never leaves half a state
  StateHash hash_;     // the checksum of kStateVersion
};

class StateReader {
 public:
  StateReader(const std::string& path) : path_(path), f_(lcx::MappedFile::open(path)) {}
  void raw(void* p, size_t n) {
    if (n == 0) return;  // empty arrays: data() may be null, and memcpy must not see it
    check_left(n);
    std::memcpy(p, take(n), n);
  }
  template <typename T>
  T pod() { T v; raw(&v, sizeof v); return v; }
  template <typename T>
  void vec(std::vector<T>& v, uint64_t max_elems) {
    const uint64_t n = pod<uint64_t>();
    if (n > max_elems || n * sizeof(T) > f_->size()) fail("'" + path_ + "' is corrupt (implausible array size)");
    v.resize(size_t(n));
    raw(v.data(), size_t(n) * sizeof(T));
  }
  void check_size() const {
    if (f_->size() < 8 + 4 + 8 + 8) fail("'" + path_ + "' is too short to be a longctx state file");
  }
  // The checksum of the file's format version over everything before its last 8 bytes.
  void verify_checksum(uint32_t version) {
    uint64_t fnv = kFnvBasis;
    StateHash lanes;
    for (size_t off = 0; off < f_->size() - 8; off += kDropChunk) {
      const size_t n = std::min(kDropChunk, f_->size() - 8 - off);
      if (version <= 2)
        fnv = fnv1a(f_->data() + off, n, fnv);
      else
        lanes.add(f_->data() + off, n);
      f_->drop_pages(off, n);
    }
    uint64_t want;
    std::memcpy(&want, f_->data() + f_->size() - 8, 8);
    if ((version <= 2 ? fnv : lanes.finish()) != want)
      fail("'" + path_ + "' is corrupt (checksum mismatch): re-create it with `longctx ingest --save`");
  }
  void bytes(lcx::ByteBuffer& b) {
    const uint64_t n = pod<uint64_t>();
    if (n > f_->size()) fail("'" + path_ + "' is corrupt (implausible array size)");
    b.clear();
    if (n == 0) return;
    check_left(size_t(n));
    b.append(take(size_t(n)), size_t(n));  // no zero-fill first (resize would write every byte twice)
  }
  bool at_end() const { return pos_ + 8 == f_->size(); }

 private:
  void check_left(size_t n) const {
    if (n > f_->size() - pos_ - 8 || pos_ + 8 > f_->size())
      fail("'" + path_ + "' is truncated: re-create it with `longctx ingest --save`");
  }
  // The next n bytes (bounds checked by the caller); they stay valid until the next call.
  // The file is read once, front to back: pages copied out before this call need not stay
  // resident (LongLLaMA-3B with 134k memory tokens: peak RSS 16.2 -> 10.7 GB while loading).
  const uint8_t* take(size_t n) {
    if (pos_ - dropped_ >= kDropChunk) {
      f_->drop_pages(dropped_, pos_ - dropped_);
      dropped_ = pos_ / 4096 * 4096;
    }
    const uint8_t* p = f_->data() + pos_;
    pos_ += n;
    return p;
  }
  static constexpr size_t kDropChunk = size_t(64) << 20;
  std::string path_;
  std::shared_ptr<lcx::MappedFile> f_;
  size_t pos_ = 0;
  size_t dropped_ = 0;  // pages before this offset were dropped (drop_pages)
};

}  // namespace

void Session::save_state(const std::string& path) const {
  const Impl& I = *impl_;
  const lcx::KvState& st = I.state;
  StateWriter w(path);
  w.raw(kStateMagic, 8);
  w.pod(kStateVersion);
  w.pod(model_fingerprint(*I.m));
  w.pod(st.n_mem); w.pod(st.next_pos); w.pod(st.rot_offset); w.pod(st.rot_seq_len); w.pod(st.hf_max_seq_len);
  w.vec(st.pos);
  w.vec(I.history);
  w.vec(I.last_logits);
  w.pod(uint8_t(st.local_fmt));
  w.pod(uint64_t(st.layers.size()));
  for (const auto& L : st.layers) {
    w.vec(L.k); w.vec(L.k_raw); w.vec(L.v); w.bytes(L.mem_k); w.bytes(L.mem_v);
  }
  w.commit();
}

void Session::load_state(const std::string& path) {
  Impl& I = *impl_;
  StateReader r(path);
  r.check_size();
  char magic[8];
  r.raw(magic, 8);
  if (std::memcmp(magic, kStateMagic, 8) != 0) fail("'" + path + "' is not a longctx state file");
  const auto version = r.pod<uint32_t>();
  if (version < kStateVersionMin || version > kStateVersion)
    fail("'" + path + "' has state format version " + std::to_string(version) + "; this longctx reads versions " +
         std::to_string(kStateVersionMin) + " to " + std::to_string(kStateVersion) +
         ": re-create it with `longctx ingest --save`");
  r.verify_checksum(version);
  if (r.pod<uint64_t>() != model_fingerprint(*I.m))
    fail("'" + path + "' was saved by another model or with other settings (shapes, RoPE, memory layers, "
         "mem_dtype, last_context_length): re-ingest the document with this model and these flags");
  lcx::KvState st = lcx::make_state(*I.m);
  st.n_mem = r.pod<int64_t>(); st.next_pos = r.pod<int64_t>(); st.rot_offset = r.pod<int64_t>();
  st.rot_seq_len = r.pod<int64_t>(); st.hf_max_seq_len = r.pod<int64_t>();
  const uint64_t big = uint64_t(1) << 40;
  r.vec(st.pos, big);
  std::vector<int32_t> history;
  r.vec(history, big);
  std::vector<float> last;
  r.vec(last, big);
  const auto saved_fmt = r.pod<uint8_t>();
  if (saved_fmt > uint8_t(lcx::kernels::KvFormat::Q8Row)) fail("'" + path + "' is corrupt (local cache format)");
  const auto file_fmt = lcx::kernels::KvFormat(saved_fmt);
  st.local_fmt = I.state.local_fmt;
  if (r.pod<uint64_t>() != st.layers.size()) fail("'" + path + "' is corrupt (layer count)");
  const int64_t hd = I.m->config.head_dim;
  const size_t file_rb = lcx::kernels::kv_row_bytes(file_fmt, hd), rb = lcx::kernels::kv_row_bytes(st.local_fmt, hd);
  std::vector<float> row(size_t(hd), 0.0f);
  // A state saved with another --cache-type is converted row by row (f32 <-> f16 etc.).
  auto convert = [&](std::vector<uint8_t>& b) {
    if (b.size() % file_rb != 0) fail("'" + path + "' is corrupt (local cache size)");
    if (file_fmt == st.local_fmt) return;
    std::vector<uint8_t> out(b.size() / file_rb * rb);
    for (size_t i = 0; i < b.size() / file_rb; ++i) {
      lcx::kernels::kv_decode(file_fmt, b.data() + i * file_rb, hd, row.data());
      lcx::kernels::kv_encode(st.local_fmt, row.data(), hd, out.data() + i * rb);
    }
    b = std::move(out);
  };
  for (auto& L : st.layers) {
    r.vec(L.k, big); r.vec(L.k_raw, big); r.vec(L.v, big); r.bytes(L.mem_k); r.bytes(L.mem_v);
    convert(L.k);
    convert(L.v);
  }
  // Everything the forward pass and generation index by is checked against the sizes it
  // implies (the checksum only proves the file is as it was written; found by fuzz/fuzz_state).
  const lcx::ModelConfig& c = I.m->config;
  auto corrupt = [&](const std::string& what) { fail("'" + path + "' is corrupt (" + what + ")"); };
  if (const char* p = lcx::state_problem(*I.m, st)) corrupt(p);
  for (int32_t id : history)
    if (id < 0 || id >= c.n_vocab) corrupt("token ids");
  if (!r.at_end() || last.size() != size_t(c.n_vocab)) corrupt("trailing data");
  I.state = std::move(st);
  I.history = std::move(history);
  I.last_logits = std::move(last);
}

}  // namespace longctx
