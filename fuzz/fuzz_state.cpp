// A saved session state (`longctx ingest --save-state`, Session::save_state): caches, FoT
// memory, history. Loaded into a session of the model it came from (a small synthetic
// LongLLaMA written as GGUF), then the session must keep working.
#include <cstring>
#include <vector>

#include "engine/state_checksum.h"
#include "fuzz.h"
#include "longctx/longctx.h"
#include "model/gguf_model.h"
#include "runtime/error.h"
#include "synthetic_model.h"

namespace {

std::shared_ptr<longctx::Model> model() {
  static const std::shared_ptr<longctx::Model> m = [] {
    const std::string path = lcx::fuzz::scratch_path("state_model.gguf");
    lcx::convert_to_gguf(*lcx::test::synthetic_model({.byte_tokens = true}), path, lcx::DType::F32);
    return longctx::Model::load(path);
  }();
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The file ends with a checksum of everything before it (its kind set by the version field);
  // recompute it so that mutations reach the payload parser instead of stopping at "checksum
  // mismatch" (tested in test_fot).
  std::vector<uint8_t> b(data, data + size);
  if (b.size() >= 12) {
    uint32_t version;
    std::memcpy(&version, b.data() + 8, 4);
    const uint64_t h = longctx::state_checksum(version, b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
  }
  const std::string path = lcx::fuzz::scratch_path("input.state");
  lcx::fuzz::write_file(path, b.data(), b.size());
  longctx::SessionOptions so;
  so.n_threads = 1;
  longctx::Session s(model(), so);
  try {
    s.load_state(path);
  } catch (const lcx::Error&) {
    return 0;  // rejected with a message: what we want for a corrupt file
  }
  s.feed({5, 6, 7});
  longctx::GenerateOptions go;
  go.n_predict = 2;
  go.sampling.temperature = 0.0f;
  s.generate(go);
  return 0;
}
