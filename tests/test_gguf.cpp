// GGUF reader/writer, GGUF model loading and HF -> GGUF conversion.
//   * format: every metadata type and tensor dtype round-trips; ne[] is stored innermost-first.
//   * models: every HF fixture -> GGUF F32 -> load gives identical weights and config; F16,
//     BF16, Q8_0, Q4_0 stay within their rounding bounds; the vocabulary round-trips.
//   * corrupt files: truncation anywhere, bit flips anywhere in the header, bad offsets, unknown
//     tensor types, wrong shapes and missing tensors all throw lcx::Error (never crash).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "kernels/ops.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "synthetic_model.h"
#include "testutil.h"

namespace lcx {
namespace {

namespace fs = std::filesystem;
using test::fixtures_dir;
using test::tmp_dir;

std::string model_dir(const std::string& name) { return fixtures_dir() + "/models/" + name; }
std::string tokenizer_path() { return fixtures_dir() + "/tokenizer.model"; }

std::vector<float> dequant(TensorView v) {
  std::vector<uint8_t> rowmajor;
  if (v.dtype == DType::Q4_0_R16) {  // repacked at load for the AVX-512 kernels: read the file's order
    rowmajor.resize(v.nbytes);
    q4_0_r16_rowmajor_bytes(v.data, v.cols(), 0, v.nbytes, rowmajor.data());
    v.dtype = DType::Q4_0;
    v.data = rowmajor.data();
  }
  std::vector<float> out(size_t(v.numel()));
  const int64_t cols = v.cols(), rows = v.numel() / cols;
  const size_t rb = dtype_row_bytes(v.dtype, cols);
  for (int64_t r = 0; r < rows; ++r)
    kernels::dequantize_row(v.dtype, static_cast<const uint8_t*>(v.data) + size_t(r) * rb, out.data() + r * cols, cols);
  return out;
}

std::string read_bytes(const std::string& path) { return test::read_file(path); }
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good());
}

void expect_rope_eq(const RopeConfig& a, const RopeConfig& b) {
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.theta, b.theta);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.factor, b.factor);
  EXPECT_EQ(a.max_pos, b.max_pos);
  EXPECT_EQ(a.orig_ctx, b.orig_ctx);
  EXPECT_EQ(a.beta_fast, b.beta_fast);
  EXPECT_EQ(a.beta_slow, b.beta_slow);
  EXPECT_EQ(a.attention_factor, b.attention_factor);
  EXPECT_EQ(a.mscale, b.mscale);
  EXPECT_EQ(a.mscale_all_dim, b.mscale_all_dim);
  EXPECT_EQ(a.low_freq_factor, b.low_freq_factor);
  EXPECT_EQ(a.high_freq_factor, b.high_freq_factor);
  EXPECT_EQ(a.short_factor, b.short_factor);
  EXPECT_EQ(a.long_factor, b.long_factor);
  EXPECT_EQ(a.longrope_switch, b.longrope_switch);
  EXPECT_EQ(a.dynamic_mode, b.dynamic_mode);
}

void expect_config_eq(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_ff, b.n_ff);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.n_ctx_train, b.n_ctx_train);
  EXPECT_EQ(a.rms_eps, b.rms_eps);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  expect_rope_eq(a.rope, b.rope);
  EXPECT_EQ(a.mem.layers, b.mem.layers);
  EXPECT_EQ(a.mem.positionals, b.mem.positionals);
  EXPECT_EQ(a.mem.dtype, b.mem.dtype);
  EXPECT_EQ(a.mem.attention_grouping_size, b.mem.attention_grouping_size);
  EXPECT_EQ(a.mem.attention_grouping_groups, b.mem.attention_grouping_groups);
  EXPECT_EQ(a.mem.last_context_length, b.mem.last_context_length);
}

// Every weight of a and b, dequantized, slot by slot (HF row order on both sides).
struct WeightPair {
  std::string name;
  std::vector<float> a, b;
  TensorView vb;
};
std::vector<WeightPair> weight_pairs(Model& a, Model& b) {
  std::vector<WeightPair> out;
  auto sa = tensor_slots(a.config, a.weights);
  auto sb = tensor_slots(b.config, b.weights);
  EXPECT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size() && i < sb.size(); ++i) {
    if (sa[i].optional && a.config.tie_embeddings) continue;
    EXPECT_EQ(sa[i].dst->shape, sb[i].dst->shape) << sa[i].hf_name;
    out.push_back({sa[i].hf_name, dequant(*sa[i].dst), dequant(*sb[i].dst), *sb[i].dst});
  }
  return out;
}

// Deletes a test output at scope exit (fixture conversions are megabytes each).
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

// A small random model with every optional feature on (tests/synthetic_model.h).
std::unique_ptr<Model> synthetic_model(int64_t n_embd = 32, uint32_t seed = 7) {
  return test::synthetic_model({.n_embd = n_embd, .seed = seed, .path = tmp_dir() + "/synthetic"});
}

// Scratch files for the corruption loops (thousands of writes): RAM-backed when possible.
std::string scratch_dir() {
  struct Dir {
    std::string path;
    bool owned = false;
    Dir() {
      std::error_code ec;
      const fs::path shm = fs::path("/dev/shm") / ("longctx-gguf-" + std::to_string(getpid()));
      owned = fs::is_directory("/dev/shm", ec) && fs::create_directories(shm, ec);
      path = owned ? shm.string() : tmp_dir();
    }
    ~Dir() {
      std::error_code ec;
      if (owned) fs::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

// Loads a GGUF model the way load_model does, minus the path checks.
void load_gguf(const std::string& path) {
  Model m;
  load_gguf_model(path, m);
}

// Byte offset of a tensor info record's name in the header.
size_t tensor_info_pos(const std::string& bytes, const std::string& name) {
  std::string pat(8, '\0');
  const uint64_t n = name.size();
  std::memcpy(pat.data(), &n, 8);
  pat += name;
  const size_t p = bytes.find(pat);
  EXPECT_NE(p, std::string::npos) << name;
  return p + pat.size();  // -> u32 n_dims
}

// Rewrites src into dst through GgufWriter, letting `edit` change metadata, skipping a tensor.
void rewrite(const std::string& src, const std::string& dst, const std::function<void(GgufWriter&)>& edit,
             const std::string& skip_tensor = "") {
  const GgufFile g = GgufFile::open(src);
  GgufWriter w;
  for (const auto& [k, v] : g.metadata()) w.set(k, v);
  for (const GgufTensorInfo& ti : g.tensor_infos())
    if (ti.name != skip_tensor) w.add_tensor(ti.name, g.tensors().at(ti.name));
  edit(w);
  w.write(dst);
}

// ---------------------------------------------------------------------------------------------
// Format

TEST(GgufFormat, MetadataAndTensorsRoundTrip) {
  GgufWriter w(64);
  w.set("u8", GgufValue::int_array(GgufType::U8, {}));  // replaced below, keeps its position
  w.set("u8", [] { GgufValue v; v.type = GgufType::U8; v.i = 200; return v; }());
  w.set("i8", [] { GgufValue v; v.type = GgufType::I8; v.i = -100; return v; }());
  w.set("u16", [] { GgufValue v; v.type = GgufType::U16; v.i = 60000; return v; }());
  w.set("i16", [] { GgufValue v; v.type = GgufType::I16; v.i = -30000; return v; }());
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -2000000000);
  w.set("u64", GgufValue::u64(uint64_t(1) << 40));
  w.set("i64", GgufValue::i64(-(int64_t(1) << 40)));
  w.set_f32("f32", 0.1f);
  w.set("f64", GgufValue::f64(0.1));
  w.set_bool("bool", true);
  w.set_str("str", "h\xc3\xa9llo");
  w.set("arr_str", GgufValue::str_array({"a", "", "\xe2\x96\x81the"}));
  w.set("arr_f32", GgufValue::float_array(GgufType::F32, {1.5, -2.25}));
  w.set("arr_i32", GgufValue::int_array(GgufType::I32, {-1, 0, 7}));
  w.set("arr_bool", GgufValue::int_array(GgufType::Bool, {1, 0}));
  w.set("arr_empty", GgufValue::int_array(GgufType::U64, {}));

  std::mt19937 rng(1);
  auto bytes_of = [&](size_t n) {
    std::vector<uint8_t> b(n);
    for (auto& x : b) x = uint8_t(rng());
    return b;
  };
  struct T { std::string name; DType dt; std::vector<int64_t> shape; std::vector<uint8_t> data; };
  std::vector<T> ts = {{"t_f32", DType::F32, {3, 5}, {}},   {"t_f16", DType::F16, {2, 4}, {}},
                       {"t_bf16", DType::BF16, {7}, {}},    {"t_q8", DType::Q8_0, {2, 64}, {}},
                       {"t_q4", DType::Q4_0, {3, 32}, {}},  {"t_3d", DType::F32, {2, 3, 4}, {}}};
  for (auto& t : ts) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    t.data = bytes_of(dtype_row_bytes(t.dt, t.shape.back()) * size_t(n / t.shape.back()));
    TensorView v{t.dt, t.shape, t.data.data(), t.data.size()};
    w.add_tensor(t.name, v);
  }
  const std::string path = tmp_dir() + "/format.gguf";
  RemoveOnExit cleanup{path};
  w.write(path);
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(getpid())));

  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.metadata()[0].first, "general.alignment");
  EXPECT_EQ(g.metadata()[1].first, "u8");
  EXPECT_EQ(g.get_int("u8"), 200);
  EXPECT_EQ(g.get_int("i8"), -100);
  EXPECT_EQ(g.get_int("u16"), 60000);
  EXPECT_EQ(g.get_int("i16"), -30000);
  EXPECT_EQ(g.get_int("u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("i32"), -2000000000);
  EXPECT_EQ(g.get_int("u64"), int64_t(1) << 40);
  EXPECT_EQ(g.get_int("i64"), -(int64_t(1) << 40));
  EXPECT_EQ(float(g.get_float("f32")), 0.1f);
  EXPECT_EQ(g.get_float("f64"), 0.1);
  EXPECT_TRUE(g.get_bool("bool", false));
  EXPECT_EQ(g.get_str("str"), "h\xc3\xa9llo");
  EXPECT_EQ(g.get_str_array("arr_str"), (std::vector<std::string>{"a", "", "\xe2\x96\x81the"}));
  EXPECT_EQ(g.get_float_array("arr_f32"), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_EQ(g.get_int_array("arr_i32"), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(g.get_int_array("arr_bool"), (std::vector<int64_t>{1, 0}));
  EXPECT_TRUE(g.get_int_array("arr_empty").empty());
  EXPECT_EQ(g.get_int("missing", 5), 5);
  EXPECT_THROW(g.get_int("missing"), Error);
  EXPECT_THROW(g.get_str("u32"), Error);
  EXPECT_THROW(g.get_int("str"), Error);
  EXPECT_THROW(g.get_str_array("arr_i32"), Error);
  EXPECT_THROW(g.get_int_array("arr_str"), Error);

  ASSERT_EQ(g.tensor_infos().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const GgufTensorInfo& ti = g.tensor_infos()[i];
    EXPECT_EQ(ti.name, ts[i].name);
    EXPECT_EQ(ti.dtype, ts[i].dt);
    EXPECT_EQ(ti.shape, ts[i].shape);
    EXPECT_EQ(ti.offset % 64, 0u);
    const TensorView& v = g.tensors().at(ti.name);
    EXPECT_EQ(v.shape, ts[i].shape);
    ASSERT_EQ(v.nbytes, ts[i].data.size());
    EXPECT_EQ(std::memcmp(v.data, ts[i].data.data(), v.nbytes), 0) << ti.name;
    EXPECT_EQ((static_cast<const uint8_t*>(v.data) - g.file()->data()) % 64, 0);
  }
  // On disk ne[0] is the innermost dimension: [3, 5] is stored as ne = {5, 3}.
  const std::string raw = read_bytes(path);
  const size_t p = tensor_info_pos(raw, "t_f32");
  uint32_t n_dims;
  uint64_t ne[2];
  std::memcpy(&n_dims, raw.data() + p, 4);
  std::memcpy(ne, raw.data() + p + 4, 16);
  EXPECT_EQ(n_dims, 2u);
  EXPECT_EQ(ne[0], 5u);
  EXPECT_EQ(ne[1], 3u);
}

TEST(GgufFormat, WriterRejectsBadTensors) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("q", DType::Q8_0, {2, 48}, [](const GgufWriter::Sink&) {}), Error);
  w.add_tensor("short", DType::F32, {4}, [](const GgufWriter::Sink& s) { float x = 0; s(&x, 4); });
  const std::string path = tmp_dir() + "/short.gguf";
  EXPECT_THROW(w.write(path), Error);
  EXPECT_FALSE(fs::exists(path));  // nothing half-written appears
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(getpid())));
}

// ---------------------------------------------------------------------------------------------
// Models

class GgufFixture : public testing::TestWithParam<std::string> {};

TEST_P(GgufFixture, F32RoundTripIsExact) {
  auto hf = load_model(model_dir(GetParam()));
  const std::string out = tmp_dir() + "/" + GetParam() + ".f32.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*hf, out, DType::F32);
  auto gg = load_model(out);
  EXPECT_EQ(gg->format, "gguf");
  expect_config_eq(hf->config, gg->config);
  for (auto& p : weight_pairs(*hf, *gg)) {
    EXPECT_EQ(p.vb.dtype, DType::F32) << p.name;
    EXPECT_EQ(p.a, p.b) << p.name;  // HF F32/F16/BF16 values are exact in F32
  }
  // The file really is llama.cpp-shaped: names, permuted q rows, general keys.
  const GgufFile g = GgufFile::open(out);
  EXPECT_EQ(g.get_str("general.architecture"), "llama");
  EXPECT_EQ(g.get_str("general.name"), GetParam());
  EXPECT_EQ(g.get_int("general.file_type"), 0);
  EXPECT_EQ(g.tensors().count("output.weight") == 1, !hf->config.tie_embeddings);
  TensorView hf_wq = hf->weights.layers[0].wq;
  const auto perm = permute_qk_rows(hf_wq, hf->config.n_head, true);
  hf_wq.data = perm.data();
  EXPECT_EQ(dequant(g.tensors().at("blk.0.attn_q.weight")), dequant(hf_wq));
  EXPECT_EQ(hf->config.arch == Arch::LongLlama, g.has("longllama.mem_layers"));
}

TEST_P(GgufFixture, ReducedPrecisionWithinBounds) {
  auto hf = load_model(model_dir(GetParam()));
  for (DType dt : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(dt));
    const std::string out = tmp_dir() + "/" + GetParam() + "." + dtype_name(dt) + ".gguf";
    RemoveOnExit cleanup_out{out};
    convert_to_gguf(*hf, out, dt);
    auto gg = load_model(out);
    expect_config_eq(hf->config, gg->config);
    for (auto& p : weight_pairs(*hf, *gg)) {
      const bool norm = p.vb.shape.size() == 1;
      // Q4_0 matrices may be repacked in memory for the AVX-512 kernels (same blocks).
      const bool repacked = dt == DType::Q4_0 && p.vb.dtype == DType::Q4_0_R16;
      EXPECT_TRUE(p.vb.dtype == (norm ? DType::F32 : dt) || repacked) << p.name << " " << dtype_name(p.vb.dtype);
      // Per 32-value block: fp16/bf16 round each value; Q8_0 errs by at most half a step of
      // amax/127 (plus the fp16 scale rounding); Q4_0 by at most one step amax/8 (the clamp
      // at nibble 15).
      for (size_t b0 = 0; b0 < p.a.size(); b0 += 32) {
        float amax = 0;
        for (size_t i = b0; i < b0 + 32 && i < p.a.size(); ++i) amax = std::max(amax, std::fabs(p.a[i]));
        for (size_t i = b0; i < b0 + 32 && i < p.a.size(); ++i) {
          const float x = p.a[i], err = std::fabs(p.b[i] - x);
          float bound = 0;
          if (norm) bound = 0;
          else if (dt == DType::F16) bound = std::fabs(x) * 0x1p-11f + 0x1p-25f;
          else if (dt == DType::BF16) bound = std::fabs(x) * 0x1p-8f;
          else if (dt == DType::Q8_0) bound = amax / 127.0f * 0.51f + amax * 1e-3f;
          else bound = amax / 8.0f * 1.01f;
          ASSERT_LE(err, bound) << p.name << " [" << i << "] " << x << " -> " << p.b[i];
        }
      }
    }
  }
}

// Q4_0 matrices repacked at load for the AVX-512 kernels (Q4_0_R16) hold the same blocks, give
// the same logits up to float summation order (prefill bit for bit), keep the state fingerprint
// (a state saved by a repacking process loads in one that does not) and convert back to the same
// GGUF bytes.
TEST(GgufRepack, Q4_0RepackedMatchesFileLayout) {
  auto hf = load_model(model_dir("longllama_mem"));
  const std::string out = tmp_dir() + "/repack.Q4_0.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*hf, out, DType::Q4_0);
  const std::string file_before = read_bytes(out);
  longctx::LoadOptions lo;
  lo.overrides = {{"--last-context-length", "16"}};
  lo.weights = "mmap";  // repacked in a private mapping: the file must not change
  auto packed = longctx::Model::load(out, lo);
  lo.weights = "copy";
  auto packed_copy = longctx::Model::load(out, lo);
  EXPECT_EQ(packed_copy->impl().n_repacked, packed->impl().n_repacked);
  lo.repack = false;
  auto plain = longctx::Model::load(out, lo);
  EXPECT_EQ(plain->impl().n_repacked, 0);
  if (!kernels::q4_0_r16_preferred()) GTEST_SKIP() << "the active kernels read Q4_0 in the file layout";
  ASSERT_GT(packed->impl().n_repacked, 0);
  int n_r16 = 0;
  for (auto& p : weight_pairs(const_cast<Model&>(plain->impl()), const_cast<Model&>(packed->impl()))) {
    EXPECT_EQ(p.a, p.b) << p.name;
    n_r16 += p.vb.dtype == DType::Q4_0_R16;
  }
  EXPECT_EQ(n_r16, packed->impl().n_repacked);
  packed_copy.reset();
  EXPECT_TRUE(read_bytes(out) == file_before) << "repacking wrote to the model file";
  EXPECT_NE(packed->describe().find("repacked"), std::string::npos);

  // Prefill (int8 GEMM: same panels, same bits), then decode steps (the R16 GEMV).
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(int32_t(1 + (i * 37) % (packed->n_vocab() - 1)));
  longctx::SessionOptions so;
  so.n_threads = 2;
  longctx::Session a(packed, so), b(plain, so);
  std::vector<float> la, lb;
  a.feed(std::vector<int32_t>(ids.begin(), ids.begin() + 30), &la);
  b.feed(std::vector<int32_t>(ids.begin(), ids.begin() + 30), &lb);
  EXPECT_EQ(la, lb);
  const std::string state = tmp_dir() + "/repack.state";
  RemoveOnExit cleanup_state{state};
  a.save_state(state);
  longctx::Session c(plain, so);
  c.load_state(state);  // the fingerprint sees the file's bytes
  for (size_t i = 30; i < ids.size(); ++i) {
    a.feed({ids[i]});
    b.feed({ids[i]});
    c.feed({ids[i]});
    float amax = 0;
    for (float v : b.logits()) amax = std::max(amax, std::fabs(v));
    for (size_t j = 0; j < b.logits().size(); ++j) {
      ASSERT_NEAR(a.logits()[j], b.logits()[j], 1e-4f * amax) << "token " << i;
      ASSERT_EQ(c.logits()[j], b.logits()[j]) << "token " << i;
    }
  }

  // Exported again, the repacked model writes the file's bytes.
  const std::string again = tmp_dir() + "/repack.again.gguf";
  RemoveOnExit cleanup_again{again};
  convert_to_gguf(packed->impl(), again, DType::Q4_0);
  const GgufFile g1 = GgufFile::open(out), g2 = GgufFile::open(again);
  for (const auto& [name, t] : g1.tensors()) {
    const auto& t2 = g2.tensors().at(name);
    ASSERT_EQ(t.nbytes, t2.nbytes) << name;
    EXPECT_EQ(std::memcmp(t.data, t2.data, t.nbytes), 0) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GgufFixture,
                         testing::Values("llama_mha", "llama_gqa", "llama_rope_dynamic", "llama_rope_linear",
                                         "llama_rope_llama3", "llama_rope_longrope", "llama_rope_theta",
                                         "llama_rope_yarn", "longllama_bf16mem", "longllama_grouped",
                                         "longllama_mem", "longllama_nomem"));

// The chat template travels into the GGUF (tokenizer.chat_template, as convert_hf_to_gguf writes
// it): a string, or the "default" entry of a list of named templates; GGUF -> GGUF keeps it.
TEST(GgufModel, ConvertCarriesChatTemplate) {
  const fs::path dir = fs::path(tmp_dir()) / "chat_template_model";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) {
    fs::remove(dir / f);
    fs::copy_file(fs::path(model_dir("llama_mha")) / f, dir / f);
  }
  const std::string tmpl = "{{ bos_token }}{% for m in messages %}<|user|>\n{{ m['content'] }}{% endfor %}";
  const std::string out = tmp_dir() + "/chat_template.gguf", again = tmp_dir() + "/chat_template2.gguf";
  RemoveOnExit cleanup_out{out}, cleanup_again{again};
  for (const nlohmann::json& ct : {nlohmann::json(tmpl), nlohmann::json::array({{{"name", "tool_use"}, {"template", "x"}},
                                                                               {{"name", "default"}, {"template", tmpl}}})}) {
    std::ofstream(dir / "tokenizer_config.json") << nlohmann::json{{"chat_template", ct}, {"model_max_length", 1e30}}.dump();
    auto hf = load_model(dir.string(), LoadOptions{.tokenizer_path = tokenizer_path()});
    convert_to_gguf(*hf, out, DType::F16);
    EXPECT_EQ(GgufFile::open(out).get_str("tokenizer.chat_template", ""), tmpl);
    auto gg = load_model(out);
    convert_to_gguf(*gg, again, DType::F16);
    EXPECT_EQ(GgufFile::open(again).get_str("tokenizer.chat_template", ""), tmpl);
  }
  // A list entry whose name is not a string is skipped (no JSON type error): the problem names
  // the missing "default" entry.
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": [{"name": 7, "template": "x"}]})";
  EXPECT_NE(read_hf_chat_template(dir.string()).problem.find("without a \"default\" entry"), std::string::npos)
      << read_hf_chat_template(dir.string()).problem;
  // Newer transformers save it as chat_template.jinja; tokenizer_config.json's key still wins.
  std::ofstream(dir / "tokenizer_config.json") << nlohmann::json{{"chat_template", tmpl}}.dump();
  std::ofstream(dir / "chat_template.jinja") << "{{ '<|im_start|>' }}";
  EXPECT_EQ(read_hf_chat_template(dir.string()).text, tmpl);
  std::ofstream(dir / "tokenizer_config.json") << R"({"model_max_length": 131072})";
  EXPECT_EQ(read_hf_chat_template(dir.string()).text, "{{ '<|im_start|>' }}");
  convert_to_gguf(*load_model(dir.string()), out, DType::F16);
  EXPECT_EQ(GgufFile::open(out).get_str("tokenizer.chat_template", ""), "{{ '<|im_start|>' }}");
  fs::remove(dir / "chat_template.jinja");
  std::ofstream(dir / "chat_template.json") << R"({"chat_template": "{{ '<|start_header_id|>' }}"})";
  EXPECT_EQ(read_hf_chat_template(dir.string()).text, "{{ '<|start_header_id|>' }}");
  fs::remove(dir / "chat_template.json");
  fs::remove(dir / "tokenizer_config.json");  // none: no key
  EXPECT_EQ(read_hf_chat_template(dir.string()).text, "");
  convert_to_gguf(*load_model(dir.string()), out, DType::F16);
  EXPECT_FALSE(GgufFile::open(out).has("tokenizer.chat_template"));
}

// The whole end-of-generation set survives conversion (gradient_1048k-style configs: eos 128009
// in config.json, [128001, 128009] in generation_config.json; llama.cpp has one eot/eom id).
TEST(GgufModel, EndOfGenerationIdsRoundTrip) {
  auto m = synthetic_model();
  ASSERT_GT(m->config.n_vocab, 9);
  m->config.eog_ids = {9, 5, 7};
  const std::string out = tmp_dir() + "/eog.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*m, out, DType::F32);
  EXPECT_EQ(GgufFile::open(out).get_int_array("longctx.eog_token_ids"), (std::vector<int64_t>{9, 5, 7}));
  EXPECT_EQ(load_model(out)->config.eog_ids, (std::vector<int32_t>{9, 5, 7}));
  m->config.eog_ids.clear();
  convert_to_gguf(*m, out, DType::F32);
  EXPECT_FALSE(GgufFile::open(out).has("longctx.eog_token_ids"));
}

TEST(GgufModel, Llama3WritesLlamaCppRopeFreqs) {
  auto hf = load_model(model_dir("llama_rope_llama3"));
  const std::string out = tmp_dir() + "/llama3.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*hf, out, DType::F32);
  const GgufFile g = GgufFile::open(out);
  EXPECT_EQ(g.get_str("llama.rope.scaling.type"), "none");  // llama.cpp: the factors carry it
  EXPECT_EQ(g.get_str("longctx.rope.scaling.type"), "llama3");
  const TensorView& f = g.tensors().at("rope_freqs.weight");
  ASSERT_EQ(f.shape, (std::vector<int64_t>{hf->config.head_dim / 2}));
  const float* v = static_cast<const float*>(f.data);
  EXPECT_EQ(v[0], 1.0f);                               // highest frequency: unscaled
  EXPECT_EQ(v[f.shape[0] - 1], hf->config.rope.factor);  // lowest: divided by factor
  // A llama.cpp file has rope_freqs but not our keys: the divisors are applied as llama.cpp
  // applies them, and the model reproduces the reference logits of the Llama 3 fixture.
  const std::string plain = tmp_dir() + "/llama3_plain.gguf";
  RemoveOnExit cleanup_plain{plain};
  rewrite(out, plain, [](GgufWriter& w) {
    for (const char* k : {"longctx.rope.scaling.type", "longctx.rope.scaling.factor", "longctx.rope.low_freq_factor",
                          "longctx.rope.high_freq_factor", "llama.rope.scaling.original_context_length"})
      w.erase(k);
  });
  auto m = std::make_unique<Model>();
  load_gguf_model(plain, *m);
  EXPECT_EQ(m->config.rope.type, RopeScaling::None);
  ASSERT_EQ(m->config.rope.freq_factors.size(), size_t(hf->config.head_dim / 2));
  const RopeFreqs a = rope_frequencies(hf->config.rope, 64), b = rope_frequencies(m->config.rope, 64);
  for (size_t i = 0; i < a.inv_freq.size(); ++i) EXPECT_NEAR(b.inv_freq[i], a.inv_freq[i], 1e-6f * a.inv_freq[i]) << i;
  EXPECT_NE(rope_describe(m->config.rope).find("freq_factors"), std::string::npos);
  // Written back out (convert), the divisors travel as rope_freqs.weight again.
  const std::string again = tmp_dir() + "/llama3_again.gguf";
  RemoveOnExit cleanup_again{again};
  convert_to_gguf(*m, again, DType::F32);
  Model m2;
  load_gguf_model(again, m2);
  EXPECT_EQ(m2.config.rope.freq_factors, m->config.rope.freq_factors);
  // A tensor of the wrong length is an error naming it.
  const std::string bad = tmp_dir() + "/llama3_bad.gguf";
  RemoveOnExit cleanup_bad{bad};
  {
    const GgufFile g = GgufFile::open(plain);
    GgufWriter w;
    for (const auto& [k, v] : g.metadata()) w.set(k, v);
    for (const GgufTensorInfo& ti : g.tensor_infos()) {
      if (ti.name == "rope_freqs.weight") {
        w.add_tensor(ti.name, DType::F32, {3}, [](const GgufWriter::Sink& s) { float x[3] = {1, 1, 1}; s(x, 12); });
      } else {
        w.add_tensor(ti.name, g.tensors().at(ti.name));
      }
    }
    w.write(bad);
  }
  try {
    load_gguf(bad);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_freqs.weight"), std::string::npos) << e.what();
  }
}

TEST(GgufModel, SyntheticModelAllKeysAndVocab) {
  auto m = synthetic_model();
  const std::string out = tmp_dir() + "/synthetic.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*m, out, DType::F32);
  const GgufFile g = GgufFile::open(out);
  expect_config_eq(m->config, gguf_read_config(g));
  const SpmVocab v = gguf_read_vocab(g);
  const SpmVocab& e = m->tokenizer->vocab();
  EXPECT_EQ(v.pieces, e.pieces);
  EXPECT_EQ(v.scores, e.scores);
  EXPECT_EQ(v.types, e.types);
  EXPECT_EQ(v.bos_id, e.bos_id);
  EXPECT_EQ(v.eos_id, e.eos_id);
  EXPECT_EQ(v.unk_id, e.unk_id);
  EXPECT_EQ(v.pad_id, e.pad_id);
  EXPECT_EQ(v.add_bos, e.add_bos);
  EXPECT_EQ(v.add_dummy_prefix, e.add_dummy_prefix);
  EXPECT_EQ(g.get_str("llama.rope.scaling.type"), "yarn");
  EXPECT_EQ(g.get_int("llama.rope.scaling.original_context_length"), 16);
}

TEST(GgufModel, QuantizedFallsBackToF16ForRowsNotMultipleOf32) {
  auto m = synthetic_model(/*n_embd=*/48);
  const std::string out = tmp_dir() + "/synthetic48.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*m, out, DType::Q8_0);
  const GgufFile g = GgufFile::open(out);
  EXPECT_EQ(g.tensors().at("blk.0.attn_q.weight").dtype, DType::F16);    // [32, 48]: 48 % 32 != 0
  EXPECT_EQ(g.tensors().at("blk.0.ffn_down.weight").dtype, DType::Q8_0); // [48, 64]
  EXPECT_EQ(g.tensors().at("blk.0.attn_norm.weight").dtype, DType::F32);
}

TEST(GgufModel, SentencePieceVocabRoundTrip) {
  auto hf = load_model(model_dir("llama_mha"), LoadOptions{.tokenizer_path = tokenizer_path()});
  const std::string out = tmp_dir() + "/llama_mha_tok.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*hf, out, DType::F16);
  const GgufFile g = GgufFile::open(out);
  const SpmVocab v = gguf_read_vocab(g);
  const SpmVocab& e = hf->tok().vocab();
  EXPECT_EQ(v.pieces, e.pieces);
  EXPECT_EQ(v.scores, e.scores);
  EXPECT_EQ(v.types, e.types);
  EXPECT_EQ(v.unk_id, e.unk_id);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(g.get_str("tokenizer.ggml.model"), "llama");
  std::unique_ptr<Model> gg;
  try {
    gg = load_model(out);
  } catch (const Error& err) {
    if (std::string(err.what()).find("not implemented") != std::string::npos)
      GTEST_SKIP() << "make_vocab_tokenizer is not implemented yet: " << err.what();
    throw;
  }
  ASSERT_TRUE(gg->tokenizer);
  EXPECT_EQ(gg->tokenizer->vocab().pieces, e.pieces);
  for (const char* text : {"Hello world", "  two  spaces", "caf\xc3\xa9 \xe2\x82\xac 123\n"})
    EXPECT_EQ(gg->tokenizer->encode(text, true), hf->tok().encode(text, true)) << text;
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(GgufErrors, MissingFileAndBadMagicAndVersion) {
  EXPECT_THROW(load_model(tmp_dir() + "/nope.gguf"), Error);
  EXPECT_THROW(GgufFile::open(tmp_dir() + "/nope.gguf"), Error);
  const std::string p = tmp_dir() + "/bad.gguf";
  RemoveOnExit cleanup_p{p};
  write_bytes(p, "");
  EXPECT_THROW(load_gguf(p), Error);
  write_bytes(p, "GGU");
  EXPECT_THROW(load_gguf(p), Error);
  write_bytes(p, std::string("GGML\x03\0\0\0", 8) + std::string(16, '\0'));
  EXPECT_THROW(load_gguf(p), Error);
  for (uint32_t version : {1u, 4u, 0x03000000u}) {
    std::string b = "GGUF" + std::string(20, '\0');
    std::memcpy(b.data() + 4, &version, 4);
    write_bytes(p, b);
    try {
      load_gguf(p);
      ADD_FAILURE() << "version " << version << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("version"), std::string::npos) << e.what();
    }
  }
  // A valid, empty GGUF (no keys, no tensors) parses, but is not a model.
  write_bytes(p, std::string("GGUF\x03\0\0\0", 8) + std::string(16, '\0'));
  EXPECT_NO_THROW(GgufFile::open(p));
  EXPECT_THROW(load_gguf(p), Error);
}

TEST(GgufFormat, ReadsVersion2) {
  // v2 differs from v3 only in allowing big-endian files; little-endian layouts are identical.
  auto m = synthetic_model();
  const std::string out = tmp_dir() + "/v2.gguf";
  RemoveOnExit cleanup_out{out};
  convert_to_gguf(*m, out, DType::F16);
  std::string b = read_bytes(out);
  const uint32_t v2 = 2;
  std::memcpy(b.data() + 4, &v2, 4);
  write_bytes(out, b);
  const GgufFile g = GgufFile::open(out);
  EXPECT_EQ(g.version(), 2u);
  expect_config_eq(m->config, gguf_read_config(g));
}

TEST(GgufErrors, TruncatedAnywhere) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/trunc_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::Q8_0);
  const std::string bytes = read_bytes(good);
  const size_t data_off = GgufFile::open(good).data_offset();
  const std::string p = scratch_dir() + "/trunc.gguf";
  std::vector<size_t> cuts;
  for (size_t n = 0; n < data_off; ++n) cuts.push_back(n);  // every header length
  // The file ends with alignment padding after the last tensor; cutting that is harmless.
  const GgufTensorInfo last = GgufFile::open(good).tensor_infos().back();
  const size_t data_end = data_off + last.offset + last.nbytes;
  for (size_t n = data_off; n < data_end; n += 97) cuts.push_back(n);
  cuts.push_back(data_end - 1);
  for (size_t n : cuts) {
    write_bytes(p, bytes.substr(0, n));
    EXPECT_THROW(load_gguf(p), Error) << "truncated at " << n << " of " << bytes.size();
  }
  write_bytes(p, bytes);
  EXPECT_NO_THROW(gguf_read_config(GgufFile::open(p)));
}

TEST(GgufErrors, BitFlipsInHeaderNeverCrash) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/flip_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::Q4_0);
  const std::string bytes = read_bytes(good);
  const size_t data_off = GgufFile::open(good).data_offset();
  const std::string p = scratch_dir() + "/flip.gguf";
  int rejected = 0, accepted = 0;
  for (size_t i = 0; i < data_off; ++i) {
    for (uint8_t mask : {uint8_t(0xff), uint8_t(1u << (i % 8))}) {
      std::string b = bytes;
      b[i] = char(uint8_t(b[i]) ^ mask);
      write_bytes(p, b);
      try {
        const GgufFile g = GgufFile::open(p);
        gguf_read_config(g);
        if (g.has("tokenizer.ggml.tokens")) gguf_read_vocab(g);
        Model mm;
        load_gguf_model(p, mm);
        ++accepted;
      } catch (const Error&) {
        ++rejected;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "byte " << i << " mask " << int(mask) << ": non-lcx exception " << e.what();
      }
    }
  }
  EXPECT_GT(rejected, 0);
  RecordProperty("accepted", accepted);
}

TEST(GgufErrors, TensorOffsetPastEndAndUnknownType) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/patch_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::F32);
  const std::string bytes = read_bytes(good);
  const std::string p = tmp_dir() + "/patch.gguf";
  RemoveOnExit cleanup_p{p};
  const size_t pos = tensor_info_pos(bytes, "output.weight");  // 2-D: n_dims, ne[2], type, offset
  const size_t type_pos = pos + 4 + 16, off_pos = type_pos + 4;

  for (uint64_t off : {uint64_t(bytes.size()) / 32 * 32, uint64_t(1) << 40, ~uint64_t(0) / 32 * 32}) {
    std::string b = bytes;
    std::memcpy(b.data() + off_pos, &off, 8);
    write_bytes(p, b);
    try {
      load_gguf(p);
      ADD_FAILURE() << "offset " << off << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("output.weight"), std::string::npos) << e.what();
    }
  }
  {
    std::string b = bytes;
    const uint64_t off = 8;  // misaligned
    std::memcpy(b.data() + off_pos, &off, 8);
    write_bytes(p, b);
    EXPECT_THROW(load_gguf(p), Error);
  }
  // Q4_K on rows that are not a multiple of 256 values, IQ4_XS and IQ2_XXS (not read), nonsense
  for (uint32_t type : {12u, 23u, 16u, 99u}) {
    std::string b = bytes;
    std::memcpy(b.data() + type_pos, &type, 4);
    write_bytes(p, b);
    try {
      load_gguf(p);
      ADD_FAILURE() << "type " << type << " accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(ggml_type_name(type)), std::string::npos) << msg;
      EXPECT_NE(msg.find("output.weight"), std::string::npos) << msg;
    }
  }
}

// Tensors sharing bytes load garbage: refused with both tensors named, whether two offsets
// coincide or a type implies more bytes than lie before the next tensor.
TEST(GgufErrors, OverlappingTensorData) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/overlap_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::Q8_0);
  const std::string bytes = read_bytes(good);
  const std::string p = tmp_dir() + "/overlap.gguf";
  RemoveOnExit cleanup_p{p};
  const GgufFile g = GgufFile::open(good);
  auto info = [&](const std::string& name) {
    for (const GgufTensorInfo& ti : g.tensor_infos())
      if (ti.name == name) return ti;
    ADD_FAILURE() << name;
    return GgufTensorInfo{};
  };
  auto expect_overlap = [&](const std::string& b, const std::string& a, const std::string& c) {
    write_bytes(p, b);
    try {
      load_gguf(p);
      ADD_FAILURE() << "overlapping tensors '" << a << "' and '" << c << "' accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("overlaps"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + a + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + c + "'"), std::string::npos) << msg;
    }
  };
  // 2-D records: n_dims, ne[2], type, offset.
  const std::string q = "blk.0.attn_q.weight", k = "blk.0.attn_k.weight";
  ASSERT_EQ(info(q).dtype, DType::Q8_0);
  ASSERT_LT(info(q).offset, info(k).offset);
  {  // attn_k's offset moved onto attn_q's
    std::string b = bytes;
    const uint64_t off = info(q).offset;
    std::memcpy(b.data() + tensor_info_pos(bytes, k) + 4 + 16 + 4, &off, 8);
    expect_overlap(b, q, k);
  }
  {  // Q8_0 attn_q relabelled F16: twice the bytes, into attn_k
    std::string b = bytes;
    const uint32_t f16 = kGgmlF16;
    std::memcpy(b.data() + tensor_info_pos(bytes, q) + 4 + 16, &f16, 4);
    expect_overlap(b, q, k);
  }
}

// A header of many tiny tensor records (24 + name bytes each) is read in linear time: the
// duplicate-name check compared every name with all earlier ones (quadratic: 40k records took
// 44 s in the ASan build, 80k 178 s). The duplicate is still named.
TEST(GgufErrors, ManyTensorRecordsAreCheckedInLinearTime) {
  const uint64_t n = 250000;
  std::string b("GGUF\x03\0\0\0", 8);
  auto put = [&](const auto& v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(n);            // tensor count
  put(uint64_t(0));  // metadata count
  for (uint64_t k = 0; k < n; ++k) {
    // The last record repeats the first name.
    char name[16];
    const int len = std::snprintf(name, sizeof name, "t%07llu", (unsigned long long)(k + 1 == n ? 0 : k));
    put(uint64_t(len));
    b.append(name, size_t(len));
    put(uint32_t(1));           // n_dims
    put(uint64_t(32));          // ne[0]
    put(uint32_t(kGgmlF32));    // type
    put(uint64_t(k * 128));     // offset
  }
  const std::string p = tmp_dir() + "/many_tensors.gguf";
  RemoveOnExit cleanup_p{p};
  write_bytes(p, b);
  // Not timed (speed is for benchmarks): linear, this takes well under a second; quadratic, it
  // ran for hours and CTest's timeout fails the test.
  try {
    GgufFile::open(p);
    ADD_FAILURE() << "duplicate tensor name accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 't0000000'"), std::string::npos) << e.what();
  }
}

// Values config.json refuses are refused in GGUF files too (ModelConfig::validate).
TEST(GgufErrors, LastContextLengthAndTokenIds) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/lcl_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::F32);
  const std::string p = tmp_dir() + "/lcl.gguf";
  RemoveOnExit cleanup_p{p};
  auto expect_error = [&](const std::string& what) {
    try {
      gguf_read_config(GgufFile::open(p));
      ADD_FAILURE() << "accepted; expected an error mentioning '" << what << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  for (uint32_t bad : {0u, (1u << 30) + 1, 0xffffffffu}) {
    rewrite(good, p, [&](GgufWriter& w) { w.set_u32("longllama.last_context_length", bad); });
    expect_error("last_context_length must be in [1, 2^30], got " + std::to_string(bad));
  }
  rewrite(good, p, [](GgufWriter& w) { w.set_u32("tokenizer.ggml.bos_token_id", 99999); });
  expect_error("bos_token_id 99999 is outside the vocabulary");
  rewrite(good, p, [](GgufWriter& w) { w.set_u32("longllama.last_context_length", 1u << 30); });
  EXPECT_EQ(gguf_read_config(GgufFile::open(p)).mem.last_context_length, int64_t(1) << 30);
}

TEST(GgufErrors, ShapeAndTensorSetMismatch) {
  auto m = synthetic_model();
  const std::string good = tmp_dir() + "/mm_src.gguf";
  RemoveOnExit cleanup_good{good};
  convert_to_gguf(*m, good, DType::F16);
  const std::string p = tmp_dir() + "/mm.gguf";
  RemoveOnExit cleanup_p{p};
  auto expect_error = [&](const std::string& what) {
    try {
      load_gguf(p);
      ADD_FAILURE() << "accepted; expected an error mentioning '" << what << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  rewrite(good, p, [](GgufWriter& w) { w.set_u32("llama.feed_forward_length", 65); });
  expect_error("shape");
  rewrite(good, p, [](GgufWriter&) {}, "blk.1.ffn_up.weight");
  expect_error("missing tensor 'blk.1.ffn_up.weight'");
  rewrite(good, p, [](GgufWriter& w) {
    w.add_tensor("blk.9.extra.weight", DType::F32, {4}, [](const GgufWriter::Sink& s) {
      const float z[4] = {};
      s(z, sizeof z);
    });
  });
  expect_error("unexpected tensor");
  rewrite(good, p, [](GgufWriter& w) { w.set_u32("llama.block_count", 1u << 30); });
  expect_error("block_count");
  rewrite(good, p, [](GgufWriter& w) { w.set_str("general.architecture", "gpt2"); });
  expect_error("gpt2");
  rewrite(good, p, [](GgufWriter& w) { w.erase("llama.embedding_length"); });
  expect_error("llama.embedding_length");
  rewrite(good, p, [](GgufWriter& w) { w.set_str("llama.block_count", "two"); });
  expect_error("llama.block_count");
  rewrite(good, p, [](GgufWriter& w) { w.set("longllama.mem_layers", GgufValue::int_array(GgufType::I32, {5})); });
  expect_error("mem_layers");
  rewrite(good, p, [](GgufWriter& w) { w.set("tokenizer.ggml.scores", GgufValue::float_array(GgufType::F32, {1.0})); });
  EXPECT_THROW(gguf_read_vocab(GgufFile::open(p)), Error);
  rewrite(good, p, [](GgufWriter& w) { w.set_str("longctx.rope.scaling.type", "wavy"); });
  expect_error("wavy");
}

// modeling_longllama.py asserts "Attention grouping should be positive"; so does the loader.
TEST(GgufModel, NonPositiveAttentionGroupingRefused) {
  auto hf = load_model(model_dir("longllama_grouped"));
  const std::string out = tmp_dir() + "/grouped.gguf", bad = tmp_dir() + "/grouped_bad.gguf";
  RemoveOnExit c1{out}, c2{bad};
  convert_to_gguf(*hf, out, DType::F32);
  rewrite(out, bad, [](GgufWriter& w) {
    w.set("longllama.mem_attention_grouping", GgufValue::int_array(GgufType::I32, {0, 4}));
  });
  try {
    load_gguf(bad);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must be positive"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lcx
