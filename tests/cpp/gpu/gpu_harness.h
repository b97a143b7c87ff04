// Test harness of the GPU suite: strided host tensors of any dtype with a
// device mirror, NaN poisoning before every launch, and bitwise comparison of
// a GPU result with the CPU reference's (every byte of the buffer, padding
// included, so an unwritten element or a stray write fails).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"

namespace gputest {

using lighthouse::DType;

inline void cuda_ok(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Device memory holding a copy of a host byte vector.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) : bytes_(bytes) { cuda_ok(cudaMalloc(&ptr_, bytes_ ? bytes_ : 1), "cudaMalloc"); }
  DeviceBytes(DeviceBytes&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) { other.ptr_ = nullptr; }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  DeviceBytes& operator=(DeviceBytes&&) = delete;
  ~DeviceBytes() { cudaFree(ptr_); }
  void upload(const void* src) { cuda_ok(cudaMemcpy(ptr_, src, bytes_, cudaMemcpyHostToDevice), "upload"); }
  void download(void* dst) const { cuda_ok(cudaMemcpy(dst, ptr_, bytes_, cudaMemcpyDeviceToHost), "download"); }
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

// Memory layouts of a rank-4 tensor (batch, seq, head, d).
enum class Layout {
  kSeqMajor,   // contiguous (batch, seq, head, d)
  kHeadMajor,  // contiguous (batch, head, seq, d)
  kAligned,    // permuted outer dims, padding by multiples of 8 elements: the 16-byte paths
  kScrambled,  // permuted outer dims, odd padding: the scalar paths
  kWideRows,   // (batch, head, seq, d), rows padded to 2^32 / seq elements (a multiple of 8): seq rows span more
               // than 2^32 elements, so a row's offset passes 2^31 - 1 from about the middle of the sequence
};

// Raw NaN bits of each storage type.
inline uint32_t poison_bits(DType t) {
  return t == DType::kFloat32 ? 0x7fc00000u : (t == DType::kBFloat16 ? 0x7fc0u : 0x7e00u);
}

// A rank-4 tensor with a contiguous last dimension in a byte buffer that may
// hold padding, plus its device mirror.
class Tensor {
 public:
  Tensor(DType dtype, int64_t batch, int64_t seq, int64_t heads, int64_t dim, Layout layout, std::mt19937_64& rng)
      : dtype_(dtype), batch_(batch), seq_(seq), heads_(heads), dim_(dim) {
    int64_t* stride_of[3] = {&strides_.batch, &strides_.seq, &strides_.head};
    const int64_t size_of[3] = {batch, seq, heads};
    int order[3] = {0, 1, 2};
    int64_t row_pad = 0, pads[3] = {0, 0, 0};
    if (layout == Layout::kHeadMajor || layout == Layout::kWideRows) std::swap(order[1], order[2]);
    if (layout == Layout::kWideRows) {
      const int64_t row = ((int64_t{1} << 32) + seq - 1) / seq;
      row_pad = (std::max<int64_t>(row - dim, 0) + 7) / 8 * 8;
    }
    if (layout == Layout::kAligned || layout == Layout::kScrambled) {
      std::shuffle(order, order + 3, rng);
      const int64_t unit = layout == Layout::kAligned ? 8 : 1;
      row_pad = unit * std::uniform_int_distribution<int64_t>(1, 3)(rng);
      for (auto& p : pads) p = std::uniform_int_distribution<int64_t>(0, 2)(rng);
    }
    int64_t stride = dim + row_pad;
    for (int i = 2; i >= 0; --i) {
      *stride_of[order[i]] = stride;
      stride *= size_of[order[i]] + pads[i];
    }
    elements_ = stride;
    bytes_.resize(static_cast<size_t>(elements_ * lighthouse::element_size(dtype)));
    poison();
  }

  DType dtype() const { return dtype_; }
  const lighthouse::Strides& strides() const { return strides_; }
  const void* host() const { return bytes_.data(); }
  void* host() { return bytes_.data(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

  void poison() {
    const uint32_t u = poison_bits(dtype_);
    for (int64_t i = 0; i < elements_; ++i) set_bits(i, u);
  }

  // Standard normal values (rounded to the dtype) in the view; padding keeps the poison.
  void fill_normal(std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < dim_; ++d) set_bits(offset(b, s, h, d), bits_of(normal(rng)));
  }

  // Element 0 of every `every`-th row along the sequence set to -0: a sum
  // whose only term is -0 starts from +0 and so gives +0 (0 + -0), as the CPU's.
  void negative_zeros(int64_t every) {
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; s += every)
        for (int64_t h = 0; h < heads_; ++h) set(b, s, h, 0, -0.0f);
  }

  // Copies the host bytes (padding included) to the device mirror.
  void upload() {
    mirror();
    device_->upload(bytes_.data());
  }
  // Fills the device mirror with poison; the host bytes stay as they are.
  void poison_device() {
    mirror();
    std::vector<uint8_t> saved = bytes_;
    poison();
    device_->upload(bytes_.data());
    bytes_.swap(saved);
  }
  void* device_ptr() {
    mirror();
    return device_->get();
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> out(bytes_.size());
    device_->download(out.data());
    return out;
  }

  // The host value at (b, s, h, d) as a float, and a store rounded to the dtype.
  float get(int64_t b, int64_t s, int64_t h, int64_t d) const {
    const uint32_t u = bits_at(bytes_, offset(b, s, h, d));
    switch (dtype_) {
      case DType::kBFloat16: return lighthouse::to_float(lighthouse::bf16_t{static_cast<uint16_t>(u)});
      case DType::kFloat16: return lighthouse::to_float(lighthouse::f16_t{static_cast<uint16_t>(u)});
      default: return lighthouse::bits_float(u);
    }
  }
  void set(int64_t b, int64_t s, int64_t h, int64_t d, float x) { set_bits(offset(b, s, h, d), bits_of(x)); }

  int64_t offset(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return b * strides_.batch + s * strides_.seq + h * strides_.head + d;
  }
  int64_t elements() const { return elements_; }
  int64_t logical() const { return batch_ * seq_ * heads_ * dim_; }

  uint32_t bits_at(const std::vector<uint8_t>& bytes, int64_t i) const {
    if (dtype_ == DType::kFloat32) {
      uint32_t u;
      std::memcpy(&u, bytes.data() + 4 * i, 4);
      return u;
    }
    uint16_t u;
    std::memcpy(&u, bytes.data() + 2 * i, 2);
    return u;
  }

  // Every logical element of `bytes` holds a non-NaN value.
  bool all_written(const std::vector<uint8_t>& bytes, std::string* where) const {
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < dim_; ++d)
            if (is_nan(bits_at(bytes, offset(b, s, h, d)))) {
              std::ostringstream os;
              os << "[b=" << b << ", seq=" << s << ", head=" << h << ", d=" << d << "]";
              *where = os.str();
              return false;
            }
    return true;
  }

 private:
  void mirror() {
    if (!device_) device_ = std::make_unique<DeviceBytes>(bytes_.size());
  }
  uint32_t bits_of(float x) const {
    switch (dtype_) {
      case DType::kBFloat16: return lighthouse::from_float<lighthouse::bf16_t>(x).bits;
      case DType::kFloat16: return lighthouse::from_float<lighthouse::f16_t>(x).bits;
      default: return lighthouse::float_bits(x);
    }
  }
  bool is_nan(uint32_t u) const {
    if (dtype_ == DType::kFloat32) return (u & 0x7fffffffu) > 0x7f800000u;
    if (dtype_ == DType::kBFloat16) return (u & 0x7fffu) > 0x7f80u;
    return (u & 0x7fffu) > 0x7c00u;
  }
  void set_bits(int64_t i, uint32_t u) {
    if (dtype_ == DType::kFloat32) {
      std::memcpy(bytes_.data() + 4 * i, &u, 4);
    } else {
      const uint16_t h = static_cast<uint16_t>(u);
      std::memcpy(bytes_.data() + 2 * i, &h, 2);
    }
  }

  DType dtype_;
  int64_t batch_, seq_, heads_, dim_;
  lighthouse::Strides strides_;
  int64_t elements_ = 0;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<DeviceBytes> device_;
};

// GPU bytes equal to the CPU bytes everywhere (view and padding), and no
// element of the view left as NaN poison.
inline ::testing::AssertionResult same_bits(const Tensor& t, const std::vector<uint8_t>& gpu, const char* what) {
  std::string where;
  if (!t.all_written(t.bytes(), &where))
    return ::testing::AssertionFailure() << what << ": the CPU reference left NaN at " << where;
  if (!t.all_written(gpu, &where)) return ::testing::AssertionFailure() << what << ": GPU left NaN at " << where;
  const int64_t es = lighthouse::element_size(t.dtype());
  for (int64_t i = 0; i < t.elements(); ++i)
    if (std::memcmp(gpu.data() + i * es, t.bytes().data() + i * es, static_cast<size_t>(es)) != 0)
      return ::testing::AssertionFailure() << what << ": element " << i << " of " << t.elements() << ": GPU bits 0x"
                                           << std::hex << t.bits_at(gpu, i) << ", CPU bits 0x"
                                           << t.bits_at(t.bytes(), i);
  return ::testing::AssertionSuccess();
}

// A contiguous array (scores, indices, slots) with a device mirror.
template <typename T>
class Array {
 public:
  explicit Array(int64_t n) : host_(static_cast<size_t>(n)), device_(sizeof(T) * static_cast<size_t>(n)) { poison(); }
  void poison() {
    if constexpr (std::is_floating_point_v<T>) std::fill(host_.begin(), host_.end(), std::numeric_limits<T>::quiet_NaN());
    else std::fill(host_.begin(), host_.end(), std::numeric_limits<T>::min());
  }
  void upload() { device_.upload(host_.data()); }
  // Fills the device copy with poison; the host values stay as they are.
  void poison_device() {
    std::vector<T> saved = host_;
    poison();
    device_.upload(host_.data());
    host_.swap(saved);
  }
  std::vector<T> download() const {
    std::vector<T> out(host_.size());
    device_.download(out.data());
    return out;
  }
  T* host() { return host_.data(); }
  const T* host() const { return host_.data(); }
  std::vector<T>& values() { return host_; }
  const std::vector<T>& values() const { return host_; }
  T* device() const { return static_cast<T*>(device_.get()); }
  int64_t size() const { return static_cast<int64_t>(host_.size()); }

 private:
  std::vector<T> host_;
  DeviceBytes device_;
};

// Bitwise equality of two arrays (floats compared as bits; NaN never passes).
template <typename T>
::testing::AssertionResult same_array(const std::vector<T>& cpu, const std::vector<T>& gpu, const char* what) {
  if (cpu.size() != gpu.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < cpu.size(); ++i) {
    if constexpr (std::is_floating_point_v<T>) {
      if (gpu[i] != gpu[i]) return ::testing::AssertionFailure() << what << "[" << i << "] is NaN on the GPU";
      if (std::memcmp(&cpu[i], &gpu[i], sizeof(T)) != 0)
        return ::testing::AssertionFailure() << what << "[" << i << "]: GPU " << gpu[i] << ", CPU " << cpu[i];
    } else {
      if (cpu[i] != gpu[i])
        return ::testing::AssertionFailure() << what << "[" << i << "]: GPU " << gpu[i] << ", CPU " << cpu[i];
    }
  }
  return ::testing::AssertionSuccess();
}

inline void sync() { cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace gputest
