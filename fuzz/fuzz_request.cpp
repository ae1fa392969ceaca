// A request body of `longctx serve` (/v1/completions and /v1/chat/completions): any JSON, any
// bytes. Validation must answer ApiError (a 400 naming the field) or a valid request.
#include <cstdio>
#include <cstdlib>

#include "fuzz.h"
#include "runtime/error.h"
#include "server/api.h"

namespace {
[[noreturn]] void broken(const char* what, const std::string& body) {
  std::fprintf(stderr, "fuzz_request: %s:\n%s\n", what, body.c_str());
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  lcx::server::RequestLimits lim;
  for (bool chat : {false, true}) {
    try {
      const lcx::server::CompletionRequest r = lcx::server::parse_completion_request(body, chat, lim);
      // What the server relies on once a request is accepted.
      if (r.logprobs < -1 || r.logprobs > lcx::server::kMaxLogprobs) broken("logprobs out of range", body);
      for (const auto& q : r.prompts)
        if (q.is_ids && q.ids.empty()) broken("empty token-id prompt accepted", body);
      if (!chat && (r.prompts.empty() || r.prompts.size() > lim.max_prompts)) broken("prompt count", body);
      for (const auto& [id, bias] : r.gen.sampling.logit_bias)
        if (id < 0 || !(bias >= -100 && bias <= 100)) broken("logit_bias entry out of range", body);
      if (chat && (r.echo || r.messages.empty())) broken("chat request without messages or with echo", body);
      (void)lcx::server::dump(lcx::server::json{{"prompts", r.prompts.size()}, {"n", r.n}});
    } catch (const lcx::server::ApiError& e) {
      (void)lcx::server::dump(lcx::server::error_body(e));
    }
  }
  return 0;
}
