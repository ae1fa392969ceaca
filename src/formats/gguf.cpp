#include "formats/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "runtime/atomic_file.h"
#include "runtime/error.h"

namespace lcx {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
// Sanity caps, far above anything real, so a corrupt count fails before it allocates.
constexpr uint64_t kMaxStringLen = uint64_t(1) << 30;
constexpr uint64_t kMaxTensors = uint64_t(1) << 20;
constexpr uint64_t kMaxKv = uint64_t(1) << 20;

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;  // String, Array: variable
  }
}

bool is_int_type(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64: return true;
    default: return false;
  }
}

bool is_float_type(GgufType t) { return t == GgufType::F32 || t == GgufType::F64; }

// Bounds-checked little-endian reader over the mapped bytes. Every read names what it reads so
// a truncated file says where it ended.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, std::string path) : p_(p), n_(n), path_(std::move(path)) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  void need(uint64_t k, const std::string& what) const {
    if (k > left())
      fail("'" + path_ + "': truncated GGUF file: " + what + " needs " + std::to_string(k) +
           " bytes at offset " + std::to_string(pos_) + " but only " + std::to_string(left()) +
           " remain (incomplete download or copy?)");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > kMaxStringLen)
      fail("'" + path_ + "': corrupt GGUF file: " + what + " claims a length of " + std::to_string(len) + " bytes");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  [[noreturn]] void corrupt(const std::string& msg) const {
    fail("'" + path_ + "': corrupt GGUF file: " + msg + " (at offset " + std::to_string(pos_) + ")");
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  std::string path_;
};

int64_t read_int_scalar(Cursor& c, GgufType t, const std::string& what) {
  switch (t) {
    case GgufType::U8: return c.read<uint8_t>(what);
    case GgufType::I8: return c.read<int8_t>(what);
    case GgufType::U16: return c.read<uint16_t>(what);
    case GgufType::I16: return c.read<int16_t>(what);
    case GgufType::U32: return c.read<uint32_t>(what);
    case GgufType::I32: return c.read<int32_t>(what);
    case GgufType::U64: return int64_t(c.read<uint64_t>(what));
    case GgufType::I64: return c.read<int64_t>(what);
    case GgufType::Bool: return c.read<uint8_t>(what) != 0;
    default: c.corrupt(what + ": not an integer type");
  }
}

double read_float_scalar(Cursor& c, GgufType t, const std::string& what) {
  if (t == GgufType::F32) return c.read<float>(what);
  return c.read<double>(what);
}

GgufType read_type(Cursor& c, const std::string& what) {
  const uint32_t t = c.read<uint32_t>(what + " type");
  if (t > uint32_t(GgufType::F64)) c.corrupt(what + " has unknown value type " + std::to_string(t));
  return GgufType(t);
}

GgufValue read_value(Cursor& c, GgufType t, const std::string& key) {
  GgufValue v;
  v.type = t;
  const std::string what = "value of '" + key + "'";
  if (is_int_type(t)) {
    v.i = read_int_scalar(c, t, what);
  } else if (t == GgufType::Bool) {
    const uint8_t b = c.read<uint8_t>(what);
    if (b > 1) c.corrupt(what + " is a bool with byte value " + std::to_string(b));
    v.b = b != 0;
    v.i = b;
  } else if (is_float_type(t)) {
    v.f = read_float_scalar(c, t, what);
  } else if (t == GgufType::String) {
    v.s = c.read_string(what);
  } else {  // Array
    v.elem = read_type(c, "array element of '" + key + "'");
    if (v.elem == GgufType::Array) c.corrupt("'" + key + "' is an array of arrays, which GGUF readers do not support");
    const uint64_t n = c.read<uint64_t>("array length of '" + key + "'");
    // Every element takes at least one byte (strings at least 8): cap by what remains.
    const size_t min_size = v.elem == GgufType::String ? 8 : scalar_size(v.elem);
    if (n > c.left() / min_size)
      c.corrupt("array '" + key + "' claims " + std::to_string(n) + " elements, more than the file can hold");
    if (v.elem == GgufType::String) {
      v.strs.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k) v.strs.push_back(c.read_string("element of '" + key + "'"));
    } else if (is_float_type(v.elem)) {
      v.floats.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k) v.floats.push_back(read_float_scalar(c, v.elem, what));
    } else {
      v.ints.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k) v.ints.push_back(read_int_scalar(c, v.elem, what));
    }
  }
  return v;
}

bool dtype_from_ggml(uint32_t id, DType* out) {
  switch (id) {
    case kGgmlF32: *out = DType::F32; return true;
    case kGgmlF16: *out = DType::F16; return true;
    case kGgmlQ4_0: *out = DType::Q4_0; return true;
    case kGgmlQ8_0: *out = DType::Q8_0; return true;
    case kGgmlBF16: *out = DType::BF16; return true;
    case 3: *out = DType::Q4_1; return true;  // ggml_type ids (ggml.h)
    case 6: *out = DType::Q5_0; return true;
    case 7: *out = DType::Q5_1; return true;
    case 10: *out = DType::Q2_K; return true;
    case 11: *out = DType::Q3_K; return true;
    case 12: *out = DType::Q4_K; return true;
    case 13: *out = DType::Q5_K; return true;
    case 14: *out = DType::Q6_K; return true;
    default: return false;
  }
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "uint8";
    case GgufType::I8: return "int8";
    case GgufType::U16: return "uint16";
    case GgufType::I16: return "int16";
    case GgufType::U32: return "uint32";
    case GgufType::I32: return "int32";
    case GgufType::F32: return "float32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "uint64";
    case GgufType::I64: return "int64";
    case GgufType::F64: return "float64";
  }
  return "?";
}

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return kGgmlF32;
    case DType::F16: return kGgmlF16;
    case DType::BF16: return kGgmlBF16;
    case DType::Q8_0: return kGgmlQ8_0;
    case DType::Q4_0: return kGgmlQ4_0;
    case DType::Q4_1: return 3;
    case DType::Q5_0: return 6;
    case DType::Q5_1: return 7;
    case DType::Q2_K: return 10;
    case DType::Q3_K: return 11;
    case DType::Q4_K: return 12;
    case DType::Q5_K: return 13;
    case DType::Q6_K: return 14;
    default: fail("dtype has no GGUF type");
  }
}

std::string ggml_type_name(uint32_t id) {
  // ggml.h's enum ggml_type (4 and 5 were Q4_2 / Q4_3, removed).
  static const char* const names[] = {
      "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
      "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8",
      "IQ4_NL_8_8", "MXFP4"};
  if (id < sizeof(names) / sizeof(names[0])) return names[id];
  return "type " + std::to_string(id);
}

// ---------------------------------------------------------------------------------------------
// GgufValue

size_t GgufValue::array_size() const {
  if (type != GgufType::Array) return 0;
  if (elem == GgufType::String) return strs.size();
  if (is_float_type(elem)) return floats.size();
  return ints.size();
}

GgufValue GgufValue::u32(uint32_t v) { GgufValue x; x.type = GgufType::U32; x.i = v; return x; }
GgufValue GgufValue::i32(int32_t v) { GgufValue x; x.type = GgufType::I32; x.i = v; return x; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue x; x.type = GgufType::U64; x.i = int64_t(v); return x; }
GgufValue GgufValue::i64(int64_t v) { GgufValue x; x.type = GgufType::I64; x.i = v; return x; }
GgufValue GgufValue::f32(float v) { GgufValue x; x.type = GgufType::F32; x.f = v; return x; }
GgufValue GgufValue::f64(double v) { GgufValue x; x.type = GgufType::F64; x.f = v; return x; }
GgufValue GgufValue::boolean(bool v) { GgufValue x; x.type = GgufType::Bool; x.b = v; x.i = v; return x; }
GgufValue GgufValue::str(std::string v) { GgufValue x; x.type = GgufType::String; x.s = std::move(v); return x; }
GgufValue GgufValue::int_array(GgufType elem, std::vector<int64_t> v) {
  if (!is_int_type(elem) && elem != GgufType::Bool) fail("GGUF int_array needs an integer element type");
  GgufValue x; x.type = GgufType::Array; x.elem = elem; x.ints = std::move(v); return x;
}
GgufValue GgufValue::float_array(GgufType elem, std::vector<double> v) {
  if (!is_float_type(elem)) fail("GGUF float_array needs a float element type");
  GgufValue x; x.type = GgufType::Array; x.elem = elem; x.floats = std::move(v); return x;
}
GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue x; x.type = GgufType::Array; x.elem = GgufType::String; x.strs = std::move(v); return x;
}

// ---------------------------------------------------------------------------------------------
// Reader

GgufFile GgufFile::open(const std::string& path, FileLoad how) {
  GgufFile g;
  g.path_ = path;
  g.file_ = MappedFile::open(path, how);
  Cursor c(g.file_->data(), g.file_->size(), path);

  if (g.file_->size() < 4 || c.read<uint32_t>("magic") != kMagic)
    fail("'" + path + "' is not a GGUF file (it does not start with the bytes 'GGUF')");
  g.version_ = c.read<uint32_t>("version");
  if (g.version_ == 1)
    fail("'" + path + "' is GGUF version 1 (32-bit counts), which is obsolete: re-convert it with a current llama.cpp or longctx convert");
  if (g.version_ != 2 && g.version_ != 3)
    fail("'" + path + "': unsupported GGUF version " + std::to_string(g.version_) + " (longctx reads versions 2 and 3)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key-value pair is at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
  // 8 + 4 + 4 + 8.
  if (n_kv > kMaxKv || n_kv > c.left() / 13)
    c.corrupt("metadata count " + std::to_string(n_kv) + " is impossible for a file of this size");
  if (n_tensors > kMaxTensors || n_tensors > c.left() / 24)
    c.corrupt("tensor count " + std::to_string(n_tensors) + " is impossible for a file of this size");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("metadata key #" + std::to_string(k));
    const GgufType t = read_type(c, "metadata '" + key + "'");
    GgufValue v = read_value(c, t, key);
    if (g.kv_index_.count(key)) c.corrupt("duplicate metadata key '" + key + "'");
    g.kv_index_[key] = g.kv_.size();
    g.kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = g.find("general.alignment")) {
    if (!is_int_type(a->type) || a->i <= 0 || a->i > (1 << 20) || (a->i & (a->i - 1)) != 0)
      fail("'" + path + "': general.alignment must be a power of two (got " +
           (is_int_type(a->type) ? std::to_string(a->i) : std::string(gguf_type_name(a->type))) + ")");
    g.alignment_ = size_t(a->i);
  }

  g.infos_.reserve(size_t(n_tensors));
  // Names seen so far, for the duplicate check: comparing each name with every earlier one was
  // quadratic (a 1.5 MB header of 40k tiny tensor records took 44 s in the ASan build, 80k 3 min).
  std::unordered_set<std::string> seen_names;
  seen_names.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    ti.name = c.read_string("tensor name #" + std::to_string(k));
    const std::string tn = "tensor '" + ti.name + "'";
    const uint32_t n_dims = c.read<uint32_t>(tn + " dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      c.corrupt(tn + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    std::vector<int64_t> ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t e = c.read<uint64_t>(tn + " dimensions");
      if (e == 0 || e > (uint64_t(1) << 40)) c.corrupt(tn + " has dimension " + std::to_string(e));
      ne[d] = int64_t(e);
      if (numel > std::numeric_limits<int64_t>::max() / ne[d]) c.corrupt(tn + " has too many elements");
      numel *= ne[d];
    }
    ti.ggml_type = c.read<uint32_t>(tn + " type");
    ti.offset = c.read<uint64_t>(tn + " offset");
    if (!dtype_from_ggml(ti.ggml_type, &ti.dtype))
      fail("'" + path + "': tensor '" + ti.name + "' has type " + ggml_type_name(ti.ggml_type) +
           ", which longctx cannot read (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
           "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): re-quantize the model to one of these, e.g. "
           "llama-quantize --allow-requantize MODEL OUT Q4_K_M");
    if (ne[0] % dtype_block_values(ti.dtype) != 0)
      c.corrupt(tn + ": " + ggml_type_name(ti.ggml_type) + " rows must be a multiple of " +
                std::to_string(dtype_block_values(ti.dtype)) + " values, got " + std::to_string(ne[0]));
    const size_t row = dtype_row_bytes(ti.dtype, ne[0]);
    const int64_t n_rows = numel / ne[0];
    if (n_rows > 0 && row > std::numeric_limits<size_t>::max() / size_t(n_rows)) c.corrupt(tn + " is too large");
    ti.nbytes = row * size_t(n_rows);
    ti.shape.assign(ne.rbegin(), ne.rend());
    if (ti.offset % g.alignment_ != 0)
      c.corrupt(tn + " data offset " + std::to_string(ti.offset) + " is not a multiple of the alignment " +
                std::to_string(g.alignment_));
    if (!seen_names.insert(ti.name).second) c.corrupt("duplicate tensor name '" + ti.name + "'");
    g.infos_.push_back(std::move(ti));
  }

  g.data_offset_ = align_up(c.pos(), g.alignment_);
  const size_t size = g.file_->size();
  if (g.data_offset_ > size && n_tensors > 0)
    fail("'" + path + "': truncated GGUF file: the tensor data section would start at byte " +
         std::to_string(g.data_offset_) + " but the file has " + std::to_string(size) + " bytes");
  for (const GgufTensorInfo& ti : g.infos_) {
    const size_t avail = size - g.data_offset_;
    if (ti.offset > avail || ti.nbytes > avail - ti.offset)
      fail("'" + path + "': truncated GGUF file: tensor '" + ti.name + "' (" + ggml_type_name(ti.ggml_type) + " " +
           shape_str(ti.shape) + ", " + std::to_string(ti.nbytes) + " bytes at data offset " +
           std::to_string(ti.offset) + ") extends past the end of the file (" + std::to_string(size) + " bytes)");
    TensorView v;
    v.dtype = ti.dtype;
    v.shape = ti.shape;
    v.nbytes = ti.nbytes;
    v.data = g.file_->data() + g.data_offset_ + ti.offset;
    g.tensors_[ti.name] = v;
  }
  // Each tensor's bytes must end at or before the next tensor's start: a wrong type (a Q8_0
  // tensor relabelled F16), shape or offset otherwise reads its neighbour's bytes as weights.
  // Gaps are fine (writers pad each tensor to the alignment).
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(g.infos_.size());
  for (const GgufTensorInfo& ti : g.infos_) by_offset.push_back(&ti);
  std::stable_sort(by_offset.begin(), by_offset.end(),
                   [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensorInfo& a = *by_offset[k - 1];
    const GgufTensorInfo& b = *by_offset[k];
    if (a.offset + a.nbytes > b.offset)
      fail("'" + path + "': corrupt GGUF file: tensor '" + a.name + "' (" + ggml_type_name(a.ggml_type) + " " +
           shape_str(a.shape) + ", " + std::to_string(a.nbytes) + " bytes at data offset " + std::to_string(a.offset) +
           ") overlaps tensor '" + b.name + "' (at data offset " + std::to_string(b.offset) +
           "): a tensor's type, shape or offset is wrong; re-convert or re-download the file");
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* expected) {
  std::string got = gguf_type_name(v.type);
  if (v.type == GgufType::Array) got += std::string(" of ") + gguf_type_name(v.elem);
  fail("'" + path + "': metadata '" + key + "' has type " + got + ", expected " + expected);
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (!is_int_type(v->type)) wrong_type(path_, key, *v, "an integer");
  return v->i;
}
int64_t GgufFile::get_int(const std::string& key, int64_t dflt) const {
  return has(key) ? get_int(key) : dflt;
}
double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (is_float_type(v->type)) return v->f;
  if (is_int_type(v->type)) return double(v->i);
  wrong_type(path_, key, *v, "a number");
}
double GgufFile::get_float(const std::string& key, double dflt) const {
  return has(key) ? get_float(key) : dflt;
}
bool GgufFile::get_bool(const std::string& key, bool dflt) const {
  const GgufValue* v = find(key);
  if (!v) return dflt;
  if (v->type == GgufType::Bool) return v->b;
  if (is_int_type(v->type)) return v->i != 0;
  wrong_type(path_, key, *v, "a bool");
}
std::string GgufFile::get_str(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (v->type != GgufType::String) wrong_type(path_, key, *v, "a string");
  return v->s;
}
std::string GgufFile::get_str(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_str(key) : dflt;
}
std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (v->type != GgufType::Array || !(is_int_type(v->elem) || v->elem == GgufType::Bool))
    wrong_type(path_, key, *v, "an array of integers");
  return v->ints;
}
std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (v->type != GgufType::Array) wrong_type(path_, key, *v, "an array of numbers");
  if (is_float_type(v->elem)) return std::vector<float>(v->floats.begin(), v->floats.end());
  if (is_int_type(v->elem)) return std::vector<float>(v->ints.begin(), v->ints.end());
  wrong_type(path_, key, *v, "an array of numbers");
}
const std::vector<std::string>& GgufFile::get_str_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("'" + path_ + "': required metadata '" + key + "' is missing");
  if (v->type != GgufType::Array || v->elem != GgufType::String) wrong_type(path_, key, *v, "an array of strings");
  return v->strs;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

// lcx::AtomicFile (a temporary file renamed on commit, removed if abandoned) that counts bytes
// for the alignment padding.
class AtomicOut {
 public:
  explicit AtomicOut(const std::string& path) : f_(path) {}
  void write(const void* p, size_t n) {
    f_.write(p, n);
    written_ += n;
  }
  template <typename T>
  void put(T v) { write(&v, sizeof v); }
  void put_str(const std::string& s) {
    put<uint64_t>(s.size());
    write(s.data(), s.size());
  }
  void pad_to(size_t align) {
    static const uint8_t zeros[64] = {};
    while (written_ % align) write(zeros, std::min<size_t>(sizeof zeros, align - written_ % align));
  }
  size_t written() const { return written_; }
  void commit() { f_.commit(); }

 private:
  AtomicFile f_;
  size_t written_ = 0;
};

void write_scalar(AtomicOut& o, GgufType t, int64_t i, double f) {
  switch (t) {
    case GgufType::U8: o.put<uint8_t>(uint8_t(i)); break;
    case GgufType::I8: o.put<int8_t>(int8_t(i)); break;
    case GgufType::U16: o.put<uint16_t>(uint16_t(i)); break;
    case GgufType::I16: o.put<int16_t>(int16_t(i)); break;
    case GgufType::U32: o.put<uint32_t>(uint32_t(i)); break;
    case GgufType::I32: o.put<int32_t>(int32_t(i)); break;
    case GgufType::U64: o.put<uint64_t>(uint64_t(i)); break;
    case GgufType::I64: o.put<int64_t>(i); break;
    case GgufType::Bool: o.put<uint8_t>(i ? 1 : 0); break;
    case GgufType::F32: o.put<float>(float(f)); break;
    case GgufType::F64: o.put<double>(f); break;
    default: fail("GGUF writer: not a scalar type");
  }
}

void write_value(AtomicOut& o, const GgufValue& v) {
  o.put<uint32_t>(uint32_t(v.type));
  switch (v.type) {
    case GgufType::String: o.put_str(v.s); return;
    case GgufType::Bool: o.put<uint8_t>(v.b ? 1 : 0); return;
    case GgufType::Array:
      o.put<uint32_t>(uint32_t(v.elem));
      o.put<uint64_t>(v.array_size());
      if (v.elem == GgufType::String) {
        for (const auto& s : v.strs) o.put_str(s);
      } else if (is_float_type(v.elem)) {
        for (double x : v.floats) write_scalar(o, v.elem, 0, x);
      } else {
        for (int64_t x : v.ints) write_scalar(o, v.elem, x, 0.0);
      }
      return;
    default: write_scalar(o, v.type, v.i, v.f);
  }
}

}  // namespace

GgufWriter::GgufWriter(size_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail("GGUF alignment must be a power of two");
  if (alignment != 32) set_u32("general.alignment", uint32_t(alignment));
}

void GgufWriter::set(const std::string& key, GgufValue v) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::erase(const std::string& key) {
  for (auto it = kv_.begin(); it != kv_.end(); ++it)
    if (it->first == key) {
      kv_.erase(it);
      return;
    }
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, Producer produce) {
  if (shape.empty() || shape.size() > kMaxDims) fail("GGUF tensor '" + name + "' must have 1 to 4 dimensions");
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d <= 0) fail("GGUF tensor '" + name + "' has shape " + shape_str(shape));
    numel *= d;
  }
  if (shape.back() % dtype_block_values(dtype) != 0)
    fail("GGUF tensor '" + name + "': " + dtype_name(dtype) + " rows must be a multiple of " +
         std::to_string(dtype_block_values(dtype)) + " values");
  for (const auto& t : tensors_)
    if (t.name == name) fail("GGUF writer: duplicate tensor '" + name + "'");
  const size_t nbytes = dtype_row_bytes(dtype, shape.back()) * size_t(numel / shape.back());
  tensors_.push_back({name, dtype, std::move(shape), nbytes, std::move(produce)});
}

void GgufWriter::add_tensor(const std::string& name, const TensorView& view) {
  const TensorView v = view;
  add_tensor(name, v.dtype, v.shape, [v](const Sink& sink) { sink(v.data, v.nbytes); });
  if (tensors_.back().nbytes != v.nbytes) {
    const size_t need = tensors_.back().nbytes;
    tensors_.pop_back();
    fail("GGUF tensor '" + name + "': view holds " + std::to_string(v.nbytes) + " bytes but its shape needs " +
         std::to_string(need));
  }
}

void GgufWriter::write(const std::string& path) const {
  AtomicOut o(path);
  o.put<uint32_t>(kMagic);
  o.put<uint32_t>(3);
  o.put<uint64_t>(tensors_.size());
  o.put<uint64_t>(kv_.size());
  for (const auto& [key, v] : kv_) {
    o.put_str(key);
    write_value(o, v);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    o.put_str(t.name);
    o.put<uint32_t>(uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) o.put<uint64_t>(uint64_t(*it));  // ne[0] innermost
    o.put<uint32_t>(ggml_type_of(t.dtype));
    o.put<uint64_t>(offset);
    offset += align_up(t.nbytes, alignment_);
  }
  o.pad_to(alignment_);
  for (const Tensor& t : tensors_) {
    const size_t start = o.written();
    t.produce([&](const void* p, size_t n) {
      if (o.written() - start + n > t.nbytes)
        fail("GGUF writer: tensor '" + t.name + "' produced more than its " + std::to_string(t.nbytes) + " bytes");
      o.write(p, n);
    });
    if (o.written() - start != t.nbytes)
      fail("GGUF writer: tensor '" + t.name + "' produced " + std::to_string(o.written() - start) + " of its " +
           std::to_string(t.nbytes) + " bytes");
    o.pad_to(alignment_);
  }
  o.commit();
}

}  // namespace lcx
