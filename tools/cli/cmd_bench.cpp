// `longctx bench`: prompt-processing (pp) and generation (tg) speed, measured the way
// llama.cpp's `llama-bench` measures it so the two tables can be read side by side:
//  * pp N: N prompt tokens fed in batches of -b into a fresh context (after D depth tokens for
//    "@ dD"), only the N tokens timed;
//  * tg N: N single-token forward calls, each on the previous one's cache, all timed;
//  * one untimed warm-up (the whole prompt for pp, one token for tg), then -r timed repetitions;
//  * t/s per repetition = tokens / seconds; the table shows mean ± sample stddev over them;
//  * JSON fields keep llama-bench's names and meanings (n_prompt, n_gen, n_depth, n_threads,
//    avg_ns, stddev_ns, avg_ts, stddev_ts, samples_ns, samples_ts).
// Tokens are a fixed pseudo-random sequence (BOS first), so every run times the same work.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common.h"
#include "model/model.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace lcx::cli {
namespace {

using json = nlohmann::ordered_json;  // keep llama-bench's field order
using Clock = std::chrono::steady_clock;

// One row of the table: a (test, depth, threads) combination.
struct BenchTest {
  int64_t n_prompt = 0;  // pp test when > 0
  int64_t n_gen = 0;     // tg test when > 0
  int64_t n_depth = 0;   // tokens already in the context before the timed part
  int64_t n_mem = 0;     // LongLLaMA --mem-fill: memory tokens after the depth (0: as the depth left it)
  int n_threads = 0;
  std::vector<uint64_t> samples_ns;

  // Tokens per second of each repetition, as llama-bench's get_ts(): (n_prompt + n_gen) / t.
  std::vector<double> samples_ts() const {
    std::vector<double> ts;
    for (uint64_t ns : samples_ns) ts.push_back(1e9 * double(n_prompt + n_gen) / double(std::max<uint64_t>(ns, 1)));
    return ts;
  }
  std::string name() const {
    std::string s = n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
    if (n_depth > 0) s += " @ d" + std::to_string(n_depth);
    if (n_mem > 0) s += " m" + std::to_string(n_mem);
    return s;
  }
};

double mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}
// Sample standard deviation (n - 1), 0 for fewer than two samples: llama-bench's stdev().
double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

// Deterministic token stream: BOS, then a 64-bit LCG (Knuth's MMIX constants) mapped into the
// vocabulary above the special ids 0..2. The same for every engine run and every repetition.
struct TokenStream {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  int32_t n_vocab;
  int32_t bos;
  bool first = true;
  TokenStream(int32_t v, int32_t b) : n_vocab(v), bos(b) {}
  int32_t next() {
    if (first) {
      first = false;
      return bos;
    }
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int32_t lo = n_vocab > 3 ? 3 : 0;
    return lo + int32_t((state >> 33) % uint64_t(n_vocab - lo));
  }
  std::vector<int32_t> take(int64_t n) {
    std::vector<int32_t> out(size_t(std::max<int64_t>(n, 0)));
    for (auto& t : out) t = next();
    return out;
  }
};

std::vector<int64_t> int_list(const Args& a, const std::string& flag, const std::string& dflt, int64_t min) {
  std::vector<int64_t> out;
  for (const std::string& s : a.all(flag).empty() ? std::vector<std::string>{dflt} : a.all(flag)) {
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
      try {
        size_t used = 0;
        const long long v = std::stoll(item, &used);
        if (used != item.size() || v < min) throw std::invalid_argument(item);
        out.push_back(v);
      } catch (const std::exception&) {
        fail("option " + flag + " expects comma-separated integers >= " + std::to_string(min) + ", got '" + s + "'");
      }
    }
  }
  if (out.empty()) fail("option " + flag + " has no values");
  return out;
}

// Model facts for the table and the JSON: weight bytes and parameter count as loaded (tied
// embeddings counted once), and llama-bench's "model_type" style description.
struct ModelFacts {
  uint64_t size = 0;
  uint64_t n_params = 0;
  std::string type;
};

ModelFacts model_facts(const lcx::Model& m) {
  ModelFacts f;
  auto add = [&](const lcx::TensorView& t) {
    if (t.data == nullptr && t.nbytes == 0) return;
    f.size += t.nbytes;
    f.n_params += uint64_t(t.numel());
  };
  const auto& w = m.weights;
  add(w.tok_embd);
  add(w.output_norm);
  if (!m.config.tie_embeddings) add(w.output);
  for (const auto& L : w.layers)
    for (const auto* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.w_gate, &L.w_up, &L.w_down})
      add(*t);
  char buf[64];
  const double p = double(f.n_params);
  if (p >= 1e9) std::snprintf(buf, sizeof buf, "%.1fB", p / 1e9);
  else std::snprintf(buf, sizeof buf, "%.0fM", p / 1e6);
  const lcx::DType dt = w.layers.empty() ? w.tok_embd.dtype : w.layers[0].wq.dtype;
  std::string dname = lcx::dtype_name(lcx::dtype_r16_source(dt));  // the file's type, not the panel layout
  std::transform(dname.begin(), dname.end(), dname.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  f.type = std::string(lcx::arch_name(m.config.arch)) + " " + buf + " " + dname;
  return f;
}

std::string human_size(uint64_t bytes) {
  char buf[32];
  if (bytes < (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / (1ull << 30));
  return buf;
}
std::string human_params(uint64_t n) {
  char buf[32];
  if (n < 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f M", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2f B", double(n) / 1e9);
  return buf;
}

struct Runner {
  std::shared_ptr<longctx::Model> model;
  longctx::SessionOptions so;
  int reps = 5;
  bool warmup = true;
  bool progress = false;

  std::unique_ptr<longctx::Session> session(int n_threads) {
    longctx::SessionOptions o = so;
    o.n_threads = n_threads;
    return std::make_unique<longctx::Session>(model, o);
  }

  // Times one repetition in `s`; `base` holds the depth context (or is empty) and is copied into
  // `s` so that every repetition starts from the same state. `s` lives for the whole test, as
  // llama-bench's context does: it clears its KV cache (or restores its saved depth state)
  // between repetitions and keeps its buffers and threads, so neither engine times allocation.
  // With --mem-fill the memory (GBs) is borrowed from `base`, not copied, and handed back after
  // the timed part: one copy in the process instead of two (peak RSS of the 128k-memory decode).
  uint64_t once(const BenchTest& t, longctx::Session& s, longctx::Session* base) {
    const bool borrow = base && t.n_mem > 0 && so.mem_max_tokens <= 0;  // a cap drops rows: copy
    if (borrow) {
      s.borrow_state(*base);
    } else if (base) {
      s.assign_state(*base);
    } else {
      s.reset();
    }
    // Continue the token stream after the depth tokens so the prompt is not a repeat of them.
    TokenStream ts(model->n_vocab(), model->impl().config.bos_id);
    ts.take(t.n_depth);
    if (t.n_depth > 0) ts.first = false;
    const auto prompt = ts.take(t.n_prompt);
    const auto gen = ts.take(t.n_gen);
    const auto t0 = Clock::now();
    if (!prompt.empty()) s.feed(prompt);
    for (int32_t id : gen) s.feed({id});
    const auto ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    if (borrow) s.return_memory(*base);
    return ns;
  }

  void run(BenchTest& t) {
    std::unique_ptr<longctx::Session> base;
    if (t.n_depth > 0) {
      if (progress) std::fprintf(stderr, "bench: %s: filling depth %lld\n", t.name().c_str(), (long long)t.n_depth);
      base = session(t.n_threads);
      TokenStream ts(model->n_vocab(), model->impl().config.bos_id);
      base->feed(ts.take(t.n_depth));
      if (t.n_mem > 0) {
        if (progress) std::fprintf(stderr, "bench: %s: filling memory to %lld tokens\n", t.name().c_str(), (long long)t.n_mem);
        base->fill_memory_for_benchmark(t.n_mem);
      }
    }
    std::unique_ptr<longctx::Session> work = session(t.n_threads);
    if (warmup) {
      BenchTest w = t;
      if (w.n_gen > 0) w.n_gen = 1;  // llama-bench warms generation up with one token
      if (progress) std::fprintf(stderr, "bench: %s: warm-up\n", t.name().c_str());
      once(w, *work, base.get());
    }
    for (int r = 0; r < reps; ++r) {
      if (progress) std::fprintf(stderr, "bench: %s: run %d/%d\n", t.name().c_str(), r + 1, reps);
      t.samples_ns.push_back(once(t, *work, base.get()));
    }
  }
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

json to_json(const BenchTest& t, const ModelFacts& f, const std::string& path, int64_t n_batch,
             const std::string& kv_type, const std::string& when) {
  std::vector<double> ns(t.samples_ns.begin(), t.samples_ns.end());
  const auto ts = t.samples_ts();
  return json{{"engine", "longctx"},
              {"model_filename", path},
              {"model_type", f.type},
              {"model_size", f.size},
              {"model_n_params", f.n_params},
              {"backends", "CPU"},
              {"kernels", longctx::kernels_description()},
              {"n_batch", n_batch},
              {"n_threads", t.n_threads},
              {"type_k", kv_type},
              {"type_v", kv_type},
              {"n_prompt", t.n_prompt},
              {"n_gen", t.n_gen},
              {"n_depth", t.n_depth},
              {"n_mem", t.n_mem},
              {"test_time", when},
              {"avg_ns", uint64_t(mean(ns))},
              {"stddev_ns", uint64_t(stddev(ns))},
              {"avg_ts", mean(ts)},
              {"stddev_ts", stddev(ts)},
              {"samples_ns", t.samples_ns},
              {"samples_ts", ts}};
}

void print_header() {
  std::printf("| %-30s | %10s | %10s | %7s | %7s | %16s | %20s |\n", "model", "size", "params", "backend", "threads",
              "test", "t/s");
  std::printf("| %s | %s: | %s: | %s | %s: | %s: | %s: |\n", std::string(30, '-').c_str(), std::string(9, '-').c_str(),
              std::string(9, '-').c_str(), std::string(7, '-').c_str(), std::string(6, '-').c_str(),
              std::string(15, '-').c_str(), std::string(19, '-').c_str());
}

void print_row(const BenchTest& t, const ModelFacts& f) {
  const auto ts = t.samples_ts();
  char tps[64];
  std::snprintf(tps, sizeof tps, "%.2f ± %.2f", mean(ts), stddev(ts));
  // "±" is two bytes in UTF-8: widen by one so the column lines up, as llama-bench does.
  std::printf("| %-30s | %10s | %10s | %7s | %7d | %16s | %21s |\n", f.type.c_str(), human_size(f.size).c_str(),
              human_params(f.n_params).c_str(), "CPU", t.n_threads, t.name().c_str(), tps);
  std::fflush(stdout);
}

const char* kBenchHelp =
    "usage: longctx bench -m MODEL [-p 512] [-n 128] [-d 0] [-t THREADS] [-r 5] [--json]\n"
    "\n"
    "Measures prompt processing (pp) and generation (tg) speed like llama.cpp's llama-bench:\n"
    "fixed pseudo-random token ids, one untimed warm-up, then -r timed repetitions; t/s is the\n"
    "mean ± sample standard deviation over the repetitions. List options take comma-separated\n"
    "values (or repeat the flag); every combination is one row.\n"
    "\n"
    "  -m, --model MODEL         Hugging Face directory or .gguf file (required)\n"
    "  -p, --n-prompt N[,N..]    prompt lengths, 0 = no pp test (default 512)\n"
    "  -n, --n-gen N[,N..]       generated tokens, 0 = no tg test (default 128)\n"
    "  -d, --n-depth D[,D..]     tokens already in the context before the timed part (default 0)\n"
    "  --mem-fill N              LongLLaMA: after the depth, repeat the memory rows until the memory\n"
    "                            holds N tokens (times decode over a large memory without ingesting it;\n"
    "                            needs a depth that leaves tokens in memory: longer than\n"
    "                            last_context_length, e.g. two windows)\n"
    "  --mem-topk K              LongLLaMA: attend to the K best memory keys (default: all)\n"
    "  -t, --threads N[,N..]     threads (default: all cores)\n"
    "  -b, --batch-size N        prompt tokens per forward call (default 512)\n"
    "  -ctk, -ctv T              local KV cache type: f32 (default), f16, bf16, q8_0 (llama-bench's\n"
    "                            default is f16: pass -ctk f16 -ctv f16 to compare like with like)\n"
    "  -r, --repetitions N       timed repetitions per test (default 5)\n"
    "  --no-warmup               skip the warm-up run\n"
    "  --json                    print a JSON array (llama-bench -o json field names) instead of a table\n"
    "  -o, --output md|json      same as --json when json\n"
    "  --progress                report each step on stderr\n"
    "  --tokenizer FILE          tokenizer.model (only needed by models without one for loading)\n"
    "  --mmap, --no-mmap         weights mapped, or read into huge pages (default: huge pages when possible)\n"
    "  --no-repack               keep Q4_0/Q4_K/Q5_0 matrices in the file's layout (default: AVX-512\n"
    "                            16-row panels)\n";

}  // namespace

int cmd_bench(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("%s\nOverrides:\n%s", kBenchHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  // bench has its own short flags (llama-bench's): -p is a prompt length here, not text.
  const std::map<std::string, std::string> aliases = {
      {"-m", "--model"},   {"-p", "--n-prompt"},   {"-n", "--n-gen"},       {"-d", "--n-depth"},
      {"-t", "--threads"}, {"-b", "--batch-size"}, {"-r", "--repetitions"}, {"-o", "--output"},
      {"-ctk", "--cache-type"}, {"-ctv", "--cache-type"}, {"--cache-type-k", "--cache-type"},
      {"--cache-type-v", "--cache-type"}};
  Args a("bench", argc, argv,
         {"--model", "--tokenizer", "--n-prompt", "--n-gen", "--n-depth", "--threads", "--batch-size",
          "--repetitions", "--output", "--cache-type", "--mem-fill", "--mem-topk"},
         {"--json", "--no-warmup", "--progress"}, aliases, true);
  const auto prompts = int_list(a, "--n-prompt", "512", 0);
  const auto gens = int_list(a, "--n-gen", "128", 0);
  const auto depths = int_list(a, "--n-depth", "0", 0);
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  const auto threads = int_list(a, "--threads", std::to_string(hw), 1);
  const long long reps = a.integer("--repetitions", 5);
  if (reps < 1) fail("--repetitions must be >= 1");
  const long long n_batch = a.integer("--batch-size", 512);
  if (n_batch < 1) fail("--batch-size must be >= 1");
  const std::string output = a.has("--json") ? "json" : a.str("--output", "md");
  if (output != "md" && output != "json") fail("--output must be md or json, got '" + output + "'");

  longctx::LoadOptions lo;
  lo.tokenizer_path = a.str("--tokenizer");
  lo.weights = a.str("--weights-load", "auto");
  lo.repack = a.str("--repack", "yes") != "no";
  lo.overrides = a.overrides();
  const std::string path = a.required("--model");
  Runner run;
  run.model = longctx::Model::load(path, lo);
  run.reps = int(reps);
  run.warmup = !a.has("--no-warmup");
  run.progress = a.has("--progress");
  run.so.n_batch = n_batch;
  run.so.cache_type = cache_type(a);
  run.so.mem_topk = a.integer("--mem-topk", 0);
  if (run.so.mem_topk < 0) fail("--mem-topk must be >= 0");
  const long long mem_fill = a.integer("--mem-fill", 0);
  if (mem_fill < 0) fail("--mem-fill must be >= 0");
  if (mem_fill > 0 && !run.model->has_fot_memory()) fail("--mem-fill needs a LongLLaMA model (this one has no FoT memory)");
  run.so.on_warning = [](const std::string&) {};  // depth past the trained context is intended here
  const ModelFacts facts = model_facts(run.model->impl());
  const std::string when = utc_now();

  for (int64_t d : depths)
    if (mem_fill > 0 && d == 0)
      fail("--mem-fill repeats the memory a depth left behind: give -d longer than last_context_length (e.g. "
           "two windows: -d " + std::to_string(2 * run.model->n_ctx_train()) + ")");
  std::vector<BenchTest> tests;
  for (int64_t th : threads)
    for (int64_t d : depths) {
      for (int64_t p : prompts)
        if (p > 0) tests.push_back({p, 0, d, mem_fill, int(th), {}});
      for (int64_t n : gens)
        if (n > 0) tests.push_back({0, n, d, mem_fill, int(th), {}});
    }
  if (tests.empty()) fail("nothing to measure: give -p or -n greater than 0");

  // Which kernels produced the figures (stderr: stdout stays a table or JSON for scripts).
  std::fprintf(stderr, "bench: kernels %s\n", longctx::kernels_description().c_str());
  json out = json::array();
  if (output == "md") print_header();
  for (auto& t : tests) {
    run.run(t);
    if (output == "md") print_row(t, facts);
    else out.push_back(to_json(t, facts, path, n_batch, run.so.cache_type, when));
  }
  if (output == "json") std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace lcx::cli
