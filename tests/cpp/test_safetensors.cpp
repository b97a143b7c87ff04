// Safetensors IO: round trips, the golden files' layout, and clear errors for
// truncated or malformed files.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "lighthouse/error.h"

namespace lighthouse::io {
namespace {

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "lighthouse_safetensors_" + name + ".safetensors";
}

void write_raw(const std::string& path, const std::string& header, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out.put(static_cast<char>(n & 0xff));
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// Expects read_safetensors(path) to throw an Error whose message contains `needle`.
void expect_read_error(const std::string& path, const std::string& needle) {
  try {
    read_safetensors(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(SafeTensors, RoundTripKeepsEverything) {
  SafeTensors file;
  file.metadata["levels"] = "3";
  file.metadata["quote\"and\\slash"] = "line\nbreak";
  file.tensors["a"] = from_float32({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f}, {2, 3});
  file.tensors["idx"] = from_int32({5, -1, 2147483647}, {3});
  file.tensors["empty"] = from_float32({}, {0, 4});
  Tensor half{"BF16", {2}, {0x80, 0x3f, 0x00, 0xc0}};  // 1.0, -2.0
  file.tensors["half"] = half;
  const std::string path = temp_path("roundtrip");
  write_safetensors(path, file);
  const SafeTensors back = read_safetensors(path);
  EXPECT_EQ(back.metadata, file.metadata);
  ASSERT_EQ(back.tensors.size(), file.tensors.size());
  for (const auto& kv : file.tensors) {
    const Tensor& t = back.tensors.at(kv.first);
    EXPECT_EQ(t.dtype, kv.second.dtype) << kv.first;
    EXPECT_EQ(t.shape, kv.second.shape) << kv.first;
    EXPECT_EQ(t.data, kv.second.data) << kv.first;
  }
  EXPECT_EQ(to_float32(back.tensors.at("half")), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(to_int32(back.tensors.at("idx")), (std::vector<int32_t>{5, -1, 2147483647}));
  std::remove(path.c_str());
}

TEST(SafeTensors, ReadsGoldenFile) {
  const std::string path = std::string(LIGHTHOUSE_GOLDEN_DIR) + "/n1024_p2_l3_k128.safetensors";
  const SafeTensors f = read_safetensors(path);
  EXPECT_EQ(f.metadata.at("levels"), "3");
  EXPECT_EQ(f.metadata.at("pooling_factor"), "2");
  const Tensor& q = f.tensors.at("q");
  EXPECT_EQ(q.dtype, "F32");
  EXPECT_EQ(q.shape, (std::vector<int64_t>{1, 1024, 2, 32}));
  const Tensor& idx = f.tensors.at("indices");
  EXPECT_EQ(idx.dtype, "I32");
  EXPECT_EQ(idx.shape, (std::vector<int64_t>{1, 2, 768}));
  // Inputs are standard normal: the mean square must be close to 1.
  double sq = 0.0;
  const std::vector<float> values = to_float32(q);
  for (float x : values) sq += static_cast<double>(x) * x;
  EXPECT_NEAR(sq / static_cast<double>(values.size()), 1.0, 0.05);
}

TEST(SafeTensors, MissingFileIsAnError) { expect_read_error(temp_path("does_not_exist"), "cannot be opened"); }

TEST(SafeTensors, TooShortForLength) {
  const std::string path = temp_path("short");
  std::ofstream(path, std::ios::binary) << "abc";
  expect_read_error(path, "at least 8 bytes");
  std::remove(path.c_str());
}

TEST(SafeTensors, HeaderLongerThanFile) {
  const std::string path = temp_path("longheader");
  std::ofstream out(path, std::ios::binary);
  const uint8_t len[8] = {0x00, 0x10, 0, 0, 0, 0, 0, 0};
  out.write(reinterpret_cast<const char*>(len), 8);
  out << "{}";
  out.close();
  expect_read_error(path, "truncated");
  std::remove(path.c_str());
}

TEST(SafeTensors, TruncatedData) {
  const std::string path = temp_path("truncdata");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::vector<uint8_t>(8));
  expect_read_error(path, "truncated");
  std::remove(path.c_str());
}

TEST(SafeTensors, MalformedJson) {
  const std::string path = temp_path("badjson");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[1],)", {});
  expect_read_error(path, "JSON header");
  std::remove(path.c_str());
}

TEST(SafeTensors, SizeDisagreesWithShape) {
  const std::string path = temp_path("badsize");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::vector<uint8_t>(8));
  expect_read_error(path, "12 bytes");
  std::remove(path.c_str());
}

TEST(SafeTensors, OverlappingTensors) {
  const std::string path = temp_path("overlap");
  write_raw(path,
            R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::vector<uint8_t>(12));
  expect_read_error(path, "back to back");
  std::remove(path.c_str());
}

TEST(SafeTensors, UnknownDtype) {
  const std::string path = temp_path("dtype");
  write_raw(path, R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", std::vector<uint8_t>(8));
  expect_read_error(path, "F64");
  std::remove(path.c_str());
}

TEST(SafeTensors, NegativeShape) {
  const std::string path = temp_path("negshape");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", {});
  expect_read_error(path, "shape");
  std::remove(path.c_str());
}

TEST(SafeTensors, NonStringMetadata) {
  const std::string path = temp_path("meta");
  write_raw(path, R"({"__metadata__":{"levels":3}})", {});
  expect_read_error(path, "__metadata__.levels");
  std::remove(path.c_str());
}

TEST(SafeTensors, DuplicateNameIsAnError) {
  const std::string path = temp_path("duplicate");
  write_raw(path,
            R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            std::vector<uint8_t>(8));
  expect_read_error(path, "the key \"x\" twice");
  std::remove(path.c_str());
}

TEST(SafeTensors, OffsetsAreIntegers) {
  const std::string path = temp_path("float_offset");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", std::vector<uint8_t>(4));
  expect_read_error(path, "data_offsets[1]: expected a non-negative integer");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,1e1]}})", std::vector<uint8_t>(4));
  expect_read_error(path, "data_offsets[1]: expected a non-negative integer");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,9223372036854775808]}})",
            std::vector<uint8_t>(4));
  expect_read_error(path, "data_offsets[1]: expected an integer below 2^63");
  std::remove(path.c_str());
}

TEST(SafeTensors, UnicodeNamesAndEscapesRoundTrip) {
  SafeTensors file;
  file.metadata["note"] = "caf\xc3\xa9 \xf0\x9f\x94\xa6 \t tab";
  file.tensors["\xc3\xbc"] = from_float32({1.0f}, {1});
  const std::string path = temp_path("unicode");
  write_safetensors(path, file);
  const SafeTensors back = read_safetensors(path);
  EXPECT_EQ(back.metadata, file.metadata);
  EXPECT_EQ(back.tensors.count("\xc3\xbc"), 1u);
  // \u escapes, a surrogate pair included, decode to UTF-8.
  write_raw(path, R"({"__metadata__":{"k":"\u00e9\ud83d\udd26"}})", {});
  EXPECT_EQ(read_safetensors(path).metadata.at("k"), "\xc3\xa9\xf0\x9f\x94\xa6");
  std::remove(path.c_str());
}

TEST(SafeTensors, InvalidUtf8IsNotWritten) {
  SafeTensors file;
  file.metadata["bad"] = "\xff";
  const std::string path = temp_path("bad_utf8");
  try {
    write_safetensors(path, file);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": header: expected names and metadata in valid UTF-8"),
              std::string::npos)
        << e.what();
  }
}

TEST(SafeTensors, IntegerTensorIsNotFloat) {
  EXPECT_THROW(to_float32(from_int32({1, 2}, {2})), Error);
  EXPECT_THROW(to_int32(from_float32({1.0f}, {1})), Error);
  EXPECT_THROW(from_float32({1.0f, 2.0f}, {3}), Error);
}

TEST(SafeTensors, WriteRejectsMismatchedData) {
  SafeTensors file;
  file.tensors["x"] = Tensor{"F32", {3}, std::vector<uint8_t>(8)};
  EXPECT_THROW(write_safetensors(temp_path("mismatch"), file), Error);
}

}  // namespace
}  // namespace lighthouse::io
