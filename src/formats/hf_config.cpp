#include "formats/hf_config.h"

#include <cmath>
#include <filesystem>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <vector>

#include "runtime/error.h"
#include "runtime/mmap_file.h"

namespace lcx {

using json = nlohmann::json;

namespace {

template <typename T>
struct IsVector : std::false_type {};
template <typename T>
struct IsVector<std::vector<T>> : std::true_type {};

// A JSON value as T, range-checked: nlohmann's get<int64_t>() of 3e24 or get<float>() of 1e39
// is an out-of-range conversion (undefined behaviour; found by fuzz_hf_config under libFuzzer).
template <typename T>
T convert(const json& v, const std::string& what) {
  if constexpr (IsVector<T>::value) {
    if (!v.is_array()) fail(what + " must be a list (" + v.dump() + ")");
    T out;
    for (const json& e : v) out.push_back(convert<typename T::value_type>(e, what));
    return out;
  } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    if (!v.is_number()) fail(what + " has the wrong type (" + v.dump() + ")");
    using L = std::numeric_limits<T>;
    if constexpr (std::is_floating_point_v<T>) {
      const double d = v.get<double>();
      if (!(std::fabs(d) <= double(L::max()))) fail(what + " is out of range (" + v.dump() + ")");
      return T(d);
    } else {
      if (v.is_number_float()) {
        const double d = v.get<double>();
        // -double(min) is 2^(bits-1) exactly: the first value past max.
        if (!(d == std::floor(d) && d >= double(L::min()) && d < -double(L::min())))
          fail(what + " must be a whole number in range (" + v.dump() + ")");
        return T(d);
      }
      if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u > uint64_t(L::max())) fail(what + " is out of range (" + v.dump() + ")");
        return T(u);
      }
      const int64_t i = v.get<int64_t>();
      if (i < int64_t(L::min()) || i > int64_t(L::max())) fail(what + " is out of range (" + v.dump() + ")");
      return T(i);
    }
  } else {
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      fail(what + " has the wrong type (" + v.dump() + ")");
    }
  }
}

template <typename T>
T get_or(const json& j, const char* key, T dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return convert<T>(*it, where + ": field '" + key + "'");
}

DType mem_dtype_from(const std::string& s, const std::string& where) {
  if (s == "float32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  if (s == "q8_0") return DType::Q8_0;
  fail(where + ": mem_dtype '" + s + "' is not supported: use float32, bfloat16, float16 or q8_0");
}

// rope_scaling -> RopeConfig, reading each key where transformers v4.49 reads it (see
// docs/ROPE.md): yarn ignores original_max_position_embeddings (v4.49 uses
// max_position_embeddings as the original context); llama3 requires it inside rope_scaling;
// longrope takes the top-level key (Phi-3 style), falling back to rope_scaling's.
void parse_rope_scaling(const json& rs, ModelConfig& c, const json& root, const std::string& where) {
  RopeConfig& r = c.rope;
  if (rs.is_null()) return;
  if (!rs.is_object()) fail(where + ": rope_scaling must be an object or null");
  // Both the current "rope_type" and the legacy "type" key name the method.
  std::string type = get_or<std::string>(rs, "rope_type", "", where);
  if (type.empty()) type = get_or<std::string>(rs, "type", "", where);
  if (type.empty()) fail(where + ": rope_scaling has no 'rope_type' (or legacy 'type') key");
  r.type = rope_scaling_from_name(type);
  const bool needs_factor = r.type == RopeScaling::Linear || r.type == RopeScaling::Dynamic ||
                            r.type == RopeScaling::Yarn || r.type == RopeScaling::Llama3;
  if (needs_factor && (!rs.contains("factor") || rs["factor"].is_null()))
    fail(where + ": rope_scaling of type '" + type + "' needs a 'factor'");
  r.factor = get_or<float>(rs, "factor", 1.0f, where);
  // `config.rope_scaling.get("beta_fast") or 32`: a 0 or null value means the default.
  r.beta_fast = get_or<float>(rs, "beta_fast", 32.0f, where);
  if (r.beta_fast == 0.0f) r.beta_fast = 32.0f;
  r.beta_slow = get_or<float>(rs, "beta_slow", 1.0f, where);
  if (r.beta_slow == 0.0f) r.beta_slow = 1.0f;
  r.attention_factor = get_or<float>(rs, "attention_factor", 0.0f, where);
  r.mscale = get_or<float>(rs, "mscale", 0.0f, where);
  r.mscale_all_dim = get_or<float>(rs, "mscale_all_dim", 0.0f, where);
  r.low_freq_factor = get_or<float>(rs, "low_freq_factor", 1.0f, where);
  r.high_freq_factor = get_or<float>(rs, "high_freq_factor", 4.0f, where);
  r.short_factor = get_or<std::vector<float>>(rs, "short_factor", {}, where);
  r.long_factor = get_or<std::vector<float>>(rs, "long_factor", {}, where);
  r.orig_ctx = 0;
  if (r.type == RopeScaling::Yarn)  // YaRN-Llama-2 (4096 with max_position_embeddings 65536), Qwen-style configs
    c.yarn_unused_orig_ctx = get_or<int64_t>(rs, "original_max_position_embeddings", 0, where);
  if (r.type == RopeScaling::Llama3) {
    r.orig_ctx = get_or<int64_t>(rs, "original_max_position_embeddings", 0, where);
    if (r.orig_ctx <= 0)
      fail(where + ": llama3 rope_scaling needs 'original_max_position_embeddings' (the pre-extension context, e.g. 8192)");
  }
  if (r.type == RopeScaling::LongRope) {
    r.orig_ctx = get_or<int64_t>(root, "original_max_position_embeddings", 0, where);
    if (r.orig_ctx == 0) r.orig_ctx = get_or<int64_t>(rs, "original_max_position_embeddings", 0, where);
    const size_t half = size_t(c.head_dim / 2);
    for (const char* key : {"short_factor", "long_factor"})
      if (!rs.contains(key) || rs[key].is_null())
        fail(where + ": rope_scaling of type '" + type + "' needs a '" + key + "' list of head_dim/2 = " +
             std::to_string(half) + " per-dimension factors");
    if (r.short_factor.size() != half || r.long_factor.size() != half)
      fail(where + ": longrope short_factor/long_factor must have head_dim/2 = " +
           std::to_string(half) + " entries");
  }
}

}  // namespace

ModelConfig parse_hf_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(where + ": malformed JSON (" + e.what() + "); the file should be the config.json written by save_pretrained");
  }
  if (!j.is_object()) fail(where + ": expected a JSON object");

  ModelConfig c;
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0].get<std::string>();
  const std::string model_type = get_or<std::string>(j, "model_type", "", where);
  if (arch == "LongLlamaForCausalLM" || model_type == "longllama") {
    c.arch = Arch::LongLlama;
  } else if (arch == "LlamaForCausalLM" || model_type == "llama" || (arch.empty() && model_type.empty())) {
    c.arch = Arch::Llama;
  } else {
    fail(where + ": unsupported architecture '" + (arch.empty() ? model_type : arch) +
         "': longctx runs LlamaForCausalLM and LongLlamaForCausalLM checkpoints");
  }
  // GPTQ/AWQ/bitsandbytes/FP8 checkpoints store packed integer or float8 weights under other
  // tensor names (q_proj.qweight, .scales, .qzeros): say so here, not "missing tensor" later.
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    std::string method = q.is_object() ? get_or<std::string>(q, "quant_method", "", where) : "";
    if (method.empty() && q.is_object() && (q.contains("load_in_4bit") || q.contains("load_in_8bit"))) method = "bitsandbytes";
    fail(where + ": this is a quantized checkpoint (quantization_config" +
         (method.empty() ? std::string() : ", quant_method '" + method + "'") +
         "); longctx reads unquantized F32/F16/BF16 weights: use the original (unquantized) model, then "
         "`longctx convert --outtype q8_0` (or q4_0, q4_k...) to quantize it, or a GGUF file");
  }
  const std::string act = get_or<std::string>(j, "hidden_act", "silu", where);
  if (act != "silu") fail(where + ": hidden_act '" + act + "' is not supported (LLaMA uses silu)");
  // LongLLaMA's modeling code builds its Linears without bias whatever the config says.
  if (c.arch == Arch::Llama) {
    c.attn_bias = get_or<bool>(j, "attention_bias", false, where);
    c.mlp_bias = get_or<bool>(j, "mlp_bias", false, where);
  }

  // LlamaConfig has defaults for these (the 7B shapes), but a checkpoint's config.json always
  // lists them: one without them is not the file save_pretrained wrote for these weights.
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"})
    if (!j.contains(key) || j[key].is_null())
      fail(where + ": key '" + key + "' is missing; the file should be the config.json that save_pretrained wrote for this checkpoint");
  c.n_vocab = get_or<int64_t>(j, "vocab_size", 32000, where);
  c.n_embd = get_or<int64_t>(j, "hidden_size", 0, where);
  c.n_ff = get_or<int64_t>(j, "intermediate_size", 0, where);
  c.n_layer = get_or<int64_t>(j, "num_hidden_layers", 0, where);
  c.n_head = get_or<int64_t>(j, "num_attention_heads", 0, where);
  // LongLLaMA's modeling code (v4.33 era) always uses hidden_size / num_attention_heads and
  // one key/value head per query head (k_proj/v_proj are num_heads * head_dim wide): it ignores
  // head_dim and num_key_value_heads keys; LlamaConfig v4.49 reads both.
  c.n_head_kv = c.n_head;
  c.head_dim = c.n_head > 0 ? c.n_embd / c.n_head : 0;
  if (c.arch == Arch::Llama) {
    c.n_head_kv = get_or<int64_t>(j, "num_key_value_heads", c.n_head, where);
    c.head_dim = get_or<int64_t>(j, "head_dim", c.head_dim, where);
  }
  c.n_ctx_train = get_or<int64_t>(j, "max_position_embeddings", 2048, where);
  c.rms_eps = get_or<float>(j, "rms_norm_eps", 1e-6f, where);
  c.tie_embeddings = get_or<bool>(j, "tie_word_embeddings", false, where);
  // Token ids: an int (eos_token_id also a list, Llama 3) or null (then LLaMA's 1 / 2).
  // A negative id names no token; -1 means "none" only in GGUF files.
  auto token_id = [&](const json& v, const char* key) {
    const int32_t id = convert<int32_t>(v, where + ": " + key);
    if (id < 0) fail(where + ": " + key + " " + std::to_string(id) + " is negative: use a token id or null");
    return id;
  };
  c.bos_id = j.contains("bos_token_id") && !j["bos_token_id"].is_null() ? token_id(j["bos_token_id"], "bos_token_id") : 1;
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    c.eos_id = j["eos_token_id"].empty() ? 2 : token_id(j["eos_token_id"][0], "eos_token_id");
    for (size_t k = 1; k < j["eos_token_id"].size(); ++k)
      c.eog_ids.push_back(token_id(j["eos_token_id"][k], "eos_token_id"));
  } else {
    c.eos_id = j.contains("eos_token_id") && !j["eos_token_id"].is_null() ? token_id(j["eos_token_id"], "eos_token_id") : 2;
  }

  c.rope.head_dim = c.head_dim;
  c.rope.theta = get_or<float>(j, "rope_theta", 10000.0f, where);
  c.rope.max_pos = c.n_ctx_train;
  if (j.contains("rope_scaling")) parse_rope_scaling(j["rope_scaling"], c, j, where);

  if (c.arch == Arch::LongLlama) {
    c.mem.layers = get_or<std::vector<int>>(j, "mem_layers", {}, where);
    normalize_mem_layers(c.mem.layers);
    c.mem.positionals = get_or<bool>(j, "mem_positionals", true, where);
    c.mem.dtype = mem_dtype_from(get_or<std::string>(j, "mem_dtype", "bfloat16", where), where);
    c.mem.last_context_length = get_or<int64_t>(j, "last_context_length", 1024, where);
    if (j.contains("mem_attention_grouping") && !j["mem_attention_grouping"].is_null()) {
      const auto& g = j["mem_attention_grouping"];
      if (!g.is_array() || g.size() != 2 || !g[0].is_number_integer() || !g[1].is_number_integer())
        fail(where + ": mem_attention_grouping must be null or [single_batch_size, group_size]");
      c.mem.attention_grouping_groups = convert<int64_t>(g[0], where + ": mem_attention_grouping");
      c.mem.attention_grouping_size = convert<int64_t>(g[1], where + ": mem_attention_grouping");
      // modeling_longllama.py asserts "Attention grouping should be positive".
      if (c.mem.attention_grouping_groups <= 0 || c.mem.attention_grouping_size <= 0)
        fail(where + ": mem_attention_grouping values must be positive (got [" + g[0].dump() + ", " + g[1].dump() +
             "]); use null for no grouping");
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where + ": " + e.what());  // which file, as the GGUF loader says
  }
  return c;
}

HfChatTemplate read_hf_chat_template(const std::string& dir) {
  namespace fs = std::filesystem;
  HfChatTemplate out;
  std::error_code ec;
  const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  out.where = cfg.string();
  if (fs::is_regular_file(cfg, ec)) {
    const json j = json::parse(read_text_file(cfg.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      out.problem = cfg.string() + " is not valid JSON";
      return out;
    }
    if (j.is_object() && j.contains("chat_template") && !j["chat_template"].is_null()) {
      const json& t = j["chat_template"];
      if (t.is_string()) out.text = t.get<std::string>();
      if (t.is_array())
        for (const json& e : t)
          if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") && e["template"].is_string())
            out.text = e["template"].get<std::string>();
      if (out.text.empty())
        out.problem = cfg.string() + "'s chat_template is " +
                      (t.is_array() ? std::string("a list without a \"default\" entry") : "not a string (" + t.dump() + ")");
      return out;
    }
  }
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (fs::is_regular_file(jinja, ec)) {
    out.where = jinja.string();
    out.text = read_text_file(jinja.string());
    return out;
  }
  const fs::path ct = fs::path(dir) / "chat_template.json";
  if (fs::is_regular_file(ct, ec)) {
    out.where = ct.string();
    const json j = json::parse(read_text_file(ct.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
      out.text = j["chat_template"].get<std::string>();
    else
      out.problem = ct.string() + " has no chat_template string";
  }
  return out;
}

}  // namespace lcx
