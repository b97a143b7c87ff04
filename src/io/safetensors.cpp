#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/json.h"
#include "lighthouse/dtype.h"
#include "lighthouse/error.h"

namespace lighthouse::io {
namespace {

// Same cap as the reference readers: a header larger than this is corrupt.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// Element count with overflow checking, or -1 when it does not fit in int64.
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

Tensor parse_tensor(const std::string& path, const std::string& name, const json::Value& entry,
                    const std::vector<uint8_t>& bytes, uint64_t data_begin, uint64_t data_size,
                    std::pair<uint64_t, uint64_t>& range) {
  const std::string where = path + ": tensor '" + name + "'";
  if (!entry.is_object()) fail(where, "a JSON object", "another JSON value");
  const auto dtype = entry.find("dtype");
  const auto shape = entry.find("shape");
  const auto offsets = entry.find("data_offsets");
  if (dtype == entry.end() || !dtype->is_string()) fail(where + ".dtype", "a string", "a missing or non-string value");
  if (shape == entry.end() || !shape->is_array())
    fail(where + ".shape", "an array of integers", "a missing or non-array value");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
    fail(where + ".data_offsets", "an array [begin, end]", "a missing or malformed value");

  Tensor t;
  t.dtype = dtype->get<std::string>();
  const int64_t elem = [&] {
    try {
      return dtype_size(t.dtype);
    } catch (const Error&) {
      fail(where + ".dtype", "one of F32, BF16, F16, I32, I64", t.dtype);
    }
  }();
  for (const json::Value& d : *shape) t.shape.push_back(json::to_index(d, where + ".shape"));
  const int64_t count = checked_numel(t.shape);
  if (count < 0 || count > std::numeric_limits<int64_t>::max() / elem)
    fail(where + ".shape", "a shape whose byte size fits in 64 bits", shape_text(t.shape));
  const uint64_t begin = static_cast<uint64_t>(json::to_index((*offsets)[0], where + ".data_offsets[0]"));
  const uint64_t end = static_cast<uint64_t>(json::to_index((*offsets)[1], where + ".data_offsets[1]"));
  if (begin > end) fail(where + ".data_offsets", "begin <= end", std::to_string(begin) + " > " + std::to_string(end));
  if (end > data_size)
    fail(where + ".data_offsets", "end within the " + std::to_string(data_size) + " data bytes of the file (truncated?)",
         end);
  const uint64_t expected = static_cast<uint64_t>(count) * static_cast<uint64_t>(elem);
  if (end - begin != expected)
    fail(where + ".data_offsets",
         std::to_string(expected) + " bytes for dtype " + t.dtype + " and shape " + shape_text(t.shape),
         std::to_string(end - begin) + " bytes");
  t.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_begin + begin),
                bytes.begin() + static_cast<std::ptrdiff_t>(data_begin + end));
  range = {begin, end};
  return t;
}

}  // namespace

int64_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  if (dtype == "I64") return 8;
  fail("dtype", "one of F32, BF16, F16, I32, I64", dtype);
}

int64_t numel(const std::vector<int64_t>& shape) {
  const int64_t n = checked_numel(shape);
  if (n < 0) fail("shape", "non-negative sizes whose product fits in 64 bits", shape_text(shape));
  return n;
}

SafeTensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "a readable safetensors file", "a file that cannot be opened");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "a readable safetensors file", "a read error");
  if (bytes.size() < 8)
    fail(path, "at least 8 bytes (the header length)", std::to_string(bytes.size()) + " bytes");

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[static_cast<size_t>(i)];
  if (header_len > kMaxHeaderBytes)
    fail(path, "a header length of at most " + std::to_string(kMaxHeaderBytes) + " bytes", header_len);
  if (header_len > bytes.size() - 8)
    fail(path, "a header of " + std::to_string(header_len) + " bytes (truncated file?)",
         std::to_string(bytes.size() - 8) + " bytes after the length");
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  const json::Value root = json::parse(header, path + ": JSON header");
  if (!root.is_object()) fail(path, "a JSON object as header", "another JSON value");

  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_begin;
  SafeTensors file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  // Names are unique: json::parse refuses a repeated key.
  for (const auto& member : root.items()) {
    const std::string& name = member.key();
    if (name == "__metadata__") {
      if (!member.value().is_object())
        fail(path + ": __metadata__", "a JSON object of strings", "another JSON value");
      for (const auto& kv : member.value().items()) {
        if (!kv.value().is_string()) fail(path + ": __metadata__." + kv.key(), "a string value", "another JSON value");
        file.metadata[kv.key()] = kv.value().get<std::string>();
      }
      continue;
    }
    std::pair<uint64_t, uint64_t> range;
    file.tensors[name] = parse_tensor(path, name, member.value(), bytes, data_begin, data_size, range);
    ranges.push_back(range);
  }

  // The tensors must tile the data section exactly: no overlap, no holes.
  std::sort(ranges.begin(), ranges.end());
  uint64_t cursor = 0;
  for (const auto& r : ranges) {
    if (r.first != cursor)
      fail(path, "tensor data packed back to back from offset " + std::to_string(cursor),
           "a tensor starting at " + std::to_string(r.first));
    cursor = r.second;
  }
  if (cursor != data_size)
    fail(path, std::to_string(cursor) + " data bytes after the header", std::to_string(data_size) + " bytes");
  return file;
}

void write_safetensors(const std::string& path, const SafeTensors& file) {
  json::Value root = json::Value::object();
  if (!file.metadata.empty()) root["__metadata__"] = file.metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    if (name == "__metadata__") fail("tensor name", "a name other than __metadata__", name);
    const uint64_t expected = static_cast<uint64_t>(numel(t.shape) * dtype_size(t.dtype));
    if (t.data.size() != expected)
      fail("tensor '" + name + "'.data",
           std::to_string(expected) + " bytes for dtype " + t.dtype + " and shape " + shape_text(t.shape),
           std::to_string(t.data.size()) + " bytes");
    root[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + expected}}};
    offset += expected;
  }
  std::string header;
  try {
    header = root.dump();
  } catch (const nlohmann::json::type_error& e) {
    fail(path + ": header", "names and metadata in valid UTF-8", e.what());
  }
  // Pad with spaces so the data starts 8-byte aligned.
  while (header.size() % 8 != 0) header += ' ';

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, "a writable output path", "a file that cannot be created");
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<uint8_t>(n & 0xff);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& kv : file.tensors)
    out.write(reinterpret_cast<const char*>(kv.second.data.data()), static_cast<std::streamsize>(kv.second.data.size()));
  out.close();
  if (!out) fail(path, "a successful write", "an I/O error");
}

std::vector<float> to_float32(const Tensor& t) {
  const int64_t n = numel(t.shape);
  if (t.data.size() != static_cast<size_t>(n * dtype_size(t.dtype)))
    fail("tensor data", "a byte size matching dtype and shape", std::to_string(t.data.size()) + " bytes");
  std::vector<float> out(static_cast<size_t>(n));
  if (t.dtype == "F32") {
    if (n > 0) std::memcpy(out.data(), t.data.data(), t.data.size());
  } else if (t.dtype == "BF16" || t.dtype == "F16") {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, t.data.data() + 2 * i, 2);
      out[static_cast<size_t>(i)] = t.dtype == "BF16" ? to_float(bf16_t{bits}) : to_float(f16_t{bits});
    }
  } else {
    fail("tensor dtype", "a floating-point dtype (F32, BF16 or F16)", t.dtype);
  }
  return out;
}

std::vector<int32_t> to_int32(const Tensor& t) {
  const int64_t n = numel(t.shape);
  if (t.data.size() != static_cast<size_t>(n * dtype_size(t.dtype)))
    fail("tensor data", "a byte size matching dtype and shape", std::to_string(t.data.size()) + " bytes");
  std::vector<int32_t> out(static_cast<size_t>(n));
  if (t.dtype == "I32") {
    if (n > 0) std::memcpy(out.data(), t.data.data(), t.data.size());
  } else if (t.dtype == "I64") {
    for (int64_t i = 0; i < n; ++i) {
      int64_t x;
      std::memcpy(&x, t.data.data() + 8 * i, 8);
      if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
        fail("tensor value", "an integer that fits in int32", x);
      out[static_cast<size_t>(i)] = static_cast<int32_t>(x);
    }
  } else {
    fail("tensor dtype", "an integer dtype (I32 or I64)", t.dtype);
  }
  return out;
}

Tensor from_float32(const std::vector<float>& values, std::vector<int64_t> shape) {
  if (numel(shape) != static_cast<int64_t>(values.size()))
    fail("shape " + shape_text(shape), std::to_string(values.size()) + " elements", numel(shape));
  Tensor t{"F32", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

Tensor from_int32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  if (numel(shape) != static_cast<int64_t>(values.size()))
    fail("shape " + shape_text(shape), std::to_string(values.size()) + " elements", numel(shape));
  Tensor t{"I32", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

}  // namespace lighthouse::io
