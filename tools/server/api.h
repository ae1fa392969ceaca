// The OpenAI-compatible request/response layer of `longctx serve`: JSON request bodies ->
// validated requests, OpenAI-style error bodies, response and stream-chunk builders. No HTTP
// and no model here, so every rule is testable on its own.
//
// Rules (as OpenAI's API behaves): unknown fields are ignored; a known field with the wrong
// type or out of range is a 400 naming the field in `param`; null means "not given".
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "chat_template.h"
#include "longctx/longctx.h"

namespace lcx::server {

using json = nlohmann::json;

// An error the client caused (or a limit it hit), sent as
// {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code;
  ApiError(int status_, std::string message, std::string type_ = "invalid_request_error", std::string param_ = "",
           std::string code_ = "")
      : std::runtime_error(std::move(message)), status(status_), type(std::move(type_)), param(std::move(param_)),
        code(std::move(code_)) {}
};

json error_body(const std::string& message, const std::string& type, const std::string& param = "",
                const std::string& code = "");
json error_body(const ApiError& e);

// Serialises with invalid UTF-8 replaced (never throws on text from the model or the client).
std::string dump(const json& j);

struct CompletionRequest {
  bool chat = false;
  std::string model;                   // "" when not given
  // /v1/completions: one prompt, or a batch (an array of strings or of token-id arrays); the
  // choices of prompt p are p * n .. p * n + n - 1, as OpenAI numbers them.
  struct Prompt {
    std::string text;                  // a text prompt
    std::vector<int32_t> ids;          // a token-id prompt (when is_ids)
    bool is_ids = false;
  };
  std::vector<Prompt> prompts;
  std::vector<ChatMessage> messages;   // /v1/chat/completions
  longctx::GenerateOptions gen;        // n_predict = max_tokens
  int n = 1;                           // choices
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  std::string document;                // "doc-..." from POST /v1/documents
  // Log-probabilities: -1 off, else how many alternatives per token (completions: `logprobs`
  // N; chat: `logprobs: true` with `top_logprobs` N). At most kMaxLogprobs.
  int logprobs = -1;
  bool echo = false;                   // completions: the prompt (and its logprobs) come first
  bool cache_prompt = true;            // llama.cpp's field: false feeds the whole prompt again
};

constexpr int kMaxLogprobs = 20;

struct RequestLimits {
  longctx::GenerateOptions defaults;  // server-side defaults (the serve command's sampling flags)
  int32_t max_tokens_cap = 4096;      // a larger max_tokens is a 400
  int max_n = 16;
  size_t max_prompts = 64;            // prompts in one /v1/completions batch
  size_t max_stop = 16;
  bool fixed_seed = false;            // true: a request without "seed" uses defaults.sampling.seed
};

// Parses and validates a request body. Throws ApiError (400) on any problem.
CompletionRequest parse_completion_request(const std::string& body, bool chat, const RequestLimits& lim);

// OpenAI finish_reason from the engine's stop_reason.
std::string finish_reason(const std::string& engine_stop_reason);

}  // namespace lcx::server
