// A request body of `longctx serve` (/v1/completions and /v1/chat/completions): any JSON, any
// bytes. Validation must answer ApiError (a 400 naming the field) or a valid request.
#include "fuzz.h"
#include "runtime/error.h"
#include "server/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  lcx::server::RequestLimits lim;
  for (bool chat : {false, true}) {
    try {
      const lcx::server::CompletionRequest r = lcx::server::parse_completion_request(body, chat, lim);
      (void)lcx::server::dump(lcx::server::json{{"prompt", r.prompt}, {"n", r.n}});
    } catch (const lcx::server::ApiError& e) {
      (void)lcx::server::dump(lcx::server::error_body(e));
    }
  }
  return 0;
}
