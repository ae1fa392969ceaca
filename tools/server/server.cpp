#include "server.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "chat_template.h"
#include "http.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/error.h"

namespace lcx::server {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t unix_time() { return int64_t(std::time(nullptr)); }

std::string random_id(const std::string& prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)rng());
  return prefix + buf;
}

// Thrown from the progress / stream callbacks to abandon a cancelled request.
struct Cancelled {};

// An address as httplib writes Request::remote_addr / local_addr (numeric host) and its port.
bool is_endpoint(const sockaddr_storage& a, socklen_t len, const std::string& addr, int port) {
  int p = -1;
  if (a.ss_family == AF_INET) p = ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  else if (a.ss_family == AF_INET6) p = ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  char host[NI_MAXHOST];
  return p == port && getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0 &&
         addr == host;
}

// The socket of a request's connection, or -1. cpp-httplib 0.11 gives a handler no way to see
// it (later versions have Request::is_connection_closed), and a non-streaming handler writes
// nothing until its answer is ready, so to notice a client that left we look for the one open
// socket whose two ends are the request's (a TCP connection is unique by them). It stays open
// until the handler returns: the handler runs on the thread that owns the connection.
int connection_socket(const httplib::Request& req) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(e.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) == 0 &&
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) == 0 &&
        is_endpoint(local, ll, req.local_addr, req.local_port) && is_endpoint(peer, pl, req.remote_addr, req.remote_port))
      return fd;
  }
  return -1;
}

// True when the client closed (or reset) the connection: a read would see end of file. Data
// waiting (a pipelined request) is left where it is.
bool peer_closed(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// A document ingested once (POST /v1/documents); requests naming it start from a clone().
// Immutable after creation, so several slots may clone it at once.
struct Document {
  std::string id;
  std::unique_ptr<longctx::Session> session;
  int64_t n_tokens = 0;
  int64_t created = 0;
};

// A token's log-probabilities (a NaN logprob: none, the first token of an echoed prompt) and
// where its text starts in the choice's text (completions' text_offset).
struct TokenInfo {
  longctx::TokenLogprob lp;
  int64_t offset = 0;
};

// One text delta of one choice; finish non-empty when that choice is complete. lps: the
// tokens behind it (requests with logprobs).
struct Event {
  int index = 0;
  std::string text;
  std::string finish;
  std::vector<TokenInfo> lps;
};

struct Job {
  enum class Kind { Generate, Ingest };
  Kind kind = Kind::Generate;
  CompletionRequest req;
  std::vector<int32_t> prompt_ids;      // Ingest: the document
  // Generate: the prompts (a completions batch has several; chat one) with, for echo and
  // text_offset, each prompt as text and its length.
  struct Prompt {
    std::vector<int32_t> ids;
    std::string echo_text;
    int64_t text_bytes = 0;
  };
  std::vector<Prompt> prompts;
  std::shared_ptr<const Document> doc;  // Generate: start from a clone of it
  std::vector<int32_t> stop_ids;        // chat template end-of-turn tokens
  std::shared_ptr<Document> ingested;   // Ingest: the result

  // Results, filled by the slot, read by the HTTP thread.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> events;
  bool done = false;
  std::optional<ApiError> error;
  std::vector<std::string> texts;
  std::vector<std::string> finishes;
  std::vector<std::vector<TokenInfo>> lps;  // per choice
  int64_t completion_tokens = 0;
  std::atomic<int64_t> cached_tokens{0};  // prompt tokens found in the slot's cache
  std::atomic<bool> cancelled{false};

  void push(Event e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (e.index >= int(texts.size())) {
        texts.resize(size_t(e.index) + 1);
        finishes.resize(size_t(e.index) + 1);
        lps.resize(size_t(e.index) + 1);
      }
      texts[size_t(e.index)] += e.text;
      auto& l = lps[size_t(e.index)];
      l.insert(l.end(), e.lps.begin(), e.lps.end());
      if (!e.finish.empty()) finishes[size_t(e.index)] = e.finish;
      events.push_back(std::move(e));
    }
    cv.notify_all();
  }
  void finish(std::optional<ApiError> err = std::nullopt) {
    {
      std::lock_guard<std::mutex> lock(mu);
      error = std::move(err);
      done = true;
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  }
};

struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  uint64_t prompt_tokens = 0, prompt_tokens_cached = 0, generated_tokens = 0, cancelled = 0;
  uint64_t lookup_drafted = 0, lookup_accepted = 0;  // --lookup
  double prompt_seconds = 0, generation_seconds = 0;
};

// Known endpoints for the metrics label (anything else is "other": no unbounded label set).
std::string endpoint_label(const std::string& path) {
  static const char* known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/documents",
                                "/tokenize", "/detokenize", "/tokenizer_info", "/health", "/metrics"};
  for (const char* k : known)
    if (path == k) return k;
  if (path.rfind("/v1/documents/", 0) == 0) return "/v1/documents/{id}";
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

}  // namespace

struct Server::Impl {
  std::shared_ptr<const longctx::Model> model;
  ServerOptions opt;
  longctx::SessionOptions slot_opts;
  int64_t ctx_limit = 0;  // prompt + generation tokens a request may use (0: none, LongLLaMA)
  std::optional<ChatTemplate> tmpl;
  std::string tmpl_problem;  // why there is no template (for the 400)
  int64_t created = unix_time();

  httplib::Server http;
  Metrics metrics;

  std::mutex qmu;
  std::condition_variable qcv;
  std::deque<std::shared_ptr<Job>> queue;
  std::vector<std::shared_ptr<Job>> running;  // per slot, for stop()
  int active = 0;
  bool stopping = false;
  std::vector<std::thread> workers;

  std::mutex dmu;
  std::map<std::string, std::shared_ptr<Document>> documents;

  Impl(std::shared_ptr<const longctx::Model> m, ServerOptions o) : model(std::move(m)), opt(std::move(o)) {
    if (opt.parallel < 1) fail("--parallel must be at least 1");
    if (opt.queue_size < 0) fail("--queue-size must not be negative");
    if (opt.max_documents < 0) fail("--max-documents must not be negative");
    if (opt.model_name.empty()) {
      const std::filesystem::path p(model->impl().path);
      opt.model_name = p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
    }
    // LLaMA: the context is a hard limit (the trained one unless -c says otherwise), so a
    // request that does not fit is a 400 and generation ends with finish_reason "length".
    // LongLLaMA streams long inputs into its memory: no limit unless -c is given.
    ctx_limit = opt.session.n_ctx > 0 ? opt.session.n_ctx : (model->has_fot_memory() ? 0 : model->n_ctx_train());
    slot_opts = opt.session;
    if (!model->has_fot_memory()) slot_opts.n_ctx = ctx_limit;
    const int total = opt.n_threads_total > 0 ? opt.n_threads_total : int(std::max(1u, std::thread::hardware_concurrency()));
    slot_opts.n_threads = std::max(1, total / opt.parallel);

    std::string name = opt.chat_template, found;
    if (name.empty()) name = ChatTemplate::detect(*model, &found);
    if (!name.empty()) tmpl.emplace(name, *model);
    else
      tmpl_problem = "this model has no chat template this server recognises (" + found +
                     "): restart the server with --chat-template NAME (llama2, llama3, chatml, zephyr or longllama), "
                     "or use /v1/completions with your own prompt format";
  }

  void log(const char* fmt, const std::string& a = "", const std::string& b = "") {
    if (opt.log_requests) std::fprintf(stderr, fmt, a.c_str(), b.c_str());
  }

  // ---------------------------------------------------------------- slots and the queue

  void start_workers() {
    running.resize(size_t(opt.parallel));
    for (int i = 0; i < opt.parallel; ++i) workers.emplace_back([this, i] { worker(i); });
  }

  // Queues a job; false when the queue is full.
  bool enqueue(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard<std::mutex> lock(qmu);
      if (stopping) return false;
      // A request waits only when every slot is busy; at most queue_size may wait.
      // Idle slots take queued jobs at once; beyond them at most queue_size may wait.
      const int idle = opt.parallel - active;
      if (int(queue.size()) + 1 - idle > opt.queue_size) return false;
      queue.push_back(job);
    }
    qcv.notify_one();
    return true;
  }

  void worker(int slot) {
    longctx::SessionOptions so = slot_opts;
    so.on_warning = [this](const std::string& w) { log("warning: %s\n", w); };
    longctx::Session session(model, so);
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(qmu);
        qcv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        job = queue.front();
        queue.pop_front();
        ++active;
        running[size_t(slot)] = job;
      }
      try {
        if (job->cancelled) throw Cancelled{};
        if (job->kind == Job::Kind::Ingest) ingest(*job, so);
        else generate(*job, session);
        job->finish();
      } catch (const Cancelled&) {
        std::lock_guard<std::mutex> lock(metrics.mu);
        ++metrics.cancelled;
        job->finish(ApiError(499, "request cancelled", "cancelled"));
      } catch (const ApiError& e) {
        job->finish(e);
      } catch (const std::exception& e) {
        // lcx::Error here is a limit the request hit (context, memory): the client's to fix.
        const bool user = dynamic_cast<const lcx::Error*>(&e) != nullptr;
        job->finish(ApiError(user ? 400 : 500, e.what(), user ? "invalid_request_error" : "server_error"));
      }
      std::lock_guard<std::mutex> lock(qmu);
      --active;
      running[size_t(slot)].reset();
    }
  }

  void generate(Job& job, longctx::Session& slot_session) {
    // A batch of prompts runs one after the other in this slot; prompt p's choices are
    // p * n .. p * n + n - 1.
    for (size_t pi = 0; pi < job.prompts.size(); ++pi) generate_one(job, slot_session, int(pi));
  }

  void generate_one(Job& job, longctx::Session& slot_session, int pi) {
    const CompletionRequest& rq = job.req;
    const Job::Prompt& prompt = job.prompts[size_t(pi)];
    std::unique_ptr<longctx::Session> doc_clone;
    longctx::Session* base = &slot_session;
    size_t reused = 0;  // prompt tokens already in the slot's cache (prompt cache)
    const bool scores_prompt = rq.echo && rq.logprobs >= 0;  // needs every prompt token's logits
    if (job.doc) {
      doc_clone = job.doc->session->clone();
      base = doc_clone.get();
    } else if (opt.cache_prompt && rq.cache_prompt && !scores_prompt && slot_session.can_truncate()) {
      // As llama.cpp's server: keep the longest common prefix of what this slot processed last
      // (the previous prompt and its answer) and this prompt; feed only the rest (at least the
      // last token, whose logits start generation). A chat that resends its history pays only
      // for the new turn. Exact for LLaMA (can_truncate); LongLLaMA uses documents instead.
      const std::vector<int32_t>& h = slot_session.history();
      while (reused < h.size() && reused + 1 < prompt.ids.size() && h[reused] == prompt.ids[reused]) ++reused;
      slot_session.truncate(int64_t(reused));
    } else {
      slot_session.reset();
    }
    job.cached_tokens += int64_t(reused);
    const auto t0 = Clock::now();
    auto progress = [&](int64_t, int64_t) {
      if (job.cancelled) throw Cancelled{};
    };
    // echo: the prompt's text (and with logprobs, each prompt token's log-probability given
    // the tokens before it) comes first in every choice.
    std::vector<TokenInfo> prompt_lps;
    if (rq.echo && rq.logprobs >= 0) {
      const std::vector<int32_t>& ids = prompt.ids;
      const int32_t V = model->n_vocab();
      prompt_lps.resize(ids.size());
      // The first token has a log-probability only after a document (its last logits).
      if (job.doc) prompt_lps[0].lp = longctx::token_logprob(base->logits().data(), V, ids[0], rq.logprobs);
      else prompt_lps[0].lp = {ids[0], std::nanf(""), {}};
      // Offsets into the echoed text: the decoded length of the tokens before each one.
      lcx::StreamDecoder dec(model->impl().tok(), /*strip_leading_space=*/!job.doc);
      int64_t at = 0;
      for (size_t k = 0; k < ids.size(); ++k) {
        prompt_lps[k].offset = std::min<int64_t>(at, int64_t(prompt.echo_text.size()));
        at += int64_t(dec.push(ids[k]).size());
      }
      base->feed_with_logits(ids, [&](int64_t first, int64_t n, const float* rows) {
        for (int64_t k = 0; k < n && first + k + 1 < int64_t(ids.size()); ++k)
          prompt_lps[size_t(first + k + 1)].lp =
              longctx::token_logprob(rows + k * V, V, ids[size_t(first + k + 1)], rq.logprobs);
      }, progress);
    } else {
      base->feed(std::vector<int32_t>(prompt.ids.begin() + std::ptrdiff_t(reused), prompt.ids.end()), nullptr, progress);
    }
    {
      std::lock_guard<std::mutex> lock(metrics.mu);
      metrics.prompt_tokens += prompt.ids.size() - reused;
      metrics.prompt_tokens_cached += reused;
      metrics.prompt_seconds += seconds_since(t0);
    }
    for (int i = 0; i < rq.n; ++i) {
      const int index = pi * rq.n + i;
      // Several choices: each but the last generates from a clone of the fed prompt.
      std::unique_ptr<longctx::Session> copy;
      longctx::Session* s = base;
      if (i + 1 < rq.n) {
        copy = base->clone();
        s = copy.get();
      }
      longctx::GenerateOptions g = rq.gen;
      g.sampling.seed += uint64_t(index);
      g.logprobs = rq.logprobs;
      if (rq.echo) job.push(Event{index, prompt.echo_text, "", prompt_lps});
      // text_offset of generated tokens: where the text emitted so far ends.
      int64_t text_len = rq.echo ? int64_t(prompt.echo_text.size()) : prompt.text_bytes;
      bool stop_token = false;
      const auto r = s->generate(g, [&](const longctx::Piece& p) {
        if (job.cancelled) return false;
        if (!p.text.empty() || p.logprob) {
          Event e{index, p.text, "", {}};
          if (p.logprob) e.lps.push_back({*p.logprob, text_len});
          text_len += int64_t(p.text.size());
          job.push(std::move(e));
        }
        if (std::find(job.stop_ids.begin(), job.stop_ids.end(), p.id) != job.stop_ids.end()) {
          stop_token = true;
          return false;
        }
        return true;
      });
      if (job.cancelled) throw Cancelled{};
      job.push(Event{index, "", stop_token ? "stop" : finish_reason(r.stop_reason), {}});
      {
        std::lock_guard<std::mutex> lock(job.mu);
        job.completion_tokens += int64_t(r.ids.size());
      }
      std::lock_guard<std::mutex> lock(metrics.mu);
      metrics.generated_tokens += r.ids.size();
      metrics.generation_seconds += r.gen_seconds;
      metrics.lookup_drafted += uint64_t(r.n_drafted);
      metrics.lookup_accepted += uint64_t(r.n_accepted);
    }
  }

  void ingest(Job& job, const longctx::SessionOptions& so) {
    auto doc = std::make_shared<Document>();
    doc->session = std::make_unique<longctx::Session>(model, so);
    const auto t0 = Clock::now();
    doc->session->feed(job.prompt_ids, nullptr, [&](int64_t, int64_t) {
      if (job.cancelled) throw Cancelled{};
    });
    doc->n_tokens = int64_t(job.prompt_ids.size());
    doc->created = unix_time();
    doc->id = random_id("doc-");
    {
      std::lock_guard<std::mutex> lock(metrics.mu);
      metrics.prompt_tokens += job.prompt_ids.size();
      metrics.prompt_seconds += seconds_since(t0);
    }
    std::lock_guard<std::mutex> lock(dmu);
    if (int(documents.size()) >= opt.max_documents) throw documents_full();
    documents[doc->id] = doc;
    job.ingested = doc;
  }

  ApiError documents_full() const {
    return ApiError(429,
                    "the server holds its maximum of " + std::to_string(opt.max_documents) +
                        " documents: DELETE /v1/documents/{id} one you no longer need, or restart with a larger --max-documents",
                    "invalid_request_error", "", "document_limit_reached");
  }

  // ---------------------------------------------------------------- log-probabilities

  // A token as text: the bytes it stands for in running text (leading space kept), or its
  // piece for control tokens ("<s>"), which stand for no text.
  std::string token_text(int32_t id) const {
    const lcx::Tokenizer& tok = model->impl().tok();
    std::string t = tok.token_bytes(id);
    const lcx::SpmVocab& v = tok.vocab();
    if (t.empty() && id >= 0 && size_t(id) < v.pieces.size() && v.types[size_t(id)] == lcx::TokenType::Control)
      t = v.pieces[size_t(id)];
    return t;
  }

  static json logprob_value(float x) { return std::isnan(x) ? json(nullptr) : json(x); }

  // The legacy completions format: parallel arrays; text_offset is where each token's text
  // starts in prompt + completion (the prompt counts with or without echo, as OpenAI's does).
  json completion_logprobs(const std::vector<TokenInfo>& infos) const {
    json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
    for (const auto& info : infos) {
      const longctx::TokenLogprob& t = info.lp;
      const std::string s = token_text(t.id);
      tokens.push_back(s);
      values.push_back(logprob_value(t.logprob));
      if (std::isnan(t.logprob)) {
        tops.push_back(nullptr);
      } else {
        json top = json::object();
        for (const auto& [id, lp] : t.top) {
          const std::string k = token_text(id);
          if (!top.contains(k)) top[k] = lp;  // two ids with one text: the likelier one
        }
        tops.push_back(std::move(top));
      }
      offsets.push_back(info.offset);
    }
    return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  json token_json(int32_t id, float logprob) const {
    const std::string s = token_text(id);
    json bytes = json::array();
    for (unsigned char c : s) bytes.push_back(int(c));
    return {{"token", s}, {"logprob", logprob_value(logprob)}, {"bytes", bytes}};
  }

  // The chat format: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}.
  json chat_logprobs(const std::vector<TokenInfo>& infos) const {
    json content = json::array();
    for (const auto& info : infos) {
      const longctx::TokenLogprob& t = info.lp;
      json e = token_json(t.id, t.logprob);
      json top = json::array();
      for (const auto& [id, lp] : t.top) top.push_back(token_json(id, lp));
      e["top_logprobs"] = std::move(top);
      content.push_back(std::move(e));
    }
    return {{"content", content}, {"refusal", nullptr}};
  }

  // ---------------------------------------------------------------- HTTP helpers

  static void send_json(httplib::Response& res, int status, const json& j) {
    res.status = status;
    res.set_content(dump(j), "application/json");
  }
  static void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

  // Every handler goes through this: a bad request is a 4xx JSON error, never a crash.
  static void guard(httplib::Response& res, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const lcx::Error& e) {
      send_error(res, ApiError(400, e.what()));
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, std::string("internal error: ") + e.what(), "server_error"));
    }
  }
  httplib::Server::Handler guarded(std::function<void(const httplib::Request&, httplib::Response&)> fn) {
    return [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) { guard(res, [&] { fn(req, res); }); };
  }

  // Routes with a JSON body read it here rather than letting httplib fill Request::body:
  // Debian's libcpp-httplib is compiled with an 8 KiB cap on bodies whose Content-Type is
  // application/x-www-form-urlencoded (curl -d's default; a macro our code cannot change), and
  // answers a missing or invalid Content-Length with a bare 400 after a read timeout (or a
  // 413 for "-5"). The body is JSON whatever the Content-Type says.
  using BodyHandler = std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;
  httplib::Server::HandlerWithContentReader with_body(BodyHandler fn) {
    return [this, fn = std::move(fn)](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      guard(res, [&] { fn(req, read_body(req, res, reader), res); });
    };
  }

  std::string read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) const {
    std::string te = req.get_header_value("Transfer-Encoding");
    for (auto& c : te) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (te != "chunked") {
      // A request without Content-Length or chunked encoding has no body (RFC 9112 6.3).
      if (!req.has_header("Content-Length"))
        throw ApiError(411, "the request has no Content-Length: send the JSON body with a Content-Length header (or chunked encoding)",
                       "invalid_request_error", "", "length_required");
      const std::string cl = req.get_header_value("Content-Length");
      if (cl.empty() || cl.find_first_not_of("0123456789") != std::string::npos)
        throw ApiError(400, "invalid Content-Length '" + cl + "': it must be the body's size in bytes", "invalid_request_error",
                       "", "invalid_content_length");
    }
    const std::string mib = std::to_string(opt.max_body_bytes >> 20) + " MiB";
    const ApiError too_large(413, "the request body is larger than this server's limit of " + mib, "invalid_request_error", "",
                             "request_too_large");
    if (req.is_multipart_form_data()) {
      // Read past it (the connection may carry another request), then refuse it.
      reader([](const httplib::MultipartFormData&) { return true; }, [](const char*, size_t) { return true; });
      if (res.status == 413) throw too_large;
      throw ApiError(415, "multipart/form-data is not accepted: send the request as a JSON body (Content-Type: application/json)",
                     "invalid_request_error", "", "unsupported_media_type");
    }
    // httplib decompresses gzip, deflate and br; the limit applies to the decompressed body.
    const std::string enc = req.get_header_value("Content-Encoding");
    const bool known_enc = enc.empty() || enc == "identity" || enc == "gzip" || enc == "deflate" || enc == "br";
    std::string body;
    bool over = false;
    const bool ok = reader([&](const char* p, size_t n) {
      over = body.size() + n > opt.max_body_bytes;
      if (!over) body.append(p, n);
      return !over;
    });
    if (over || res.status == 413) throw too_large;
    if (!known_enc)
      throw ApiError(415, "Content-Encoding '" + enc + "' is not supported: send the body uncompressed (or gzip, deflate, br)",
                     "invalid_request_error", "", "unsupported_media_type");
    if (!ok)
      throw ApiError(400,
                     enc.empty() || enc == "identity"
                         ? "could not read the request body: the connection ended or timed out before all of it arrived"
                         : "could not read the request body: it is not valid " + enc + " data (Content-Encoding: " + enc + ")",
                     "invalid_request_error", "", "invalid_body");
    return body;
  }

  // Waits for a job of a non-streaming request. A client that disconnects meanwhile cancels it
  // (checked a few times a second), as a streaming client does at the next write.
  void wait_or_cancel(const std::shared_ptr<Job>& job, const httplib::Request& req) {
    const int fd = connection_socket(req);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(job->mu);
        if (job->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return job->done; })) return;
      }
      if (fd >= 0 && !job->cancelled && peer_closed(fd)) cancel(job);
    }
  }

  // Cancels a job: a slot running it stops at its next batch or token; a queued one leaves the
  // queue now, so it does not hold a queue place until a slot is free.
  void cancel(const std::shared_ptr<Job>& job) {
    job->cancelled = true;
    {
      std::lock_guard<std::mutex> lock(qmu);
      auto it = std::find(queue.begin(), queue.end(), job);
      if (it == queue.end()) return;  // running (or done): the slot counts it
      queue.erase(it);
    }
    {
      std::lock_guard<std::mutex> lock(metrics.mu);
      ++metrics.cancelled;
    }
    job->finish(ApiError(499, "request cancelled", "cancelled"));
  }

  void check_model(const std::string& name) const {
    if (!name.empty() && name != opt.model_name)
      throw ApiError(404, "the model '" + name + "' does not exist: this server serves '" + opt.model_name + "' (see GET /v1/models)",
                     "invalid_request_error", "model", "model_not_found");
  }

  std::shared_ptr<const Document> find_document(const std::string& id) {
    std::lock_guard<std::mutex> lock(dmu);
    auto it = documents.find(id);
    if (it == documents.end())
      throw ApiError(404, "no document '" + id + "': create one with POST /v1/documents (ids are listed by GET /v1/documents)",
                     "invalid_request_error", "document", "document_not_found");
    return it->second;
  }

  // param: the field that holds the text (prompt, messages, text).
  void check_context(int64_t n_tokens, const char* what, const char* param) const {
    if (ctx_limit > 0 && n_tokens > ctx_limit)
      throw ApiError(400,
                     std::string(what) + " is " + std::to_string(n_tokens) + " tokens, more than this server's context of " +
                         std::to_string(ctx_limit) + " tokens: shorten it, or restart the server with a larger -c/--ctx-size "
                         "(past the trained context add RoPE scaling, e.g. --rope-scaling yarn --rope-scale 4)",
                     "invalid_request_error", param, "context_length_exceeded");
  }

  void check_ids(const std::vector<int32_t>& ids) const {
    for (int32_t id : ids)
      if (id < 0 || id >= model->n_vocab())
        throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(model->n_vocab()) + ")",
                       "invalid_request_error", "prompt", "invalid_value");
  }

  std::shared_ptr<Job> queue_or_429(std::shared_ptr<Job> job) {
    if (!enqueue(job))
      throw ApiError(429,
                     "the server is busy: all " + std::to_string(opt.parallel) + " slots are working and " +
                         std::to_string(opt.queue_size) + " requests are waiting; retry later (or raise --parallel / --queue-size)",
                     "rate_limit_exceeded", "", "queue_full");
    return job;
  }

  // ---------------------------------------------------------------- completions

  void completion(const httplib::Request& req, const std::string& body, httplib::Response& res, bool chat) {
    auto job = std::make_shared<Job>();
    job->req = parse_completion_request(body, chat, opt.limits);
    CompletionRequest& rq = job->req;
    check_model(rq.model);
    if (!rq.document.empty()) job->doc = find_document(rq.document);
    for (const auto& [tid, bias] : rq.gen.sampling.logit_bias)
      if (tid >= model->n_vocab())
        throw ApiError(400, "logit_bias names token " + std::to_string(tid) + ", outside the vocabulary [0, " +
                                std::to_string(model->n_vocab()) + ")",
                       "invalid_request_error", "logit_bias", "invalid_value");
    const bool continues = job->doc != nullptr;  // the document already starts with BOS
    if (chat) {
      if (!tmpl) throw ApiError(400, tmpl_problem, "invalid_request_error", "messages", "chat_template_missing");
      Job::Prompt q;
      q.ids = tmpl->tokenize(tmpl->render(rq.messages, true));
      if (continues && !q.ids.empty() && q.ids[0] == model->impl().tok().bos_id()) q.ids.erase(q.ids.begin());
      job->prompts.push_back(std::move(q));
      rq.gen.stop.insert(rq.gen.stop.end(), tmpl->stop_strings().begin(), tmpl->stop_strings().end());
      job->stop_ids = tmpl->stop_ids();
    } else {
      for (const CompletionRequest::Prompt& in : rq.prompts) {
        Job::Prompt q;
        if (in.is_ids) {
          check_ids(in.ids);
          q.ids = in.ids;
          if (rq.echo || rq.logprobs >= 0) q.echo_text = model->detokenize(in.ids);
          q.text_bytes = int64_t(q.echo_text.size());
          if (!rq.echo) q.echo_text.clear();
        } else {
          q.ids = model->tokenize(in.text, !continues);
          if (rq.echo) q.echo_text = in.text;
          q.text_bytes = int64_t(in.text.size());
        }
        job->prompts.push_back(std::move(q));
      }
    }
    const int64_t doc_tokens = job->doc ? job->doc->n_tokens : 0;
    int64_t n_prompt = 0;  // usage: every prompt's tokens, the document's with each
    for (const Job::Prompt& q : job->prompts) {
      if (q.ids.empty())
        throw ApiError(400, "the prompt is empty: give at least one token of text after the document", "invalid_request_error",
                       chat ? "messages" : "prompt", "invalid_value");
      check_context(doc_tokens + int64_t(q.ids.size()), "the prompt", chat ? "messages" : "prompt");
      n_prompt += doc_tokens + int64_t(q.ids.size());
    }
    const int n_choices = rq.n * int(job->prompts.size());
    queue_or_429(job);

    const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
    const int64_t created_at = unix_time();
    const int64_t doc_cached = doc_tokens * int64_t(job->prompts.size());
    auto usage = [job, n_prompt, doc_cached] {
      json u = {{"prompt_tokens", n_prompt},
                {"completion_tokens", job->completion_tokens},
                {"total_tokens", n_prompt + job->completion_tokens}};
      const int64_t cached = doc_cached + job->cached_tokens.load();
      if (cached > 0) u["prompt_tokens_details"] = {{"cached_tokens", cached}};
      return u;
    };

    if (!rq.stream) {
      wait_or_cancel(job, req);
      if (job->error) throw *job->error;
      json choices = json::array();
      for (int i = 0; i < n_choices; ++i) {
        const std::string& text = size_t(i) < job->texts.size() ? job->texts[size_t(i)] : std::string();
        const std::string& fin = size_t(i) < job->finishes.size() ? job->finishes[size_t(i)] : std::string("stop");
        static const std::vector<TokenInfo> none;
        const auto& lps = size_t(i) < job->lps.size() ? job->lps[size_t(i)] : none;
        json lp = nullptr;
        if (rq.logprobs >= 0) lp = chat ? chat_logprobs(lps) : completion_logprobs(lps);
        if (chat)
          choices.push_back({{"index", i},
                             {"message", {{"role", "assistant"}, {"content", text}}},
                             {"logprobs", lp},
                             {"finish_reason", fin}});
        else
          choices.push_back({{"index", i}, {"text", text}, {"logprobs", lp}, {"finish_reason", fin}});
      }
      send_json(res, 200,
                {{"id", id},
                 {"object", chat ? "chat.completion" : "text_completion"},
                 {"created", created_at},
                 {"model", opt.model_name},
                 {"system_fingerprint", "longctx"},
                 {"choices", choices},
                 {"usage", usage()}});
      return;
    }

    // Streaming: OpenAI's chunk objects as server-sent events, then `data: [DONE]`.
    struct StreamState {
      std::vector<bool> role_sent;
    };
    auto st = std::make_shared<StreamState>();
    st->role_sent.assign(size_t(n_choices), false);
    const bool want_lps = rq.logprobs >= 0;
    const bool include_usage = rq.include_usage;
    const std::string model_name = opt.model_name;
    auto chunk = [=](json choices) {
      json c = {{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_at},
                {"model", model_name},
                {"system_fingerprint", "longctx"},
                {"choices", std::move(choices)}};
      if (include_usage) c["usage"] = nullptr;
      return c;
    };
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, st, chunk, usage, chat, include_usage, want_lps](size_t, httplib::DataSink& sink) {
          std::deque<Event> evs;
          bool done = false;
          {
            std::unique_lock<std::mutex> lock(job->mu);
            job->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return !job->events.empty() || job->done; });
            evs.swap(job->events);
            done = job->done;
          }
          auto send = [&](const json& j) {
            const std::string s = "data: " + dump(j) + "\n\n";
            return sink.write(s.data(), s.size());
          };
          auto gone = [&] {
            job->cancelled = true;
            return false;
          };
          if (evs.empty() && !done) {
            // Nothing yet (queued, or a long prompt): an SSE comment keeps proxies from timing
            // out and tells us when the client has gone, so its job is cancelled.
            static const char ping[] = ": ping\n\n";
            return sink.write(ping, sizeof ping - 1) ? true : gone();
          }
          for (const Event& e : evs) {
            json lp = nullptr;
            if (want_lps && e.finish.empty())
              lp = chat ? chat_logprobs(e.lps) : completion_logprobs(e.lps);
            json choice = {{"index", e.index}, {"logprobs", lp},
                           {"finish_reason", e.finish.empty() ? json(nullptr) : json(e.finish)}};
            if (chat) {
              json delta = json::object();
              if (!st->role_sent[size_t(e.index)]) {
                delta["role"] = "assistant";
                st->role_sent[size_t(e.index)] = true;
              }
              if (!e.text.empty() || e.finish.empty()) delta["content"] = e.text;
              choice["delta"] = delta;
            } else {
              choice["text"] = e.text;
            }
            if (!send(chunk(json::array({choice})))) return gone();
          }
          if (!done) return true;
          if (job->error) {
            if (job->error->status != 499) send(error_body(*job->error));
          } else if (include_usage) {
            json u = chunk(json::array());
            u["usage"] = usage();
            send(u);
          }
          static const char fin[] = "data: [DONE]\n\n";
          sink.write(fin, sizeof fin - 1);
          sink.done();
          return true;
        },
        [job](bool ok) {
          if (!ok) job->cancelled = true;
        });
  }

  // ---------------------------------------------------------------- documents

  json document_json(const Document& d) const {
    return {{"id", d.id},
            {"object", "document"},
            {"created", d.created},
            {"n_tokens", d.n_tokens},
            {"n_memory", d.session->n_memory()},
            {"cache_bytes", d.session->cache_bytes()}};
  }

  void create_document(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw ApiError(400, "the request body must be a JSON object {\"text\": ...}", "invalid_request_error", "", "invalid_json");
    auto t = j.find("text");
    if (t == j.end() || t->is_null()) throw ApiError(400, "'text' is required", "invalid_request_error", "text", "missing_required_parameter");
    if (!t->is_string()) throw ApiError(400, "'text' must be a string", "invalid_request_error", "text", "invalid_type");
    if (auto m = j.find("model"); m != j.end() && !m->is_null()) {
      if (!m->is_string()) throw ApiError(400, "'model' must be a string", "invalid_request_error", "model", "invalid_type");
      check_model(m->get<std::string>());
    }
    {
      std::lock_guard<std::mutex> lock(dmu);
      if (int(documents.size()) >= opt.max_documents) throw documents_full();
    }
    auto job = std::make_shared<Job>();
    job->kind = Job::Kind::Ingest;
    job->prompt_ids = model->tokenize(t->get<std::string>(), true);
    check_context(int64_t(job->prompt_ids.size()), "the document", "text");
    wait_or_cancel(queue_or_429(job), req);
    if (job->error) throw *job->error;
    log("document %s: %s tokens\n", job->ingested->id, std::to_string(job->ingested->n_tokens));
    send_json(res, 200, document_json(*job->ingested));
  }

  // ---------------------------------------------------------------- tokenizer endpoints

  static json parse_object(const std::string& body, const char* shape) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw ApiError(400, std::string("the request body must be a JSON object ") + shape, "invalid_request_error", "",
                     "invalid_json");
    return j;
  }

  static bool flag(const json& j, const char* key, bool dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_boolean())
      throw ApiError(400, std::string("'") + key + "' must be true or false", "invalid_request_error", key, "invalid_type");
    return it->get<bool>();
  }

  // Text to ids where control-token pieces in the text ("</s>") are those tokens, as Hugging
  // Face tokenizers (and so vLLM's /tokenize) treat them; the text between them is encoded as
  // usual, each run on its own (SentencePiece's dummy-prefix space included).
  std::vector<int32_t> tokenize_special(const std::string& text, bool add_bos) const {
    const lcx::Tokenizer& tok = model->impl().tok();
    const lcx::SpmVocab& v = tok.vocab();
    std::vector<std::pair<std::string, int32_t>> specials;
    for (size_t i = 0; i < v.pieces.size(); ++i)
      if (v.types[i] == lcx::TokenType::Control && !v.pieces[i].empty()) specials.push_back({v.pieces[i], int32_t(i)});
    std::vector<int32_t> out;
    if (add_bos && v.add_bos && v.bos_id >= 0) out.push_back(v.bos_id);
    size_t at = 0;
    auto plain = [&](size_t b, size_t e) {
      if (e <= b) return;
      const auto ids = tok.encode(text.substr(b, e - b), false);
      out.insert(out.end(), ids.begin(), ids.end());
    };
    while (at < text.size()) {
      size_t best = std::string::npos, len = 0;
      int32_t id = -1;
      for (const auto& [piece, pid] : specials) {
        const size_t p = text.find(piece, at);
        if (p != std::string::npos && (p < best || (p == best && piece.size() > len))) {
          best = p;
          len = piece.size();
          id = pid;
        }
      }
      if (best == std::string::npos) break;
      plain(at, best);
      out.push_back(id);
      at = best + len;
    }
    plain(at, text.size());
    return out;
  }

  // GET /tokenizer_info (vLLM's): the special tokens, so clients such as lm-evaluation-harness
  // can tokenize through /tokenize and /detokenize instead of loading a tokenizer themselves.
  json tokenizer_info() const {
    const lcx::SpmVocab& v = model->impl().tok().vocab();
    auto piece = [&](int32_t id) {
      return id >= 0 && size_t(id) < v.pieces.size() ? json(v.pieces[size_t(id)]) : json(nullptr);
    };
    return {{"tokenizer_class", "LlamaTokenizer"},
            {"bos_token", piece(v.bos_id)},
            {"eos_token", piece(v.eos_id)},
            {"unk_token", piece(v.unk_id)},
            {"pad_token", piece(v.pad_id)},
            {"add_bos_token", v.add_bos},
            {"model_max_length", ctx_limit > 0 ? json(ctx_limit) : json(nullptr)},
            {"vocab_size", model->n_vocab()},
            {"chat_template", nullptr}};
  }

  // POST /tokenize: llama.cpp's {"content", "add_special", "with_pieces", "parse_special"} or
  // vLLM's {"prompt", "add_special_tokens"}; answers {"tokens", "count", "max_model_len"}
  // (pieces as {"id", "piece"} with with_pieces). BOS is added only when asked, as both servers
  // default; special-token text ("</s>") is that token unless "parse_special": false.
  void tokenize(const std::string& body, httplib::Response& res) {
    const json j = parse_object(body, "{\"content\": TEXT}");
    const char* key = j.contains("content") ? "content" : "prompt";
    auto t = j.find(key);
    if (t == j.end() || t->is_null())
      throw ApiError(400, "'content' is required (the text to tokenize)", "invalid_request_error", "content",
                     "missing_required_parameter");
    if (!t->is_string()) throw ApiError(400, std::string("'") + key + "' must be a string", "invalid_request_error", key, "invalid_type");
    if (auto m = j.find("model"); m != j.end() && !m->is_null()) {
      if (!m->is_string()) throw ApiError(400, "'model' must be a string", "invalid_request_error", "model", "invalid_type");
      check_model(m->get<std::string>());
    }
    const bool bos = flag(j, "add_special", flag(j, "add_special_tokens", false));
    const bool pieces = flag(j, "with_pieces", false);
    const std::vector<int32_t> ids = flag(j, "parse_special", true) ? tokenize_special(t->get<std::string>(), bos)
                                                                     : model->tokenize(t->get<std::string>(), bos);
    json tokens = json::array();
    for (int32_t id : ids) {
      if (pieces) tokens.push_back({{"id", id}, {"piece", token_text(id)}});
      else tokens.push_back(id);
    }
    send_json(res, 200, {{"tokens", tokens}, {"count", ids.size()}, {"max_model_len", ctx_limit > 0 ? json(ctx_limit) : json(nullptr)}});
  }

  // POST /detokenize: {"tokens": [ids]} -> {"content": TEXT} (llama.cpp's and vLLM's shape,
  // vLLM's key "prompt" in the answer too).
  void detokenize(const std::string& body, httplib::Response& res) {
    const json j = parse_object(body, "{\"tokens\": [ids]}");
    auto t = j.find("tokens");
    if (t == j.end() || !t->is_array())
      throw ApiError(400, "'tokens' is required: an array of token ids", "invalid_request_error", "tokens",
                     t == j.end() || t->is_null() ? "missing_required_parameter" : "invalid_type");
    std::vector<int32_t> ids;
    for (const json& v : *t) {
      if (!v.is_number_integer())
        throw ApiError(400, "'tokens' must contain integer token ids, got " + v.dump(), "invalid_request_error", "tokens",
                       "invalid_type");
      const int64_t id = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? -1 : v.get<int64_t>();
      if (id < 0 || id >= model->n_vocab())
        throw ApiError(400, "token id " + v.dump() + " is outside the vocabulary [0, " + std::to_string(model->n_vocab()) + ")",
                       "invalid_request_error", "tokens", "invalid_value");
      ids.push_back(int32_t(id));
    }
    const std::string text = model->detokenize(ids);
    send_json(res, 200, {{"content", text}, {"prompt", text}});
  }

  // ---------------------------------------------------------------- routes

  void routes() {
    http.set_payload_max_length(opt.max_body_bytes);
    // SO_REUSEADDR only, so a restart binds while old connections linger in TIME_WAIT.
    // httplib's default sets SO_REUSEPORT instead, with which a second server on a port in
    // use also "listens" and the kernel splits the connections between the two.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    const size_t n_http = size_t(opt.parallel + opt.queue_size + 8);
    http.new_task_queue = [n_http] { return new httplib::ThreadPool(n_http); };

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      const bool guarded_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/tokenize" || req.path == "/detokenize" ||
                                req.path == "/tokenizer_info";
      if (opt.api_key.empty() || !guarded_path) return httplib::Server::HandlerResponse::Unhandled;
      const std::string got = req.get_header_value("Authorization");
      // "Bearer KEY"; the scheme is case-insensitive (RFC 7235 2.1), the key is not.
      std::string scheme = got.substr(0, std::min(got.find(' '), got.size()));
      for (auto& c : scheme) c = char(std::tolower(static_cast<unsigned char>(c)));
      const size_t at = got.find_first_not_of(' ', scheme.size());
      const std::string key = scheme == "bearer" && at != std::string::npos ? got.substr(at) : std::string();
      const std::string& want = opt.api_key;
      bool ok = key.size() == want.size();
      unsigned diff = 0;  // compare every byte: the time does not tell how much matched
      for (size_t i = 0; ok && i < want.size(); ++i) diff |= unsigned(key[i] ^ want[i]);
      if (ok && diff == 0) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, ApiError(401,
                               got.empty() ? "missing API key: send the header 'Authorization: Bearer KEY'"
                                           : "incorrect API key: send the key this server was started with (--api-key)",
                               "invalid_request_error", "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    // httplib's own errors (before or instead of a handler) get a message that says what to fix.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;  // our own JSON error
      std::string msg, code;
      switch (res.status) {
        case 404:
          msg = "no route " + req.method + " " + req.path + ": see docs/SERVER.md for the endpoints";
          code = "not_found";
          break;
        case 400:
          // No path: the request line did not parse (httplib sets the path last).
          msg = req.path.empty() ? "malformed HTTP request line: expected 'METHOD /path HTTP/1.1' (plain HTTP, not HTTPS)"
                                 : "malformed HTTP request: check the headers, and send a JSON body with a Content-Length (or "
                                   "chunked encoding), uncompressed or gzip / deflate / br";
          code = "bad_request";
          break;
        case 413:
          msg = "the request body is larger than this server's limit of " + std::to_string(opt.max_body_bytes >> 20) + " MiB";
          code = "request_too_large";
          break;
        case 414:
          msg = "the request URI is longer than 8192 bytes: send parameters in the JSON body";
          code = "uri_too_long";
          break;
        case 415:
          msg = "unsupported Content-Encoding '" + req.get_header_value("Content-Encoding") + "': send the body uncompressed";
          code = "unsupported_media_type";
          break;
        default:
          msg = "request failed with HTTP status " + std::to_string(res.status);
      }
      res.set_content(dump(error_body(msg, "invalid_request_error", "", code)), "application/json");
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg += std::string(": ") + e.what();
      } catch (...) {
      }
      send_json(res, 500, error_body(msg, "server_error"));
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(metrics.mu);
        ++metrics.requests[{endpoint_label(req.path), res.status}];
      }
      if (opt.log_requests)
        std::fprintf(stderr, "%s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
    });

    http.Post("/v1/completions", with_body([this](const auto& q, const auto& b, auto& r) { completion(q, b, r, false); }));
    http.Post("/v1/chat/completions", with_body([this](const auto& q, const auto& b, auto& r) { completion(q, b, r, true); }));
    http.Get("/v1/models", guarded([this](const auto&, auto& r) {
      send_json(r, 200, {{"object", "list"}, {"data", json::array({model_json()})}});
    }));
    http.Get(R"(/v1/models/(.+))", guarded([this](const auto& q, auto& r) {
      check_model(q.matches[1].str());
      send_json(r, 200, model_json());
    }));
    http.Post("/v1/documents", with_body([this](const auto& q, const auto& b, auto& r) { create_document(q, b, r); }));
    http.Get("/v1/documents", guarded([this](const auto&, auto& r) {
      json data = json::array();
      std::lock_guard<std::mutex> lock(dmu);
      for (const auto& [id, d] : documents) data.push_back(document_json(*d));
      send_json(r, 200, {{"object", "list"}, {"data", data}});
    }));
    http.Get(R"(/v1/documents/([^/]+))", guarded([this](const auto& q, auto& r) {
      send_json(r, 200, document_json(*find_document(q.matches[1].str())));
    }));
    http.Delete(R"(/v1/documents/([^/]+))", guarded([this](const auto& q, auto& r) {
      const std::string id = q.matches[1].str();
      find_document(id);  // 404 when unknown
      {
        std::lock_guard<std::mutex> lock(dmu);
        documents.erase(id);  // requests already using it keep their reference
      }
      send_json(r, 200, {{"id", id}, {"object", "document"}, {"deleted", true}});
    }));
    http.Post("/tokenize", with_body([this](const auto&, const auto& b, auto& r) { tokenize(b, r); }));
    http.Post("/detokenize", with_body([this](const auto&, const auto& b, auto& r) { detokenize(b, r); }));
    http.Get("/tokenizer_info", guarded([this](const auto&, auto& r) { send_json(r, 200, tokenizer_info()); }));
    http.Get("/health", guarded([this](const auto&, auto& r) {
      std::lock_guard<std::mutex> lock(qmu);
      send_json(r, 200,
                {{"status", "ok"},
                 {"slots_idle", opt.parallel - active},
                 {"slots_processing", active},
                 {"queue", queue.size()}});
    }));
    http.Get("/metrics", guarded([this](const auto&, auto& r) {
      r.set_content(prometheus(), "text/plain; version=0.0.4");
    }));
  }

  json model_json() const {
    return {{"id", opt.model_name},
            {"object", "model"},
            {"created", created},
            {"owned_by", "longctx"},
            {"meta",
             {{"n_vocab", model->n_vocab()},
              {"n_ctx_train", model->n_ctx_train()},
              {"n_ctx", ctx_limit},
              {"fot_memory", model->has_fot_memory()},
              {"chat_template", tmpl ? json(tmpl->name()) : json(nullptr)}}}};
  }

  std::string prometheus() {
    std::string out;
    char buf[512];
    auto line = [&](const char* fmt, auto... args) {
      std::snprintf(buf, sizeof buf, fmt, args...);
      out += buf;
    };
    int n_active, n_queue;
    {
      std::lock_guard<std::mutex> lock(qmu);
      n_active = active;
      n_queue = int(queue.size());
    }
    int64_t mem_tokens = 0, doc_tokens = 0;
    size_t doc_bytes = 0;
    size_t n_docs;
    {
      std::lock_guard<std::mutex> lock(dmu);
      n_docs = documents.size();
      for (const auto& [id, d] : documents) {
        mem_tokens += d->session->n_memory();
        doc_tokens += d->n_tokens;
        doc_bytes += d->session->cache_bytes();
      }
    }
    std::lock_guard<std::mutex> lock(metrics.mu);
    out += "# HELP longctx_requests_total HTTP requests by endpoint and status.\n# TYPE longctx_requests_total counter\n";
    for (const auto& [k, v] : metrics.requests)
      line("longctx_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", k.first.c_str(), k.second, (unsigned long long)v);
    out += "# HELP longctx_prompt_tokens_total Prompt and document tokens processed.\n# TYPE longctx_prompt_tokens_total counter\n";
    line("longctx_prompt_tokens_total %llu\n", (unsigned long long)metrics.prompt_tokens);
    out += "# HELP longctx_prompt_tokens_cached_total Prompt tokens found in a slot's cache (not processed again).\n# TYPE longctx_prompt_tokens_cached_total counter\n";
    line("longctx_prompt_tokens_cached_total %llu\n", (unsigned long long)metrics.prompt_tokens_cached);
    out += "# HELP longctx_generated_tokens_total Tokens generated.\n# TYPE longctx_generated_tokens_total counter\n";
    line("longctx_generated_tokens_total %llu\n", (unsigned long long)metrics.generated_tokens);
    out += "# HELP longctx_prompt_seconds_total Time spent processing prompts.\n# TYPE longctx_prompt_seconds_total counter\n";
    line("longctx_prompt_seconds_total %.6f\n", metrics.prompt_seconds);
    out += "# HELP longctx_generation_seconds_total Time spent generating.\n# TYPE longctx_generation_seconds_total counter\n";
    line("longctx_generation_seconds_total %.6f\n", metrics.generation_seconds);
    out += "# HELP longctx_prompt_tokens_per_second Average prompt processing speed per slot.\n# TYPE longctx_prompt_tokens_per_second gauge\n";
    line("longctx_prompt_tokens_per_second %.3f\n", metrics.prompt_seconds > 0 ? double(metrics.prompt_tokens) / metrics.prompt_seconds : 0.0);
    out += "# HELP longctx_generation_tokens_per_second Average generation speed per slot.\n# TYPE longctx_generation_tokens_per_second gauge\n";
    line("longctx_generation_tokens_per_second %.3f\n",
         metrics.generation_seconds > 0 ? double(metrics.generated_tokens) / metrics.generation_seconds : 0.0);
    out += "# HELP longctx_lookup_draft_tokens_total Draft tokens fed by prompt lookup decoding (--lookup).\n# TYPE longctx_lookup_draft_tokens_total counter\n";
    line("longctx_lookup_draft_tokens_total %llu\n", (unsigned long long)metrics.lookup_drafted);
    out += "# HELP longctx_lookup_accepted_tokens_total Draft tokens the sampler picked (forward calls saved).\n# TYPE longctx_lookup_accepted_tokens_total counter\n";
    line("longctx_lookup_accepted_tokens_total %llu\n", (unsigned long long)metrics.lookup_accepted);
    out += "# HELP longctx_requests_cancelled_total Requests abandoned because the client went away.\n# TYPE longctx_requests_cancelled_total counter\n";
    line("longctx_requests_cancelled_total %llu\n", (unsigned long long)metrics.cancelled);
    out += "# HELP longctx_queue_length Requests waiting for a slot.\n# TYPE longctx_queue_length gauge\n";
    line("longctx_queue_length %d\n", n_queue);
    out += "# HELP longctx_slots_active Slots processing a request.\n# TYPE longctx_slots_active gauge\n";
    line("longctx_slots_active %d\n", n_active);
    out += "# HELP longctx_slots_total Slots (--parallel).\n# TYPE longctx_slots_total gauge\n";
    line("longctx_slots_total %d\n", opt.parallel);
    out += "# HELP longctx_documents Stored documents.\n# TYPE longctx_documents gauge\n";
    line("longctx_documents %zu\n", n_docs);
    out += "# HELP longctx_document_tokens Tokens held by stored documents.\n# TYPE longctx_document_tokens gauge\n";
    line("longctx_document_tokens %lld\n", (long long)doc_tokens);
    out += "# HELP longctx_memory_tokens LongLLaMA memory tokens held by stored documents.\n# TYPE longctx_memory_tokens gauge\n";
    line("longctx_memory_tokens %lld\n", (long long)mem_tokens);
    out += "# HELP longctx_document_cache_bytes Cache bytes held by stored documents.\n# TYPE longctx_document_cache_bytes gauge\n";
    line("longctx_document_cache_bytes %zu\n", doc_bytes);
    return out;
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(qmu);
      if (stopping) return;
      stopping = true;
      for (auto& j : queue) {
        j->cancelled = true;
        j->finish(ApiError(503, "the server is shutting down", "server_error"));
      }
      queue.clear();
      for (auto& j : running)
        if (j) j->cancelled = true;
    }
    qcv.notify_all();
    http.stop();
  }
};

Server::Server(std::shared_ptr<const longctx::Model> model, ServerOptions opt)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(opt))) {}

Server::~Server() {
  stop();
  for (auto& w : impl_->workers)
    if (w.joinable()) w.join();
}

void Server::run(const std::function<void(int)>& on_listening) {
  Impl& I = *impl_;
  I.routes();
  int port = I.opt.port;
  if (port == 0) port = I.http.bind_to_any_port(I.opt.host);
  else if (!I.http.bind_to_port(I.opt.host, port)) port = -1;
  if (port <= 0)
    fail("cannot listen on " + I.opt.host + ":" + std::to_string(I.opt.port) +
         ": the port is in use or the address is not local; choose another with --port / --host");
  I.start_workers();
  if (on_listening) on_listening(port);
  I.http.listen_after_bind();
  I.stop();
  for (auto& w : I.workers)
    if (w.joinable()) w.join();
}

void Server::stop() { impl_->stop(); }

}  // namespace lcx::server
