// A GGUF file as a user passes it to -m: header, metadata (config, RoPE scaling, LongLLaMA
// memory keys, vocabulary), tensor infos and data. When it loads, a few tokens are run and
// generated, so whatever the loader accepted must also be safe to compute with.
#include "fuzz.h"
#include "longctx/longctx.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lcx::fuzz::scratch_path("input.gguf");
  lcx::fuzz::write_file(path, data, size);
  try {
    longctx::LoadOptions lo;
    auto model = longctx::Model::load(path, lo);
    longctx::SessionOptions so;
    so.n_threads = 1;
    so.n_ctx = 64;
    longctx::Session s(model, so);
    const int32_t nv = model->n_vocab();
    s.feed({1 % nv, 5 % nv, 7 % nv, 3 % nv});
    longctx::GenerateOptions go;
    go.n_predict = 3;
    go.sampling.temperature = 0.0f;
    s.generate(go);
    (void)model->detokenize(s.history());
    (void)model->tokenize("Hello wor\xc3\xa9ld \xff");
  } catch (const lcx::Error&) {
  }
  return 0;
}
