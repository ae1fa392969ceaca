// The smallest complete use of the longctx API: load a model, open a session, feed a prompt,
// stream a greedy continuation.
//   example_generate MODEL "prompt text" [n_tokens] [tokenizer.model]
#include <cstdio>
#include <cstdlib>

#include "longctx/longctx.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL PROMPT [N] [TOKENIZER]\n", argv[0]);
    return 1;
  }
  try {
    longctx::LoadOptions lo;
    if (argc > 4) lo.tokenizer_path = argv[4];
    auto model = longctx::Model::load(argv[1], lo);
    longctx::Session session(model);
    session.feed_text(argv[2]);
    longctx::GenerateOptions g;
    g.n_predict = argc > 3 ? std::atoi(argv[3]) : 32;
    g.sampling.temperature = 0.0f;  // greedy
    auto result = session.generate(g, [](const longctx::Piece& p) {
      std::fputs(p.text.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n[%zu tokens, stop: %s]\n", result.ids.size(), result.stop_reason.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
