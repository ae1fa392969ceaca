#include "formats/safetensors.h"

#include <filesystem>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <vector>

#include "runtime/error.h"

namespace lcx {

using json = nlohmann::json;
namespace fs = std::filesystem;

SafetensorsFile open_safetensors(const std::string& path, FileLoad how) {
  SafetensorsFile st;
  st.file = MappedFile::open(path, how);
  const uint8_t* base = st.file->data();
  const size_t size = st.file->size();
  const std::string where = "safetensors file '" + path + "'";
  if (size < 8) fail(where + " is truncated (" + std::to_string(size) + " bytes): re-download or re-save it");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
  if (hlen > size - 8 || hlen > (100u << 20))
    fail(where + ": header length " + std::to_string(hlen) + " exceeds the file size " +
         std::to_string(size) + " (truncated or not a safetensors file)");
  json h;
  // nlohmann keeps one value of a repeated key, so a header naming a tensor twice would load
  // one of the two silently; the reference reader (serde) refuses it. The parse callback sees
  // every key: one set of keys per open object.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  const json::parser_callback_t track_keys = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    else if (ev == json::parse_event_t::object_end) keys.pop_back();
    else if (ev == json::parse_event_t::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
             duplicate.empty())
      duplicate = keys.size() == 1 ? "tensor '" + parsed.get<std::string>() + "' is listed twice"
                                   : "key '" + parsed.get<std::string>() + "' appears twice in one entry";
    return true;
  };
  try {
    h = json::parse(base + 8, base + 8 + hlen, track_keys);
  } catch (const json::exception& e) {
    fail(where + ": malformed JSON header (" + e.what() + ")");
  }
  if (!duplicate.empty()) fail(where + ": malformed header: " + duplicate + " (re-save the file)");
  if (!h.is_object()) fail(where + ": header is not a JSON object");
  const uint8_t* data = base + 8 + hlen;
  const size_t data_size = size - 8 - hlen;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;  // [begin, end), name
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& t = it.value();
    const std::string tw = where + ", tensor '" + it.key() + "'";
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets") ||
        !t["dtype"].is_string() || !t["shape"].is_array() || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2)
      fail(tw + ": entry needs dtype, shape and data_offsets [begin, end]");
    const std::string dt = t["dtype"].get<std::string>();
    TensorView v;
    size_t esize;
    if (dt == "F32") { v.dtype = DType::F32; esize = 4; }
    else if (dt == "F16") { v.dtype = DType::F16; esize = 2; }
    else if (dt == "BF16") { v.dtype = DType::BF16; esize = 2; }
    else fail(tw + ": dtype " + dt + " is not supported (use F32, F16 or BF16 weights)");
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(tw + ": bad shape entry " + d.dump());
      v.shape.push_back(d.get<int64_t>());
      if (v.shape.back() > 0 && numel > (uint64_t(1) << 48) / uint64_t(v.shape.back()))
        fail(tw + ": shape is implausibly large");
      numel *= uint64_t(v.shape.back());
    }
    const auto& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(tw + ": data_offsets must be non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    // Built with append: "[" + std::string made g++ 12 warn (-Wrestrict, a false positive).
    const std::string range = std::string("[").append(std::to_string(b)).append(", ").append(std::to_string(e)).append("]");
    if (b > e) fail(tw + ": data_offsets " + range + " are reversed (end before begin): the file is corrupt");
    if (e > data_size)
      fail(tw + ": data_offsets " + range + " run past the end of the data (" + std::to_string(data_size) +
           " bytes): the file is truncated or corrupt");
    if (e - b != numel * esize)
      fail(tw + ": " + std::to_string(e - b) + " bytes do not match shape " + shape_str(v.shape) + " of " + dt);
    v.data = data + b;
    v.nbytes = size_t(e - b);
    st.tensors[it.key()] = v;
    if (e > b) ranges.emplace_back(b, e, it.key());
  }
  // Two tensors sharing bytes would each read the other's values; the reference reader refuses
  // any layout but back-to-back tensors. Gaps between tensors are tolerated (harmless).
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [b0, e0, n0] = ranges[i - 1];
    const auto& [b1, e1, n1] = ranges[i];
    if (b1 < e0)
      fail(where + ": tensors '" + n0 + "' (data_offsets [" + std::to_string(b0) + ", " + std::to_string(e0) +
           "]) and '" + n1 + "' ([" + std::to_string(b1) + ", " + std::to_string(e1) +
           "]) overlap: the header is corrupt (re-save the file)");
  }
  return st;
}

SafetensorsSet open_safetensors_dir(const std::string& dir, FileLoad how) {
  SafetensorsSet set;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> shards;
  std::map<std::string, std::string> listed;  // weight_map: tensor -> shard
  std::string index_where;
  if (fs::exists(index)) {
    // Quoted once: "'" + path + ... per message made g++ 12 warn (-Wrestrict, a false positive).
    const std::string where = std::string("'").append(index.string()).append("'");
    json j;
    try {
      j = json::parse(read_text_file(index.string()));
    } catch (const json::exception& e) {
      fail(where + ": malformed JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(where + " has no weight_map object");
    std::set<std::string> names;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(where + ": weight_map values must be file names");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        fail(where + ": shard name '" + shard + "' must be a plain file name");
      names.insert(shard);
      listed[it.key()] = shard;
    }
    index_where = where;
    shards.assign(names.begin(), names.end());
    if (shards.empty()) fail(where + " lists no shards");
  } else if (fs::exists(single)) {
    shards.push_back("model.safetensors");
  } else {
    // Many published checkpoints (LongLLaMA, OpenLLaMA) ship only PyTorch pickles.
    std::string pickles;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string f = e.path().filename().string();
      if (f == "pytorch_model.bin" || f == "pytorch_model.bin.index.json" ||
          (f.rfind("pytorch_model-", 0) == 0 && f.size() > 4 && f.compare(f.size() - 4, 4, ".bin") == 0))
        if (pickles.empty() || f < pickles) pickles = f;
    }
    if (!pickles.empty())
      fail("'" + dir + "' has PyTorch pickle weights (" + pickles +
           ") but no model.safetensors or model.safetensors.index.json; longctx reads safetensors only: "
           "convert them once with `python3 tools/bin_to_safetensors.py " + dir + "` (needs torch; see docs/GGUF.md)");
    fail("no model.safetensors or model.safetensors.index.json in '" + dir +
         "': pass a Hugging Face model directory or a .gguf file");
  }
  std::map<std::string, std::string> found;  // tensor -> shard that holds it
  for (const auto& s : shards) {
    SafetensorsFile f = open_safetensors((fs::path(dir) / s).string(), how);
    for (auto& [name, v] : f.tensors) {
      if (set.tensors.count(name)) fail("tensor '" + name + "' appears in more than one shard of '" + dir + "'");
      set.tensors[name] = v;
      found[name] = s;
    }
    set.files.push_back(f.file);
  }
  // An index that disagrees with its shards means mismatched files (a shard from another save);
  // without this check the tensor would only be reported as missing or unexpected later.
  // Tensors a shard holds beyond the index still load, as transformers loads whole shards.
  for (const auto& [name, shard] : listed) {
    auto it = found.find(name);
    if (it == found.end())
      fail(index_where + " names shard '" + shard + "' for tensor '" + name +
           "' but that shard does not contain it (nor does any other): the index and the shards are from different saves");
    if (it->second != shard)
      fail(index_where + " names shard '" + shard + "' for tensor '" + name + "' but that shard does not contain it: it is in '" +
           it->second + "' (the index and the shards are from different saves)");
  }
  return set;
}

}  // namespace lcx
