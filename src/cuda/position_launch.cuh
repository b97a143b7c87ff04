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
// table (tiles of kTiledPositions or one coarsest block) when a tile's table
// fits, else plain(args...) as a grid-stride loop over (batch, positions).
// `row_len` is the work items of one position; `stage` names the kernels in
// errors (stage_tiled_kernel, stage_kernel). `entry_span`: the largest
// element offset of a kept row from slot 0's that the kernels form (kept
// entries times the largest sequence stride of the kept rows they read); the
// tiled kernel forms it in 32 bits (one multiply, one wide add to the row's
// pointer), so a span past 2^31 - 1 takes the plain kernel.
template <typename Tiled, typename Plain, typename... Args>
void launch_by_position(const char* stage, int64_t row_len, const Dims& d, const Geometry& g, int64_t entry_span,
                        cudaStream_t stream, Tiled tiled, Plain plain, const Args&... args) {
  namespace hz = heuristics;
  const TiledShape ts =
      entry_span <= 0x7fffffff ? tiled_shape(row_len, d, g, hz::kTiledPositions) : TiledShape{};
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

// Stages the slots of the tile of `tile` positions from t0 of batch row b into
// shared memory, for a tiled kernel's block: slots[(l - 1) * kv_heads * tile +
// kvh * tile + i] is the slot of the level-l entry whose window `Covers`
// position t0 + i (-1: none, or past N), and present[kvh * tile + i] has bit
// l - 1 set when that slot is not -1 (levels <= 32), so the position loops
// visit only the levels that contribute. A thread stages one position's
// levels, Group slot loads at a time. Every thread of the block calls it; it
// returns after a barrier.
template <int Group, typename Covers>
__device__ __forceinline__ void stage_tile_slots(const int32_t* all_slots, const Geometry& g, int64_t kvn, int64_t N,
                                                 int64_t b, int64_t t0, int tile, int32_t* slots, uint32_t* present,
                                                 Covers covers) {
  const int threads = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int level_stride = static_cast<int>(kvn) * tile;
  __syncthreads();  // the previous tile's readers are done with the table
  for (int e = tid; e < level_stride; e += threads) {
    const int i = e % tile, kvh = e / tile;
    const int64_t t = t0 + i;
    const int32_t* kv_slots = all_slots + (b * kvn + kvh) * g.pyramid_len;
    uint32_t bits = 0;
    // Levels in groups of Group whose slot loads are in flight together.
    for (int l0 = 1; l0 <= g.levels; l0 += Group) {
      int32_t s[Group];
#pragma unroll
      for (int k = 0; k < Group; ++k) {
        const int l = l0 + k;
        const int64_t local = l <= g.levels && t < N ? covers(t, l) : int64_t{-1};
        s[k] = local >= 0 ? kv_slots[g.offset(l) + local] : -1;
      }
#pragma unroll
      for (int k = 0; k < Group; ++k)
        if (l0 + k <= g.levels) {
          slots[(l0 + k - 1) * level_stride + e] = s[k];
          bits |= static_cast<uint32_t>(s[k] >= 0) << (l0 + k - 1);
        }
    }
    present[e] = bits;
  }
  __syncthreads();
}

}  // namespace lighthouse::cuda::detail
