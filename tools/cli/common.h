// Shared pieces of the `longctx` subcommands: common flags, their help text, model loading,
// session/sampling options from flags, and a progress line.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "args.h"
#include "longctx/longctx.h"

namespace lcx::cli {

extern const char* kModelHelp;
extern const char* kSessionHelp;
extern const char* kSamplingHelp;
// kSamplingHelp with another -n default (chat and serve: 512).
std::string sampling_help(int n_predict_default);
extern const std::set<std::string> kModelFlags;    // --model --tokenizer
extern const std::set<std::string> kSessionFlags;  // --threads --ctx-size --batch-size --mem-topk --mem-max-tokens
extern const std::set<std::string> kSamplingFlags; // -n --temp --top-k ... --stop (plus switch --ignore-eos)
extern const std::map<std::string, std::string> kAliases;

std::set<std::string> join(std::initializer_list<std::set<std::string>> sets);
bool wants_help(int argc, char** argv);
std::shared_ptr<longctx::Model> load(const Args& a);
longctx::SessionOptions session_options(const Args& a);
std::string cache_type(const Args& a);  // -ctk/-ctv/--cache-type (one type for both)
longctx::GenerateOptions generate_options(const Args& a);
// The text of -f/--file: an empty file is an error (as an empty -p is), not a BOS-only prompt.
std::string read_document(const Args& a);

// A progress line on stderr: tokens, tokens/s and ETA, redrawn in place.
struct Progress {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last = t0;
  bool shown = false;
  void operator()(int64_t done, int64_t total);
  void end();
};

// Subcommands, one file each (tools/cli/cmd_*.cpp). argv excludes "longctx <command>".
int cmd_serve(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_passkey(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_ingest(int argc, char** argv);

}  // namespace lcx::cli
