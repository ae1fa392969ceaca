// Writes the seed corpus of every fuzz target into OUT/<target>/: small valid inputs of each
// kind, from which the mutations start. Built from a synthetic model (tests/synthetic_model.h)
// and, when present, the fixtures (config.json files, tokenizer texts).
//
//   fuzz_seeds OUT_DIR
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "synthetic_model.h"

namespace fs = std::filesystem;

namespace {

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream o(dir / name, std::ios::binary | std::ios::trunc);
  o << bytes;
  if (!o) throw std::runtime_error("cannot write " + (dir / name).string());
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A safetensors file: header length, JSON header padded to 8 bytes, data.
std::string safetensors(const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>& ts) {
  nlohmann::json h;
  h["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, dtype, shape] : ts) {
    size_t n = dtype == "F32" ? 4 : 2;
    for (int64_t d : shape) n *= size_t(d);
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + n}}};
    for (size_t i = 0; i < n; ++i) data.push_back(char((i * 37 + name.size()) & 0x3f));
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  std::string out(8, '\0');
  const uint64_t len = hs.size();
  std::memcpy(out.data(), &len, 8);
  return out + hs + data;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  try {
    fs::remove_all(out);
    const std::string fx = lcx::fuzz::fixtures_or_empty();

    // gguf: the synthetic LongLLaMA in three dtypes, and as plain LLaMA with linear RoPE.
    {
      fs::create_directories(out / "gguf");
      auto m = lcx::test::synthetic_model({.byte_tokens = true});
      for (auto [dt, name] : {std::pair{lcx::DType::F32, "longllama_f32.gguf"}, {lcx::DType::F16, "longllama_f16.gguf"},
                              {lcx::DType::Q8_0, "longllama_q8_0.gguf"}, {lcx::DType::Q4_0, "longllama_q4_0.gguf"}}) {
        lcx::convert_to_gguf(*m, (out / "gguf" / name).string(), dt);
      }
      m->config.arch = lcx::Arch::Llama;
      m->config.mem = {};
      m->config.rope.type = lcx::RopeScaling::Linear;
      m->config.rope.factor = 2.0f;
      m->config.validate();
      lcx::convert_to_gguf(*m, (out / "gguf" / "llama_linear_f32.gguf").string(), lcx::DType::F32);
      // GGML block types: 256-wide rows become Q4_K / Q6_K (Q4_K panels at load on AVX-512), the
      // 64-wide ones fall back to Q5_0 / Q8_0, as llama-quantize's files mix them.
      auto wide = lcx::test::synthetic_model({.n_embd = 256, .byte_tokens = true});
      lcx::convert_to_gguf(*wide, (out / "gguf" / "longllama_q4_k.gguf").string(), lcx::DType::Q4_K);
      lcx::convert_to_gguf(*wide, (out / "gguf" / "longllama_q6_k.gguf").string(), lcx::DType::Q6_K);
    }

    // safetensors
    put(out / "safetensors", "small.safetensors",
        safetensors({{"model.embed_tokens.weight", "F32", {8, 4}}, {"model.norm.weight", "BF16", {4}},
                     {"lm_head.weight", "F16", {8, 4}}}));
    put(out / "safetensors", "empty.safetensors", safetensors({}));

    // hf_config: the fixtures' config.json files and a few written here.
    if (!fx.empty())
      for (const auto& e : fs::directory_iterator(fs::path(fx) / "models"))
        if (fs::exists(e.path() / "config.json")) put(out / "hf_config", e.path().filename().string() + ".json", slurp(e.path() / "config.json"));
    const std::string base = R"("architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,"num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":2,"vocab_size":100,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0)";
    put(out / "hf_config", "yarn.json", "{" + base + R"(,"rope_scaling":{"rope_type":"yarn","factor":4.0,"beta_fast":32,"beta_slow":1,"original_max_position_embeddings":16}})");
    put(out / "hf_config", "llama3.json", "{" + base + R"(,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}})");
    put(out / "hf_config", "dynamic.json", "{" + base + R"(,"rope_scaling":{"type":"dynamic","factor":2.0}})");
    put(out / "hf_config", "longrope.json", "{" + base + R"(,"original_max_position_embeddings":16,"rope_scaling":{"rope_type":"longrope","short_factor":[1,1,1,1],"long_factor":[2,2,2,2]}})");
    put(out / "hf_config", "longllama.json", "{" + base + R"(,"architectures":["LongLlamaForCausalLM"],"mem_layers":[1],"mem_positionals":true,"mem_dtype":"bfloat16","mem_attention_grouping":[1,8],"last_context_length":16,"torch_attention":false})");

    // request bodies
    const char* bodies[] = {
        R"({"prompt":"Hello","max_tokens":8,"temperature":0.7,"top_p":0.9,"stop":["\n","END"],"seed":3})",
        R"({"prompt":[1,15043,3186],"max_tokens":4,"n":2,"stream":true,"stream_options":{"include_usage":true}})",
        R"({"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":16})",
        R"({"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"top_k":40,"min_p":0.05,"frequency_penalty":0.5,"presence_penalty":-0.5,"repeat_last_n":64,"ignore_eos":true})",
        R"({"prompt":"x","document":"doc-123","max_completion_tokens":2,"logprobs":null,"echo":false})",
        R"({"prompt":[[1,450,4996]],"max_tokens":1,"echo":true,"logprobs":1,"temperature":0})",
        R"({"messages":[{"role":"user","content":"Hi"}],"logprobs":true,"top_logprobs":5,"stream":true})",
        R"({"prompt":["a","b"],"logit_bias":{"450":-100,"13":2.5},"cache_prompt":false,"n":2})",
        R"({"messages":[{"role":"user","content":"JSON"}],"response_format":{"type":"json_object"}})",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; ++i) put(out / "request", "body" + std::to_string(i) + ".json", bodies[i]);

    // tokenizer texts
    const char* texts[] = {"Hello world", "  leading and   repeated   spaces  ", "tab\tnew\nline",
                           "caf\xc3\xa9 \xe2\x96\x81 \xf0\x9f\x98\x80", "bad \xff\xfe utf8 \xc3", "<s> </s> <unk>",
                           "1234567890 !@#$%^&*()"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; ++i) put(out / "tokenizer", "text" + std::to_string(i), texts[i]);
    if (!fx.empty()) {
      const auto cases = nlohmann::json::parse(slurp(fs::path(fx) / "tokenizer_cases.json"))["cases"];
      for (size_t i = 0; i < cases.size(); ++i) put(out / "tokenizer", "case" + std::to_string(i), cases[i]["text"].get<std::string>());
    }

    // command-line overrides: per line a flag letter (fuzz_overrides.cpp kFlags: a
    // --rope-scaling, b --rope-scale, c --rope-freq-base, d --rope-ntk-alpha, e --rope-orig-ctx,
    // f/g/h yarn beta fast/slow/attn factor, i/j llama3 low/high freq factor, k dynamic cache,
    // l longrope switch, m --last-context-length, n --mem-dtype, o --mem-layers,
    // p --mem-positionals) and its value; odd sizes use the LongLLaMA model.
    const char* overrides[] = {
        "ayarn\nb4\ne16\n",           "alinear\nb2\nm4\n",
        "adynamic\nb2\nkhf\n",         "allama3\nb8\ne16\ni1\nj4\n",
        "c500000\nd4\n",               "nq8_0\no0,1\npon\n",
        "ayarn\nb4\nf16\ng2\nh1.2\n ", "adynamic\nb4\nkconsistent\nnbfloat16\n",
    };
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; ++i)
      put(out / "overrides", "flags" + std::to_string(i), overrides[i]);

    // sharded index (fuzz_shard_index.cpp writes the two shards it names)
    put(out / "shard_index", "index.json",
        R"({"metadata":{"total_size":32},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
    put(out / "shard_index", "one_shard.json", R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})");

    // tokenizer.model: the fixtures' OpenLLaMA model (none without the fixtures: the target
    // then runs on its mutations of an empty input only)
    if (!fx.empty()) put(out / "spm_model", "openllama.model", slurp(fs::path(fx) / "tokenizer.model"));
    else put(out / "spm_model", "empty", "");

    // chat: template byte, then NUL-separated messages with a role byte
    static const char chatml[] = "\x02sBe brief.\0uHello <|im_start|> there\0aHi!\0uAnd now?";
    static const char llama2[] = "\x00uHi [INST] x\0a ok </s>\0u\xc3\xa9";
    put(out / "chat", "chatml", std::string(chatml, sizeof chatml - 1));
    put(out / "chat", "llama2", std::string(llama2, sizeof llama2 - 1));
    put(out / "chat", "jinja", "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>{% endfor %}");

    // session states of the synthetic LongLLaMA: local cache only, and with memory.
    {
      fs::create_directories(out / "state");
      const std::string gguf = (out / "state" / "model.gguf.tmp").string();
      lcx::convert_to_gguf(*lcx::test::synthetic_model({.byte_tokens = true}), gguf, lcx::DType::F32);
      auto model = longctx::Model::load(gguf);
      longctx::SessionOptions so;
      so.n_threads = 1;
      for (int n : {5, 80}) {
        longctx::Session s(model, so);
        std::vector<int32_t> ids;
        for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 7) % 290);
        s.feed(ids);
        s.save_state((out / "state" / ("tokens" + std::to_string(n) + ".state")).string());
      }
      fs::remove(gguf);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", e.what());
    return 1;
  }
  std::printf("fuzz_seeds: corpus written to %s\n", out.c_str());
  return 0;
}
