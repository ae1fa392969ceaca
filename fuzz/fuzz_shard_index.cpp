// model.safetensors.index.json of a sharded Hugging Face checkpoint, in a directory that holds
// two small shards: the index names the shards to open (plain file names only) and the weight
// map; every tensor returned is read end to end.
#include <filesystem>

#include "formats/safetensors.h"
#include "fuzz.h"
#include "runtime/error.h"

namespace {

// A valid shard with one F32 tensor `name` of 4 values.
std::string shard(const std::string& name) {
  std::string h = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
  while (h.size() % 8) h.push_back(' ');
  std::string out(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + h + std::string(16, '\x01');
}

struct Dir {
  std::string path = lcx::fuzz::scratch_path("sharded");
  Dir() {
    std::filesystem::create_directories(path);
    for (const auto& [file, name] : {std::pair{"model-00001-of-00002.safetensors", "a"}, {"model-00002-of-00002.safetensors", "b"}}) {
      const std::string s = shard(name);
      lcx::fuzz::write_file(path + "/" + file, reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Dir dir;
  lcx::fuzz::write_file(dir.path + "/model.safetensors.index.json", data, size);
  try {
    const lcx::SafetensorsSet set = lcx::open_safetensors_dir(dir.path);
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : set.tensors)
      for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ static_cast<const uint8_t*>(t.data)[i];
  } catch (const lcx::Error&) {
  }
  return 0;
}
