#include "common.h"
#include "runtime/error.h"

namespace lcx::cli {
int cmd_ingest(int, char**) { lcx::fail("`longctx ingest` is not implemented yet"); }
}  // namespace lcx::cli
