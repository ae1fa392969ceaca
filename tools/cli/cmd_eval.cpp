#include "common.h"
#include "runtime/error.h"

namespace lcx::cli {
int cmd_passkey(int, char**) { lcx::fail("`longctx passkey` is not implemented yet"); }
int cmd_perplexity(int, char**) { lcx::fail("`longctx perplexity` is not implemented yet"); }
int cmd_synth(int, char**) { lcx::fail("`longctx synth` is not implemented yet"); }
}  // namespace lcx::cli
