// `longctx`: the command-line front end. Every subcommand goes through the public API in
// include/longctx/longctx.h (format conversion also uses the GGUF writer directly).
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>

#include "args.h"
#include "common.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/rope_options.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"

using namespace lcx::cli;
using json = nlohmann::json;

namespace {

const char* kUsage =
    "longctx — long-context inference for LLaMA and LongLLaMA models\n"
    "\n"
    "usage: longctx <command> [options]    (MODEL: a Hugging Face directory or a .gguf file)\n"
    "\n"
    "commands:\n"
    "  run           generate text from a prompt:   longctx run -m MODEL -p TEXT [-n N]\n"
    "  info          print architecture, sizes, dtypes, RoPE and memory settings\n"
    "  tokenize      print token ids as JSON:        longctx tokenize -m MODEL -p TEXT\n"
    "  logits        write float32 logits:           longctx logits -m MODEL --ids 1,2,3 --out F\n"
    "  generate-ids  greedy continuation as JSON:    longctx generate-ids -m MODEL --ids 1,2 -n N\n"
    "  convert       HF directory -> GGUF:           longctx convert -m DIR --outtype q8_0 -o F.gguf\n"
    "  rope          show RoPE frequencies:          longctx rope -m MODEL [rope flags]\n"
    "  ingest        LongLLaMA: document -> memory:  longctx ingest -m MODEL -f doc.txt --save doc.mem\n"
    "  chat          interactive chat:               longctx chat -m MODEL\n"
    "  serve         OpenAI-compatible HTTP server:  longctx serve -m MODEL [--port 8080]\n"
    "  passkey       passkey retrieval evaluation:   longctx passkey -m MODEL --lengths 2k,4k\n"
    "  perplexity    perplexity of a text file:      longctx perplexity -m MODEL -f FILE\n"
    "  synth         synthetic long-context tasks:   longctx synth -m MODEL --task kv\n"
    "  bench         prompt/generation speed:        longctx bench -m MODEL [-p 512] [-n 128]\n"
    "\n"
    "`longctx <command> --help` describes each command's options.\n";

int cmd_run(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx run -m MODEL (-p TEXT | -f FILE) [options]\n\nGenerates text; streams it to stdout, progress and speed on stderr.\n\n%s  -p, --prompt TEXT         prompt text\n  -f, --file FILE           read the prompt from a file (long documents: LongLLaMA streams it into memory)\n  --memory FILE             start from a state saved by `longctx ingest --save` (the prompt continues it)\n  --no-bos                  do not add the BOS token\n  --json-object             JSON mode: the output is one JSON object (generation ends when it closes)\n%s%s\nRoPE and memory overrides:\n%s",
                kModelHelp, kSessionHelp, kSamplingHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("run", argc, argv,
         join({kModelFlags, kSessionFlags, kSamplingFlags, {"--prompt", "--file", "--memory"}}),
         {"--ignore-eos", "--no-bos", "--json-object"}, kAliases, true);
  std::string prompt;
  if (a.has("--prompt") == a.has("--file")) lcx::fail("`longctx run` needs exactly one of -p TEXT or -f FILE");
  prompt = a.has("--prompt") ? a.str("--prompt") : read_document(a);
  auto model = load(a);
  longctx::Session s(model, session_options(a));
  auto gopt = generate_options(a);
  gopt.json_object = a.has("--json-object");
  if (gopt.lookup > 0 && !s.can_draft())
    std::fprintf(stderr, "warning: --lookup is off for this model: Dynamic NTK and LongRoPE frequencies depend on the length seen, so drafts cannot be rolled back\n");
  // With a saved document (`longctx ingest --save`), the prompt continues it: no second BOS.
  if (a.has("--memory")) s.load_state(a.str("--memory"));
  const auto ids = model->tokenize(prompt, !a.has("--no-bos") && !a.has("--memory"));
  Progress prog;
  const auto t0 = std::chrono::steady_clock::now();
  s.feed(ids, nullptr, [&](int64_t d, int64_t t) { prog(d, t); });
  prog.end();
  const double pp_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto r = s.generate(gopt, [](const longctx::Piece& p) {
    std::fwrite(p.text.data(), 1, p.text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  std::fprintf(stderr,
               "prompt: %zu tokens in %.2fs (%.1f tok/s); generated %zu tokens in %.2fs (%.1f tok/s); stop: %s",
               ids.size(), pp_s, double(ids.size()) / std::max(pp_s, 1e-9), r.ids.size(), r.gen_seconds,
               double(r.ids.size()) / std::max(r.gen_seconds, 1e-9), r.stop_reason.c_str());
  if (model->has_fot_memory())
    std::fprintf(stderr, "; memory: %lld tokens, caches %.1f MiB", (long long)s.n_memory(), double(s.cache_bytes()) / (1 << 20));
  if (r.n_drafted > 0)
    std::fprintf(stderr, "; lookup: %lld of %lld drafts accepted", (long long)r.n_accepted, (long long)r.n_drafted);
  std::fprintf(stderr, "\n");
  return 0;
}

int cmd_info(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx info -m MODEL [overrides]\n\nPrints the architecture, sizes, dtypes and the effective RoPE and memory settings\n(after any overrides).\n\n%s\nOverrides:\n%s",
                kModelHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("info", argc, argv, kModelFlags, {}, kAliases, true);
  auto model = load(a);
  std::printf("%s", model->describe().c_str());
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx tokenize -m MODEL (-p TEXT | -f FILE) [--no-bos]\n\nPrints the token ids as a JSON array (BOS included as the model adds it).\n\n%s", kModelHelp);
    return 0;
  }
  Args a("tokenize", argc, argv, join({kModelFlags, {"--prompt", "--file"}}), {"--no-bos"}, kAliases, false);
  if (a.has("--prompt") == a.has("--file")) lcx::fail("`longctx tokenize` needs exactly one of -p TEXT or -f FILE");
  // An empty text tokenizes to [BOS], from -p "" or an empty file alike.
  const std::string text = a.has("--prompt") ? a.str("--prompt") : lcx::read_text_file(a.str("--file"), size_t(1) << 30);
  auto model = load(a);
  std::printf("%s\n", json(model->tokenize(text, !a.has("--no-bos"))).dump().c_str());
  return 0;
}

std::vector<int32_t> ids_arg(const Args& a) {
  if (a.has("--ids-file")) return lcx::cli::parse_ids(lcx::read_text_file(a.str("--ids-file")));
  return lcx::cli::parse_ids(a.required("--ids"));
}

int cmd_logits(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx logits -m MODEL --ids 1,2,3 --out FILE [--last] [--feed P] [options]\n\n"
                "Runs the model over the ids and writes float32 little-endian logits, row-major\n"
                "[n_tokens, n_vocab] (--last: only the last row).\n\n%s"
                "  --ids LIST                comma-separated token ids (or --ids-file FILE)\n"
                "  --out FILE                output file\n"
                "  --last                    write only the last row\n"
                "  --feed P                  feed the first P ids in one call, the rest one per call with the KV cache\n"
                "%s\nOverrides:\n%s",
                kModelHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("logits", argc, argv, join({kModelFlags, kSessionFlags, {"--ids", "--ids-file", "--out", "--feed"}}), {"--last"},
         kAliases, true);
  const auto ids = ids_arg(a);
  const std::string out = a.required("--out");
  check_output(a, "--out", out);
  auto model = load(a);
  longctx::Session s(model, session_options(a));
  std::vector<float> logits;
  if (a.has("--feed")) s.feed_split(ids, a.integer("--feed", 0, 1, int64_t(ids.size())), &logits);
  else s.feed(ids, &logits);
  const size_t V = size_t(model->n_vocab());
  const float* p = logits.data();
  size_t n = logits.size();
  if (a.has("--last")) {
    p += logits.size() - V;
    n = V;
  }
  lcx::write_file_atomic(out, p, n * sizeof(float));
  std::fprintf(stderr, "wrote %zu x %zu logits to %s\n", n / V, V, out.c_str());
  return 0;
}

int cmd_generate_ids(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx generate-ids -m MODEL --ids 1,2,3 -n N [options]\n\nGreedy continuation, printed as a JSON array of ids (EOS does not stop it).\n\n%s"
                "  --ids LIST                comma-separated prompt ids (or --ids-file FILE)\n"
                "  -n, --n-predict N         tokens to generate\n%s\nOverrides:\n%s",
                kModelHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("generate-ids", argc, argv, join({kModelFlags, kSessionFlags, {"--ids", "--ids-file", "--n-predict"}}), {},
         kAliases, true);
  const auto ids = ids_arg(a);
  auto model = load(a);
  longctx::Session s(model, session_options(a));
  s.feed(ids);
  longctx::GenerateOptions g;
  g.n_predict = int32_t(a.integer("--n-predict", 16, 0, INT32_MAX));
  g.sampling.temperature = 0.0f;
  g.ignore_eos = true;
  auto r = s.generate(g);
  std::printf("%s\n", json(r.ids).dump().c_str());
  return 0;
}

int cmd_convert(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx convert -m HF_DIR --outtype f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k..q6_k -o OUT.gguf [overrides]\n\n"
                "Writes a GGUF file llama.cpp can read (q/k rows permuted as its converter does; RoPE\n"
                "and LongLLaMA settings carried in metadata; see docs/GGUF.md).\n\n%s"
                "  --outtype T               f32 f16 (default) bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k\n"
                "  -o, --out FILE            the GGUF file to write (refused if it is one of the model's files)\n"
                "\nOverrides (written into the file's metadata):\n%s",
                kModelHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("convert", argc, argv, join({kModelFlags, {"--outtype", "--out"}}), {}, kAliases, true);
  const lcx::DType t = lcx::dtype_from_name(a.str("--outtype", "f16"));
  const std::string out = a.required("--out");
  check_output(a, "-o/--out", out);
  auto model = load(a);
  // GGUF embeds the vocabulary: fail early without a tokenizer
  if (model->impl().tok().vocab().spm_unigram)
    std::fprintf(stderr,
                 "warning: the tokenizer is a SentencePiece Unigram model; a GGUF vocabulary is tokenized by BPE merges "
                 "(llama.cpp and longctx alike), which can split some text differently. For identical tokens, run the GGUF "
                 "with --tokenizer %s or keep using the Hugging Face directory\n",
                 (std::filesystem::path(a.str("--model")) / "tokenizer.model").string().c_str());
  lcx::convert_to_gguf(model->impl(), out, t);
  std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), lcx::dtype_name(t));
  return 0;
}

int cmd_rope(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx rope -m MODEL [--seq-len N] [rope flags]\n\nPrints the effective per-dimension RoPE frequencies, wavelengths and attention scale.\n\n%s"
                "  --seq-len N               sequence length (Dynamic NTK / LongRoPE depend on it)\n\nRoPE flags:\n%s",
                kModelHelp, lcx::rope_flags_help());
    return 0;
  }
  Args a("rope", argc, argv, join({kModelFlags, {"--seq-len"}}), {}, kAliases, true);
  auto model = load(a);
  const auto& c = model->impl().config;
  std::printf("%s", lcx::rope_table_report(c.rope, a.integer("--seq-len", c.n_ctx_train, 1, int64_t(1) << 40)).c_str());
  return 0;
}

int run_command(const std::string& cmd, int sub_argc, char** sub_argv);

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::printf("%s", kUsage);
    return argc < 2 ? 1 : 0;
  }
  const std::string cmd = argv[1];
  const int rc = run_command(cmd, argc - 2, argv + 2);
  // Output that did not reach its destination (a full disk, a closed pipe, /dev/full) is an
  // error, not a success with lost data.
  std::cout.flush();
  if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout) {
    std::fprintf(stderr, "error: writing to standard output failed: %s\n", std::strerror(errno));
    return 1;
  }
  return rc;
}

namespace {
int run_command(const std::string& cmd, int sub_argc, char** sub_argv) {
  try {
    if (cmd == "run") return cmd_run(sub_argc, sub_argv);
    if (cmd == "info") return cmd_info(sub_argc, sub_argv);
    if (cmd == "tokenize") return cmd_tokenize(sub_argc, sub_argv);
    if (cmd == "logits") return cmd_logits(sub_argc, sub_argv);
    if (cmd == "generate-ids") return cmd_generate_ids(sub_argc, sub_argv);
    if (cmd == "convert") return cmd_convert(sub_argc, sub_argv);
    if (cmd == "rope") return cmd_rope(sub_argc, sub_argv);
    if (cmd == "ingest") return cmd_ingest(sub_argc, sub_argv);
    if (cmd == "serve") return cmd_serve(sub_argc, sub_argv);
    if (cmd == "chat") return cmd_chat(sub_argc, sub_argv);
    if (cmd == "passkey") return cmd_passkey(sub_argc, sub_argv);
    if (cmd == "perplexity") return cmd_perplexity(sub_argc, sub_argv);
    if (cmd == "synth") return cmd_synth(sub_argc, sub_argv);
    if (cmd == "bench") return cmd_bench(sub_argc, sub_argv);
    std::fprintf(stderr, "error: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "error: out of memory: the model, context or lengths asked for need more memory than is available "
                 "(check the config's sizes, -c/--ctx-size, -d/--lengths, or use a quantised model)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
}  // namespace
