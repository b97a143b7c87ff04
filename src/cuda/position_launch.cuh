// Launch of the stages whose threads own output positions and gather their
// contributions through the slots map (scatter, gather_backward): each has a
// tiled fast path and a plain fallback kernel with the same per-element
// arithmetic, so only the launch chooses between them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/params.h"

namespace lighthouse::cuda::detail {

// The positions [first, last) of a tile of `positions` that the calling
// y-thread of a tiled kernel walks: a contiguous run, so consecutive positions
// of one thread share the coarse entries covering them.
struct PositionRun {
  int first, last;
};
__device__ __forceinline__ PositionRun position_run(int positions) {
  const int ny = static_cast<int>(blockDim.y), run = (positions + ny - 1) / ny;
  const int first = static_cast<int>(threadIdx.y) * run;
  return {first < positions ? first : positions, first + run < positions ? first + run : positions};
}

// Launches tiled(args..., tile) with tiled_shape's grid, block and shared slot
// table when a tile's table (levels x kv_heads x positions int32s) fits,
// else plain(args...) as a grid-stride loop over (batch, positions).
// `row_len` is the work items of one position; `stage` names the kernels in
// errors (stage_tiled_kernel, stage_kernel).
template <typename Tiled, typename Plain, typename... Args>
void launch_by_position(const char* stage, int64_t row_len, const Dims& d, int levels, cudaStream_t stream,
                        Tiled tiled, Plain plain, const Args&... args) {
  namespace hz = heuristics;
  const TiledShape ts = tiled_shape(row_len, d.batch, d.seq_len, int64_t{levels} * d.kv_heads);
  if (ts.tile > 0) {
    tiled<<<ts.grid, ts.block, ts.shared_bytes, stream>>>(args..., ts.tile);
  } else {
    const StreamShape sh = stream_shape(row_len, d.batch, d.seq_len, hz::kStreamThreads, hz::kStreamBlocksPerSm);
    plain<<<sh.grid, sh.block, 0, stream>>>(args...);
  }
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    check_cuda(status, (std::string(stage) + (ts.tile > 0 ? "_tiled_kernel" : "_kernel")).c_str());
}

}  // namespace lighthouse::cuda::detail
