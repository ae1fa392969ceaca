// `longctx serve` end to end: starts the real binary on a free loopback port with the fixture
// model and talks HTTP/1.1 to it over plain sockets (no client library, so chunked encoding,
// SSE framing and disconnects are exercised as a client would see them). The random fixture
// model produces gibberish: these tests check mechanics, not text quality.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "longctx/longctx.h"
#include "server/chat_template.h"
#include "testutil.h"

using json = nlohmann::json;
using namespace lcx::test;

namespace {

using Clock = std::chrono::steady_clock;

std::string model_dir() { return fixtures_dir() + "/models/llama_mha"; }
std::string tokenizer_path() { return fixtures_dir() + "/tokenizer.model"; }
longctx::LoadOptions fixture_load_options() {
  longctx::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path();
  return lo;
}

// ---------------------------------------------------------------- a running server process

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extra, const std::string& model = model_dir()) {
    std::vector<std::string> args = {bin_dir() + "/longctx", "serve", "-m", model, "--port", "0", "-t", "2"};
    if (model == model_dir()) args.insert(args.end(), {"--tokenizer", tokenizer_path()});
    args.insert(args.end(), extra.begin(), extra.end());
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    log_ = tmp_dir() + "/server-" + std::to_string(counter()++) + ".log";
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int err = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) dup2(err, 2);
      close(out[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // The server prints "listening on http://127.0.0.1:PORT" once it accepts connections.
    std::string line;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (line.find('\n') == std::string::npos && Clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, size_t(n));
    }
    close(out[0]);
    const size_t colon = line.rfind(':');
    if (line.find("listening on") == std::string::npos || colon == std::string::npos)
      throw std::runtime_error("server did not start: " + line + "\n" + log());
    port_ = std::stoi(line.substr(colon + 1));
  }
  ~ServerProcess() { stop(); }

  // SIGTERM, then SIGKILL if it does not exit within 10 s. Returns the exit status.
  int stop() {
    if (pid_ <= 0) return status_;
    kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    int st = 0;
    while (waitpid(pid_, &st, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    status_ = st;
    return st;
  }
  bool alive() const { return pid_ > 0 && kill(pid_, 0) == 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  int port() const { return port_; }
  std::string log() const {
    try {
      return read_file(log_);
    } catch (...) {
      return "";
    }
  }

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> c{0};
    return c;
  }
  pid_t pid_ = -1;
  int port_ = 0;
  int status_ = 0;
  std::string log_;
};

// ---------------------------------------------------------------- a minimal HTTP/1.1 client

int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{60, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

std::string request_text(const std::string& method, const std::string& path, const std::string& body,
                         const std::vector<std::string>& headers) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& h : headers) r += h + "\r\n";
  if (!body.empty() || method == "POST") r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

struct Response {
  int status = 0;
  std::string headers;
  std::string body;  // de-chunked
  json j() const { return json::parse(body); }
};

std::string dechunk(const std::string& s) {
  std::string out;
  size_t p = 0;
  while (p < s.size()) {
    const size_t eol = s.find("\r\n", p);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(s.substr(p, eol - p), nullptr, 16);
    if (n == 0) break;
    out += s.substr(eol + 2, n);
    p = eol + 2 + n + 2;
  }
  return out;
}

Response parse_response(const std::string& raw) {
  Response r;
  const size_t he = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || he == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  r.headers = raw.substr(0, he);
  std::string lower = r.headers;
  for (auto& c : lower) c = char(std::tolower(c));
  r.body = raw.substr(he + 4);
  if (lower.find("transfer-encoding: chunked") != std::string::npos) r.body = dechunk(r.body);
  return r;
}

Response http(int port, const std::string& method, const std::string& path, const std::string& body = "",
              const std::vector<std::string>& headers = {}) {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  send_all(fd, request_text(method, path, body, headers));
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, size_t(n));
  close(fd);
  return parse_response(raw);
}

Response post(int port, const std::string& path, const json& body, const std::vector<std::string>& headers = {}) {
  return http(port, "POST", path, body.dump(), headers);
}

// Sends bytes as they are (headers of our choosing, or no HTTP at all) and reads the answer:
// up to the end of its Content-Length body (the server may keep the connection open), else to
// the end of the connection.
Response raw_request(int port, const std::string& raw) {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  send_all(fd, raw);
  std::string got;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    got.append(buf, size_t(n));
    const size_t he = got.find("\r\n\r\n");
    if (he == std::string::npos) continue;
    std::string lower = got.substr(0, he);
    for (auto& c : lower) c = char(std::tolower(c));
    const size_t cl = lower.find("\r\ncontent-length: ");
    if (cl != std::string::npos && got.size() >= he + 4 + std::stoul(lower.substr(cl + 18))) break;
  }
  close(fd);
  return parse_response(got);
}

std::string error_message(const Response& r) {
  try {
    return r.j().at("error").at("message").get<std::string>();
  } catch (...) {
    return "";
  }
}

// SSE: the JSON payloads of `data:` events, in order; *done when `data: [DONE]` ended it.
std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t p = 0;
  while (p < body.size()) {
    size_t e = body.find("\n\n", p);
    if (e == std::string::npos) e = body.size();
    const std::string ev = body.substr(p, e - p);
    p = e + 2;
    if (ev.rfind("data: ", 0) != 0) continue;  // comments (": ping")
    const std::string data = ev.substr(6);
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    out.push_back(json::parse(data));
  }
  return out;
}

bool is_openai_error(const Response& r) {
  try {
    const json j = r.j();
    const json& e = j.at("error");
    return e.at("message").is_string() && !e.at("message").get<std::string>().empty() && e.at("type").is_string() &&
           e.contains("param") && e.contains("code");
  } catch (...) {
    return false;
  }
}

json greedy(json body, int max_tokens = 12) {
  body["temperature"] = 0;
  body["max_tokens"] = max_tokens;
  return body;
}

// The main server: two slots, ChatML, a 512-token context, three documents at most. Without
// the prompt cache: tests here compare texts of requests that either slot may serve, and a
// prompt fed whole or from the cache differs in float rounding (a batch GEMM against the
// decode GEMV), which could flip a near-tie greedy token; ServerPromptCache tests the cache.
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--chat-template", "chatml", "--parallel", "2", "-c", "512", "--max-documents", "3",
                                 "--max-tokens", "256", "--no-cache-prompt"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void TearDown() override { ASSERT_TRUE(server_->alive()) << server_->log(); }
  static int port() { return server_->port(); }
  static ServerProcess* server_;
};
ServerProcess* ServerTest::server_ = nullptr;

TEST_F(ServerTest, HealthAndModels) {
  auto h = http(port(), "GET", "/health");
  ASSERT_EQ(h.status, 200);
  EXPECT_EQ(h.j()["status"], "ok");
  auto m = http(port(), "GET", "/v1/models");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.j()["object"], "list");
  ASSERT_EQ(m.j()["data"].size(), 1u);
  EXPECT_EQ(m.j()["data"][0]["id"], "llama_mha");
  EXPECT_EQ(m.j()["data"][0]["object"], "model");
  EXPECT_EQ(http(port(), "GET", "/v1/models/llama_mha").status, 200);
  EXPECT_EQ(http(port(), "GET", "/v1/models/gpt-4").status, 404);
}

TEST_F(ServerTest, CompletionUsageAndDeterminism) {
  auto r = post(port(), "/v1/completions", greedy({{"prompt", "Hello world"}, {"model", "llama_mha"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.j();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "llama_mha");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_FALSE(j["choices"][0]["text"].get<std::string>().empty());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  // "Hello world" is [BOS, ▁Hello, ▁world] for the OpenLLaMA tokenizer (3 tokens).
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["total_tokens"], 15);
  auto again = post(port(), "/v1/completions", greedy({{"prompt", "Hello world"}}));
  EXPECT_EQ(again.j()["choices"][0]["text"], j["choices"][0]["text"]);
  // Token-id prompts are accepted too.
  auto ids = post(port(), "/v1/completions", greedy({{"prompt", {1, 15043, 3186}}}));
  ASSERT_EQ(ids.status, 200) << ids.body;
  EXPECT_EQ(ids.j()["usage"]["prompt_tokens"], 3);
}

TEST_F(ServerTest, SeededSamplingIsReproducible) {
  json body = {{"prompt", "Once upon a time"}, {"max_tokens", 10}, {"temperature", 1.0}, {"top_k", 0}, {"top_p", 1.0},
               {"min_p", 0.0}, {"seed", 1234}};
  auto a = post(port(), "/v1/completions", body), b = post(port(), "/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.j()["choices"][0]["text"], b.j()["choices"][0]["text"]);
  body["frequency_penalty"] = 1.0;
  body["presence_penalty"] = 0.5;
  EXPECT_EQ(post(port(), "/v1/completions", body).status, 200);
}

TEST_F(ServerTest, StreamingCompletionMatchesNonStreaming) {
  const json body = greedy({{"prompt", "The quick brown fox"}}, 16);
  auto plain = post(port(), "/v1/completions", body);
  ASSERT_EQ(plain.status, 200);
  json sbody = body;
  sbody["stream"] = true;
  auto s = post(port(), "/v1/completions", sbody);
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_NE(s.headers.find("text/event-stream"), std::string::npos);
  bool done = false;
  auto evs = sse_events(s.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(evs.size(), 2u);
  std::string text;
  std::string finish;
  for (const auto& e : evs) {
    EXPECT_EQ(e["object"], "text_completion");
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, plain.j()["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(finish, "length");
}

TEST_F(ServerTest, ChatStreamingAndUsage) {
  const json msgs = json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi!"}}});
  auto plain = post(port(), "/v1/chat/completions", greedy({{"messages", msgs}}, 10));
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json pj = plain.j();
  EXPECT_EQ(pj["object"], "chat.completion");
  EXPECT_EQ(pj["choices"][0]["message"]["role"], "assistant");
  EXPECT_GT(pj["usage"]["prompt_tokens"].get<int>(), 10);

  json sb = greedy({{"messages", msgs}}, 10);
  sb["stream"] = true;
  sb["stream_options"] = {{"include_usage", true}};
  auto s = post(port(), "/v1/chat/completions", sb);
  ASSERT_EQ(s.status, 200);
  bool done = false;
  auto evs = sse_events(s.body, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(evs.size(), 3u);
  EXPECT_EQ(evs[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(evs[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text, finish;
  for (const auto& e : evs)
    for (const auto& c : e["choices"]) {
      if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
  EXPECT_EQ(text, pj["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, pj["choices"][0]["finish_reason"].get<std::string>());
  // The last event carries the usage with no choices.
  EXPECT_TRUE(evs.back()["choices"].empty());
  // (cached_tokens depends on which of the two slots served each request: the prompt cache)
  for (const char* k : {"prompt_tokens", "completion_tokens", "total_tokens"})
    EXPECT_EQ(evs.back()["usage"][k], pj["usage"][k]) << k;
}

TEST_F(ServerTest, SeveralChoices) {
  auto r = post(port(), "/v1/chat/completions",
                greedy({{"messages", {{{"role", "user"}, {"content", "Tell me"}}}}, {"n", 3}}, 6));
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.j();
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    // Greedy: every choice is the same continuation.
    EXPECT_EQ(j["choices"][i]["message"]["content"], j["choices"][0]["message"]["content"]);
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 18);

  json sb = greedy({{"prompt", "abc"}, {"n", 2}, {"stream", true}}, 5);
  auto s = post(port(), "/v1/completions", sb);
  bool done = false;
  auto evs = sse_events(s.body, &done);
  EXPECT_TRUE(done);
  std::string t0, t1;
  for (const auto& e : evs) (e["choices"][0]["index"] == 0 ? t0 : t1) += e["choices"][0]["text"].get<std::string>();
  EXPECT_FALSE(t0.empty());
  EXPECT_EQ(t0, t1);
}

TEST_F(ServerTest, StopStrings) {
  auto full = post(port(), "/v1/completions", greedy({{"prompt", "In the beginning"}}, 24));
  ASSERT_EQ(full.status, 200);
  const std::string text = full.j()["choices"][0]["text"];
  ASSERT_GE(text.size(), 12u);
  // A stop string from the middle of the greedy text: the output ends right before it.
  const std::string stop = text.substr(text.size() / 2, 3);
  const size_t at = text.find(stop);
  for (const json& s : {json(stop), json::array({"\x01never", stop})}) {
    auto r = post(port(), "/v1/completions", greedy({{"prompt", "In the beginning"}, {"stop", s}}, 24));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.j()["choices"][0]["text"], text.substr(0, at));
    EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "stop");
    json sb = greedy({{"prompt", "In the beginning"}, {"stop", s}, {"stream", true}}, 24);
    bool done = false;
    std::string streamed;
    for (const auto& e : sse_events(post(port(), "/v1/completions", sb).body, &done))
      streamed += e["choices"][0]["text"].get<std::string>();
    EXPECT_EQ(streamed, text.substr(0, at));
  }
}

TEST_F(ServerTest, PromptOverContextIs400) {
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "word ";
  auto r = post(port(), "/v1/completions", {{"prompt", long_text}});
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(is_openai_error(r));
  EXPECT_EQ(r.j()["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(r.j()["error"]["param"], "prompt");
  // param names the field that holds the text of each endpoint.
  auto c = post(port(), "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", long_text}}}}});
  EXPECT_EQ(c.status, 400);
  EXPECT_EQ(c.j()["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(c.j()["error"]["param"], "messages");
  auto d = post(port(), "/v1/documents", {{"text", long_text}});
  EXPECT_EQ(d.status, 400);
  EXPECT_EQ(d.j()["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(d.j()["error"]["param"], "text");
  auto m = post(port(), "/v1/completions", {{"prompt", "x"}, {"max_tokens", 100000}});
  EXPECT_EQ(m.status, 400);
  EXPECT_EQ(m.j()["error"]["param"], "max_tokens");
}

TEST_F(ServerTest, Metrics) {
  post(port(), "/v1/completions", greedy({{"prompt", "metrics"}}, 4));
  auto r = http(port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  for (const char* s : {"longctx_requests_total{endpoint=\"/v1/completions\",status=\"200\"}", "longctx_prompt_tokens_total",
                        "longctx_generated_tokens_total", "longctx_generation_tokens_per_second", "longctx_queue_length 0",
                        "longctx_slots_active", "longctx_memory_tokens", "# TYPE longctx_requests_total counter"})
    EXPECT_NE(r.body.find(s), std::string::npos) << s;
}

TEST_F(ServerTest, DocumentsAreProcessedOnce) {
  const std::string doc = "The secret code is 4711. The sky is blue and the grass is green.";
  auto c = post(port(), "/v1/documents", {{"text", doc}});
  ASSERT_EQ(c.status, 200) << c.body;
  const std::string id = c.j()["id"];
  EXPECT_EQ(id.rfind("doc-", 0), 0u);
  const int n_doc = c.j()["n_tokens"];
  // A question on the document equals the same tokens sent whole: the stored state is reused.
  auto model = longctx::Model::load(model_dir(), fixture_load_options());
  std::vector<int32_t> all = model->tokenize(doc, true);
  ASSERT_EQ(int(all.size()), n_doc);
  const auto q = model->tokenize(" The secret code is", false);
  all.insert(all.end(), q.begin(), q.end());
  auto with_doc = post(port(), "/v1/completions", greedy({{"prompt", " The secret code is"}, {"document", id}}, 8));
  ASSERT_EQ(with_doc.status, 200) << with_doc.body;
  auto whole = post(port(), "/v1/completions", greedy({{"prompt", all}}, 8));
  EXPECT_EQ(with_doc.j()["choices"][0]["text"], whole.j()["choices"][0]["text"]);
  EXPECT_EQ(with_doc.j()["usage"]["prompt_tokens"], int(all.size()));
  EXPECT_EQ(with_doc.j()["usage"]["prompt_tokens_details"]["cached_tokens"], n_doc);
  // Several questions, chat too; the document is unchanged by them.
  auto chat = post(port(), "/v1/chat/completions",
                   greedy({{"messages", {{{"role", "user"}, {"content", "What is the code?"}}}}, {"document", id}}, 6));
  EXPECT_EQ(chat.status, 200) << chat.body;
  auto again = post(port(), "/v1/completions", greedy({{"prompt", " The secret code is"}, {"document", id}}, 8));
  EXPECT_EQ(again.j()["choices"][0]["text"], with_doc.j()["choices"][0]["text"]);
  // Scoring a continuation of the document: every prompt token has a log-probability (the
  // first against the document's last logits), the same as scoring the whole text.
  auto scored = post(port(), "/v1/completions",
                     greedy({{"prompt", " The secret code is"}, {"document", id}, {"echo", true}, {"logprobs", 0}}, 0));
  ASSERT_EQ(scored.status, 200) << scored.body;
  EXPECT_EQ(scored.j()["choices"][0]["text"], " The secret code is");
  auto whole_scored = post(port(), "/v1/completions", greedy({{"prompt", all}, {"echo", true}, {"logprobs", 0}}, 0));
  const json a = scored.j()["choices"][0]["logprobs"]["token_logprobs"];
  const json b = whole_scored.j()["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_EQ(a.size(), q.size());
  ASSERT_EQ(b.size(), all.size());
  for (size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(a[i].get<double>(), b[size_t(n_doc) + i].get<double>(), 1e-4) << i;
  auto list = http(port(), "GET", "/v1/documents");
  EXPECT_NE(list.body.find(id), std::string::npos);
  EXPECT_EQ(http(port(), "GET", "/v1/documents/" + id).status, 200);
  // At most --max-documents 3.
  std::vector<std::string> extra;
  int status = 200;
  for (int i = 0; i < 4 && status == 200; ++i) {
    auto e = post(port(), "/v1/documents", {{"text", "extra document " + std::to_string(i)}});
    status = e.status;
    if (status == 200) extra.push_back(e.j()["id"]);
  }
  EXPECT_EQ(status, 429);
  EXPECT_EQ(extra.size(), 2u);
  for (const auto& e : extra) EXPECT_EQ(http(port(), "DELETE", "/v1/documents/" + e).status, 200);
  auto del = http(port(), "DELETE", "/v1/documents/" + id);
  EXPECT_EQ(del.status, 200);
  EXPECT_EQ(del.j()["deleted"], true);
  EXPECT_EQ(http(port(), "DELETE", "/v1/documents/" + id).status, 404);
  auto gone = post(port(), "/v1/completions", greedy({{"prompt", "x"}, {"document", id}}));
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(gone.j()["error"]["code"], "document_not_found");
}

// Several clients at once on two slots: all answered, each exactly as when sent alone.
TEST_F(ServerTest, ConcurrentClientsMatchSequential) {
  const int N = 6;
  std::vector<json> bodies;
  for (int i = 0; i < N; ++i) {
    if (i % 2) bodies.push_back(greedy({{"prompt", "Request number " + std::to_string(i)}}, 16));
    else bodies.push_back(greedy({{"messages", {{{"role", "user"}, {"content", "Chat " + std::to_string(i)}}}}}, 16));
  }
  auto path = [](int i) { return i % 2 ? "/v1/completions" : "/v1/chat/completions"; };
  auto text = [](const json& j) {
    const json& c = j["choices"][0];
    return c.contains("text") ? c["text"].get<std::string>() : c["message"]["content"].get<std::string>();
  };
  std::vector<std::string> seq(N), par(N);
  for (int i = 0; i < N; ++i) seq[size_t(i)] = text(post(port(), path(i), bodies[size_t(i)]).j());
  std::vector<int> status(N);
  std::vector<std::thread> ts;
  for (int i = 0; i < N; ++i)
    ts.emplace_back([&, i] {
      json b = bodies[size_t(i)];
      const bool stream = i >= 4;  // some clients stream
      if (stream) b["stream"] = true;
      auto r = post(port(), path(i), b);
      status[size_t(i)] = r.status;
      if (r.status != 200) return;
      if (!stream) {
        par[size_t(i)] = text(r.j());
        return;
      }
      bool done = false;
      for (const auto& e : sse_events(r.body, &done)) {
        const json& c = e["choices"][0];
        if (c.contains("text")) par[size_t(i)] += c["text"].get<std::string>();
        else if (c["delta"].contains("content")) par[size_t(i)] += c["delta"]["content"].get<std::string>();
      }
    });
  for (auto& t : ts) t.join();
  for (int i = 0; i < N; ++i) {
    EXPECT_EQ(status[size_t(i)], 200) << i;
    EXPECT_EQ(par[size_t(i)], seq[size_t(i)]) << i;
  }
}

// A few hundred bad requests: each is a 4xx with an OpenAI error body; the server stays up.
// Log-probabilities as OpenAI returns them, with the values the engine computes for the same
// tokens: completions (echo for prompt scoring, as lm-evaluation-harness asks), chat, streaming.
TEST_F(ServerTest, Logprobs) {
  longctx::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path();
  auto m = longctx::Model::load(model_dir(), lo);
  const int32_t V = m->n_vocab();

  // Prompt scoring: echo + logprobs, one generated token, prompt as a batch of one id list.
  const std::vector<int32_t> ids = m->tokenize("The quick brown fox jumps");
  json body = greedy({{"prompt", json::array({ids})}, {"echo", true}, {"logprobs", 2}}, 1);
  auto r = post(port(), "/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const json c = r.j()["choices"][0];
  const json lp = c["logprobs"];
  const size_t n = ids.size() + 1;
  ASSERT_EQ(lp["tokens"].size(), n) << lp.dump();
  ASSERT_EQ(lp["token_logprobs"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  ASSERT_EQ(lp["text_offset"].size(), n);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());  // BOS: nothing before it
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["tokens"][0], "<s>");
  EXPECT_EQ(lp["tokens"][1], " The");
  EXPECT_EQ(c["text"].get<std::string>().rfind(m->detokenize(ids), 0), 0u) << c["text"];  // echoed prompt first
  // The values: log-softmax of the logits of a forward over prompt + the generated token.
  std::vector<int32_t> all = ids;
  all.push_back(m->tokenize(c["text"].get<std::string>()).back());  // (the one generated token)
  longctx::Session s(m);
  std::vector<float> logits;
  s.feed(ids, &logits);
  for (size_t i = 1; i < ids.size(); ++i) {
    const auto want = longctx::token_logprob(logits.data() + (i - 1) * size_t(V), V, ids[i], 2);
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), want.logprob, 1e-4) << i;
    ASSERT_EQ(lp["top_logprobs"][i].size(), 2u);
    double best = -1e30;
    for (auto& [k, v] : lp["top_logprobs"][i].items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(best, want.top[0].second, 1e-4);
  }
  // text_offset points into the returned text: each token's text is there (the first visible
  // one without the leading space SentencePiece's decoding drops).
  const std::string text = c["text"];
  for (size_t i = 1; i < n; ++i) {
    std::string t = lp["tokens"][i];
    if (i == 1) t.erase(0, 1);
    EXPECT_EQ(text.compare(lp["text_offset"][i].get<size_t>(), t.size(), t), 0) << i << " " << text;
  }
  // The generated token is greedy: its log-probability is the best of its alternatives.
  const json& last_top = lp["top_logprobs"][n - 1];
  double best = -1e30;
  for (auto& [k, v] : last_top.items()) best = std::max(best, v.get<double>());
  EXPECT_NEAR(lp["token_logprobs"][n - 1].get<double>(), best, 1e-6);
  const auto want_last = longctx::token_logprob(logits.data() + (ids.size() - 1) * size_t(V),
                                                V, longctx::token_logprob(logits.data() + (ids.size() - 1) * size_t(V), V, 0, 1).top[0].first, 0);
  EXPECT_NEAR(lp["token_logprobs"][n - 1].get<double>(), want_last.logprob, 1e-4);

  // max_tokens 0 with echo: the prompt alone, scored.
  auto z = post(port(), "/v1/completions", greedy({{"prompt", "The quick brown fox jumps"}, {"echo", true}, {"logprobs", 0}}, 0));
  ASSERT_EQ(z.status, 200) << z.body;
  EXPECT_EQ(z.j()["choices"][0]["text"], "The quick brown fox jumps");
  EXPECT_EQ(z.j()["choices"][0]["logprobs"]["tokens"].size(), ids.size());
  EXPECT_EQ(z.j()["usage"]["completion_tokens"], 0);

  // Without echo: generated tokens only, offsets after the prompt; streaming gives the same.
  json g = greedy({{"prompt", "Hello world"}, {"logprobs", 1}}, 6);
  auto plain = post(port(), "/v1/completions", g);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json pl = plain.j()["choices"][0]["logprobs"];
  ASSERT_EQ(pl["token_logprobs"].size(), 6u);
  EXPECT_EQ(pl["text_offset"][0], std::string("Hello world").size());  // OpenAI counts the prompt
  const std::string gen = plain.j()["choices"][0]["text"];
  for (size_t i = 0; i < 6; ++i) {
    const std::string t = pl["tokens"][i];
    EXPECT_EQ(("Hello world" + gen).compare(pl["text_offset"][i].get<size_t>(), t.size(), t), 0) << i;
  }
  g["stream"] = true;
  auto st = post(port(), "/v1/completions", g);
  bool done = false;
  json streamed = json::array();
  for (const auto& e : sse_events(st.body, &done))
    if (!e["choices"].empty() && e["choices"][0]["logprobs"].is_object())
      for (const auto& v : e["choices"][0]["logprobs"]["token_logprobs"]) streamed.push_back(v);
  EXPECT_TRUE(done);
  EXPECT_EQ(streamed, pl["token_logprobs"]);
  // Off: null, as OpenAI sends.
  EXPECT_TRUE(post(port(), "/v1/completions", greedy({{"prompt", "Hello"}}, 2)).j()["choices"][0]["logprobs"].is_null());

  // Chat: {"content": [{token, logprob, bytes, top_logprobs}]}, streaming the same values.
  json chat = greedy({{"messages", {{{"role", "user"}, {"content", "Hi!"}}}}, {"logprobs", true}, {"top_logprobs", 3}}, 5);
  auto cr = post(port(), "/v1/chat/completions", chat);
  ASSERT_EQ(cr.status, 200) << cr.body;
  const json content = cr.j()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), cr.j()["usage"]["completion_tokens"].get<size_t>());
  for (const auto& e : content) {
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    EXPECT_EQ(e["top_logprobs"][0]["logprob"], e["logprob"]);  // greedy
    EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);
    std::string bytes;
    for (const auto& b : e["bytes"]) bytes += char(b.get<int>());
    EXPECT_EQ(bytes, e["token"].get<std::string>());
  }
  chat["stream"] = true;
  auto cs = post(port(), "/v1/chat/completions", chat);
  json sc = json::array();
  for (const auto& e : sse_events(cs.body, &done))
    if (!e["choices"].empty() && e["choices"][0]["logprobs"].is_object())
      for (const auto& v : e["choices"][0]["logprobs"]["content"]) sc.push_back(v);
  EXPECT_EQ(sc, content);
}

// llama.cpp's and vLLM's tokenizer endpoints: the model's own tokenizer, round trip.
TEST_F(ServerTest, TokenizeAndDetokenize) {
  auto m = longctx::Model::load(model_dir(), fixture_load_options());
  const std::vector<int32_t> ids = m->tokenize("Hello world", false);  // [▁Hello, ▁world]
  ASSERT_EQ(ids.size(), 2u);
  auto t = post(port(), "/tokenize", {{"content", "Hello world"}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.j()["tokens"], json(ids));  // no BOS unless asked
  EXPECT_EQ(t.j()["count"], 2);
  EXPECT_EQ(t.j()["max_model_len"], 512);
  EXPECT_EQ(post(port(), "/tokenize", {{"prompt", "Hello world"}, {"add_special_tokens", true}}).j()["tokens"],
            json({1, ids[0], ids[1]}));
  auto p = post(port(), "/tokenize", {{"content", "Hello"}, {"add_special", true}, {"with_pieces", true}});
  EXPECT_EQ(p.j()["tokens"], json::array({{{"id", 1}, {"piece", "<s>"}}, {{"id", ids[0]}, {"piece", " Hello"}}}));
  auto d = post(port(), "/detokenize", {{"tokens", {1, ids[0], ids[1]}}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.j()["content"], "Hello world");
  EXPECT_EQ(d.j()["prompt"], "Hello world");  // vLLM's key
  // Special-token text is that token (as Hugging Face tokenizers and vLLM do), unless turned off.
  EXPECT_EQ(post(port(), "/tokenize", {{"prompt", "</s>"}}).j()["tokens"], json({2}));
  EXPECT_EQ(post(port(), "/tokenize", {{"content", "Hello world</s>"}}).j()["tokens"], json({ids[0], ids[1], 2}));
  EXPECT_EQ(post(port(), "/tokenize", {{"content", "</s>"}, {"parse_special", false}}).j()["tokens"],
            json(m->tokenize("</s>", false)));
  // What lm-evaluation-harness's remote tokenizer asks first.
  auto info = http(port(), "GET", "/tokenizer_info");
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.j()["eos_token"], "</s>");
  EXPECT_EQ(info.j()["bos_token"], "<s>");
  EXPECT_EQ(info.j()["model_max_length"], 512);
  for (const json& bad : {json::object(), json{{"content", 5}}, json{{"content", "a"}, {"add_special", "yes"}},
                          json{{"content", "a"}, {"model", "gpt-4"}}})
    EXPECT_TRUE(is_openai_error(post(port(), "/tokenize", bad))) << bad;
  for (const json& bad : {json::object(), json{{"tokens", "1 2"}}, json{{"tokens", {1, -1}}}, json{{"tokens", {1, 99999999}}},
                          json{{"tokens", {1.5}}}, json{{"tokens", {json(18446744073709551615ull)}}}}) {
    auto r = post(port(), "/detokenize", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_TRUE(is_openai_error(r)) << bad;
  }
  EXPECT_EQ(http(port(), "POST", "/tokenize", "{").status, 400);
}

// OpenAI's batched prompts: an array of strings or of token-id arrays; prompt p's choices are
// p * n .. p * n + n - 1, each as the same prompt alone would give.
TEST_F(ServerTest, BatchedPrompts) {
  const std::vector<std::string> prompts = {"Hello world", "The quick brown fox"};
  std::vector<std::string> alone;
  for (const auto& p : prompts) alone.push_back(post(port(), "/v1/completions", greedy({{"prompt", p}}, 6)).j()["choices"][0]["text"]);
  auto r = post(port(), "/v1/completions", greedy({{"prompt", prompts}, {"n", 2}}, 6));
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.j();
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], alone[size_t(i / 2)]) << i;  // greedy: both choices alike
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3 + 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4 * 6);
  // Token-id arrays, with echo and logprobs (lm-evaluation-harness with batch_size > 1).
  longctx::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path();
  auto m = longctx::Model::load(model_dir(), lo);
  auto ids = post(port(), "/v1/completions",
                  greedy({{"prompt", {m->tokenize(prompts[0]), m->tokenize(prompts[1])}}, {"echo", true}, {"logprobs", 1}}, 1));
  ASSERT_EQ(ids.status, 200) << ids.body;
  ASSERT_EQ(ids.j()["choices"].size(), 2u);
  EXPECT_EQ(ids.j()["choices"][1]["logprobs"]["tokens"].size(), 5u + 1u);
  EXPECT_EQ(ids.j()["choices"][1]["text"].get<std::string>().rfind(prompts[1], 0), 0u);
  // Streaming: every chunk names its choice; the texts add up per index.
  auto st = post(port(), "/v1/completions", greedy({{"prompt", prompts}, {"stream", true}}, 6));
  bool done = false;
  std::map<int, std::string> texts;
  for (const auto& e : sse_events(st.body, &done))
    for (const auto& c : e["choices"]) texts[c["index"].get<int>()] += c["text"].get<std::string>();
  EXPECT_TRUE(done);
  ASSERT_EQ(texts.size(), 2u);
  EXPECT_EQ(texts[0], alone[0]);
  EXPECT_EQ(texts[1], alone[1]);
}

// OpenAI's logit_bias: -100 bans a token, +100 forces it; log-probabilities stay the model's.
TEST_F(ServerTest, LogitBias) {
  json body = greedy({{"prompt", "Hello world"}, {"logprobs", 1}}, 4);
  auto plain = post(port(), "/v1/completions", body);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json lp = plain.j()["choices"][0]["logprobs"];
  longctx::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path();
  auto m = longctx::Model::load(model_dir(), lo);
  // Ban the first greedy token: the first token changes.
  const std::string first = lp["tokens"][0];
  const auto first_ids = m->tokenize(first, false);
  ASSERT_EQ(first_ids.size(), 1u) << first;
  body["logit_bias"] = {{std::to_string(first_ids[0]), -100}};
  auto banned = post(port(), "/v1/completions", body);
  ASSERT_EQ(banned.status, 200) << banned.body;
  EXPECT_NE(banned.j()["choices"][0]["logprobs"]["tokens"][0], first);
  // Force a token: every step picks it, and its reported log-probability is the model's own.
  const int32_t forced = m->tokenize(" banana", false).back();
  body["logit_bias"] = {{std::to_string(forced), 100}};
  auto f = post(port(), "/v1/completions", body);
  ASSERT_EQ(f.status, 200) << f.body;
  const json fl = f.j()["choices"][0]["logprobs"];
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(m->tokenize(fl["tokens"][i].get<std::string>(), false).back(), forced);
  EXPECT_LT(fl["token_logprobs"][0].get<double>(), -1.0);  // unlikely for the model itself
}

// JSON mode: the text is always a prefix of one JSON object; "stop" means it is one.
TEST_F(ServerTest, JsonMode) {
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    json body = greedy({{"response_format", {{"type", "json_object"}}}}, 30);
    if (std::string(path) == "/v1/completions") body["prompt"] = "A JSON object:";
    else body["messages"] = {{{"role", "user"}, {"content", "Reply in JSON."}}};
    body["temperature"] = 0.9;
    body["seed"] = 3;
    auto r = post(port(), path, body);
    ASSERT_EQ(r.status, 200) << r.body;
    const json c = r.j()["choices"][0];
    const std::string text = c.contains("message") ? c["message"]["content"].get<std::string>() : c["text"].get<std::string>();
    // Close it with the parser's help: a prefix of an object plus the right closers parses.
    if (c["finish_reason"] == "stop") {
      EXPECT_TRUE(json::accept(text)) << text;
      EXPECT_TRUE(json::parse(text).is_object()) << text;
    } else {
      EXPECT_EQ(c["finish_reason"], "length");
      EXPECT_FALSE(json::accept(text)) << text;  // unfinished
      EXPECT_EQ(text.find_first_not_of(" \n\t\r"), text.find('{')) << text;  // it starts as an object
    }
  }
  EXPECT_EQ(post(port(), "/v1/completions", greedy({{"prompt", "x"}, {"response_format", {{"type", "text"}}}}, 2)).status, 200);
}

// curl -d sends application/x-www-form-urlencoded; the body is JSON all the same, and the
// 64 MiB limit holds for it (httplib alone caps such bodies at 8 KiB).
TEST_F(ServerTest, FormContentTypeIsReadAsJson) {
  const json body = greedy({{"prompt", "Hello world"}, {"padding", std::string(20 << 10, 'x')}}, 4);
  const std::string b = body.dump();
  for (const char* type : {"application/x-www-form-urlencoded", "text/plain"}) {
    auto r = raw_request(port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: " +
                                     std::string(type) + "\r\nContent-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b);
    ASSERT_EQ(r.status, 200) << type << " " << r.body;
    EXPECT_EQ(r.j()["usage"]["completion_tokens"], 4);
  }
  // Chunked bodies are read too.
  std::string chunked = "POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string t = json{{"content", "hi"}}.dump();
  char hex[16];
  std::snprintf(hex, sizeof hex, "%zx", t.size());
  chunked += std::string(hex) + "\r\n" + t + "\r\n0\r\n\r\n";
  auto c = raw_request(port(), chunked);
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_GE(c.j()["count"].get<int>(), 1);
}

// Requests httplib refuses before a handler sees them, and bodies our reader refuses: OpenAI's
// error shape with a message that says what to fix, answered at once (no read timeout).
TEST_F(ServerTest, HttpErrorsSayWhatToFix) {
  const auto t0 = Clock::now();
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  const std::string b = greedy({{"prompt", "hi"}}, 2).dump();
  auto no_len = raw_request(port(), head + "\r\n");  // curl -X POST without -d
  EXPECT_EQ(no_len.status, 411) << no_len.body;
  EXPECT_TRUE(is_openai_error(no_len)) << no_len.body;
  EXPECT_NE(error_message(no_len).find("Content-Length"), std::string::npos) << no_len.body;
  auto neg = raw_request(port(), head + "Content-Length: -5\r\n\r\n");
  EXPECT_EQ(neg.status, 400) << neg.body;
  EXPECT_NE(error_message(neg).find("invalid Content-Length '-5'"), std::string::npos) << neg.body;
  auto gz = raw_request(port(), head + "Content-Encoding: gzip\r\nContent-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b);
  EXPECT_EQ(gz.status, 400) << gz.body;
  EXPECT_NE(error_message(gz).find("not valid gzip"), std::string::npos) << gz.body;
  auto zstd = raw_request(port(), head + "Content-Encoding: zstd\r\nContent-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b);
  EXPECT_EQ(zstd.status, 415) << zstd.body;
  EXPECT_NE(error_message(zstd).find("uncompressed"), std::string::npos) << zstd.body;
  const std::string mp = "--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--XyZ--\r\n";
  auto multi = raw_request(port(), head + "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: " +
                                       std::to_string(mp.size()) + "\r\n\r\n" + mp);
  EXPECT_EQ(multi.status, 415) << multi.body;
  EXPECT_NE(error_message(multi).find("JSON body"), std::string::npos) << multi.body;
  for (const char* raw : {"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "FETCH /v1/models HTTP/1.1\r\n\r\n"}) {
    auto g = raw_request(port(), raw);
    EXPECT_EQ(g.status, 400) << raw;
    EXPECT_TRUE(is_openai_error(g)) << raw << " -> " << g.body;
    EXPECT_NE(error_message(g).find("malformed HTTP request line"), std::string::npos) << g.body;
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 4.0);  // httplib's read timeout is 5 s
  EXPECT_EQ(post(port(), "/v1/completions", greedy({{"prompt", "hi"}}, 2)).status, 200);
}

TEST_F(ServerTest, MalformedRequestsNeverCrash) {
  const auto t0 = Clock::now();
  const json ok_chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}};
  const json ok_cmpl = {{"prompt", "hi"}, {"max_tokens", 2}};
  std::vector<std::pair<std::string, std::string>> bad;  // path, body
  for (const char* body : {"", "{", "}", "[]", "null", "42", "\"text\"", "{\"prompt\": }", "{\"prompt\": \"a\",}",
                           "{'prompt': 'a'}", "{\"prompt\": \"\\ud800\"}", "\xff\xfe\x00garbage", "{\"prompt\": \"a\"} trailing",
                           "{\"messages\": [}", "{\"prompt\": \"\xc3\x28\"}", "{\"prompt\": \"\xed\xa0\x80\"}"}) {
    bad.push_back({"/v1/completions", body});
    bad.push_back({"/v1/chat/completions", body});
    bad.push_back({"/v1/documents", body});
  }
  // Wrong types / values of known fields.
  const std::vector<std::pair<std::string, json>> fields = {
      {"max_tokens", "8"},     {"max_tokens", -1},         {"max_tokens", 1.5},     {"max_tokens", true},
      {"max_tokens", 1e300},   {"temperature", "hot"},     {"temperature", -1},     {"temperature", 99},
      {"top_p", 0},            {"top_p", 2},               {"top_p", "x"},          {"top_k", -3},
      {"top_k", 0.5},          {"min_p", 7},               {"n", 0},                {"n", 1000},
      {"n", "two"},            {"stream", "yes"},          {"stream", 1},           {"stop", 5},
      {"stop", {1, 2}},        {"stop", {{"a", 1}}},       {"seed", "abc"},         {"seed", 0.5},
      {"frequency_penalty", 3}, {"presence_penalty", "x"}, {"repeat_penalty", 0},   {"model", 5},
      {"model", "gpt-4"},      {"stream_options", 3},      {"stream_options", {{"include_usage", "y"}}},
      {"logprobs", "yes"},     {"logprobs", 21},           {"document", 7},
      {"response_format", "json"}, {"response_format", {{"type", "json_schema"}}}, {"response_format", {{"type", "xml"}}},
      {"response_format", json::object()}, {"logit_bias", {1, 2}},  {"logit_bias", {{"x", 1}}}, {"logit_bias", {{"5", 101}}}, {"logit_bias", {{"-3", 1}}},
      {"logit_bias", {{"99999999", 1}}}, {"logit_bias", {{"12", "up"}}}, {"logit_bias", {{"1e3", 1}}},            {"document", ""},        {"document", "doc-nope"},
      {"ignore_eos", "no"},    {"max_completion_tokens", "9"}};
  for (const auto& [k, v] : fields) {
    json c = ok_cmpl, h = ok_chat;
    c[k] = v;
    h[k] = v;
    bad.push_back({"/v1/completions", c.dump()});
    bad.push_back({"/v1/chat/completions", h.dump()});
  }
  json too_many = json::array();
  for (int i = 0; i < 65; ++i) too_many.push_back("a");
  for (const json& p : {json(nullptr), json(5), json::object(), json::array(), json({"a", 5}), json({-1}),
                        json({1, 99999999}), json({1, "x"}), json({json({1, 2}), json("x")}), json({{-1}}),
                        json({json::array()}), json({json({1}), json::array()}), json(true), too_many})
    bad.push_back({"/v1/completions", json{{"prompt", p}}.dump()});
  // Completions take `logprobs` as a count, chat as a boolean with `top_logprobs`.
  bad.push_back({"/v1/completions", json{{"prompt", "hi"}, {"logprobs", true}}.dump()});
  bad.push_back({"/v1/completions", json{{"prompt", "hi"}, {"echo", "yes"}}.dump()});
  for (const json& t : {json(3), json(-1), json("x")})
    bad.push_back({"/v1/chat/completions",
                   json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"top_logprobs", t}}.dump()});
  bad.push_back({"/v1/chat/completions",
                 json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"logprobs", 3}}.dump()});
  bad.push_back({"/v1/chat/completions",
                 json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"logprobs", true}, {"top_logprobs", 21}}.dump()});
  for (const json& m : {json(nullptr), json("hi"), json::array(), json({1}), json({{{"content", "x"}}}),
                        json({{{"role", "user"}}}), json({{{"role", "robot"}, {"content", "x"}}}),
                        json({{{"role", 3}, {"content", "x"}}}), json({{{"role", "user"}, {"content", 3}}}),
                        json({{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}),
                        json({{{"role", "user"}, {"content", {{{"type", "text"}, {"text", 4}}}}}})})
    bad.push_back({"/v1/chat/completions", json{{"messages", m}}.dump()});
  for (const json& d : {json{{"text", 5}}, json{{"nottext", "a"}}, json{{"text", nullptr}}, json{{"text", "a"}, {"model", "x"}}})
    bad.push_back({"/v1/documents", d.dump()});
  std::string huge;
  for (int i = 0; i < 700; ++i) huge += "again ";
  bad.push_back({"/v1/completions", json{{"prompt", huge}}.dump()});
  bad.push_back({"/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", huge}}}}}.dump()});
  bad.push_back({"/v1/documents", json{{"text", huge + huge}}.dump()});

  int n = 0;
  for (int round = 0; round < 2; ++round)
    for (const auto& [path, body] : bad) {
      auto r = http(port(), "POST", path, body);
      ++n;
      EXPECT_GE(r.status, 400) << path << " " << body;
      EXPECT_LT(r.status, 500) << path << " " << body << " -> " << r.body;
      EXPECT_TRUE(is_openai_error(r)) << path << " " << body << " -> " << r.body;
    }
  // Wrong methods, unknown paths, garbage that is not HTTP at all.
  for (const char* p : {"/", "/v1", "/v1/completion", "/v2/completions", "/v1/documents/", "/../etc/passwd", "/%00"}) {
    auto r = http(port(), "GET", p);
    EXPECT_GE(r.status, 400) << p;
    EXPECT_LT(r.status, 500) << p;
    ++n;
  }
  EXPECT_GE(http(port(), "GET", "/v1/completions").status, 400);
  EXPECT_GE(http(port(), "PUT", "/v1/chat/completions", "{}").status, 400);
  for (const char* raw : {"GARBAGE\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00", "POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                          "GET / HTTP/9.9\r\n\r\n"}) {
    const int fd = connect_to(port());
    ASSERT_GE(fd, 0);
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send_all(fd, raw);
    char buf[256];
    (void)!recv(fd, buf, sizeof buf, 0);
    close(fd);
    ++n;
  }
  // Unknown fields are ignored, as OpenAI does.
  json extra = ok_cmpl;
  extra["frobnicate"] = {{"x", 1}};
  extra["user"] = "someone";
  EXPECT_EQ(post(port(), "/v1/completions", extra).status, 200);

  EXPECT_GE(n, 200);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 120.0);
  ASSERT_TRUE(server_->alive());
  EXPECT_EQ(http(port(), "GET", "/health").status, 200);
  auto a = post(port(), "/v1/completions", greedy({{"prompt", "Hello world"}}));
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(a.j()["usage"]["completion_tokens"], 12);
}

// The prompt cache (llama.cpp's cache_prompt): one slot keeps its last prompt + answer; a
// prompt that extends it feeds only the new tokens, with the same result as feeding it whole.
TEST(ServerPromptCache, ReusesThePrefixExactly) {
  ServerProcess s({"--parallel", "1", "-c", "512"});
  const std::string p1 = "Once upon a time there was a little robot who lived in a quiet town by the sea.";
  auto r1 = post(s.port(), "/v1/completions", greedy({{"prompt", p1}}, 8));
  ASSERT_EQ(r1.status, 200) << r1.body;
  EXPECT_FALSE(r1.j()["usage"].contains("prompt_tokens_details"));  // nothing cached yet
  // The next turn: the previous prompt, its answer and more.
  const std::string p2 = p1 + r1.j()["choices"][0]["text"].get<std::string>() + " Then one day";
  json b2 = greedy({{"prompt", p2}, {"logprobs", 1}}, 8);
  auto r2 = post(s.port(), "/v1/completions", b2);
  ASSERT_EQ(r2.status, 200) << r2.body;
  const int cached = r2.j()["usage"]["prompt_tokens_details"]["cached_tokens"];
  EXPECT_GE(cached, 20);  // at least p1's tokens
  EXPECT_LT(cached, r2.j()["usage"]["prompt_tokens"].get<int>());
  b2["cache_prompt"] = false;
  auto r3 = post(s.port(), "/v1/completions", b2);
  ASSERT_EQ(r3.status, 200) << r3.body;
  EXPECT_FALSE(r3.j()["usage"].contains("prompt_tokens_details"));
  EXPECT_EQ(r3.j()["choices"][0]["text"], r2.j()["choices"][0]["text"]);
  const json a = r2.j()["choices"][0]["logprobs"]["token_logprobs"], b = r3.j()["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i].get<double>(), b[i].get<double>(), 1e-4) << i;
  // The same prompt again: all but its last token come from the cache.
  b2.erase("cache_prompt");
  auto r4 = post(s.port(), "/v1/completions", b2);
  EXPECT_EQ(r4.j()["usage"]["prompt_tokens_details"]["cached_tokens"], r4.j()["usage"]["prompt_tokens"].get<int>() - 1);
  EXPECT_EQ(r4.j()["choices"][0]["text"], r3.j()["choices"][0]["text"]);
  // A different prompt starts over (only BOS is shared).
  auto r5 = post(s.port(), "/v1/completions", greedy({{"prompt", "Completely different"}}, 2));
  EXPECT_EQ(r5.j()["usage"]["prompt_tokens_details"]["cached_tokens"], 1) << r5.body;
  EXPECT_NE(http(s.port(), "GET", "/metrics").body.find("longctx_prompt_tokens_cached_total"), std::string::npos);
  EXPECT_EQ(post(s.port(), "/v1/completions", greedy({{"prompt", "x"}, {"cache_prompt", "no"}}, 1)).status, 400);

  ServerProcess off({"--parallel", "1", "-c", "512", "--no-cache-prompt"});
  post(off.port(), "/v1/completions", greedy({{"prompt", p1}}, 8));
  auto o = post(off.port(), "/v1/completions", greedy({{"prompt", p2}}, 8));
  ASSERT_EQ(o.status, 200) << o.body;
  EXPECT_FALSE(o.j()["usage"].contains("prompt_tokens_details"));
  EXPECT_EQ(o.j()["choices"][0]["text"], r3.j()["choices"][0]["text"]);
}

// --lookup: drafts change how many forward calls an answer takes, not the answer - also when
// the slot's prompt cache continues from a session that generated with drafts.
TEST(ServerLookup, SameTextAsPlainDecoding) {
  const std::string gqa = fixtures_dir() + "/models/llama_gqa";
  ServerProcess plain({"--parallel", "1", "-c", "512", "--tokenizer", tokenizer_path()}, gqa);
  ServerProcess fast({"--parallel", "1", "-c", "512", "--tokenizer", tokenizer_path(), "--lookup", "3"}, gqa);
  std::string prompt = "The cat sat on the mat. The cat sat on the mat. The cat";
  for (int turn = 0; turn < 3; ++turn) {
    const json body = greedy({{"prompt", prompt}, {"logprobs", 1}}, 24);
    auto a = post(plain.port(), "/v1/completions", body), b = post(fast.port(), "/v1/completions", body);
    ASSERT_EQ(a.status, 200) << a.body;
    ASSERT_EQ(b.status, 200) << b.body;
    const std::string text = a.j()["choices"][0]["text"];
    EXPECT_EQ(b.j()["choices"][0]["text"], text) << "turn " << turn;
    EXPECT_EQ(b.j()["usage"], a.j()["usage"]) << "turn " << turn;
    const json la = a.j()["choices"][0]["logprobs"]["token_logprobs"], lb = b.j()["choices"][0]["logprobs"]["token_logprobs"];
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i].get<double>(), lb[i].get<double>(), 1e-4) << i;
    prompt += text + " The dog";  // the next turn extends this one (prompt cache)
  }
  const std::string metrics = http(fast.port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("longctx_lookup_draft_tokens_total"), std::string::npos);
  EXPECT_EQ(metrics.find("longctx_lookup_draft_tokens_total 0\n"), std::string::npos) << metrics;  // drafts were fed
}

TEST(ServerAuth, ApiKeyAndMissingChatTemplate) {
  ServerProcess s({"--api-key", "sekrit"});
  const json body = greedy({{"prompt", "hi"}}, 2);
  auto none = post(s.port(), "/v1/completions", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_TRUE(is_openai_error(none));
  EXPECT_EQ(none.j()["error"]["code"], "invalid_api_key");
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Bearer sekrit2"}).status, 401);
  EXPECT_EQ(http(s.port(), "GET", "/v1/models").status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Bearer sekrit"}).status, 200);
  // The scheme is case-insensitive (RFC 7235); the key is not.
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: bearer sekrit"}).status, 200);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: BEARER sekrit"}).status, 200);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Bearer SEKRIT"}).status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Basic sekrit"}).status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: Bearersekrit"}).status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body, {"Authorization: sekrit"}).status, 401);
  EXPECT_EQ(http(s.port(), "GET", "/health").status, 200);
  EXPECT_EQ(post(s.port(), "/tokenize", {{"content", "hi"}}).status, 401);
  EXPECT_EQ(post(s.port(), "/detokenize", {{"tokens", {1}}}).status, 401);
  // The fixture model has no chat template and none was given: a 400 that says what to do.
  auto chat = post(s.port(), "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}},
                   {"Authorization: Bearer sekrit"});
  EXPECT_EQ(chat.status, 400);
  EXPECT_NE(chat.j()["error"]["message"].get<std::string>().find("--chat-template"), std::string::npos);
  EXPECT_EQ(s.stop(), 0);  // SIGTERM: a clean exit
}

// An empty key would serve without authentication: refused at startup like a bad flag.
TEST(ServerAuth, EmptyApiKeyIsRefused) {
  const std::string serve = "timeout 30 " + bin_dir() + "/longctx serve -m " + model_dir() + " --tokenizer " + tokenizer_path() +
                            " --port 0";
  std::string out;
  EXPECT_EQ(run_cmd(serve + " --api-key '' 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("--api-key is empty"), std::string::npos) << out;
  EXPECT_EQ(run_cmd("LONGCTX_API_KEY= " + serve + " 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("$LONGCTX_API_KEY is empty"), std::string::npos) << out;
}

// A second server on a port in use fails with a clear message instead of sharing the port
// (httplib's default SO_REUSEPORT let both listen, and the kernel split the requests).
TEST(ServerPort, PortInUseIsAnError) {
  ServerProcess a({});
  std::string out;
  const int rc = run_cmd("timeout 30 " + bin_dir() + "/longctx serve -m " + model_dir() + " --tokenizer " + tokenizer_path() +
                             " --port " + std::to_string(a.port()) + " 2>&1",
                         &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "the second server listened: " << out;
  EXPECT_NE(out.find("port is in use"), std::string::npos) << out;
  EXPECT_EQ(out.find("listening on"), std::string::npos) << out;
  EXPECT_EQ(http(a.port(), "GET", "/health").status, 200);
}

// One slot, one queue place: a third request gets 429; disconnecting clients cancel their
// requests, and the server is free again at once.
TEST(ServerBusy, QueueFullAndCancellation) {
  ServerProcess s({"--parallel", "1", "--queue-size", "1", "-c", "16384", "--max-tokens", "16000"});
  const json longgen = {{"prompt", "go"}, {"max_tokens", 15000}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}};
  auto open_stream = [&](bool wait_first_token) {
    const int fd = connect_to(s.port());
    send_all(fd, request_text("POST", "/v1/completions", longgen.dump(), {}));
    if (wait_first_token) {
      std::string got;
      char buf[4096];
      while (got.find("data: {") == std::string::npos) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, size_t(n));
      }
      EXPECT_NE(got.find("data: {"), std::string::npos);
    }
    return fd;
  };
  const int a = open_stream(true);  // running
  const int b = open_stream(false);  // waiting
  // Wait until the second request is queued.
  for (int i = 0; i < 200; ++i) {
    auto h = http(s.port(), "GET", "/health");
    if (h.status == 200 && h.j()["queue"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto c = post(s.port(), "/v1/completions", greedy({{"prompt", "third"}}, 2));
  EXPECT_EQ(c.status, 429);
  EXPECT_TRUE(is_openai_error(c));
  EXPECT_EQ(c.j()["error"]["code"], "queue_full");
  close(a);
  close(b);
  // Both long requests are cancelled (the server notices at its next write, within about a
  // second), so a new one is answered long before 15000 tokens could have been generated.
  const auto t0 = Clock::now();
  Response d;
  while (Clock::now() - t0 < std::chrono::seconds(20)) {
    d = post(s.port(), "/v1/completions", greedy({{"prompt", "after"}}, 4));
    if (d.status != 429) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(d.status, 200) << d.body;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
  auto m = http(s.port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("longctx_requests_cancelled_total 2"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("endpoint=\"/v1/completions\",status=\"429\"}"), std::string::npos);
}

// Non-streaming requests are cancelled too when their client disconnects: the running one
// stops within a fraction of a second, the queued one leaves the queue.
TEST(ServerBusy, NonStreamingCancelledOnDisconnect) {
  ServerProcess s({"--parallel", "1", "--queue-size", "1", "-c", "16384", "--max-tokens", "16000"});
  const json longgen = {{"prompt", "go"}, {"max_tokens", 15000}, {"temperature", 0}, {"ignore_eos", true}};
  auto wait_health = [&](const char* key, int want) {
    for (int i = 0; i < 500; ++i) {
      auto h = http(s.port(), "GET", "/health");
      if (h.status == 200 && h.j()[key] == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  const int a = connect_to(s.port());
  send_all(a, request_text("POST", "/v1/completions", longgen.dump(), {}));
  ASSERT_TRUE(wait_health("slots_processing", 1));
  const int b = connect_to(s.port());
  send_all(b, request_text("POST", "/v1/completions", greedy({{"prompt", "queued"}}, 4).dump(), {}));
  ASSERT_TRUE(wait_health("queue", 1));
  close(b);  // the queued one first: it leaves the queue while the slot is still busy
  EXPECT_TRUE(wait_health("queue", 0));
  EXPECT_EQ(http(s.port(), "GET", "/health").j()["slots_processing"], 1);
  const auto t0 = Clock::now();
  close(a);
  EXPECT_TRUE(wait_health("slots_processing", 0));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
  auto d = post(s.port(), "/v1/completions", greedy({{"prompt", "after"}}, 4));
  EXPECT_EQ(d.status, 200) << d.body;
  auto m = http(s.port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("longctx_requests_cancelled_total 2"), std::string::npos) << m.body;
}

TEST(Chat, PipedStdinJsonModeAndSave) {
  const std::string dir = tmp_dir();
  const std::string save = dir + "/chat.json";
  {
    std::ofstream in(dir + "/chat_in.txt");
    in << "Hello there\n/help\nSecond \\\nquestion\n/save " << save << "\n/reset\nThird\n";
  }
  std::string out;
  const int rc = run_cmd(bin_dir() + "/longctx chat -m " + model_dir() + " --tokenizer " + tokenizer_path() +
                             " --chat-template chatml --temp 0 -n 5 -c 512 --json < " + dir + "/chat_in.txt 2>/dev/null",
                         &out);
  ASSERT_EQ(rc, 0) << out;
  std::vector<json> replies;
  size_t p = 0;
  while (p < out.size()) {
    const size_t e = out.find('\n', p);
    replies.push_back(json::parse(out.substr(p, e - p)));
    p = e + 1;
  }
  ASSERT_EQ(replies.size(), 3u) << out;
  for (const auto& r : replies) {
    EXPECT_EQ(r["role"], "assistant");
    EXPECT_EQ(r["completion_tokens"], 5);
  }
  // History is kept: the second turn continues the first one's context; /reset starts over.
  EXPECT_GT(replies[1]["context_tokens"].get<int>(), replies[0]["context_tokens"].get<int>());
  EXPECT_EQ(replies[2]["context_tokens"].get<int>() - replies[2]["prompt_tokens"].get<int>(),
            replies[0]["context_tokens"].get<int>() - replies[0]["prompt_tokens"].get<int>());
  const json saved = json::parse(read_file(save));
  ASSERT_EQ(saved["messages"].size(), 4u);
  EXPECT_EQ(saved["messages"][2]["content"], "Second \nquestion");
  EXPECT_EQ(saved["messages"][1]["content"], replies[0]["content"]);
}

}  // namespace

// ---------------------------------------------------------------- chat templates, directly

namespace {

using lcx::server::ChatMessage;
using lcx::server::ChatTemplate;

// Parts as one string, ids shown as <id>.
std::string show(const std::vector<lcx::server::Part>& parts) {
  std::string s;
  for (const auto& p : parts) {
    if (p.id < 0) {
      s += p.text;
      continue;
    }
    s += '<';
    s += std::to_string(p.id);
    s += '>';
  }
  return s;
}

std::shared_ptr<longctx::Model> fixture_model() {
  static auto m = longctx::Model::load(model_dir(), fixture_load_options());
  return m;
}

TEST(ChatTemplates, RenderEachFormat) {
  auto m = fixture_model();
  const std::vector<ChatMessage> conv = {{"system", "S"}, {"user", " U "}, {"assistant", "A"}, {"user", "V"}};
  // The OpenLLaMA vocabulary has no ChatML / Llama 3 pieces: the markers stay text.
  EXPECT_EQ(show(ChatTemplate("chatml", *m).render(conv, true)),
            "<1><|im_start|>system\nS<|im_end|>\n<|im_start|>user\n U <|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
            "<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(show(ChatTemplate("llama2", *m).render(conv, true)),
            "<1>[INST] <<SYS>>\nS\n<</SYS>>\n\n U [/INST] A <2><1>[INST] V [/INST]");
  EXPECT_EQ(show(ChatTemplate("llama3", *m).render({{"user", " U "}}, true)),
            "<1><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(show(ChatTemplate("longllama", *m).render({{"user", "U"}, {"assistant", "A"}, {"user", "V"}}, true)),
            std::string("<1>") + "A chat between a user (denoted as USER:) and an artificial intelligence assistant "
            "(denoted as ASSISTANT:). The assistant gives helpful, detailed, and polite answers to the user's questions.\n\n"
            "\nUSER: U\nASSISTANT: A<2>\nUSER: V\nASSISTANT: ");
  EXPECT_EQ(ChatTemplate("chatml", *m).stop_strings(), std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(ChatTemplate("llama3", *m).stop_strings(), std::vector<std::string>{"<|eot_id|>"});
  EXPECT_THROW(ChatTemplate("vicuna", *m), std::runtime_error);
  EXPECT_THROW(ChatTemplate("chatml", *m).render({{"tool", "x"}}, true), std::runtime_error);
}

TEST(ChatTemplates, LongLlamaTokenizesPiecesSeparately) {
  // As long_llama's chat_tuning_data_processor: BOS, then each prefix and text on its own.
  auto m = fixture_model();
  ChatTemplate t("longllama", *m);
  const auto ids = t.tokenize(t.render({{"system", "Sys"}, {"user", "Hi"}}, true));
  std::vector<int32_t> want = {1};
  for (const char* s : {"Sys\n\n", "\nUSER: ", "Hi", "\nASSISTANT: "}) {
    const auto p = m->tokenize(s, false);
    want.insert(want.end(), p.begin(), p.end());
  }
  EXPECT_EQ(ids, want);
  // ChatML text is joined, then tokenized once.
  ChatTemplate c("chatml", *m);
  const auto cids = c.tokenize(c.render({{"user", "Hi"}}, true));
  auto joined = m->tokenize("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", true);
  EXPECT_EQ(cids, joined);
}

TEST(ChatTemplates, DetectFromJinja) {
  EXPECT_EQ(ChatTemplate::detect_from_jinja("{% for m in messages %}<|im_start|>{{ m.role }}..."), "chatml");
  EXPECT_EQ(ChatTemplate::detect_from_jinja("{{ '<|start_header_id|>' + m['role'] }}"), "llama3");
  EXPECT_EQ(ChatTemplate::detect_from_jinja("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"), "llama2");
  EXPECT_EQ(ChatTemplate::detect_from_jinja("{{ 'USER: ' + c }}{{ 'ASSISTANT: ' }}"), "longllama");
  EXPECT_EQ(ChatTemplate::detect_from_jinja("{{ '<start_of_turn>' }}"), "");
  // TinyLlama-1.1B-Chat-v1.0's tokenizer_config.json template, as published.
  EXPECT_EQ(ChatTemplate::detect_from_jinja(
                "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
                "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
                "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
                "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"),
            "zephyr");
}

// Zephyr / TinyLlama-Chat: "<|role|>\n" + content + EOS + "\n", then "<|assistant|>\n" (what the
// Jinja renders with transformers' trim_blocks); BOS because the SentencePiece tokenizer adds it.
TEST(ChatTemplates, ZephyrRender) {
  auto m = fixture_model();
  ChatTemplate t("zephyr", *m);
  EXPECT_EQ(show(t.render({{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}}, true)),
            "<1><|system|>\nS<2>\n<|user|>\nU<2>\n<|assistant|>\nA<2>\n<|user|>\nV<2>\n<|assistant|>\n");
  EXPECT_EQ(t.stop_strings(), std::vector<std::string>{"<|user|>"});
  const auto ids = t.tokenize(t.render({{"user", "Hi"}}, true));
  std::vector<int32_t> want = m->tokenize("<|user|>\nHi", true);
  want.push_back(2);
  const auto tail = m->tokenize("\n<|assistant|>\n", false);
  want.insert(want.end(), tail.begin(), tail.end());
  EXPECT_EQ(ids, want);
}

// A model directory with tokenizer_config.json: the server picks its template by itself.
TEST(ChatTemplates, ServerDetectsTokenizerConfig) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(tmp_dir()) / "chatml_model";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    if (!fs::exists(dir / f)) fs::create_symlink(fs::path(model_dir()) / f, dir / f);
  if (!fs::exists(dir / "tokenizer.model")) fs::create_symlink(tokenizer_path(), dir / "tokenizer.model");
  {
    std::ofstream cfg(dir / "tokenizer_config.json");
    cfg << json{{"chat_template", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                                  "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"}}.dump();
  }
  ServerProcess t({"--alias", "my-model"}, dir.string());
  auto m = http(t.port(), "GET", "/v1/models");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.j()["data"][0]["id"], "my-model");
  EXPECT_EQ(m.j()["data"][0]["meta"]["chat_template"], "chatml");
  auto r = post(t.port(), "/v1/chat/completions",
                greedy({{"model", "my-model"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}, 3));
  EXPECT_EQ(r.status, 200) << r.body;
}

}  // namespace
