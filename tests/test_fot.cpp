// Focused Transformer memory beyond the reference: kNN memory attention, memory caps, saved
// state, clones and quantised memory — on the LongLLaMA fixture models through the public API.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/state_checksum.h"
#include "longctx/longctx.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

std::string model_dir(const std::string& m) { return (fs::path(fixtures_dir()) / "models" / m).string(); }

std::vector<int32_t> case_ids(const std::string& name) {
  auto j = nlohmann::json::parse(read_file((fs::path(fixtures_dir()) / "cases" / name / "case.json").string()));
  return j["input_ids"].get<std::vector<int32_t>>();
}

std::shared_ptr<longctx::Model> load(const std::string& m, std::vector<std::pair<std::string, std::string>> ov = {}) {
  longctx::LoadOptions lo;
  lo.overrides = std::move(ov);
  return longctx::Model::load(model_dir(m), lo);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

std::vector<float> run(const std::shared_ptr<longctx::Model>& m, const std::vector<int32_t>& ids,
                       longctx::SessionOptions so = {}) {
  so.n_threads = 1;
  longctx::Session s(m, so);
  std::vector<float> out;
  s.feed(ids, &out);
  return out;
}

TEST(FotMemory, MemoryIsUsedAndCounted) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  longctx::Session s(m);
  s.feed(case_ids("longllama_mem_fwd300_lcl16"));
  EXPECT_EQ(s.n_memory(), 300 - 16);  // every prefix window went to memory
  EXPECT_GT(s.cache_bytes(), 0u);
}

// `bench --mem-fill`: the memory is the depth's rows repeated to the requested size; decode
// over it runs, and a model without memory is refused.
TEST(FotMemory, FillForBenchmarkRepeatsRows) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  longctx::Session s(m);
  std::vector<int32_t> ids;
  for (int i = 0; i < 80; ++i) ids.push_back(1 + (i * 37) % 900);
  s.feed(ids);
  const int64_t before = s.n_memory();
  ASSERT_GT(before, 0);
  s.fill_memory_for_benchmark(before * 3 + 5);
  EXPECT_EQ(s.n_memory(), before * 3 + 5);
  s.feed({42});
  for (float x : s.logits()) ASSERT_TRUE(std::isfinite(x));
  s.fill_memory_for_benchmark(1);  // never shrinks
  EXPECT_EQ(s.n_memory(), before * 3 + 5);
  longctx::Session empty(m);
  EXPECT_THROW(empty.fill_memory_for_benchmark(100), std::runtime_error);
  longctx::Session plain(longctx::Model::load(model_dir("llama_mha")));
  EXPECT_THROW(plain.fill_memory_for_benchmark(100), std::runtime_error);
}

TEST(FotMemory, TopKAtLeastMemorySizeEqualsDense) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  const auto dense = run(m, ids);
  longctx::SessionOptions so;
  so.mem_topk = 1000;  // >= 284 memory tokens
  EXPECT_EQ(max_abs_diff(dense, run(m, ids, so)), 0.0);
  so.mem_topk = 32;  // a real kNN restriction: logits move, but stay finite and close
  const double d = max_abs_diff(dense, run(m, ids, so));
  EXPECT_GT(d, 0.0);
  EXPECT_LT(d, 1.0);
  std::printf("[ kNN ] top-32 of 284 memory keys: max |logit diff| vs dense %.3g\n", d);
}

TEST(FotMemory, MemMaxTokensCapsMemory) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  longctx::SessionOptions so;
  so.mem_max_tokens = 64;
  longctx::Session s(m, so);
  s.feed(case_ids("longllama_mem_fwd300_lcl16"));
  EXPECT_EQ(s.n_memory(), 64);
}

// borrow_state / return_memory (`longctx bench --mem-fill`): the borrower continues exactly as a
// clone would, memory rows it appends are dropped on return, and the lender is left unchanged
// (its next feed equals a clone's), repeatably; with the exact and the HNSW memory search.
TEST(FotMemory, BorrowedMemoryReturnsUnchanged) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  const std::vector<int32_t> doc(ids.begin(), ids.begin() + 250), q(ids.begin() + 250, ids.end());
  for (const char* index : {"exact", "hnsw"}) {
    SCOPED_TRACE(index);
    longctx::SessionOptions so;
    so.n_threads = 1;
    so.mem_index = index;
    if (std::string(index) == "hnsw") so.mem_topk = 8;
    longctx::Session a(m, so);
    a.feed(doc);
    const int64_t mem0 = a.n_memory();
    ASSERT_GT(mem0, 0);
    std::vector<float> want;
    a.clone()->feed(q, &want);
    longctx::Session w(m, so);
    for (int rep = 0; rep < 2; ++rep) {
      w.borrow_state(a);
      EXPECT_EQ(w.history(), a.history());
      std::vector<float> got;
      w.feed(q, &got);
      EXPECT_EQ(max_abs_diff(want, got), 0.0);
      EXPECT_GT(w.n_memory(), mem0);  // the feed appended rows, dropped on return
      w.return_memory(a);
      EXPECT_EQ(w.n_past(), 0);
      EXPECT_EQ(a.n_memory(), mem0);
    }
    std::vector<float> again;
    a.feed(q, &again);
    EXPECT_EQ(max_abs_diff(want, again), 0.0);
    EXPECT_THROW(w.return_memory(a), std::runtime_error);  // nothing borrowed
    longctx::SessionOptions capped = so;
    capped.mem_max_tokens = 64;
    longctx::Session c(m, capped);
    EXPECT_THROW(c.borrow_state(a), std::runtime_error);
  }
}

TEST(FotMemory, SavedStateContinuesExactly) {
  auto m = load("longllama_mem", {{"--last-context-length", "16"}});
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  const std::vector<int32_t> doc(ids.begin(), ids.begin() + 250), q(ids.begin() + 250, ids.end());
  longctx::SessionOptions so;
  so.n_threads = 1;
  longctx::Session a(m, so);
  a.feed(doc);
  const std::string path = (fs::path(tmp_dir()) / "doc.mem").string();
  a.save_state(path);
  auto b = a.clone();
  longctx::Session c(m, so);
  c.load_state(path);
  // assign_state over a session holding other (longer) input: the same as a fresh clone.
  longctx::Session w(m, so);
  w.feed(ids);
  w.assign_state(a);
  EXPECT_EQ(w.history(), a.history());
  std::vector<float> la, lb, lc, le;
  a.feed(q, &la);
  b->feed(q, &lb);
  c.feed(q, &lc);
  w.feed(q, &le);
  EXPECT_EQ(max_abs_diff(la, lb), 0.0);
  EXPECT_EQ(max_abs_diff(la, lc), 0.0);
  EXPECT_EQ(max_abs_diff(la, le), 0.0);
  EXPECT_EQ(c.n_memory(), a.n_memory());

  // A version-2 file (same payload, byte-serial FNV-1a checksum) written by an earlier longctx
  // still loads and continues exactly; a version the reader does not know is refused by name.
  std::string v2 = read_file(path);
  ASSERT_GT(v2.size(), 20u);
  uint32_t version;
  std::memcpy(&version, v2.data() + 8, 4);
  EXPECT_EQ(version, 3u);
  auto with_version = [&](uint32_t ver, const std::string& name) {
    std::string b = v2;
    std::memcpy(b.data() + 8, &ver, 4);
    const uint64_t h = longctx::state_checksum(ver, b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
    const std::string p = path + name;
    { std::ofstream(p, std::ios::binary) << b; }
    return p;
  };
  longctx::Session d(m, so);
  d.load_state(with_version(2, ".v2"));
  std::vector<float> ld;
  d.feed(q, &ld);
  EXPECT_EQ(max_abs_diff(la, ld), 0.0);
  longctx::Session e(m, so);
  try {
    e.load_state(with_version(4, ".v4"));
    ADD_FAILURE() << "loaded a version-4 state";
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("version 4"), std::string::npos) << err.what();
  }
}

TEST(FotMemory, StateHashIsStreaming) {
  // Any split of the bytes into add() calls gives the checksum of the whole (the writer hashes
  // field by field, the reader in 64 MiB chunks); one changed byte or a shorter input changes it.
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 131 + 7);
  const uint64_t whole = longctx::state_checksum(3, data.data(), data.size());
  for (size_t step : {1, 3, 8, 31, 32, 33, 100, 999}) {
    longctx::StateHash h;
    for (size_t off = 0; off < data.size(); off += step) h.add(data.data() + off, std::min(step, data.size() - off));
    EXPECT_EQ(h.finish(), whole) << "step " << step;
  }
  for (size_t i : {0, 31, 32, 500, 999}) {
    std::string d = data;
    d[i] ^= 1;
    EXPECT_NE(longctx::state_checksum(3, d.data(), d.size()), whole) << "byte " << i;
  }
  EXPECT_NE(longctx::state_checksum(3, data.data(), data.size() - 1), whole);
  EXPECT_NE(longctx::state_checksum(3, data.data(), data.size() - 32), whole);
}

TEST(FotMemory, SavedStateRefusedForOtherModelOrSettings) {
  auto m = load("longllama_mem");
  longctx::Session a(m);
  a.feed(case_ids("longllama_mem_fwd300_lcl16"));
  const std::string path = (fs::path(tmp_dir()) / "other.mem").string();
  a.save_state(path);
  auto other = load("longllama_grouped");
  longctx::Session b(other);
  EXPECT_THROW(b.load_state(path), std::runtime_error);
  auto bf16 = load("longllama_mem", {{"--mem-dtype", "bfloat16"}});
  longctx::Session c(bf16);
  EXPECT_THROW(c.load_state(path), std::runtime_error);
  // Corrupt: flip one byte in the middle.
  std::string bytes = read_file(path);
  bytes[bytes.size() / 2] ^= 0x40;
  const std::string bad = path + ".bad";
  { std::ofstream(bad, std::ios::binary) << bytes; }
  longctx::Session d(m);
  EXPECT_THROW(d.load_state(bad), std::runtime_error);
  EXPECT_THROW(d.load_state(path + ".missing"), std::runtime_error);
}

// A state whose checksum is right but whose sizes disagree (written by a buggy or hostile
// tool) is refused by load_state instead of crashing the next forward (found by fuzz_state).
TEST(FotMemory, SavedStateWithInconsistentSizesRefused) {
  auto m = load("longllama_mem");
  longctx::SessionOptions so;
  so.n_threads = 1;
  longctx::Session a(m, so);
  a.feed(case_ids("longllama_mem_fwd300_lcl16"));
  ASSERT_GT(a.n_memory(), 0);
  const std::string path = (fs::path(tmp_dir()) / "sizes.mem").string();
  a.save_state(path);
  const std::string good = read_file(path);
  // Layout: "LCXSTATE", u32 version, u64 model fingerprint, then i64 n_mem, i64 next_pos ...;
  // the last 8 bytes are a checksum of everything before them (engine/state_checksum.h).
  auto with = [&](size_t offset, int64_t value) {
    std::string b = good;
    std::memcpy(b.data() + offset, &value, 8);
    const uint64_t h = longctx::state_checksum(3, b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
    const std::string p = path + ".edit";
    { std::ofstream(p, std::ios::binary) << b; }
    return p;
  };
  for (auto [offset, value] : {std::pair<size_t, int64_t>{20, a.n_memory() + 1000}, {20, -1}, {28, -5}}) {
    longctx::Session b(m, so);
    try {
      b.load_state(with(offset, value));
      ADD_FAILURE() << "loaded a state with field at " << offset << " = " << value;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
    }
    b.feed({1, 2, 3});  // still usable
  }
  longctx::Session c(m, so);
  c.load_state(with(20, a.n_memory()));  // the unchanged value loads
  EXPECT_EQ(c.n_memory(), a.n_memory());
}

TEST(FotMemory, QuantisedMemoryError) {
  // Per-row q8 memory (each head vector: int8 values and one float32 scale) against float32.
  const auto ids = case_ids("longllama_mem_fwd300_lcl16");
  auto f32 = load("longllama_mem", {{"--last-context-length", "16"}});
  auto q8 = load("longllama_mem", {{"--last-context-length", "16"}, {"--mem-dtype", "q8_0"}});
  auto bf16 = load("longllama_mem", {{"--last-context-length", "16"}, {"--mem-dtype", "bfloat16"}});
  const auto ref = run(f32, ids);
  const double dq8 = max_abs_diff(ref, run(q8, ids));
  const double dbf = max_abs_diff(ref, run(bf16, ids));
  std::printf("[ memory dtype ] max |logit diff| vs float32 memory: q8_0 %.3g, bfloat16 %.3g\n", dq8, dbf);
  EXPECT_LT(dq8, 5e-2);  // int8 keeps ~7 significant bits per value, bf16 8
  EXPECT_LT(dbf, 5e-3);
}

TEST(FotMemory, NoMemoryLayersIsWindowedLlama) {
  // mem_layers: [] with a short input is plain LLaMA: same logits with any memory settings.
  auto a = load("longllama_nomem");
  auto b = load("longllama_nomem", {{"--mem-dtype", "bfloat16"}});
  const auto ids = case_ids("longllama_nomem_fwd30");
  EXPECT_EQ(max_abs_diff(run(a, ids), run(b, ids)), 0.0);
}


// --cache-type (llama.cpp's -ctk/-ctv): the local KV cache in f16/bf16/q8 rows. Not exact (the
// fixtures' 1e-4 needs f32, the default) but close, incremental decode agrees with one call,
// and a state saved with one cache type loads into a session with another (rows converted).
TEST(LocalCacheType, CloseToF32AndConsistent) {
  struct M { const char* model; const char* kase; std::vector<std::pair<std::string, std::string>> ov; };
  const std::vector<M> models = {{"llama_gqa", "llama_gqa_len17", {}},
                                 {"llama_rope_yarn", "llama_rope_yarn_len96", {}},
                                 {"longllama_mem", "longllama_mem_fwd300_lcl16", {{"--last-context-length", "16"}}}};
  for (const auto& mm : models) {
    auto m = load(mm.model, mm.ov);
    const auto ids = case_ids(mm.kase);
    const auto ref = run(m, ids);
    for (const char* t : {"f16", "bf16", "q8_0"}) {
      longctx::SessionOptions so;
      so.cache_type = t;
      const auto got = run(m, ids, so);
      const double d = max_abs_diff(ref, got);
      std::printf("[ cache %s ] %s: max |logit diff| vs f32 cache %.3g\n", t, mm.kase, d);
      // measured: f16 <= 4e-3, bf16 <= 3e-2, q8_0 <= 8e-2 on these models
      EXPECT_LT(d, std::string(t) == "f16" ? 1e-2 : 0.15) << mm.kase << " " << t;
      EXPECT_GT(d, 0.0) << "cache type " << t << " had no effect";
    }
  }
}

TEST(LocalCacheType, StateConvertsBetweenTypesAndBadTypeIsRefused) {
  auto m = load("llama_gqa");
  const auto ids = case_ids("llama_gqa_len17");
  const std::vector<int32_t> head(ids.begin(), ids.begin() + 10), tail(ids.begin() + 10, ids.end());
  longctx::SessionOptions f16;
  f16.n_threads = 1;
  f16.cache_type = "f16";
  longctx::Session a(m, f16);
  a.feed(head);
  const std::string path = (fs::path(tmp_dir()) / "f16cache.state").string();
  a.save_state(path);
  longctx::SessionOptions f32;
  f32.n_threads = 1;
  longctx::Session b(m, f32);
  b.load_state(path);  // f16 rows widened to f32: the same values
  longctx::Session c(m, f16);
  c.load_state(path);
  std::vector<float> la, lb, lc;
  a.feed(tail, &la);
  b.feed(tail, &lb);
  c.feed(tail, &lc);
  EXPECT_EQ(max_abs_diff(la, lc), 0.0);
  EXPECT_LT(max_abs_diff(la, lb), 1e-2);  // tail keys f32 in b, f16 in a
  longctx::SessionOptions bad;
  bad.cache_type = "f8";
  EXPECT_THROW(longctx::Session(m, bad), std::runtime_error);
}

// feed_with_logits hands over the same logits as feed(all_logits), one forward call at a time
// (LongLLaMA: prefix windows, then the last tokens; LLaMA: batches), in order and complete.
TEST(FeedWithLogits, SameRowsAsAllLogits) {
  for (const char* name : {"longllama_mem", "llama_mha"}) {
    auto m = std::string(name) == "longllama_mem" ? load(name, {{"--last-context-length", "16"}}) : load(name);
    const auto ids = case_ids("longllama_mem_fwd300_lcl16");
    const auto want = run(m, ids);
    longctx::SessionOptions so;
    so.n_threads = 1;
    so.n_batch = 64;
    longctx::Session s(m, so);
    const int64_t V = m->n_vocab();
    std::vector<float> got(ids.size() * size_t(V), NAN);
    int64_t next = 0, calls = 0;
    s.feed_with_logits(ids, [&](int64_t first, int64_t n, const float* rows) {
      EXPECT_EQ(first, next);
      std::copy(rows, rows + n * V, got.begin() + first * V);
      next = first + n;
      ++calls;
    });
    EXPECT_EQ(next, int64_t(ids.size())) << name;
    EXPECT_GT(calls, 1) << name;
    EXPECT_LT(max_abs_diff(got, want), 1e-5) << name;
  }
}

// Session::truncate keeps a prefix of a LLaMA session exactly: truncate + feed the rest gives
// the logits of feeding everything fresh. LongLLaMA (and length-dependent RoPE) refuse it.
TEST(SessionTruncate, PrefixReuseIsExactForLlama) {
  auto m = load("llama_mha");
  const auto ids = case_ids("llama_mha_len64");
  longctx::SessionOptions so;
  so.n_threads = 1;
  longctx::Session fresh(m, so), s(m, so);
  fresh.feed(ids);
  std::vector<int32_t> other(ids.begin(), ids.begin() + 40);
  for (int i = 0; i < 10; ++i) other.push_back(100 + i);
  s.feed(other);
  ASSERT_TRUE(s.can_truncate());
  s.truncate(40);
  EXPECT_EQ(s.n_past(), 40);
  EXPECT_EQ(s.history().size(), 40u);
  s.feed(std::vector<int32_t>(ids.begin() + 40, ids.end()));
  EXPECT_LT(max_abs_diff(s.logits(), fresh.logits()), 1e-5);
  EXPECT_THROW(s.truncate(65), std::runtime_error);
  EXPECT_THROW(s.truncate(-1), std::runtime_error);
  s.truncate(0);
  EXPECT_EQ(s.n_past(), 0);

  auto fot = load("longllama_mem");
  longctx::Session f(fot, so);
  f.feed(case_ids("longllama_mem_fwd300_lcl16"));
  EXPECT_FALSE(f.can_truncate());
  EXPECT_THROW(f.truncate(10), std::runtime_error);
  auto dyn = load("llama_rope_dynamic");
  longctx::Session d(dyn, so);
  d.feed({1, 2, 3});
  EXPECT_FALSE(d.can_truncate());
}

}  // namespace
