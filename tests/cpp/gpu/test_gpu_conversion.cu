// The 16-bit stores of the CUDA stages against the reference conversion, for
// every float: store_row rounds with the hardware's cvt where the bits agree
// with from_float and routes NaNs to from_float; store_pair (pool_score's
// pooled means) rounds the same way; so each of
// the 2^32 inputs must come out with from_float's bits (a mismatch in a stage
// would otherwise show only for the rare values random inputs never produce:
// ties, subnormals, overflow, NaN payloads). Likewise round_row, the same
// rounding read back as floats.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>

#include "cuda/common.cuh"
#include "gpu/gpu_harness.h"
#include "lighthouse/dtype.h"

namespace {

using lighthouse::bf16_t;
using lighthouse::f16_t;

struct Mismatches {
  unsigned long long count;
  unsigned long long first;  // the smallest mismatching float's bits << 32 | what was stored (~0: none)
};

// How a test kernel writes one 16-byte vector: store_row, or store_pair per
// element pair (pool_score's pooled means).
enum class Store { kRow, kPairs };

template <typename T, Store S, int W>
__device__ __forceinline__ void store_vector(uint4* slot, const float (&x)[W]) {
  namespace detail = lighthouse::cuda::detail;
  if constexpr (S == Store::kPairs) {
#pragma unroll
    for (int j = 0; j < W; j += 2) detail::store_pair<T>(slot, j, x[j], x[j + 1]);
  } else {
    detail::store_row<T, W>(slot, 0, x);
  }
}

// Thread i stores the 8 floats with bits 8i .. 8i + 7 into its 16-byte slot
// of `scratch` (global memory, where the stages store) and compares every
// half with from_float.
template <typename T, Store S>
__global__ void store_every_float(uint64_t vectors, uint4* scratch, Mismatches* out) {
  constexpr int W = 16 / static_cast<int>(sizeof(T));
  uint4* slot = scratch + blockIdx.x * blockDim.x + threadIdx.x;
  for (uint64_t v = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; v < vectors; v += uint64_t{gridDim.x} * blockDim.x) {
    float x[W];
#pragma unroll
    for (int j = 0; j < W; ++j) x[j] = lighthouse::bits_float(static_cast<uint32_t>(v * W + j));
    store_vector<T, S>(slot, x);
    const uint4 stored = *slot;
    const uint32_t words[4] = {stored.x, stored.y, stored.z, stored.w};
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const uint32_t got = (words[j / 2] >> (16 * (j % 2))) & 0xffffu;
      const uint32_t want = lighthouse::from_float<T>(x[j]).bits;
      if (got != want) {
        atomicAdd(&out->count, 1ull);
        atomicMin(&out->first, (v * W + j) << 32 | got);
      }
    }
  }
}

// Calls launch(counts) with counts in device memory holding none yet, and
// returns what the launched kernel (named `kernel` in errors) counted.
template <typename Launch>
Mismatches count_mismatches(const char* kernel, Launch launch) {
  gputest::DeviceBytes result(sizeof(Mismatches));
  const Mismatches none{0, ~0ull};
  result.upload(&none);
  launch(static_cast<Mismatches*>(result.get()));
  gputest::cuda_ok(cudaGetLastError(), kernel);
  gputest::cuda_ok(cudaDeviceSynchronize(), kernel);
  Mismatches got{};
  result.download(&got);
  return got;
}

template <typename T, Store S>
void expect_every_float_matches(const char* type) {
  const uint64_t vectors = (uint64_t{1} << 32) / (16 / sizeof(T));
  constexpr unsigned kBlocks = 4096, kThreads = 256;
  gputest::DeviceBytes scratch(sizeof(uint4) * kBlocks * kThreads);
  const Mismatches got = count_mismatches("store_every_float", [&](Mismatches* counts) {
    store_every_float<T, S><<<kBlocks, kThreads>>>(vectors, static_cast<uint4*>(scratch.get()), counts);
  });
  char first[96] = "";
  if (got.count > 0) {
    const uint32_t input = static_cast<uint32_t>(got.first >> 32);
    std::snprintf(first, sizeof first, "; first at float bits 0x%08x: stored 0x%04x, from_float 0x%04x", input,
                  static_cast<unsigned>(got.first & 0xffffu), lighthouse::from_float<T>(lighthouse::bits_float(input)).bits);
  }
  EXPECT_EQ(got.count, 0ull) << type << ": the store differs from from_float for " << got.count << " floats" << first;
}

// Thread i rounds the W floats with bits Wi .. Wi + W - 1 by round_row (gather
// rounds its q and k means so before rotating them) and compares each with
// to_float(from_float(x)), bit for bit: what a store and a load would give.
// Vectors holding a NaN take round_row's per-element path, the rest its cvt.
template <typename T>
__global__ void round_every_float(uint64_t vectors, Mismatches* out) {
  constexpr int W = 16 / static_cast<int>(sizeof(T));
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t v = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; v < vectors; v += stride) {
    float x[W], y[W];
#pragma unroll
    for (int j = 0; j < W; ++j) y[j] = x[j] = lighthouse::bits_float(static_cast<uint32_t>(v * W + j));
    lighthouse::cuda::detail::round_row<T, W>(y);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const uint32_t got = lighthouse::float_bits(y[j]);
      const uint32_t want = lighthouse::float_bits(lighthouse::to_float(lighthouse::from_float<T>(x[j])));
      if (got != want) {
        atomicAdd(&out->count, 1ull);
        atomicMin(&out->first, (v * W + j) << 32 | got);
      }
    }
  }
}

template <typename T>
void expect_rounding_matches(const char* type) {
  const uint64_t vectors = (uint64_t{1} << 32) / (16 / sizeof(T));
  const Mismatches got = count_mismatches(
      "round_every_float", [&](Mismatches* counts) { round_every_float<T><<<4096, 256>>>(vectors, counts); });
  char first[112] = "";
  if (got.count > 0) {
    const uint32_t input = static_cast<uint32_t>(got.first >> 32);
    const float want = lighthouse::to_float(lighthouse::from_float<T>(lighthouse::bits_float(input)));
    std::snprintf(first, sizeof first, "; first at float bits 0x%08x: rounded to 0x%08x, from_float gives 0x%08x",
                  input, static_cast<unsigned>(got.first & 0xffffffffu), lighthouse::float_bits(want));
  }
  EXPECT_EQ(got.count, 0ull) << type << ": round_row differs from to_float(from_float) for " << got.count << " floats"
                             << first;
}

TEST(GpuConversion, RoundRowEqualsFromFloatForEveryFloat) {
  expect_rounding_matches<bf16_t>("bf16");
  expect_rounding_matches<f16_t>("f16");
}

TEST(GpuConversion, Bf16StoresEqualFromFloatForEveryFloat) {
  expect_every_float_matches<bf16_t, Store::kRow>("bf16, store_row");
  expect_every_float_matches<bf16_t, Store::kPairs>("bf16, store_pair");
}

TEST(GpuConversion, F16StoresEqualFromFloatForEveryFloat) {
  expect_every_float_matches<f16_t, Store::kRow>("f16, store_row");
  expect_every_float_matches<f16_t, Store::kPairs>("f16, store_pair");
}

}  // namespace
