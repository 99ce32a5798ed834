// xbar/core/safetensors.h — the safetensors file format, without LibTorch.
//
// Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes
// of JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "string"}}, then the raw little-endian tensor bytes. Offsets are relative
// to the start of the data block, which must be covered exactly once. The header is padded with
// spaces to a multiple of 8 bytes so the data block is aligned.
//
// The reader validates everything it trusts (sizes, offsets, dtypes, coverage) and throws
// InputError("<file>: <what is wrong>") so a corrupt file never crashes a command.
//
//   SafeTensors st;
//   st.metadata["architecture"] = "lenet5";
//   st.tensors["conv1.weight"] = RawTensor{DType::kF32, {6, 1, 5, 5}, bytes};
//   WriteSafeTensors("model.safetensors", st);
//   SafeTensors back = ReadSafeTensors("model.safetensors");
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xbar {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "I64", ... as written in the header.
const char* DTypeName(DType d);
// Bytes per element.
int DTypeSize(DType d);
// Parses a header dtype name; returns false when unknown.
bool ParseDType(const std::string& name, DType* out);

struct RawTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, row-major, numel() * DTypeSize(dtype) bytes

  int64_t numel() const;
  // The elements converted to double (any dtype), row-major.
  std::vector<double> ToDoubles() const;
};

struct SafeTensors {
  std::map<std::string, std::string> metadata;  // "__metadata__": string values only
  std::map<std::string, RawTensor> tensors;
};

// Serialises to the safetensors byte layout.
std::string SerializeSafeTensors(const SafeTensors& st);
// Parses bytes; `source` names the file in error messages. With `with_data` false the header is
// checked as usual but the tensors' bytes are not copied (their RawTensor::bytes stay empty).
SafeTensors ParseSafeTensors(const std::string& bytes, const std::string& source, bool with_data = true);

// Atomic write (temp file + rename).
void WriteSafeTensors(const std::string& path, const SafeTensors& st);
SafeTensors ReadSafeTensors(const std::string& path);

}  // namespace xbar
