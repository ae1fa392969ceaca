#include "api.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <random>

namespace lcx::server {

json error_body(const std::string& message, const std::string& type, const std::string& param, const std::string& code) {
  // OpenAI sends null rather than "" for a missing param / code.
  return json{{"error",
               {{"message", message},
                {"type", type},
                {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

json error_body(const ApiError& e) { return error_body(e.what(), e.type, e.param, e.code); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {

ApiError bad(const std::string& param, const std::string& msg, const std::string& code = "invalid_value") {
  return ApiError(400, msg, "invalid_request_error", param, code);
}

// The field, or null when absent or JSON null (OpenAI treats both as "not given").
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& v, const std::string& key, double lo, double hi) {
  if (!v.is_number()) throw bad(key, "'" + key + "' must be a number, got " + std::string(v.type_name()), "invalid_type");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad(key, "'" + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + v.dump());
  return x;
}

int64_t integer(const json& v, const std::string& key, int64_t lo, int64_t hi) {
  bool ok = v.is_number_integer();
  if (!ok && v.is_number_float()) {
    const double d = v.get<double>();
    ok = std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15;
  }
  if (!ok) throw bad(key, "'" + key + "' must be an integer, got " + v.dump(), "invalid_type");
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
    throw bad(key, "'" + key + "' is out of range");
  const int64_t x = v.is_number_float() ? int64_t(v.get<double>()) : v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad(key, "'" + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(x));
  return x;
}

bool boolean(const json& v, const std::string& key) {
  if (!v.is_boolean()) throw bad(key, "'" + key + "' must be true or false, got " + v.dump(), "invalid_type");
  return v.get<bool>();
}

std::string string(const json& v, const std::string& key) {
  if (!v.is_string()) throw bad(key, "'" + key + "' must be a string, got " + std::string(v.type_name()), "invalid_type");
  return v.get<std::string>();
}

// OpenAI message content: a string, null, or an array of {"type": "text", "text": ...} parts.
std::string message_content(const json& v, const std::string& key) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw bad(key, "'" + key + "' must be a string or an array of text parts", "invalid_type");
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& p = v[i];
    const std::string pk = key + "[" + std::to_string(i) + "]";
    if (!p.is_object()) throw bad(pk, "'" + pk + "' must be an object", "invalid_type");
    const json* type = field(p, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      throw bad(pk + ".type", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    const json* text = field(p, "text");
    if (!text) throw bad(pk + ".text", "'" + pk + ".text' is required");
    out += string(*text, pk + ".text");
  }
  return out;
}

void parse_sampling(const json& j, CompletionRequest& r, const RequestLimits& lim) {
  auto& s = r.gen.sampling;
  if (auto v = field(j, "temperature")) s.temperature = float(number(*v, "temperature", 0, 2));
  if (auto v = field(j, "top_p")) {
    s.top_p = float(number(*v, "top_p", 0, 1));
    if (s.top_p <= 0) throw bad("top_p", "'top_p' must be greater than 0");
  }
  if (auto v = field(j, "top_k")) s.top_k = int32_t(integer(*v, "top_k", 0, 1 << 20));
  if (auto v = field(j, "min_p")) s.min_p = float(number(*v, "min_p", 0, 1));
  if (auto v = field(j, "repeat_last_n")) s.repeat_last_n = int32_t(integer(*v, "repeat_last_n", 0, 1 << 20));
  // OpenAI's frequency/presence penalties are additive logit offsets in [-2, 2]; the engine
  // has llama.cpp's multiplicative repeat penalty. Map their sum p to 1 + p/2 (p >= 0) or
  // 1 / (1 - p/2) (p < 0): 0 is off, 2 divides repeated tokens' positive logits by 2.
  double p = 0;
  bool has_p = false;
  for (const char* k : {"frequency_penalty", "presence_penalty"})
    if (auto v = field(j, k)) {
      p += number(*v, k, -2, 2);
      has_p = true;
    }
  if (has_p) {
    p = std::clamp(p, -2.0, 2.0);
    s.repeat_penalty = float(p >= 0 ? 1 + p / 2 : 1 / (1 - p / 2));
  }
  if (auto v = field(j, "repeat_penalty")) {  // llama.cpp's name, taken as is
    s.repeat_penalty = float(number(*v, "repeat_penalty", 0, 100));
    if (s.repeat_penalty <= 0) throw bad("repeat_penalty", "'repeat_penalty' must be greater than 0");
  }
  if (auto v = field(j, "logit_bias")) {
    // OpenAI: {"token id": bias in [-100, 100]}, keys are token ids as strings.
    if (!v->is_object()) throw bad("logit_bias", "'logit_bias' must be an object {\"token id\": bias}", "invalid_type");
    if (v->size() > 1024) throw bad("logit_bias", "'logit_bias' may name at most 1024 tokens");
    for (const auto& [k, b] : v->items()) {
      const std::string key = "logit_bias." + k;
      char* end = nullptr;
      errno = 0;
      const long long id = k.empty() ? -1 : std::strtoll(k.c_str(), &end, 10);
      if (k.empty() || *end != '\0' || errno != 0 || id < 0 || id > INT32_MAX)
        throw bad("logit_bias", "'logit_bias' keys must be token ids (\"15043\"), got \"" + k + "\"");
      s.logit_bias.push_back({int32_t(id), float(number(b, key, -100, 100))});
    }
  }
  if (auto v = field(j, "seed")) {
    s.seed = uint64_t(integer(*v, "seed", INT64_MIN, INT64_MAX));
  } else if (!lim.fixed_seed) {
    static std::mutex mu;
    static std::mt19937_64 rng{std::random_device{}()};
    std::lock_guard<std::mutex> lock(mu);
    s.seed = rng();
  }
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, bool chat, const RequestLimits& lim) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw ApiError(400, "the request body is not valid JSON (it must be a UTF-8 JSON object)", "invalid_request_error",
                   "", "invalid_json");
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "invalid_request_error", "", "invalid_json");
  CompletionRequest r;
  r.chat = chat;
  r.gen = lim.defaults;
  if (auto v = field(j, "model")) r.model = string(*v, "model");

  if (chat) {
    const json* m = field(j, "messages");
    if (!m) throw bad("messages", "'messages' is required", "missing_required_parameter");
    if (!m->is_array()) throw bad("messages", "'messages' must be an array of messages", "invalid_type");
    if (m->empty()) throw bad("messages", "'messages' must contain at least one message");
    for (size_t i = 0; i < m->size(); ++i) {
      const json& e = (*m)[i];
      const std::string k = "messages[" + std::to_string(i) + "]";
      if (!e.is_object()) throw bad(k, "'" + k + "' must be an object with 'role' and 'content'", "invalid_type");
      const json* role = field(e, "role");
      if (!role) throw bad(k + ".role", "'" + k + ".role' is required", "missing_required_parameter");
      ChatMessage msg;
      msg.role = string(*role, k + ".role");
      if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for it
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
        throw bad(k + ".role", "role '" + msg.role + "' is not supported: use system, user or assistant");
      auto c = e.find("content");
      if (c == e.end()) throw bad(k + ".content", "'" + k + ".content' is required", "missing_required_parameter");
      msg.content = message_content(*c, k + ".content");
      r.messages.push_back(std::move(msg));
    }
  } else {
    const json* p = field(j, "prompt");
    if (!p) throw bad("prompt", "'prompt' is required", "missing_required_parameter");
    auto id_list = [&](const json& a, const std::string& key) {
      CompletionRequest::Prompt q;
      q.is_ids = true;
      for (size_t i = 0; i < a.size(); ++i)
        q.ids.push_back(int32_t(integer(a[i], key + "[" + std::to_string(i) + "]", 0, INT32_MAX)));
      return q;
    };
    if (p->is_string()) {
      r.prompts.push_back({p->get<std::string>(), {}, false});
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
      r.prompts.push_back(id_list(*p, "prompt"));
    } else if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
      // A batch: strings, or token-id arrays (what clients that pre-tokenise send, e.g.
      // lm-evaluation-harness), all of one kind.
      if (p->size() > lim.max_prompts)
        throw bad("prompt", "a batch of " + std::to_string(p->size()) + " prompts is more than this server's " +
                                std::to_string(lim.max_prompts) + ": split it over several requests");
      const bool strings = (*p)[0].is_string();
      for (size_t i = 0; i < p->size(); ++i) {
        const json& e = (*p)[i];
        const std::string k = "prompt[" + std::to_string(i) + "]";
        if (strings && !e.is_string()) throw bad(k, "'" + k + "' must be a string like the batch's first prompt", "invalid_type");
        if (!strings && (!e.is_array() || e.empty()))
          throw bad(k, "'" + k + "' must be a non-empty array of token ids like the batch's first prompt", "invalid_type");
        r.prompts.push_back(strings ? CompletionRequest::Prompt{e.get<std::string>(), {}, false} : id_list(e, k));
      }
    } else {
      throw bad("prompt", "'prompt' must be a string, an array of token ids, or an array of those (a batch)", "invalid_type");
    }
    if (auto v = field(j, "echo")) r.echo = boolean(*v, "echo");
    if (auto v = field(j, "best_of"); v && integer(*v, "best_of", 1, lim.max_n) != 1)
      throw bad("best_of", "'best_of' is not supported: use 'n'");
  }

  // max_completion_tokens is the chat API's newer name for max_tokens.
  for (const char* k : {"max_tokens", "max_completion_tokens"})
    if (auto v = field(j, k)) {
      const int64_t x = integer(*v, k, 0, INT32_MAX);
      if (x > lim.max_tokens_cap)
        throw bad(k, "'" + std::string(k) + "' is " + std::to_string(x) + ", above this server's limit of " +
                         std::to_string(lim.max_tokens_cap) + " (raise it with `longctx serve --max-tokens N`)");
      r.gen.n_predict = int32_t(x);
    }
  if (auto v = field(j, "n")) r.n = int(integer(*v, "n", 1, lim.max_n));
  if (auto v = field(j, "stream")) r.stream = boolean(*v, "stream");
  if (auto v = field(j, "stream_options")) {
    if (!v->is_object()) throw bad("stream_options", "'stream_options' must be an object", "invalid_type");
    if (auto u = field(*v, "include_usage")) r.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (auto v = field(j, "stop")) {
    std::vector<std::string> stops;
    if (v->is_string()) stops.push_back(v->get<std::string>());
    else if (v->is_array())
      for (size_t i = 0; i < v->size(); ++i) stops.push_back(string((*v)[i], "stop[" + std::to_string(i) + "]"));
    else throw bad("stop", "'stop' must be a string or an array of strings", "invalid_type");
    if (stops.size() > lim.max_stop)
      throw bad("stop", "at most " + std::to_string(lim.max_stop) + " stop strings are supported");
    r.gen.stop.clear();
    for (auto& s : stops)
      if (!s.empty()) r.gen.stop.push_back(std::move(s));
  }
  if (auto v = field(j, "ignore_eos")) r.gen.ignore_eos = boolean(*v, "ignore_eos");  // llama.cpp extension
  if (auto v = field(j, "response_format")) {
    // OpenAI: {"type": "text" | "json_object" | "json_schema", ...}.
    if (!v->is_object()) throw bad("response_format", "'response_format' must be an object {\"type\": ...}", "invalid_type");
    const json* t = field(*v, "type");
    if (!t) throw bad("response_format.type", "'response_format.type' is required", "missing_required_parameter");
    const std::string type = string(*t, "response_format.type");
    if (type == "json_object") r.gen.json_object = true;
    else if (type == "json_schema")
      throw bad("response_format.type", "'json_schema' is not supported: use {\"type\": \"json_object\"} (any JSON object) "
                                        "and describe the schema in the prompt");
    else if (type != "text")
      throw bad("response_format.type", "response_format type '" + type + "' is unknown: use text or json_object");
  }
  if (auto v = field(j, "cache_prompt")) r.cache_prompt = boolean(*v, "cache_prompt");  // llama.cpp extension
  if (chat) {
    // Chat: "logprobs": true turns them on, "top_logprobs": N adds N alternatives per token.
    if (auto v = field(j, "logprobs"); v && boolean(*v, "logprobs")) r.logprobs = 0;
    if (auto v = field(j, "top_logprobs")) {
      const int n = int(integer(*v, "top_logprobs", 0, kMaxLogprobs));
      if (r.logprobs < 0) throw bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
      r.logprobs = n;
    }
  } else if (auto v = field(j, "logprobs")) {
    // Completions: "logprobs": N is the number of alternatives per token (0: the chosen only).
    if (v->is_boolean())
      throw bad("logprobs", "'logprobs' of /v1/completions is the number of alternatives per token (0.." +
                                std::to_string(kMaxLogprobs) + "), not a boolean", "invalid_type");
    r.logprobs = int(integer(*v, "logprobs", 0, kMaxLogprobs));
  }
  if (auto v = field(j, "document")) {
    r.document = string(*v, "document");
    if (r.document.empty()) throw bad("document", "'document' must be a document id from POST /v1/documents");
  }
  parse_sampling(j, r, lim);
  return r;
}

std::string finish_reason(const std::string& s) {
  if (s == "length" || s == "context") return "length";
  return "stop";  // eos, stop string, stop token
}

}  // namespace lcx::server
