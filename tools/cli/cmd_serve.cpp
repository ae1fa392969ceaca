#include "common.h"
#include "runtime/error.h"

namespace lcx::cli {
int cmd_serve(int, char**) { lcx::fail("`longctx serve` is not implemented yet"); }
int cmd_chat(int, char**) { lcx::fail("`longctx chat` is not implemented yet"); }
}  // namespace lcx::cli
