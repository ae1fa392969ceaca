// `longctx serve`: an OpenAI-compatible HTTP server over the public API (longctx.h).
//
// Request flow: HTTP thread (cpp-httplib pool) parses and validates the request (api.h),
// tokenizes the prompt (chat template for /v1/chat/completions), and puts a Job on a bounded
// queue (full: 429). One of --parallel worker threads ("slots"), each with its own Session on
// the shared Model, runs it: feed the prompt (or a clone() of a stored document's session),
// generate with a streaming callback that pushes text events to the job; the HTTP thread
// turns them into one JSON response or server-sent events. A client that disconnects cancels
// its job (the callback returns false). See docs/SERVER.md.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "api.h"
#include "longctx/longctx.h"

namespace lcx::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (on_listening reports it)
  std::string api_key;             // "": no authentication
  int parallel = 1;                // slots (worker threads, one Session each)
  int queue_size = 16;             // requests waiting for a slot; more get 429
  int n_threads_total = 0;         // 0: all cores; each slot gets max(1, total / parallel)
  longctx::SessionOptions session; // n_ctx, n_batch, memory options (n_threads set per slot)
  RequestLimits limits;            // defaults and caps for requests
  std::string chat_template;       // "": the model's own (tokenizer_config.json / GGUF)
  std::string model_name;          // id in /v1/models; "": the model path's last component
  int max_documents = 8;           // stored documents (POST /v1/documents)
  size_t max_body_bytes = size_t(64) << 20;
  bool log_requests = true;        // one line per request on stderr
  // Reuse the longest common prefix of a slot's previous prompt + answer and a new prompt
  // (LLaMA; requests may opt out with "cache_prompt": false). --no-cache-prompt turns it off.
  bool cache_prompt = true;
};

class Server {
 public:
  Server(std::shared_ptr<const longctx::Model> model, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port, calls on_listening(port), serves until stop(). Throws lcx::Error when
  // the address cannot be bound.
  void run(const std::function<void(int port)>& on_listening = {});
  // Thread-safe: stops listening, cancels running and queued requests, joins the slots.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lcx::server
