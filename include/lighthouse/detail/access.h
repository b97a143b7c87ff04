// Element access and ordering rules shared by the CPU and CUDA kernels. Using
// the same helpers on both sides keeps their results bit-identical.
#pragma once

#include <cstdint>

#include "lighthouse/dtype.h"
#include "lighthouse/error.h"
#include "lighthouse/params.h"

namespace lighthouse::detail {

// Accumulation type of a storage type: fp32, except fp64 for fp64 inputs.
template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Accumulator<T>::type;

template <typename T>
LH_HD acc_t<T> load(const void* base, int64_t i) {
  return to_float(static_cast<const T*>(base)[i]);
}
template <>
inline double load<double>(const void* base, int64_t i) {
  return static_cast<const double*>(base)[i];
}

template <typename T>
LH_HD void store(void* base, int64_t i, acc_t<T> x) {
  static_cast<T*>(base)[i] = from_float<T>(x);
}
template <>
inline void store<double>(void* base, int64_t i, double x) {
  static_cast<double*>(base)[i] = x;
}

// Element offset of (batch, seq, head, 0) in a rank-4 tensor.
LH_HD int64_t at(const Strides& s, int64_t b, int64_t seq, int64_t head) {
  return b * s.batch + seq * s.seq + head * s.head;
}

// Total order of scores as an unsigned key: larger key = larger score, -0 is
// +0, NaNs sort by their bits (positive above +inf, negative below -inf).
// Selection ranks by this key, ties broken towards the lower index.
LH_HD uint32_t score_key(float x) {
  const uint32_t u = x == 0.0f ? 0u : float_bits(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Max that keeps the running value unless the candidate is larger.
LH_HD float max_keep(float running, float candidate) { return candidate > running ? candidate : running; }

// Calls f(T{}) with the storage type of dtype: the training dtypes (CUDA).
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); return;
    case DType::kBFloat16: f(bf16_t{}); return;
    case DType::kFloat16: f(f16_t{}); return;
    default: break;
  }
  fail("dtype", "float32, bfloat16 or float16", dtype_name(dtype));
}

// As dispatch, plus float64 (CPU kernels).
template <typename F>
void dispatch_cpu(DType dtype, F&& f) {
  if (dtype == DType::kFloat64) {
    f(double{});
    return;
  }
  dispatch(dtype, f);
}

}  // namespace lighthouse::detail
