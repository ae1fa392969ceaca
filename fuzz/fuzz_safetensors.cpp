// A .safetensors file: 8-byte header length, JSON header (dtypes, shapes, data offsets), data.
// Every tensor the parser returns is read end to end, so a view past the data is caught.
#include "formats/safetensors.h"
#include "fuzz.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lcx::fuzz::scratch_path("model.safetensors");
  lcx::fuzz::write_file(path, data, size);
  try {
    const lcx::SafetensorsFile f = lcx::open_safetensors(path);
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : f.tensors) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      uint8_t acc = 0;
      for (size_t i = 0; i < t.nbytes; ++i) acc ^= p[i];
      sink = sink ^ acc;
    }
  } catch (const lcx::Error&) {
  }
  return 0;
}
