// `longctx serve` (OpenAI-compatible HTTP server, tools/server/) and `longctx chat`
// (interactive chat in the terminal). Both use the chat templates of tools/server/.
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common.h"
#include "model/model.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/mmap_file.h"
#include "../server/chat_template.h"
#include "../server/server.h"

namespace lcx::cli {

namespace {

using json = nlohmann::json;
using lcx::server::ChatMessage;
using lcx::server::ChatTemplate;
using lcx::server::Part;

std::map<std::string, std::string> aliases_with(std::initializer_list<std::pair<const std::string, std::string>> extra) {
  std::map<std::string, std::string> m = kAliases;
  m.insert(extra);
  return m;
}

const char* kServeHelp =
    "usage: longctx serve -m MODEL [options]\n"
    "\n"
    "OpenAI-compatible HTTP server. Endpoints: POST /v1/completions, POST /v1/chat/completions\n"
    "(both with \"stream\": true), GET /v1/models, POST/GET/DELETE /v1/documents (process a long\n"
    "document once, ask many questions), GET /health, GET /metrics (Prometheus). See docs/SERVER.md.\n"
    "\n"
    "server:\n"
    "  --host ADDR               address to bind (default 127.0.0.1: this machine only)\n"
    "  --port N                  port (default 8080; 0 = any free port, printed on stdout)\n"
    "  --api-key KEY             require 'Authorization: Bearer KEY' on /v1/*, /tokenize,\n"
    "                            /detokenize and /tokenizer_info (or $LONGCTX_API_KEY)\n"
    "  --parallel N              requests processed at once, one worker and session each (default 1)\n"
    "  --queue-size Q            requests that may wait for a worker; more get HTTP 429 (default 16)\n"
    "  --chat-template NAME      llama2, llama3, chatml, zephyr or longllama (default: from the model's\n"
    "                            tokenizer_config.json or GGUF tokenizer.chat_template)\n"
    "  --alias NAME              model id in /v1/models and requests (default: the model's file name)\n"
    "  --max-tokens N            largest max_tokens a request may ask for (default 4096)\n"
    "  --max-documents N         documents kept by /v1/documents (default 8)\n"
    "  --no-cache-prompt         process every prompt whole (default: a slot reuses the prefix a new\n"
    "                            prompt shares with its previous prompt and answer; LLaMA only)\n"
    "  --quiet                   no per-request log lines on stderr\n"
    "\n"
    "model:\n%s"
    "\nsession (-t is the total; each of the --parallel workers gets t / N threads; for LLaMA\n"
    "the server's default -c is the trained context, a hard limit per request):\n%s"
    "\nsampling defaults (requests override them; -n is the default max_tokens, here 512):\n%s"
    "\nRoPE and memory overrides:\n%s";

const char* kChatHelp =
    "usage: longctx chat -m MODEL [options]\n"
    "\n"
    "Interactive chat in the terminal with the model's chat template. The conversation stays in\n"
    "the session's cache: each turn feeds only the new tokens. Reads lines from stdin until EOF\n"
    "(works in pipes: one line = one user message; end a line with \\ to continue it).\n"
    "\n"
    "commands:  /reset  start over (keeps --system and --file)   /save FILE  transcript as JSON\n"
    "           /help   this list                                /quit       leave (or Ctrl-D)\n"
    "Ctrl-C while the model answers stops the answer.\n"
    "\n"
    "options:\n"
    "  --chat-template NAME      llama2, llama3, chatml, zephyr or longllama (default: the model's own)\n"
    "  --system TEXT             system prompt\n"
    "  -f, --file FILE           a document to read first (it becomes part of the system message;\n"
    "                            a progress bar shows tokens/s and ETA while it is processed)\n"
    "  --json                    machine-readable: one JSON object per reply on stdout, no prompts\n"
    "\n"
    "model:\n%s"
    "\nsession:\n%s"
    "\nsampling (-n: longest reply, default 512):\n%s"
    "\nRoPE and memory overrides:\n%s";

// ------------------------------------------------------------------------------------ serve

int serve(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf(kServeHelp, kModelHelp, kSessionHelp, sampling_help(512).c_str(), longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("serve", argc, argv,
         join({kModelFlags, kSessionFlags, kSamplingFlags,
               {"--host", "--port", "--api-key", "--parallel", "--queue-size", "--chat-template", "--alias", "--max-tokens",
                "--max-documents"}}),
         {"--ignore-eos", "--quiet", "--no-cache-prompt"}, aliases_with({{"-np", "--parallel"}}), true);
  lcx::server::ServerOptions so;
  so.host = a.str("--host", "127.0.0.1");
  so.port = int(a.integer("--port", 8080, INT32_MIN, INT32_MAX));
  if (so.port < 0 || so.port > 65535) lcx::fail("--port must be in [0, 65535]");
  // An empty key would turn authentication off without a word (a shell variable that happened
  // to be empty): refuse it like any bad flag.
  const char* env_key = std::getenv("LONGCTX_API_KEY");
  so.api_key = a.str("--api-key", env_key ? env_key : "");
  if ((a.has("--api-key") || env_key) && so.api_key.empty())
    lcx::fail(std::string(a.has("--api-key") ? "--api-key" : "$LONGCTX_API_KEY") +
              " is empty: give a non-empty key, or leave it unset to serve without authentication");
  so.parallel = int(a.integer("--parallel", 1, INT32_MIN, INT32_MAX));
  so.queue_size = int(a.integer("--queue-size", 16, INT32_MIN, INT32_MAX));
  if (so.parallel < 1 || so.parallel > 256) lcx::fail("--parallel must be in [1, 256]");
  if (so.queue_size < 0 || so.queue_size > 4096) lcx::fail("--queue-size must be in [0, 4096]");
  so.chat_template = a.str("--chat-template");
  so.model_name = a.str("--alias");
  so.max_documents = int(a.integer("--max-documents", 8, INT32_MIN, INT32_MAX));
  so.log_requests = !a.has("--quiet");
  so.cache_prompt = !a.has("--no-cache-prompt");
  so.session = session_options(a);
  so.n_threads_total = so.session.n_threads;
  so.limits.defaults = generate_options(a);
  if (!a.has("--n-predict")) so.limits.defaults.n_predict = 512;
  so.limits.fixed_seed = a.has("--seed");
  so.limits.max_tokens_cap = int32_t(a.integer("--max-tokens", 4096, INT32_MIN, INT32_MAX));
  if (so.limits.max_tokens_cap < 1) lcx::fail("--max-tokens must be at least 1");
  if (!so.chat_template.empty()) {
    bool ok = false;
    for (const auto& n : ChatTemplate::names()) ok |= n == so.chat_template;
    if (!ok) lcx::fail("unknown --chat-template '" + so.chat_template + "': use llama2, llama3, chatml, zephyr or longllama");
  }

  auto model = load(a);
  // SIGINT / SIGTERM: a dedicated thread waits for them and stops the server cleanly; every
  // other thread (HTTP pool, slots) inherits the blocked mask.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  lcx::server::Server server(model, so);
  std::thread([&server, sigs] {
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "longctx serve: signal %d, shutting down\n", sig);
    server.stop();
  }).detach();
  server.run([&](int port) {
    std::fprintf(stderr, "longctx serve: model %s, %d slot(s), queue %d%s\n", model->impl().path.c_str(), so.parallel,
                 so.queue_size, so.api_key.empty() ? "" : ", API key required");
    std::printf("listening on http://%s:%d\n", so.host.c_str(), port);
    std::fflush(stdout);
  });
  return 0;
}

// ------------------------------------------------------------------------------------- chat

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

struct Chat {
  std::shared_ptr<longctx::Model> model;
  std::unique_ptr<ChatTemplate> tmpl;
  std::unique_ptr<longctx::Session> session;
  longctx::GenerateOptions gen;
  bool json_mode = false;
  std::vector<ChatMessage> messages;  // the conversation (system first when given)
  size_t n_base = 0;                  // messages /reset keeps (the system message)
  size_t n_fed = 0;                   // messages whose parts are in the session
  std::vector<int32_t> pending;       // generated ids the session has not fed yet
  bool skip_marker = false;           // the last reply's end marker is already in the session

  // Parts of the conversation the session has not seen: everything for messages >= n_fed,
  // plus how the previous assistant turn ends (its end marker unless the model produced it).
  std::vector<int32_t> new_tokens() const {
    const std::vector<Part> parts = tmpl->render(messages, true);
    std::vector<Part> todo;
    const bool fresh = session->history().empty();
    for (const Part& p : parts) {
      const bool is_close = p.kind == Part::Kind::CloseMarker || p.kind == Part::Kind::CloseTail;
      if (fresh || p.kind == Part::Kind::GenPrompt || p.msg >= int(n_fed)) todo.push_back(p);
      else if (is_close && n_fed > 0 && p.msg == int(n_fed) - 1 && messages[size_t(p.msg)].role == "assistant" &&
               !(p.kind == Part::Kind::CloseMarker && skip_marker))
        todo.push_back(p);
    }
    std::vector<int32_t> ids = fresh ? std::vector<int32_t>{} : pending;
    const auto t = tmpl->tokenize(todo);
    ids.insert(ids.end(), t.begin(), t.end());
    return ids;
  }

  // The system message (with a --file document) is processed once at start; /reset goes
  // back to a clone of that state instead of processing the document again. Llama 2 folds
  // the system prompt into the first [INST] block, so there it waits for the first turn.
  std::unique_ptr<longctx::Session> start_state;
  size_t n_start_fed = 0;
  void prefeed() {
    if (n_base > 0 && tmpl->name() != "llama2") {
      feed(tmpl->tokenize(tmpl->render(messages, false)));
      n_start_fed = n_base;
    }
    n_fed = n_start_fed;
    start_state = session->clone();
  }

  void reset() {
    session = start_state->clone();
    messages.resize(n_base);
    n_fed = n_start_fed;
    pending.clear();
    skip_marker = false;
  }

  // One user turn: feed the new tokens, stream the reply.
  void turn(const std::string& text) {
    messages.push_back({"user", text});
    std::vector<int32_t> ids;
    try {
      ids = new_tokens();
      feed(ids);
    } catch (...) {
      messages.pop_back();
      throw;
    }
    n_fed = messages.size();
    pending.clear();
    const size_t hist_before = session->history().size();
    bool stop_token = false;
    g_interrupted = 0;
    auto old = std::signal(SIGINT, on_sigint);
    const auto r = session->generate(gen, [&](const longctx::Piece& p) {
      if (!json_mode && !p.text.empty()) {
        std::fwrite(p.text.data(), 1, p.text.size(), stdout);
        std::fflush(stdout);
      }
      const auto& sid = tmpl->stop_ids();
      if (std::find(sid.begin(), sid.end(), p.id) != sid.end()) {
        stop_token = true;
        return false;
      }
      return g_interrupted == 0;
    });
    std::signal(SIGINT, old);
    // generate() does not feed the last token it produced: keep it for the next turn.
    std::vector<int32_t> all(session->history().begin(), session->history().begin() + long(hist_before));
    all.insert(all.end(), r.ids.begin(), r.ids.end());
    pending.assign(all.begin() + long(session->history().size()), all.end());
    skip_marker = stop_token || (r.stop_reason == "stop" && !tmpl->stop_strings().empty() &&
                                 (tmpl->name() == "chatml" || tmpl->name() == "llama3"));
    messages.push_back({"assistant", r.text});
    const std::string finish = stop_token ? "stop" : r.stop_reason == "callback" ? "interrupted" : lcx::server::finish_reason(r.stop_reason);
    const double tps = double(r.ids.size()) / std::max(r.gen_seconds, 1e-9);
    if (json_mode) {
      json j = {{"role", "assistant"},
                {"content", r.text},
                {"finish_reason", finish},
                {"prompt_tokens", ids.size()},
                {"completion_tokens", r.ids.size()},
                {"tokens_per_second", tps},
                {"context_tokens", session->n_past()}};
      std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
      std::fprintf(stderr, "[%zu tokens, %.1f tok/s, %s; context %lld tokens]\n", r.ids.size(), tps, finish.c_str(),
                   (long long)session->n_past());
    }
    std::fflush(stdout);
  }

  void feed(const std::vector<int32_t>& ids) {
    if (ids.empty()) return;
    Progress prog;
    const bool show = ids.size() >= 256 && isatty(STDERR_FILENO);  // not in logs of scripts
    session->feed(ids, nullptr, [&](int64_t d, int64_t t) {
      if (show) prog(d, t);
    });
    prog.end();
  }

  void save(const std::string& path) const {
    json msgs = json::array();
    for (const auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    const json j = {{"model", model->impl().path}, {"chat_template", tmpl->name()}, {"messages", msgs}};
    const std::string s = j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
    lcx::write_file_atomic(path, s.data(), s.size());
  }
};

void chat_help() {
  std::fprintf(stderr,
               "commands: /reset (start over), /save FILE (transcript as JSON), /help, /quit\n"
               "end a line with \\ to continue the message on the next line; Ctrl-C stops an answer\n");
}

int chat(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf(kChatHelp, kModelHelp, kSessionHelp, sampling_help(512).c_str(), longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("chat", argc, argv, join({kModelFlags, kSessionFlags, kSamplingFlags, {"--chat-template", "--system", "--file"}}),
         {"--ignore-eos", "--json"}, kAliases, true);
  Chat c;
  c.json_mode = a.has("--json");
  c.gen = generate_options(a);
  if (!a.has("--n-predict")) c.gen.n_predict = 512;
  std::string system = a.str("--system");
  if (a.has("--file")) {
    const std::string doc = read_document(a);
    system = system.empty() ? doc : system + "\n\n" + doc;
  }
  c.model = load(a);
  std::string name = a.str("--chat-template"), found;
  if (name.empty()) name = ChatTemplate::detect(*c.model, &found);
  if (name.empty())
    lcx::fail("this model has no chat template longctx recognises (" + found +
              "): pass --chat-template llama2, llama3, chatml, zephyr or longllama");
  c.tmpl = std::make_unique<ChatTemplate>(name, *c.model);
  c.gen.stop.insert(c.gen.stop.end(), c.tmpl->stop_strings().begin(), c.tmpl->stop_strings().end());
  c.session = std::make_unique<longctx::Session>(c.model, session_options(a));
  if (!system.empty()) c.messages.push_back({"system", system});
  c.n_base = c.messages.size();
  c.prefeed();

  const bool tty = isatty(STDIN_FILENO) && !c.json_mode;
  if (tty) {
    std::fprintf(stderr, "longctx chat — %s, template %s. /help for commands, Ctrl-D to leave.\n",
                 c.model->impl().path.c_str(), name.c_str());
  }
  std::string line, msg;
  int failed_turns = 0;
  for (;;) {
    if (tty) {
      std::printf(msg.empty() ? "> " : ". ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) {
      // EOF in the middle of a continued message (last line ended in "\\"): send what there is.
      if (msg.find_first_not_of(" \t\n") == std::string::npos) break;
      line.clear();
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      msg += line + "\n";
      continue;
    }
    msg += line;
    std::string text;
    text.swap(msg);
    if (text.find_first_not_of(" \t\n") == std::string::npos) continue;
    if (text[0] == '/') {
      const size_t sp = text.find(' ');
      const std::string cmd = text.substr(0, sp);
      const std::string arg = sp == std::string::npos ? "" : text.substr(text.find_first_not_of(' ', sp) == std::string::npos ? text.size() : text.find_first_not_of(' ', sp));
      if (cmd == "/quit" || cmd == "/exit") break;
      if (cmd == "/help") {
        chat_help();
      } else if (cmd == "/reset") {
        c.reset();
        std::fprintf(stderr, "conversation reset\n");
      } else if (cmd == "/save") {
        if (arg.empty()) {
          std::fprintf(stderr, "usage: /save FILE\n");
        } else {
          try {
            check_output(a, "/save", arg);
            c.save(arg);
            std::fprintf(stderr, "saved %zu messages to %s\n", c.messages.size(), arg.c_str());
          } catch (const std::exception& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
          }
        }
      } else {
        std::fprintf(stderr, "unknown command %s: ", cmd.c_str());
        chat_help();
      }
      continue;
    }
    try {
      c.turn(text);
    } catch (const std::exception& e) {
      // A turn that does not fit (context full) is reported; the conversation goes on. Piped
      // input (a script) still learns of it from the exit status.
      std::fprintf(stderr, "error: %s (/reset starts a new conversation)\n", e.what());
      failed_turns++;
    }
  }
  if (tty) std::printf("\n");
  return !tty && failed_turns > 0 ? 1 : 0;
}

}  // namespace

int cmd_serve(int argc, char** argv) { return serve(argc, argv); }
int cmd_chat(int argc, char** argv) { return chat(argc, argv); }

}  // namespace lcx::cli
