// GGUF (llama.cpp's single-file model format), versions 2 and 3, little-endian.
//
// Layout (ggml/docs/gguf.md):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x   { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | tensor data (each tensor at an aligned offset
//   relative to the start of the data section)
// Strings are u64 length + bytes (no terminator); arrays are u32 element type + u64 count +
// elements. ne[0] is the innermost (fastest-varying) dimension, so a linear weight
// [n_out, n_in] in Hugging Face order is stored as ne = {n_in, n_out}. This reader reverses
// ne so every TensorView in the engine is row-major HF order; the writer reverses it back.
//
// The reader memory-maps the file and returns views into it (no copy). Every count, length
// and offset is checked against the bytes that remain before anything is allocated, so a
// corrupt or hostile file gives an lcx::Error, never a crash or a huge allocation.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/mmap_file.h"
#include "runtime/tensor.h"

namespace lcx {

// Metadata value types; numbering must match GGUF's gguf_type enum.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8,
  Array = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);

// ggml tensor type ids of the dtypes longctx stores (ggml.h's enum ggml_type).
constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8, kGgmlBF16 = 30;
uint32_t ggml_type_of(DType t);
// Name of any ggml type id ("Q4_K", "IQ2_XS", ...) for error messages; "type N" if unknown.
std::string ggml_type_name(uint32_t id);

// One metadata value. Scalars live in i (all integer types; u64 stored bit for bit), f or b;
// arrays in ints / floats / strs according to elem. Nested arrays are not supported (llama.cpp
// does not write them).
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem = GgufType::U32;  // element type when type == Array
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string s;
  std::vector<int64_t> ints;       // integer and bool arrays
  std::vector<double> floats;      // F32 / F64 arrays
  std::vector<std::string> strs;   // string arrays

  size_t array_size() const;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue i64(int64_t v);
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  // Arrays: elem must be an integer type or Bool for ints, F32/F64 for floats.
  static GgufValue int_array(GgufType elem, std::vector<int64_t> v);
  static GgufValue float_array(GgufType elem, std::vector<double> v);
  static GgufValue str_array(std::vector<std::string> v);
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major HF order (ne reversed)
  uint64_t offset = 0;         // relative to the data section
  size_t nbytes = 0;
};

class GgufFile {
 public:
  // Throws lcx::Error naming the file and the problem (missing, bad magic, unsupported
  // version, truncated, corrupt counts or lengths, unknown tensor type, offsets past the end).
  // `how`: map the file, or read it into huge-page memory (model weights, see FileLoad).
  static GgufFile open(const std::string& path, FileLoad how = FileLoad::Map);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }  // start of the tensor data section
  const std::shared_ptr<MappedFile>& file() const { return file_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters. The one-argument forms throw when the key is missing; all throw when the
  // value has an incompatible type (any integer type reads as an integer, F32/F64 and
  // integers read as floats).
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t dflt) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  std::string get_str(const std::string& key) const;
  std::string get_str(const std::string& key, const std::string& dflt) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  const std::vector<std::string>& get_str_array(const std::string& key) const;

  // Tensors in file order, and by name (views into the mapping).
  const std::vector<GgufTensorInfo>& tensor_infos() const { return infos_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> infos_;
  std::map<std::string, TensorView> tensors_;
};

// Builds a GGUF v3 file. Tensor bytes are produced on demand while writing, one tensor at a
// time, so converting a 7B model never holds a second copy of the weights in memory.
class GgufWriter {
 public:
  // Called with a sink; must pass exactly the tensor's byte size to it, in order, in any
  // number of pieces.
  using Sink = std::function<void(const void* data, size_t n)>;
  using Producer = std::function<void(const Sink& sink)>;

  explicit GgufWriter(size_t alignment = 32);

  // Adds or replaces a key (a replaced key keeps its position).
  void set(const std::string& key, GgufValue v);
  void set_u32(const std::string& key, uint32_t v) { set(key, GgufValue::u32(v)); }
  void set_i32(const std::string& key, int32_t v) { set(key, GgufValue::i32(v)); }
  void set_f32(const std::string& key, float v) { set(key, GgufValue::f32(v)); }
  void set_bool(const std::string& key, bool v) { set(key, GgufValue::boolean(v)); }
  void set_str(const std::string& key, std::string v) { set(key, GgufValue::str(std::move(v))); }
  void erase(const std::string& key);

  // shape: row-major HF order; written reversed as ne[]. The producer runs during write().
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, Producer produce);
  // Writes a view's bytes as they are; the bytes must stay valid until write() returns.
  void add_tensor(const std::string& name, const TensorView& view);

  // Writes to a temporary file beside path, fsyncs and renames it over path, so readers never
  // see a partial file. Throws lcx::Error (and removes the temporary) on any failure.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes;
    Producer produce;
  };
  size_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace lcx
