// GGUF model loading and HF -> GGUF conversion. Metadata keys are llama.cpp's (gguf-py
// constants.py, arch "llama"); what llama.cpp has no key for lives under longllama.* and
// longctx.rope.* (docs/GGUF.md), which llama.cpp ignores, so our files stay plain llama files
// for it.
#include "model/gguf_model.h"

#include <climits>
#include <cmath>
#include <filesystem>
#include <numbers>

#include "formats/hf_config.h"
#include "kernels/ops.h"
#include "runtime/error.h"

namespace lcx {

namespace {

namespace fs = std::filesystem;

// llama.cpp's LlamaFileType (general.file_type) for each output dtype.
uint32_t file_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;   // ALL_F32
    case DType::F16: return 1;   // MOSTLY_F16
    case DType::Q4_0: return 2;  // MOSTLY_Q4_0
    case DType::Q8_0: return 7;  // MOSTLY_Q8_0
    case DType::BF16: return 32; // MOSTLY_BF16
    case DType::Q4_1: return 3;  // MOSTLY_Q4_1
    case DType::Q5_0: return 8;  // MOSTLY_Q5_0
    case DType::Q5_1: return 9;  // MOSTLY_Q5_1
    case DType::Q2_K: return 10; // MOSTLY_Q2_K
    case DType::Q3_K: return 11; // MOSTLY_Q3_K_S (every matrix Q3_K)
    case DType::Q4_K: return 14; // MOSTLY_Q4_K_S
    case DType::Q5_K: return 16; // MOSTLY_Q5_K_S
    case DType::Q6_K: return 18; // MOSTLY_Q6_K
    default: fail("no GGUF file type for this dtype");
  }
}

const char* mem_dtype_key_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::Q8_0: return "q8_0";
    default: return "?";
  }
}

// Llama 3.1 per-dimension frequency divisors, computed exactly as llama.cpp's
// convert_hf_to_gguf (LlamaModel.generate_extra_tensors) does, so llama.cpp can run our
// Llama-3-scaled files from the rope_freqs.weight tensor: inv_freq'[i] = inv_freq[i] / out[i].
std::vector<float> llama3_rope_freq_factors(const RopeConfig& r) {
  const double old_ctx = double(r.orig_ctx);
  const double low_wavelen = old_ctx / r.low_freq_factor;
  const double high_wavelen = old_ctx / r.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < r.head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(double(r.theta), double(2 * i) / double(r.head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(r.factor);
    } else {
      const double smooth = (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      out.push_back(float(1.0 / ((1.0 - smooth) / r.factor + smooth)));
    }
  }
  return out;
}

DType mem_dtype_from_key(const std::string& s, const std::string& path) {
  if (s == "float32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  if (s == "q8_0") return DType::Q8_0;
  fail("'" + path + "': longllama.mem_dtype '" + s + "' is not one of float32, bfloat16, float16, q8_0");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reading

ModelConfig gguf_read_config(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string arch = g.get_str("general.architecture");
  if (arch != "llama")
    fail("'" + path + "': GGUF architecture '" + arch +
         "' is not supported: longctx runs 'llama' files (LLaMA, LongLLaMA); convert the HF checkpoint with longctx convert");

  ModelConfig c;
  c.n_embd = g.get_int("llama.embedding_length");
  c.n_ff = g.get_int("llama.feed_forward_length");
  c.n_layer = g.get_int("llama.block_count");
  c.n_head = g.get_int("llama.attention.head_count");
  c.n_head_kv = g.get_int("llama.attention.head_count_kv", c.n_head);
  c.n_ctx_train = g.get_int("llama.context_length");
  c.rms_eps = float(g.get_float("llama.attention.layer_norm_rms_epsilon"));
  // head_dim: llama.cpp's key_length when written (HF configs with an explicit head_dim), else
  // the rotary dimension count, else n_embd / n_head as llama.cpp assumes.
  const int64_t rope_dims = g.get_int("llama.rope.dimension_count", c.n_head > 0 ? c.n_embd / c.n_head : 0);
  c.head_dim = g.get_int("llama.attention.key_length", rope_dims);
  if (g.get_int("llama.attention.value_length", c.head_dim) != c.head_dim)
    fail("'" + path + "': attention.value_length differs from key_length, which LLaMA models never do");
  if (rope_dims != c.head_dim)
    fail("'" + path + "': llama.rope.dimension_count (" + std::to_string(rope_dims) + ") != head_dim (" +
         std::to_string(c.head_dim) + "): partial rotary embeddings are not supported");

  // Counts come from an untrusted file: check the layer count against the tensors before the
  // weight table is sized by it (each layer has 9 tensors).
  const auto& tensors = g.tensors();
  if (c.n_layer > 0 && uint64_t(c.n_layer) > tensors.size() / 9)
    fail("'" + path + "': llama.block_count says " + std::to_string(c.n_layer) + " layers but the file has only " +
         std::to_string(tensors.size()) + " tensors");

  const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
  if (g.has("llama.vocab_size")) {
    c.n_vocab = g.get_int("llama.vocab_size");
  } else if (tokens) {
    c.n_vocab = int64_t(tokens->array_size());
  } else if (auto it = tensors.find("token_embd.weight"); it != tensors.end()) {
    c.n_vocab = it->second.shape[0];
  }
  c.tie_embeddings = tensors.find("output.weight") == tensors.end();
  c.bos_id = int32_t(g.get_int("tokenizer.ggml.bos_token_id", 1));
  c.eos_id = int32_t(g.get_int("tokenizer.ggml.eos_token_id", 2));
  for (const char* k : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (g.has(k)) c.eog_ids.push_back(int32_t(g.get_int(k, -1)));
  // Ours: every other id that ends generation (config.json / generation_config.json eos lists).
  // Out-of-range ids are dropped by load_model, as for the keys above.
  if (g.has("longctx.eog_token_ids"))
    for (int64_t id : g.get_int_array("longctx.eog_token_ids"))
      if (id >= 0 && id <= INT32_MAX) c.eog_ids.push_back(int32_t(id));

  RopeConfig& r = c.rope;
  r.head_dim = c.head_dim;
  r.max_pos = c.n_ctx_train;
  r.theta = float(g.get_float("llama.rope.freq_base", 10000.0));
  // Our own key names methods llama.cpp lacks (dynamic, llama3, longrope); it wins over
  // llama.cpp's, which we write as "none" for those so llama.cpp still loads the file.
  std::string type = "none";
  const char* type_key = "llama.rope.scaling.type";
  if (g.has("longctx.rope.scaling.type")) {
    type_key = "longctx.rope.scaling.type";
    type = g.get_str(type_key);
  } else if (g.has("llama.rope.scaling.type")) {
    type = g.get_str(type_key);
  } else if (g.has("llama.rope.scale_linear")) {
    type = "linear";  // pre-2023 llama.cpp key
  }
  try {
    r.type = rope_scaling_from_name(type);
  } catch (const Error& e) {
    fail("'" + path + "': " + type_key + ": " + e.what());
  }
  r.factor = float(g.get_float("longctx.rope.scaling.factor",
                               g.get_float("llama.rope.scaling.factor", g.get_float("llama.rope.scale_linear", 1.0))));
  r.orig_ctx = g.get_int("llama.rope.scaling.original_context_length", 0);
  r.beta_fast = float(g.get_float("llama.rope.scaling.yarn_beta_fast", 32.0));
  r.beta_slow = float(g.get_float("llama.rope.scaling.yarn_beta_slow", 1.0));
  r.attention_factor = float(g.get_float("longctx.rope.attention_factor", 0.0));
  r.mscale = float(g.get_float("longctx.rope.mscale", 0.0));
  r.mscale_all_dim = float(g.get_float("longctx.rope.mscale_all_dim", 0.0));
  r.low_freq_factor = float(g.get_float("longctx.rope.low_freq_factor", 1.0));
  r.high_freq_factor = float(g.get_float("longctx.rope.high_freq_factor", 4.0));
  if (g.has("longctx.rope.short_factor")) r.short_factor = g.get_float_array("longctx.rope.short_factor");
  if (g.has("longctx.rope.long_factor")) r.long_factor = g.get_float_array("longctx.rope.long_factor");
  if (r.type == RopeScaling::LongRope) {
    const size_t half = size_t(std::max<int64_t>(c.head_dim, 0) / 2);
    if (r.short_factor.size() != half || r.long_factor.size() != half)
      fail("'" + path + "': longrope needs longctx.rope.short_factor and long_factor with head_dim/2 = " +
           std::to_string(half) + " entries each");
  }

  // LongLLaMA (Focused Transformer): present iff any longllama.* key is.
  if (g.has("longllama.mem_layers")) {
    c.arch = Arch::LongLlama;
    for (int64_t l : g.get_int_array("longllama.mem_layers")) {
      if (l < 0 || l >= c.n_layer)
        fail("'" + path + "': longllama.mem_layers entry " + std::to_string(l) + " is not a layer index (block_count " +
             std::to_string(c.n_layer) + ")");
      c.mem.layers.push_back(int(l));
    }
    normalize_mem_layers(c.mem.layers);
    c.mem.positionals = g.get_bool("longllama.mem_positionals", true);
    c.mem.dtype = mem_dtype_from_key(g.get_str("longllama.mem_dtype", "bfloat16"), path);
    c.mem.last_context_length = g.get_int("longllama.last_context_length", 1024);
    if (g.has("longllama.mem_attention_grouping")) {
      const auto grp = g.get_int_array("longllama.mem_attention_grouping");
      if (grp.size() != 2)
        fail("'" + path + "': longllama.mem_attention_grouping must hold 2 integers [single_batch_size, group_size]");
      if (grp[0] <= 0 || grp[1] <= 0)  // modeling_longllama.py: "Attention grouping should be positive"
        fail("'" + path + "': longllama.mem_attention_grouping values must be positive, got [" +
             std::to_string(grp[0]) + ", " + std::to_string(grp[1]) + "]; leave the key out for no grouping");
      c.mem.attention_grouping_groups = grp[0];
      c.mem.attention_grouping_size = grp[1];
    }
  } else {
    for (const auto& [key, v] : g.metadata())
      if (key.rfind("longllama.", 0) == 0)
        fail("'" + path + "': has '" + key + "' but no longllama.mem_layers (use [] for no memory layers)");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail("'" + path + "': " + e.what());
  }
  return c;
}

SpmVocab gguf_read_vocab(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string model = g.get_str("tokenizer.ggml.model", "llama");
  if (model != "llama" && model != "gpt2")
    fail("'" + path + "': tokenizer.ggml.model '" + model +
         "' is not supported (longctx reads SentencePiece 'llama' and byte-level BPE 'gpt2' vocabularies): pass "
         "--tokenizer tokenizer.model");
  const bool bpe = model == "gpt2";
  SpmVocab v;
  if (bpe) {
    // Byte-level BPE (Llama 3 and other GPT-2-style vocabularies): the merges and the
    // pre-tokenizer name carry the rules; there are no scores and no unknown token.
    v.byte_level = true;
    v.merges = g.get_str_array("tokenizer.ggml.merges");
    if (v.merges.empty()) fail("'" + path + "': tokenizer.ggml.merges is missing or empty (needed by 'gpt2' vocabularies)");
    v.pre = g.get_str("tokenizer.ggml.pre", "default");
  }
  v.pieces = g.get_str_array("tokenizer.ggml.tokens");
  const size_t n = v.pieces.size();
  if (n == 0) fail("'" + path + "': tokenizer.ggml.tokens is empty");
  if (g.has("tokenizer.ggml.scores")) {
    v.scores = g.get_float_array("tokenizer.ggml.scores");
    if (v.scores.size() != n)
      fail("'" + path + "': tokenizer.ggml.scores has " + std::to_string(v.scores.size()) + " entries for " +
           std::to_string(n) + " tokens");
  } else {
    v.scores.assign(n, 0.0f);
  }
  if (g.has("tokenizer.ggml.token_type")) {
    const auto types = g.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != n)
      fail("'" + path + "': tokenizer.ggml.token_type has " + std::to_string(types.size()) + " entries for " +
           std::to_string(n) + " tokens");
    v.types.reserve(n);
    for (int64_t t : types) {
      if (t < 1 || t > 6) fail("'" + path + "': tokenizer.ggml.token_type has invalid value " + std::to_string(t));
      v.types.push_back(TokenType(t));
    }
  } else {
    v.types.assign(n, TokenType::Normal);
  }
  auto id = [&](const char* key, int64_t dflt) {
    const int64_t x = g.get_int(key, dflt);
    if (x < -1 || x >= int64_t(n))
      fail("'" + path + "': " + key + " = " + std::to_string(x) + " is outside the vocabulary of " + std::to_string(n));
    return int32_t(x);
  };
  v.bos_id = id("tokenizer.ggml.bos_token_id", bpe ? -1 : 1);
  v.eos_id = id("tokenizer.ggml.eos_token_id", bpe ? -1 : 2);
  v.unk_id = id("tokenizer.ggml.unknown_token_id", bpe ? -1 : 0);
  v.pad_id = id("tokenizer.ggml.padding_token_id", -1);
  v.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", !bpe);
  v.add_dummy_prefix = g.get_bool("tokenizer.ggml.add_space_prefix", true);
  // SentencePiece's normalizer collapses runs of spaces for LLaMA/OpenLLaMA tokenizers; llama.cpp
  // writes this key for SPM models and we default to the LLaMA behaviour when it is absent.
  v.remove_extra_whitespaces = g.get_bool("tokenizer.ggml.remove_extra_whitespaces", true);
  return v;
}

void load_gguf_model(const std::string& path, Model& m, FileLoad how) {
  const GgufFile g = GgufFile::open(path, how);
  m.config = gguf_read_config(g);
  std::map<std::string, TensorView> tensors = g.tensors();
  // llama.cpp's converter stores Llama 3.1 RoPE as per-dimension divisors in rope_freqs.weight.
  // Our own files also carry longctx.rope.* (llama3), from which rope.cpp computes the same
  // divisors exactly as transformers does; files from llama.cpp have only the tensor, which is
  // then applied as llama.cpp applies it (RopeConfig::freq_factors).
  if (auto it = tensors.find("rope_freqs.weight"); it != tensors.end()) {
    const TensorView t = it->second;
    tensors.erase(it);
    if (m.config.rope.type != RopeScaling::Llama3) {
      if (t.shape.size() != 1 || t.shape[0] != m.config.head_dim / 2)
        fail("'" + path + "': rope_freqs.weight has shape " + shape_str(t.shape) + ", expected [" +
             std::to_string(m.config.head_dim / 2) + "] (head_dim/2)");
      std::vector<float> f(size_t(t.shape[0]));
      kernels::dequantize_row(t.dtype, t.data, f.data(), t.shape[0]);
      m.config.rope.freq_factors = std::move(f);
      rope_validate(m.config.rope);
    }
  }
  // GGUF has no attention_bias / mlp_bias keys: a file has biases when it carries their tensors
  // (llama.cpp's LLaMA graph adds each one it finds), e.g. LLaMA-architecture conversions of
  // models trained with q/k/v biases.
  for (const auto& [name, t] : tensors) {
    if (!name.starts_with("blk.") || !name.ends_with(".bias")) continue;
    if (name.find(".attn_") != std::string::npos) m.config.attn_bias = true;
    if (name.find(".ffn_") != std::string::npos) m.config.mlp_bias = true;
  }
  m.weights.files.push_back(g.file());
  bind_weights(m.config, tensors, NameKind::GGUF, m.weights);
  m.format = "gguf";
  const std::string tok_model = g.get_str("tokenizer.ggml.model", "llama");
  if (g.has("tokenizer.ggml.tokens") && tok_model == "llama") {
    m.tokenizer = make_vocab_tokenizer(gguf_read_vocab(g));
    m.tokenizer_source = path + " (GGUF vocabulary)";
  } else if (g.has("tokenizer.ggml.tokens") && tok_model == "gpt2") {
    SpmVocab v = gguf_read_vocab(g);
    const std::string pre = v.pre;
    m.tokenizer = make_bpe_tokenizer(std::move(v));
    m.tokenizer_source = path + " (GGUF byte-level BPE vocabulary, pre-tokenizer " + pre + ")";
  }
  // Other vocabulary kinds leave the tokenizer empty: --tokenizer supplies one.
}

// ---------------------------------------------------------------------------------------------
// Conversion

namespace {

// The source model's chat template: a GGUF's tokenizer.chat_template, or what transformers reads
// beside an HF model (read_hf_chat_template). "" when there is none or the file is unreadable
// (the chat and serve commands report that case themselves).
std::string source_chat_template(const Model& m) {
  std::error_code ec;
  if (m.path.empty()) return "";  // built in memory (tests, load_gguf_model into a bare Model)
  if (fs::is_regular_file(m.path, ec)) return GgufFile::open(m.path).get_str("tokenizer.chat_template", "");
  if (!fs::is_directory(m.path, ec)) return "";
  return read_hf_chat_template(m.path).text;
}

}  // namespace

void convert_to_gguf(const Model& m, const std::string& out_path, DType dtype) {
  const ModelConfig& c = m.config;
  const RopeConfig& r = c.rope;
  GgufWriter w;

  // general.* as convert_hf_to_gguf writes them.
  w.set_str("general.architecture", "llama");
  fs::path src(m.path);
  if (src.filename().empty()) src = src.parent_path();
  w.set_str("general.name", fs::is_directory(src) ? src.filename().string() : src.stem().string());
  w.set_u32("general.file_type", file_type_of(dtype));
  w.set_u32("general.quantization_version", 2);  // GGML_QUANT_VERSION

  // llama.* hyper-parameters (uint32 / float32, the types llama.cpp's loader expects).
  w.set_u32("llama.vocab_size", uint32_t(c.n_vocab));
  w.set_u32("llama.context_length", uint32_t(c.n_ctx_train));
  w.set_u32("llama.embedding_length", uint32_t(c.n_embd));
  w.set_u32("llama.feed_forward_length", uint32_t(c.n_ff));
  w.set_u32("llama.block_count", uint32_t(c.n_layer));
  w.set_u32("llama.attention.head_count", uint32_t(c.n_head));
  w.set_u32("llama.attention.head_count_kv", uint32_t(c.n_head_kv));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_u32("llama.attention.key_length", uint32_t(c.head_dim));
  w.set_u32("llama.attention.value_length", uint32_t(c.head_dim));
  w.set_f32("llama.rope.freq_base", r.theta);
  w.set_u32("llama.rope.dimension_count", uint32_t(c.head_dim));

  // RoPE scaling. llama.cpp knows linear and yarn with the same meaning as HF; for the rest we
  // write llama.rope.scaling.type = "none" (llama.cpp aborts on names it does not know, and
  // would apply llama.rope.scaling.factor as a linear factor) and the real method under
  // longctx.rope.*.
  if (r.type == RopeScaling::Linear || r.type == RopeScaling::Yarn) {
    w.set_str("llama.rope.scaling.type", rope_scaling_name(r.type));
    w.set_f32("llama.rope.scaling.factor", r.factor);
  } else if (r.type != RopeScaling::None) {
    w.set_str("llama.rope.scaling.type", "none");
    w.set_str("longctx.rope.scaling.type", rope_scaling_name(r.type));
    w.set_f32("longctx.rope.scaling.factor", r.factor);
  }
  // Unset (0) stays unset: for YaRN llama.cpp then uses context_length, as transformers v4.49.
  if (r.orig_ctx > 0) w.set_u32("llama.rope.scaling.original_context_length", uint32_t(r.orig_ctx));
  if (r.type == RopeScaling::Yarn) {
    w.set_f32("llama.rope.scaling.yarn_beta_fast", r.beta_fast);
    w.set_f32("llama.rope.scaling.yarn_beta_slow", r.beta_slow);
  }
  // HF's YaRN attention_factor replaces 0.1 ln(s) + 1 while llama.cpp's attn_factor multiplies
  // it, so it gets our own key.
  if (r.attention_factor != 0.0f) w.set_f32("longctx.rope.attention_factor", r.attention_factor);
  if (r.mscale != 0.0f) w.set_f32("longctx.rope.mscale", r.mscale);
  if (r.mscale_all_dim != 0.0f) w.set_f32("longctx.rope.mscale_all_dim", r.mscale_all_dim);
  if (r.type == RopeScaling::Llama3) {
    w.set_f32("longctx.rope.low_freq_factor", r.low_freq_factor);
    w.set_f32("longctx.rope.high_freq_factor", r.high_freq_factor);
  }
  if (r.type == RopeScaling::LongRope) {
    w.set("longctx.rope.short_factor",
          GgufValue::float_array(GgufType::F32, std::vector<double>(r.short_factor.begin(), r.short_factor.end())));
    w.set("longctx.rope.long_factor",
          GgufValue::float_array(GgufType::F32, std::vector<double>(r.long_factor.begin(), r.long_factor.end())));
  }

  if (c.arch == Arch::LongLlama) {
    std::vector<int64_t> layers(c.mem.layers.begin(), c.mem.layers.end());
    w.set("longllama.mem_layers", GgufValue::int_array(GgufType::I32, layers));
    w.set_bool("longllama.mem_positionals", c.mem.positionals);
    w.set_str("longllama.mem_dtype", mem_dtype_key_name(c.mem.dtype));
    w.set_u32("longllama.last_context_length", uint32_t(c.mem.last_context_length));
    if (c.mem.attention_grouping_groups > 0 || c.mem.attention_grouping_size > 0)
      w.set("longllama.mem_attention_grouping",
            GgufValue::int_array(GgufType::I32, {c.mem.attention_grouping_groups, c.mem.attention_grouping_size}));
  }

  // Tokenizer (SentencePiece, as convert_hf_to_gguf's _set_vocab_sentencepiece writes it).
  if (c.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
  if (c.eos_id >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_id));
  // The rest of the end-of-generation set (Llama 3.1's eos list, generation_config.json):
  // llama.cpp has one eot/eom id each, so they travel under our own key.
  if (!c.eog_ids.empty())
    w.set("longctx.eog_token_ids", GgufValue::int_array(GgufType::I32, std::vector<int64_t>(c.eog_ids.begin(), c.eog_ids.end())));
  if (m.tokenizer) {
    const SpmVocab& v = m.tokenizer->vocab();
    w.set_str("tokenizer.ggml.model", v.byte_level ? "gpt2" : "llama");
    w.set_str("tokenizer.ggml.pre", v.byte_level ? v.pre : "default");
    w.set("tokenizer.ggml.tokens", GgufValue::str_array(v.pieces));
    if (v.byte_level) {
      w.set("tokenizer.ggml.merges", GgufValue::str_array(v.merges));
    } else {
      w.set("tokenizer.ggml.scores",
            GgufValue::float_array(GgufType::F32, std::vector<double>(v.scores.begin(), v.scores.end())));
    }
    std::vector<int64_t> types;
    types.reserve(v.types.size());
    for (TokenType t : v.types) types.push_back(int64_t(t));
    w.set("tokenizer.ggml.token_type", GgufValue::int_array(GgufType::I32, std::move(types)));
    if (v.unk_id >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk_id));
    if (v.pad_id >= 0) w.set_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad_id));
    w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
    w.set_bool("tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
    w.set_bool("tokenizer.ggml.remove_extra_whitespaces", v.remove_extra_whitespaces);
  }

  // As convert_hf_to_gguf: without it a converted chat model has no template (chat/serve refuse it).
  if (const std::string tmpl = source_chat_template(m); !tmpl.empty()) w.set_str("tokenizer.chat_template", tmpl);

  if ((r.type == RopeScaling::Llama3 && r.orig_ctx > 0) || !r.freq_factors.empty()) {
    // ours from the Llama 3 parameters, or the divisors a llama.cpp file came with
    auto factors = std::make_shared<std::vector<float>>(r.type == RopeScaling::Llama3 ? llama3_rope_freq_factors(r)
                                                                                      : r.freq_factors);
    w.add_tensor("rope_freqs.weight", DType::F32, {int64_t(factors->size())},
                 [factors](const GgufWriter::Sink& sink) { sink(factors->data(), factors->size() * 4); });
  }

  // tensor_slots only takes the addresses of the views (the layer vector already has
  // n_layer entries); nothing is written through them.
  for (const TensorSlot& slot : tensor_slots(c, const_cast<ModelWeights&>(m.weights))) {
    if (slot.optional && c.tie_embeddings) continue;  // tied head: llama.cpp reuses token_embd
    const TensorView src = *slot.dst;
    if (slot.gguf_optional && !src.data) continue;  // a bias the source GGUF did not have
    if (!src.data || src.shape != slot.shape)
      fail("convert: tensor '" + slot.hf_name + "' is missing or mis-shaped in the loaded model");
    // llama.cpp keeps 1-D tensors (norms) in F32. Q8_0/Q4_0 need rows that are a multiple of
    // 32 values; like convert_hf_to_gguf (QuantError -> "falling back to F16") we store such
    // tensors as F16.
    DType dt = slot.is_norm || slot.shape.size() == 1 ? DType::F32 : dtype;
    // k-quant rows must be a multiple of 256 values: llama-quantize's fallbacks for the others
    // (Q2_K/Q3_K/Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), then F16 below 32.
    if (dtype_block_values(dt) == 256 && slot.shape.back() % 256 != 0)
      dt = dt == DType::Q5_K ? DType::Q5_1 : dt == DType::Q6_K ? DType::Q8_0 : DType::Q5_0;
    if (dtype_is_quantized(dt) && slot.shape.back() % dtype_block_values(dt) != 0) dt = DType::F16;
    const int64_t n_head_perm = slot.permute == QkPermute::Q ? c.n_head : slot.permute == QkPermute::K ? c.n_head_kv : 0;
    w.add_tensor(slot.gguf_name, dt, slot.shape, [src0 = src, dt, n_head_perm](const GgufWriter::Sink& sink) {
      // Weights repacked for the kernels are written in the file layout they came from.
      TensorView src = src0;
      std::vector<uint8_t> rowmajor;
      if (dtype_is_r16(src.dtype)) {
        rowmajor.resize(src.nbytes);
        r16_rowmajor_bytes(src.dtype, src.data, src.cols(), 0, src.nbytes, rowmajor.data());
        src.dtype = dtype_r16_source(src.dtype);
        src.data = rowmajor.data();
      }
      // q/k rows go to llama.cpp's interleaved-pair order (convert_hf_to_gguf's permute).
      std::vector<uint8_t> permuted;
      const auto* base = static_cast<const uint8_t*>(src.data);
      if (n_head_perm > 0) {
        permuted = permute_qk_rows(src, n_head_perm, /*to_gguf=*/true);
        base = permuted.data();
      }
      if (dt == src.dtype) {
        sink(base, src.nbytes);
        return;
      }
      const int64_t rows = src.numel() / src.cols(), cols = src.cols();
      const size_t in_rb = dtype_row_bytes(src.dtype, cols), out_rb = dtype_row_bytes(dt, cols);
      std::vector<float> row(static_cast<size_t>(cols));  // [cols]
      std::vector<uint8_t> out(out_rb);
      for (int64_t i = 0; i < rows; ++i) {
        kernels::dequantize_row(src.dtype, base + size_t(i) * in_rb, row.data(), cols);
        kernels::quantize_row(dt, row.data(), out.data(), cols);
        sink(out.data(), out_rb);
      }
    });
  }
  w.write(out_path);
}

}  // namespace lcx
