#include "common.h"
#include "runtime/error.h"

namespace lcx::cli {
int cmd_bench(int, char**) { lcx::fail("`longctx bench` is not implemented yet"); }
}  // namespace lcx::cli
