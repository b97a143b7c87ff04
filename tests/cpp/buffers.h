// Strided tensors of any supported dtype for the stage tests: random layouts
// (padded, permuted, viewed from a larger buffer), NaN poisoning of every
// element before a kernel runs, and the bitwise comparison of a kernel's
// output with the spec model's fp32 result rounded to the buffer's dtype.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "lighthouse/dtype.h"
#include "lighthouse/params.h"
#include "spec_model.h"

namespace lhtest {

using lighthouse::DType;

enum class Layout {
  kSeqMajor,   // contiguous, (batch, seq, head, d): [B, N, H, D] inputs
  kHeadMajor,  // contiguous, (batch, head, seq, d): [B, H, S, D] selections
  kScrambled,  // random order of batch/seq/head with padding on every dimension
};

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kSeqMajor: return "seq-major";
    case Layout::kHeadMajor: return "head-major";
    case Layout::kScrambled: return "scrambled";
  }
  return "?";
}

// Raw bits of a NaN in each storage type; every element of an output buffer
// holds it before the kernel runs.
inline uint32_t poison_bits(DType t) { return t == DType::kFloat32 ? 0x7fc00000u : (t == DType::kBFloat16 ? 0x7fc0u : 0x7e00u); }

// A rank-4 tensor addressed as (batch, seq, head, d) with a contiguous last
// dimension, in a byte buffer that may be larger than the tensor.
class Buffer {
 public:
  Buffer(DType dtype, int64_t batch, int64_t seq, int64_t heads, int64_t dim, Layout layout, std::mt19937_64& rng)
      : dtype_(dtype), batch_(batch), seq_(seq), heads_(heads), dim_(dim) {
    if (dtype == DType::kFloat64) throw std::logic_error("test buffers hold the training dtypes only");
    struct Axis {
      int64_t size;
      int64_t* stride;
    };
    Axis b{batch, &strides_.batch}, s{seq, &strides_.seq}, h{heads, &strides_.head};
    std::vector<Axis> outer_to_inner;
    int64_t pad_row = 0;
    std::vector<int64_t> pads(3, 0);
    if (layout == Layout::kSeqMajor) outer_to_inner = {b, s, h};
    if (layout == Layout::kHeadMajor) outer_to_inner = {b, h, s};
    if (layout == Layout::kScrambled) {
      outer_to_inner = {b, s, h};
      std::shuffle(outer_to_inner.begin(), outer_to_inner.end(), rng);
      pad_row = std::uniform_int_distribution<int64_t>(1, 5)(rng);
      for (auto& p : pads) p = std::uniform_int_distribution<int64_t>(0, 2)(rng);
    }
    int64_t stride = dim + pad_row;
    for (int i = 2; i >= 0; --i) {
      *outer_to_inner[i].stride = stride;
      stride *= outer_to_inner[i].size + pads[i];
    }
    elements_ = stride;
    bytes_.assign(elements_ * lighthouse::element_size(dtype), 0);
    logical_.assign(elements_, 0);
    for (int64_t bi = 0; bi < batch; ++bi)
      for (int64_t si = 0; si < seq; ++si)
        for (int64_t hi = 0; hi < heads; ++hi)
          for (int64_t d = 0; d < dim; ++d) logical_[offset(bi, si, hi, d)] = 1;
  }

  DType dtype() const { return dtype_; }
  const lighthouse::Strides& strides() const { return strides_; }
  // Every byte of the buffer, padding included.
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  int64_t offset(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return b * strides_.batch + s * strides_.seq + h * strides_.head + d;
  }

  uint32_t bits(int64_t i) const {
    if (dtype_ == DType::kFloat32) {
      uint32_t u;
      std::memcpy(&u, bytes_.data() + 4 * i, 4);
      return u;
    }
    uint16_t u;
    std::memcpy(&u, bytes_.data() + 2 * i, 2);
    return u;
  }
  void set_bits(int64_t i, uint32_t u) {
    if (dtype_ == DType::kFloat32) {
      std::memcpy(bytes_.data() + 4 * i, &u, 4);
    } else {
      const uint16_t h = static_cast<uint16_t>(u);
      std::memcpy(bytes_.data() + 2 * i, &h, 2);
    }
  }

  float get(int64_t b, int64_t s, int64_t h, int64_t d) const { return value_of_bits(bits(offset(b, s, h, d))); }
  // Stores x rounded to the buffer's dtype.
  void set(int64_t b, int64_t s, int64_t h, int64_t d, float x) { set_bits(offset(b, s, h, d), bits_of_value(x)); }

  float value_of_bits(uint32_t u) const {
    switch (dtype_) {
      case DType::kFloat32: return lighthouse::bits_float(u);
      case DType::kBFloat16: return lighthouse::to_float(lighthouse::bf16_t{static_cast<uint16_t>(u)});
      case DType::kFloat16: return lighthouse::to_float(lighthouse::f16_t{static_cast<uint16_t>(u)});
      case DType::kFloat64: break;
    }
    return 0.0f;
  }
  uint32_t bits_of_value(float x) const {
    switch (dtype_) {
      case DType::kFloat32: return lighthouse::float_bits(x);
      case DType::kBFloat16: return lighthouse::from_float<lighthouse::bf16_t>(x).bits;
      case DType::kFloat16: return lighthouse::from_float<lighthouse::f16_t>(x).bits;
      case DType::kFloat64: break;
    }
    return 0;
  }

  void poison() {
    for (int64_t i = 0; i < elements_; ++i) set_bits(i, poison_bits(dtype_));
  }

  void fill_normal(std::mt19937_64& rng) {
    poison();
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < dim_; ++d) set(b, s, h, d, normal(rng));
  }

  // The stored values, as the kernel sees them.
  spec::Tensor values() const {
    spec::Tensor t(batch_, seq_, heads_, dim_);
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < dim_; ++d) t.at(b, s, h, d) = get(b, s, h, d);
    return t;
  }

  // Checks every element against the fp32 reference bit for bit: the stored
  // bits must be those of the reference rounded to the buffer's dtype (the
  // kernels and the spec model sum in the same order, so no tolerance is
  // due; -0 and +0 differ). NaN never matches. Elements outside the tensor
  // must still hold the poison (nothing wrote outside the view).
  ::testing::AssertionResult matches(const spec::Tensor& ref, const std::string& what) const {
    int64_t bad = 0, checked = 0;
    std::ostringstream first;
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seq_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < dim_; ++d) {
            ++checked;
            const uint32_t got = bits(offset(b, s, h, d));
            const float want = ref.at(b, s, h, d);
            if (element_ok(got, want)) continue;
            if (bad++ < 5)
              first << "\n  " << what << "[b=" << b << ", seq=" << s << ", head=" << h << ", d=" << d
                    << "] = " << value_of_bits(got) << " (bits 0x" << std::hex << got << std::dec
                    << "), expected " << want;
          }
    for (int64_t i = 0; i < elements_; ++i)
      if (!logical_[i] && bits(i) != poison_bits(dtype_) && bad++ < 5)
        first << "\n  " << what << ": element " << i << " outside the view was overwritten";
    if (checked != batch_ * seq_ * heads_ * dim_ || checked == 0)
      return ::testing::AssertionFailure() << what << ": checked " << checked << " elements";
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": " << bad << " mismatches of " << checked << first.str();
  }

 private:
  bool element_ok(uint32_t got, float want) const {
    if (!std::isfinite(value_of_bits(got)) || !std::isfinite(want)) return false;
    return got == bits_of_value(want);
  }

  DType dtype_;
  int64_t batch_, seq_, heads_, dim_;
  lighthouse::Strides strides_;
  int64_t elements_ = 0;
  std::vector<uint8_t> bytes_;
  std::vector<char> logical_;
};

// A contiguous int32 or float array filled with a poison value.
template <typename T>
std::vector<T> poisoned(int64_t n) {
  if constexpr (std::is_same_v<T, float>) return std::vector<T>(n, std::numeric_limits<float>::quiet_NaN());
  else return std::vector<T>(n, std::numeric_limits<T>::min());
}

}  // namespace lhtest
