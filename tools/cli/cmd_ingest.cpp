// `longctx ingest`: stream a long document through a LongLLaMA model once and save the
// session (FoT memory + local cache) so that `longctx run --memory FILE` can ask about it
// many times without re-reading it.
#include <chrono>
#include <cstdio>

#include "common.h"
#include "runtime/error.h"
#include "runtime/mmap_file.h"

namespace lcx::cli {

int cmd_ingest(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::printf("usage: longctx ingest -m MODEL -f doc.txt --save doc.mem [options]\n\n"
                "Processes a long document (LongLLaMA: window by window into FoT memory) and saves the\n"
                "session state. Ask questions with `longctx run -m MODEL --memory doc.mem -p QUESTION`.\n"
                "The file is versioned and checksummed; it is refused for another model or other memory\n"
                "or RoPE settings.\n\n%s"
                "  -f, --file FILE           the document\n"
                "  --save FILE               where to write the state\n"
                "  --no-bos                  do not add BOS before the document\n%s\nOverrides:\n%s",
                kModelHelp, kSessionHelp, longctx::override_flags_help().c_str());
    return 0;
  }
  Args a("ingest", argc, argv, join({kModelFlags, kSessionFlags, {"--file", "--save"}}), {"--no-bos"}, kAliases, true);
  const std::string text = read_document(a);
  const std::string out = a.required("--save");
  check_output(a, "--save", out);
  auto model = load(a);
  longctx::Session s(model, session_options(a));
  const auto ids = model->tokenize(text, !a.has("--no-bos"));
  Progress prog;
  const auto t0 = std::chrono::steady_clock::now();
  s.feed(ids, nullptr, [&](int64_t d, int64_t t) { prog(d, t); });
  prog.end();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.save_state(out);
  std::fprintf(stderr, "ingested %zu tokens in %.2fs (%.1f tok/s); memory: %lld tokens; caches %.1f MiB; saved %s\n",
               ids.size(), secs, double(ids.size()) / std::max(secs, 1e-9), (long long)s.n_memory(),
               double(s.cache_bytes()) / (1 << 20), out.c_str());
  return 0;
}

}  // namespace lcx::cli
