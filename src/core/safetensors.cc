#include "xbar/core/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace xbar {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  int size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};
// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

const DTypeInfo& Info(DType d) {
  for (const auto& i : kDTypes) {
    if (i.dtype == d) return i;
  }
  XBAR_CHECK(false, "unknown dtype enum ", static_cast<int>(d));
  return kDTypes[0];
}

}  // namespace

const char* DTypeName(DType d) { return Info(d).name; }
int DTypeSize(DType d) { return Info(d).size; }

bool ParseDType(const std::string& name, DType* out) {
  for (const auto& i : kDTypes) {
    if (name == i.name) {
      *out = i.dtype;
      return true;
    }
  }
  return false;
}

int64_t RawTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<double> RawTensor::ToDoubles() const {
  const int64_t n = numel();
  std::vector<double> out(static_cast<size_t>(n));
  const uint8_t* p = bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    double v = 0.0;
    switch (dtype) {
      case DType::kF64: { double x; std::memcpy(&x, p + 8 * i, 8); v = x; break; }
      case DType::kF32: { float x; std::memcpy(&x, p + 4 * i, 4); v = x; break; }
      case DType::kF16: {  // IEEE half
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double mag = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(m + 1024, e - 25);
        v = (h & 0x8000) ? -mag : mag;
        break;
      }
      case DType::kBF16: {  // upper half of an fp32
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        uint32_t u = static_cast<uint32_t>(h) << 16; float x; std::memcpy(&x, &u, 4); v = x;
        break;
      }
      case DType::kI64: { int64_t x; std::memcpy(&x, p + 8 * i, 8); v = static_cast<double>(x); break; }
      case DType::kI32: { int32_t x; std::memcpy(&x, p + 4 * i, 4); v = x; break; }
      case DType::kI16: { int16_t x; std::memcpy(&x, p + 2 * i, 2); v = x; break; }
      case DType::kI8: v = static_cast<int8_t>(p[i]); break;
      case DType::kU8: v = p[i]; break;
      case DType::kBool: v = p[i] != 0; break;
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

std::string SerializeSafeTensors(const SafeTensors& st) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!st.metadata.empty()) header["__metadata__"] = st.metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : st.tensors) {
    XBAR_CHECK(static_cast<int64_t>(t.bytes.size()) == t.numel() * DTypeSize(t.dtype), "tensor ",
               name, " holds ", t.bytes.size(), " bytes for ", t.numel(), " elements");
    header[name] = {{"dtype", DTypeName(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const auto& [name, t] : st.tensors) {
    out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  return out;
}

SafeTensors ParseSafeTensors(const std::string& bytes, const std::string& source, bool with_data) {
  auto fail = [&](const std::string& what) -> InputError {
    return InputError(StrCat(source, ": not a valid safetensors file: ", what));
  };
  // Formats users hand us by mistake, named with what to do instead (docs/MODELS.md).
  if (bytes.compare(0, 4, "PK\x03\x04") == 0) {
    throw InputError(StrCat(source, ": is a torch.save (zip) archive, not safetensors; write the state dict as "
                            "safetensors or export the model with torch.onnx.export (docs/MODELS.md)"));
  }
  if (bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x80 && bytes[1] >= 2 && bytes[1] <= 5) {
    throw InputError(StrCat(source, ": is a Python pickle (legacy torch.save), not safetensors; write the state dict "
                            "as safetensors or export the model with torch.onnx.export (docs/MODELS.md)"));
  }
  if (bytes.size() >= 2 && bytes[0] == 0x08 && (bytes.size() < 9 || bytes[8] != '{')) {
    throw InputError(StrCat(source, ": looks like an ONNX model, not safetensors; pass it as model.onnx or "
                            "--model FILE.onnx"));
  }
  if (bytes.size() < 8) throw fail(StrCat("file has ", bytes.size(), " bytes, too short for the 8-byte header length"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  if (n > kMaxHeaderBytes || n > bytes.size() - 8) {
    throw fail(StrCat("header length ", n, " exceeds the file size ", bytes.size()));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw fail("header is not valid JSON");
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;

  SafeTensors st;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail(StrCat("metadata value '", m.key(), "' is not a string"));
        st.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      throw fail(StrCat("tensor '", name, "' lacks dtype, shape or data_offsets"));
    }
    RawTensor t;
    if (!v["dtype"].is_string() || !ParseDType(v["dtype"].get<std::string>(), &t.dtype)) {
      throw fail(StrCat("tensor '", name, "' has unsupported dtype ", v["dtype"].dump()));
    }
    if (!v["shape"].is_array()) throw fail(StrCat("tensor '", name, "' shape is not an array"));
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw fail(StrCat("tensor '", name, "' shape has a non-integer or negative entry"));
      t.shape.push_back(d.get<int64_t>());
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      throw fail(StrCat("tensor '", name, "' data_offsets is not [begin, end]"));
    }
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size) {
      throw fail(StrCat("tensor '", name, "' data_offsets [", b, ", ", e, "] outside the data block of ",
                        data_size, " bytes (truncated file?)"));
    }
    long double expected = static_cast<long double>(DTypeSize(t.dtype));
    for (int64_t d : t.shape) expected *= static_cast<long double>(d);
    if (expected != static_cast<long double>(e - b)) {
      throw fail(StrCat("tensor '", name, "' has ", e - b, " bytes but its dtype and shape need ",
                        static_cast<double>(expected)));
    }
    if (with_data) t.bytes.assign(data + b, data + e);
    spans.emplace_back(b, e);
    st.tensors.emplace(name, std::move(t));
  }
  // The data block must be covered exactly once, as in the reference implementation.
  std::sort(spans.begin(), spans.end());
  uint64_t covered = 0;
  for (const auto& [b, e] : spans) {
    if (b != covered) throw fail(StrCat("tensor data overlaps or leaves a gap at byte ", covered));
    covered = e;
  }
  if (covered != data_size) {
    throw fail(StrCat("data block has ", data_size, " bytes but tensors cover ", covered));
  }
  return st;
}

void WriteSafeTensors(const std::string& path, const SafeTensors& st) {
  WriteFileAtomic(path, SerializeSafeTensors(st));
}

SafeTensors ReadSafeTensors(const std::string& path) { return ParseSafeTensors(ReadFile(path), path); }

}  // namespace xbar
