// Reading and writing safetensors files: an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {key: string}}, then the raw little-endian tensor bytes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lighthouse::io {

struct Tensor {
  std::string dtype;           // "F32", "BF16", "F16", "I32" or "I64"
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;   // row-major, little-endian
};

struct SafeTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Reads and validates a whole file; throws lighthouse::Error naming the path
// and what is wrong (missing file, truncated data, malformed header, offsets
// that overlap or disagree with dtype and shape, ...).
SafeTensors read_safetensors(const std::string& path);

// Writes the tensors in name order, packed back to back; throws
// lighthouse::Error when a tensor's data does not match its dtype and shape
// or the file cannot be written.
void write_safetensors(const std::string& path, const SafeTensors& file);

// Bytes per element of a dtype name; throws lighthouse::Error for others.
int64_t dtype_size(const std::string& dtype);

// Number of elements of a shape (1 for a scalar).
int64_t numel(const std::vector<int64_t>& shape);

// The tensor's values as fp32 (F32, BF16, F16); other dtypes throw.
std::vector<float> to_float32(const Tensor& t);

// The tensor's values as int32 (I32, or I64 values that fit); others throw.
std::vector<int32_t> to_int32(const Tensor& t);

// Tensors holding the given values (F32 / I32); throws when the shape's
// element count differs from values.size().
Tensor from_float32(const std::vector<float>& values, std::vector<int64_t> shape);
Tensor from_int32(const std::vector<int32_t>& values, std::vector<int64_t> shape);

}  // namespace lighthouse::io
