// `longctx passkey`, `longctx perplexity`, `longctx synth`: evaluation commands. The protocols
// live in tools/eval/ (prompt building, the lengths x depths grid, perplexity windows); this
// file parses flags, connects them to a model and a session, and writes tables, JSON and plots.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../eval/perplexity.h"
#include "../eval/retrieval.h"
#include "../eval/tasks.h"
#include "common.h"
#include "model/model.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/mmap_file.h"

namespace lcx::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* kGridHelp =
    "  --lengths LIST            prompt lengths in tokens, BOS included (2k = 2048; default 2k,4k,8k)\n"
    "  --depths LIST             where the fact sits in the filler, 0 = start .. 1 = end\n"
    "                            (default 0,0.25,0.5,0.75,1)\n"
    "  --trials N                trials per length and depth, each with its own random key (default 5)\n"
    "  -s, --seed S              seed of the keys and distractors (default 555, as landmark_prompt.py)\n"
    "  --json FILE               write {\"results\": [...], \"settings\": {...}}\n"
    "  --plot FILE.png           draw an accuracy heat map (needs python3-matplotlib)\n";

// `describe()` lines ("rope:   linear factor 4 ...") as a JSON object: the effective settings
// after overrides, without reaching into the model internals twice.
json describe_json(const longctx::Model& m) {
  json out = json::object();
  std::stringstream ss(m.describe());
  std::string line;
  while (std::getline(ss, line)) {
    const size_t c = line.find(':');
    if (c == std::string::npos) continue;
    std::string key = line.substr(0, c), val = line.substr(c + 1);
    val.erase(0, val.find_first_not_of(' '));
    out[key] = val;
  }
  return out;
}

json common_settings(const Args& a, const longctx::Model& m, const longctx::SessionOptions& so) {
  json ov = json::array();
  for (const auto& [f, v] : a.overrides()) ov.push_back({f, v});
  return {{"model", a.str("--model")},
          {"tokenizer", a.str("--tokenizer")},
          {"architecture", m.has_fot_memory() ? "longllama" : "llama"},
          {"n_ctx_train", m.n_ctx_train()},
          {"overrides", ov},
          {"model_info", describe_json(m)},
          {"session", {{"ctx_size", so.n_ctx}, {"batch_size", so.n_batch}, {"mem_topk", so.mem_topk},
                       {"mem_max_tokens", so.mem_max_tokens}}}};
}

// Fails before a long run, not after it, when an output file cannot be written.
void write_json(const std::string& path, const json& j) {
  const std::string s = j.dump(2) + "\n";
  lcx::write_file_atomic(path, s.data(), s.size());
  std::fprintf(stderr, "wrote %s\n", path.c_str());
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// tools/plot_passkey.py: $LONGCTX_PLOT_SCRIPT, beside an installed binary
// (../share/longctx/), or in this source tree.
std::string plot_script() {
  if (const char* e = std::getenv("LONGCTX_PLOT_SCRIPT")) return e;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path p = exe.parent_path().parent_path() / "share" / "longctx" / "plot_passkey.py";
    if (fs::exists(p)) return p.string();
  }
  const fs::path src = fs::path(__FILE__).parent_path().parent_path() / "plot_passkey.py";
  if (fs::exists(src)) return src.string();
  fail("--plot: cannot find tools/plot_passkey.py; set LONGCTX_PLOT_SCRIPT to its path");
}

void draw_plot(const std::string& json_path, const std::string& png) {
  std::string py = "python3";
  if (const char* e = std::getenv("LONGCTX_PYTHON")) py = e;
  else if (fs::exists("/usr/bin/python3")) py = "/usr/bin/python3";  // Debian's, with matplotlib
  const std::string cmd = shell_quote(py) + " " + shell_quote(plot_script()) + " " + shell_quote(json_path) + " " +
                          shell_quote(png);
  if (std::system(cmd.c_str()) != 0)
    fail("--plot: drawing " + png + " failed (command: " + cmd +
         "); install python3-matplotlib (scripts/setup.sh) or plot the --json file yourself");
}

// The lengths x depths grid shared by `passkey` and `synth`.
int run_grid_command(const Args& a, eval::Task task) {
  eval::GridConfig cfg;
  cfg.task = task;
  cfg.lengths = eval::parse_lengths(a.str("--lengths", "2k,4k,8k"));
  cfg.depths = eval::parse_depths(a.str("--depths", "0,0.25,0.5,0.75,1"));
  cfg.trials = int(a.integer("--trials", 5, INT32_MIN, INT32_MAX));
  cfg.seed = uint64_t(a.integer("--seed", 555));
  cfg.n_needles = int(a.integer("--needles", 4, INT32_MIN, INT32_MAX));
  if (cfg.trials < 1 || cfg.trials > 100000) fail("--trials must be between 1 and 100000");
  const std::string json_path = a.str("--json"), png = a.str("--plot");
  if (!png.empty() && fs::path(png).extension() != ".png") fail("--plot: give a .png file name");
  check_output(a, "--json", json_path);
  check_output(a, "--plot", png);

  auto model = load(a);
  const auto so = session_options(a);
  for (int64_t len : cfg.lengths)
    if (so.n_ctx > 0 && len >= so.n_ctx)
      fail("--lengths " + std::to_string(len) + " does not fit -c/--ctx-size " + std::to_string(so.n_ctx) +
           " (the prompt and the answer must fit): raise -c or drop that length");
  longctx::Session s(model, so);
  // Before building a prompt of the longest length (minutes at millions of tokens).
  s.check_memory_for(*std::max_element(cfg.lengths.begin(), cfg.lengths.end()) + 64);
  const bool tty = ::isatty(2);
  // One session, reset before every trial: each trial starts from empty caches and memory.
  auto answer = [&](const std::vector<int32_t>& ids, int32_t n) {
    s.reset();
    Progress prog;
    const bool show = tty && ids.size() >= 4096;
    s.feed(ids, nullptr, show ? longctx::ProgressCallback([&](int64_t d, int64_t t) { prog(d, t); }) : nullptr);
    prog.end();
    longctx::GenerateOptions g;
    g.n_predict = n;
    g.sampling.temperature = 0.0f;  // greedy, as model.generate(num_beams=1) in passkey.py
    g.sampling.repeat_penalty = 1.0f;
    g.ignore_eos = true;  // exactly as many tokens as the answer has
    return s.generate(g).ids;
  };
  auto tokenize = [&](const std::string& t, bool bos) { return model->tokenize(t, bos); };
  auto detok = [&](const std::vector<int32_t>& ids) { return model->detokenize(ids); };
  auto t0 = std::chrono::steady_clock::now();
  const auto cells = eval::run_grid(cfg, tokenize, answer, detok, [&](const eval::Cell& c) {
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t0 = std::chrono::steady_clock::now();
    std::fprintf(stderr, "%s length %lld depth %g: %d/%d correct (prompt ~%.0f tokens, %.1fs)\n",
                 eval::task_name(cfg.task), (long long)c.length, c.depth, c.correct, c.trials,
                 c.mean_prompt_tokens(), sec);
  });
  std::printf("%s", eval::format_grid(cfg, cells).c_str());

  json settings = common_settings(a, *model, so);
  settings["task"] = eval::task_name(cfg.task);
  settings["lengths"] = cfg.lengths;
  settings["depths"] = cfg.depths;
  settings["trials"] = cfg.trials;
  settings["seed"] = cfg.seed;
  if (task == eval::Task::Needles) settings["needles"] = cfg.n_needles;
  settings["decoding"] = "greedy, as many tokens as the answer's tokenization";
  settings["scoring"] = "exact token match";
  const json out = eval::grid_json(cells, settings);
  std::string jp = json_path;
  if (jp.empty() && !png.empty())
    jp = (fs::temp_directory_path() / ("longctx-plot-" + std::to_string(::getpid()) + ".json")).string();
  if (!jp.empty()) write_json(jp, out);
  if (!png.empty()) {
    draw_plot(jp, png);
    if (json_path.empty()) fs::remove(jp);
  }
  return 0;
}

}  // namespace

int cmd_passkey(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf(
        "usage: longctx passkey -m MODEL [--lengths 2k,4k,...] [--depths 0,0.25,0.5,0.75,1] [--trials N]\n"
        "                       [--seed S] [--json FILE] [--plot FILE.png] [options]\n\n"
        "Passkey retrieval (Landmark Attention / LongLLaMA protocol): a random 5-digit pass key is hidden at\n"
        "a depth in repeated filler text; the model must repeat it. Greedy decoding of as many tokens as the\n"
        "key has, exact token match. Prints accuracy per length and depth. See docs/EVAL.md.\n\n%s%s%s\n"
        "RoPE and memory overrides:\n%s",
        kModelHelp, kGridHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("passkey", argc, argv,
         join({kModelFlags, kSessionFlags, {"--lengths", "--depths", "--trials", "--seed", "--json", "--plot"}}), {},
         kAliases, true);
  return run_grid_command(a, eval::Task::Passkey);
}

int cmd_synth(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf(
        "usage: longctx synth -m MODEL --task kv|needles|dict [--lengths ...] [--depths ...] [--trials N]\n"
        "                     [--seed S] [--json FILE] [--plot FILE.png] [options]\n\n"
        "Synthetic long-context retrieval tasks (no download needed), scored like passkey:\n"
        "  needles   several \"The special magic number for {word} is {n}.\" in filler text; one is asked\n"
        "  dict      a long list of `key: value` lines (FoT-style dictionary lookup); one key is asked\n"
        "  kv        a JSON object of random hex keys and values; one key is asked\n"
        "Depth places the asked fact (needles) or line (dict, kv). See docs/EVAL.md.\n\n%s"
        "  --task T                  kv, needles or dict (required)\n"
        "  --needles K               needles task: facts hidden in the filler (default 4)\n%s%s\n"
        "RoPE and memory overrides:\n%s",
        kModelHelp, kGridHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("synth", argc, argv,
         join({kModelFlags, kSessionFlags,
               {"--task", "--needles", "--lengths", "--depths", "--trials", "--seed", "--json", "--plot"}}),
         {}, kAliases, true);
  const eval::Task task = eval::parse_task(a.required("--task"));
  if (task == eval::Task::Passkey) fail("--task passkey: use `longctx passkey`");
  if (a.has("--needles") && task != eval::Task::Needles) fail("--needles only applies to --task needles");
  return run_grid_command(a, task);
}

int cmd_perplexity(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf(
        "usage: longctx perplexity -m MODEL -f FILE [--mode window|stream] [--ctx N] [--stride S] [options]\n\n"
        "Perplexity of a text file (BOS added at its start), per position bucket (0-1k, 1k-2k, 2k-4k, ...).\n"
        "  window  (default for LLaMA) Hugging Face's strided protocol: windows of --ctx tokens advancing by\n"
        "          --stride, each from an empty cache, scoring only the tokens not scored before.\n"
        "  stream  (default for LongLLaMA) the whole file through one session in chunks: every token sees\n"
        "          all earlier text (LongLLaMA: windows of max_position_embeddings pass into the memory).\n"
        "See docs/EVAL.md.\n\n%s"
        "  -f, --file FILE           text file (required)\n"
        "  --mode M                  window or stream (see above)\n"
        "  --ctx N                   window: tokens per window (default: the trained context)\n"
        "  --stride S                window: advance per window (default: ctx/2)\n"
        "  --chunk N                 logit rows computed per call (default 512; memory: N x vocab floats)\n"
        "  --max-tokens N            evaluate only the first N tokens of the file\n"
        "  --json FILE               write the result and settings as JSON\n%s\n"
        "RoPE and memory overrides:\n%s",
        kModelHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("perplexity", argc, argv,
         join({kModelFlags, kSessionFlags, {"--file", "--mode", "--ctx", "--stride", "--chunk", "--max-tokens", "--json"}}),
         {}, kAliases, true);
  const std::string text = read_document(a);
  check_output(a, "--json", a.str("--json"));
  const std::string mode = a.str("--mode");
  if (!mode.empty() && mode != "window" && mode != "stream") fail("--mode must be window or stream, got '" + mode + "'");
  const int64_t max_tokens = a.integer("--max-tokens", 0);
  if (max_tokens < 0) fail("--max-tokens must be >= 0");
  auto model = load(a);
  const auto so = session_options(a);
  std::vector<int32_t> ids = model->tokenize(text, true);
  if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));

  eval::PplOptions po;
  const bool fot = model->has_fot_memory();
  po.mode = mode.empty() ? (fot ? eval::PplMode::Stream : eval::PplMode::Window)
                         : (mode == "stream" ? eval::PplMode::Stream : eval::PplMode::Window);
  po.chunk = a.integer("--chunk", 512);
  if (po.mode == eval::PplMode::Stream) {
    if (a.has("--ctx") || a.has("--stride")) fail("--ctx and --stride apply to --mode window only");
    if (fot) {
      // Each feed must be a single local-cache call (<= last_context_length tokens) and no chunk
      // may straddle a window boundary, so that every window of max_position_embeddings tokens
      // is one local context and then moves to memory whole (see perplexity.h).
      po.align = model->n_ctx_train();
      po.chunk = std::min({po.chunk, model->impl().config.mem.last_context_length, po.align});
    }
  } else {
    po.ctx = a.integer("--ctx", model->n_ctx_train());
    po.stride = a.integer("--stride", std::max<int64_t>(1, po.ctx / 2));
  }
  if (po.chunk < 1) fail("--chunk must be at least 1");

  longctx::Session s(model, so);
  Progress prog;
  const bool tty = ::isatty(2);
  const auto r = eval::perplexity(s, ids, model->n_vocab(), po,
                                  tty ? longctx::ProgressCallback([&](int64_t d, int64_t t) { prog(d, t); }) : nullptr);
  prog.end();
  std::printf("%s", eval::format_ppl(r).c_str());
  if (a.has("--json")) {
    json settings = common_settings(a, *model, so);
    settings["file"] = a.str("--file");
    settings["mode"] = po.mode == eval::PplMode::Stream ? "stream" : "window";
    if (po.mode == eval::PplMode::Window) {
      settings["ctx"] = po.ctx;
      settings["stride"] = po.stride;
    } else if (po.align) {
      settings["window"] = po.align;
    }
    settings["chunk"] = po.chunk;
    settings["max_tokens"] = max_tokens;
    write_json(a.str("--json"), eval::ppl_json(r, settings));
  }
  return 0;
}

}  // namespace lcx::cli
