// The mean of a block of consecutive rows, as the CPU computes it: fp32 sums
// in ascending positions, then one multiply by the exact reciprocal of the
// block length. gather (entries it re-pools) and pool_score (pooled level-L
// tensors its base pass cannot make) share this one definition, so a mean
// copied from pool_score and one re-pooled by gather are the same bits.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace lighthouse::cuda::detail {

// x[ch] = the mean of rows 0..c-1 (c a power of two) of C chunks of W
// elements: row t's chunk ch starts at element t * seq + ch * offset of `row`.
template <typename T, int W, int C>
__device__ __forceinline__ void block_mean(const T* row, int64_t seq, int64_t c, int64_t offset, float (&x)[C][W]) {
#pragma unroll
  for (int ch = 0; ch < C; ++ch)
#pragma unroll
    for (int j = 0; j < W; ++j) x[ch][j] = 0.0f;
#pragma unroll 4
  for (int64_t t = 0; t < c; ++t) {
#pragma unroll
    for (int ch = 0; ch < C; ++ch) {
      float y[W];
      load_row<T, W>(row, t * seq + ch * offset, y);
#pragma unroll
      for (int j = 0; j < W; ++j) x[ch][j] = __fadd_rn(x[ch][j], y[j]);
    }
  }
  const float inv = pow2_reciprocal(__ffsll(c) - 1);  // c is a power of two
#pragma unroll
  for (int ch = 0; ch < C; ++ch)
#pragma unroll
    for (int j = 0; j < W; ++j) x[ch][j] = __fmul_rn(x[ch][j], inv);
}

}  // namespace lighthouse::cuda::detail
