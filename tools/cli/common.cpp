#include "common.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "runtime/error.h"
#include "runtime/mmap_file.h"

namespace lcx::cli {

const char* kModelHelp =
    "  -m, --model MODEL         Hugging Face directory or .gguf file (required)\n"
    "  --tokenizer FILE          tokenizer.model to use when the model has none\n"
    "  --mmap, --no-mmap         weights: map the file, or read it into 2 MiB huge pages (default: huge\n"
    "                            pages when the kernel offers them and the file is >= 32 MiB and fits in\n"
    "                            60 % of free RAM)\n"
    "  --no-repack               keep Q4_0/Q4_K/Q5_0 matrices in the file's layout (default: 16-row\n"
    "                            panels for the AVX-512 decode kernels; same results up to float\n"
    "                            summation order)\n";

const char* kSessionHelp =
    "  -t, --threads N           threads (default: all cores)\n"
    "  -c, --ctx-size N          LLaMA: hard context limit (default: none; warns past the trained context)\n"
    "  -b, --batch-size N        prompt tokens per forward call (default 512)\n"
    "  --mem-topk K              LongLLaMA: attend to the K best memory keys per query and head\n"
    "  --mem-max-tokens N        LongLLaMA: keep at most N memory tokens (oldest leave first)\n"
    "  --mem-index exact|hnsw    LongLLaMA with --mem-topk: exact top-k, or an approximate HNSW index\n"
    "  --hnsw-ef N               --mem-index hnsw: search beam width (default max(128, 4K))\n"
    "  --hnsw-m N                --mem-index hnsw: graph degree (default 16)\n"
    "  -ctk, -ctv, --cache-type T  local KV cache storage: f32 (default, exact), f16, bf16, q8_0\n";

const char* kSamplingHelp =
    "  -n, --n-predict N         tokens to generate (default 128)\n"
    "  --temp T                  temperature (default 0.8; 0 = greedy)\n"
    "  --top-k K                 (default 40; 0 = off)\n"
    "  --top-p P                 (default 0.95; 1 = off)\n"
    "  --min-p P                 (default 0.05; 0 = off)\n"
    "  --repeat-penalty R        (default 1.0 = off)\n"
    "  --repeat-last-n N         tokens the penalty looks back over (default 64)\n"
    "  --seed S                  random seed (default fixed)\n"
    "  --stop TEXT               stop string (repeatable)\n"
    "  --ignore-eos              keep generating after the end-of-sequence token\n"
    "  --lookup N                prompt lookup decoding: feed up to N tokens that followed the last\n"
    "                            2-3 tokens earlier in the text as drafts with each token (0 = off,\n"
    "                            default). Same output, fewer forward calls where the text repeats\n"
    "                            the prompt; 1-2 on CPUs (a 2-token call costs ~1.1x one token, a\n"
    "                            4-token call ~2x). Not with Dynamic NTK or LongRoPE scaling\n";

std::string sampling_help(int n_predict_default) {
  std::string h = kSamplingHelp;
  const std::string from = "tokens to generate (default 128)";
  if (const size_t at = h.find(from); at != std::string::npos)
    h.replace(at, from.size(), "tokens to generate (default " + std::to_string(n_predict_default) + ")");
  return h;
}

const std::set<std::string> kModelFlags = {"--model", "--tokenizer"};
const std::set<std::string> kSessionFlags = {"--threads", "--ctx-size", "--batch-size", "--mem-topk", "--mem-max-tokens",
                                             "--mem-index", "--hnsw-ef", "--hnsw-m", "--cache-type"};
const std::set<std::string> kSamplingFlags = {"--n-predict", "--temp", "--top-k", "--top-p", "--min-p",
                                              "--repeat-penalty", "--repeat-last-n", "--seed", "--stop", "--lookup"};
const std::map<std::string, std::string> kAliases = {
    {"-m", "--model"}, {"-p", "--prompt"}, {"-f", "--file"}, {"-n", "--n-predict"}, {"-t", "--threads"},
    {"-c", "--ctx-size"}, {"-b", "--batch-size"}, {"-o", "--out"}, {"-s", "--seed"}, {"-h", "--help"},
    {"-ctk", "--cache-type"}, {"-ctv", "--cache-type"}, {"--cache-type-k", "--cache-type"},
    {"--cache-type-v", "--cache-type"}};

std::set<std::string> join(std::initializer_list<std::set<std::string>> sets) {
  std::set<std::string> out;
  for (const auto& s : sets) out.insert(s.begin(), s.end());
  return out;
}

bool wants_help(int argc, char** argv) {
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
  return false;
}

std::shared_ptr<longctx::Model> load(const Args& a) {
  longctx::LoadOptions lo;
  lo.tokenizer_path = a.str("--tokenizer");
  lo.weights = a.str("--weights-load", "auto");
  lo.repack = a.str("--repack", "yes") != "no";
  lo.overrides = a.overrides();
  return longctx::Model::load(a.required("--model"), lo);
}

std::string cache_type(const Args& a) {
  // Keys and values share one storage format here (llama.cpp lets them differ).
  const auto all = a.all("--cache-type");
  for (const auto& t : all)
    if (t != all.front())
      fail("-ctk/-ctv/--cache-type: keys and values use one cache type in longctx, got '" + all.front() + "' and '" +
           t + "': give the same type to both");
  return all.empty() ? "f32" : all.front();
}

longctx::SessionOptions session_options(const Args& a) {
  longctx::SessionOptions so;
  const int64_t threads = a.integer("--threads", 0);
  if (threads < 0 || threads > 1 << 20) lcx::fail("--threads " + std::to_string(threads) + " is out of range");
  so.n_threads = int(threads);
  so.n_ctx = a.integer("--ctx-size", 0);
  so.n_batch = a.integer("--batch-size", 512);
  so.mem_topk = a.integer("--mem-topk", 0);
  so.mem_max_tokens = a.integer("--mem-max-tokens", 0);
  so.mem_index = a.str("--mem-index", "exact");
  so.hnsw_ef = int(a.integer("--hnsw-ef", 0, 0, 1 << 24));
  so.hnsw_m = int(a.integer("--hnsw-m", 16, 2, 10000));  // hnswlib caps M at 10000
  so.cache_type = cache_type(a);
  if (so.n_threads < 0 || so.n_ctx < 0 || so.n_batch < 0 || so.mem_topk < 0 || so.mem_max_tokens < 0)
    lcx::fail("thread, context, batch and memory counts must not be negative");
  so.on_warning = [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); };
  return so;
}

longctx::GenerateOptions generate_options(const Args& a) {
  longctx::GenerateOptions g;
  g.n_predict = int32_t(a.integer("--n-predict", 128, INT32_MIN, INT32_MAX));
  g.sampling.temperature = float(a.number("--temp", 0.8));
  g.sampling.top_k = int32_t(a.integer("--top-k", 40, 0, INT32_MAX));
  g.sampling.top_p = float(a.number("--top-p", 0.95));
  g.sampling.min_p = float(a.number("--min-p", 0.05));
  g.sampling.repeat_penalty = float(a.number("--repeat-penalty", 1.0));
  g.sampling.repeat_last_n = int32_t(a.integer("--repeat-last-n", 64, -1, INT32_MAX));
  g.sampling.seed = uint64_t(a.integer("--seed", 0xC0FFEE));
  g.stop = a.all("--stop");
  g.ignore_eos = a.has("--ignore-eos");
  const int64_t lookup = a.integer("--lookup", 0);
  if (lookup < 0 || lookup > 15) lcx::fail("--lookup must be in 0..15 (draft tokens per step; 3 is one decode pass)");
  g.lookup = int32_t(lookup);
  // Written so that NaN fails every test (a NaN compares false with everything).
  if (g.n_predict < 0) lcx::fail("--n-predict must be >= 0");
  if (!(g.sampling.temperature >= 0 && std::isfinite(g.sampling.temperature))) lcx::fail("--temp must be a number >= 0");
  if (!(g.sampling.top_p > 0 && g.sampling.top_p <= 1)) lcx::fail("--top-p must be in (0, 1]");
  if (!(g.sampling.min_p >= 0 && g.sampling.min_p <= 1)) lcx::fail("--min-p must be in [0, 1]");
  if (!(g.sampling.repeat_penalty > 0 && std::isfinite(g.sampling.repeat_penalty)))
    lcx::fail("--repeat-penalty must be a number > 0");
  return g;
}

std::string read_document(const Args& a) {
  const std::string path = a.required("--file");
  // 1 GiB of text is ~250M tokens, far past any context; more is a mistake (/dev/zero, a disk image).
  std::string text = lcx::read_text_file(path, size_t(1) << 30);
  if (text.empty()) lcx::fail("-f/--file '" + path + "' is empty: give a file with text");
  return text;
}

void Progress::operator()(int64_t done, int64_t total) {
  const auto now = std::chrono::steady_clock::now();
  // Redraw at most ten times a second (a long document has thousands of windows).
  if (done < total && shown && now - last < std::chrono::milliseconds(100)) return;
  last = now;
  const double s = std::chrono::duration<double>(now - t0).count();
  const double tps = s > 0 ? double(done) / s : 0;
  const double eta = tps > 0 ? double(total - done) / tps : 0;
  std::fprintf(stderr, "\rprompt: %lld/%lld tokens  %.1f tok/s  ETA %.0fs   ", (long long)done, (long long)total, tps, eta);
  shown = true;
}
void Progress::end() {
  if (shown) std::fprintf(stderr, "\n");
}



}  // namespace lcx::cli
