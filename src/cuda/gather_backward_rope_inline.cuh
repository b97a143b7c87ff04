// gather_backward's tiled kernel that rotates rope rows inside its position
// loop (gather_backward.cu launches it; heuristics.h says when): a thread
// owns whole rotation pairs (rope.cuh) of one q or k row, rotates each kept
// entry's row back at the entry's position as the entry is added, and keeps
// the kGatherBackwardCachedLevels coarsest levels' contributions in registers
// while the slot repeats (the coarsest level covers every position; without
// the reuse each of its rows was loaded and rotated c_L times), so each
// y-thread walks a contiguous run of positions. v rows are added as without
// tables. Same sums as the other kernels: levels 1..L in order, each term the
// row rotated back, times 1 / c_l.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/params.h"
#include "position_launch.cuh"
#include "rope.cuh"

namespace lighthouse::cuda::detail {

// Rotates the gradient chunks x of the level-`level` entry covering position
// t back, for q and k rows (which < 2).
template <int W, RopeMode M, bool PerPair>
__device__ __forceinline__ void rotate_back_entry(const GatherBackwardParams& p, float (&x)[rope_chunks<M>()][W],
                                                  int which, int64_t b, int64_t t, int level, int64_t col,
                                                  const ItemLayout& layout) {
  if (which < 2) {
    const Geometry& g = p.geo;
    const int64_t local = t >> ((level - 1) * g.log2_pooling);
    const int64_t tr =
        lighthouse::detail::rope_row(p.rope, b, lighthouse::detail::rope_position(g, level, local), p.dims.head_dim);
    rotate_chunks<RopeTurn::kBack, W, M, PerPair>(x, p.rope.cos + tr, p.rope.sin + tr, col, layout);
  }
}

template <typename T, int W, RopeMode M, bool PerPair>
__global__ void __launch_bounds__(heuristics::kTiledMaxThreads, heuristics::kGatherBackwardInlineMinBlocksPerSm)
    gather_backward_rope_inline_kernel(GatherBackwardParams p, int64_t group, int items, ItemLayout layout,
                                       int tile) {
  namespace hz = heuristics;
  static_assert(M != RopeMode::kNone, "rotation pairs only");
  constexpr int C = rope_chunks<M>();
  constexpr int K = hz::kGatherBackwardCachedLevels;
  extern __shared__ int32_t tile_slots[];  // [levels][kv_heads][tile], then present-level masks [kv_heads][tile]
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(H + 2 * kvn) * items;
  const int64_t tiles = (N + tile - 1) / tile;
  const int level_stride = static_cast<int>(kvn) * tile;
  uint32_t* tile_present = reinterpret_cast<uint32_t*>(tile_slots + g.levels * level_stride);
  // Levels first_cached..L are reused across positions; level 1 never is, its entries cover one position each.
  // The levels below first_cached are visited through the present-level masks.
  const int first_cached = g.levels - K + 1 > 2 ? g.levels - K + 1 : 2;
  const uint32_t uncached = (1u << (first_cached - 1)) - 1u;
  const int64_t step = M == RopeMode::kPair ? layout.step : 1;  // constant 1 without pairs
  for (int64_t item = blockIdx.x; item < p.dims.batch * tiles; item += gridDim.x) {
    const int64_t b = item / tiles, t0 = (item % tiles) * tile;
    // Past a level's last whole block (its ragged tail) nothing covers t.
    stage_tile_slots<hz::kGatherBackwardStageLevels>(p.slots, g, kvn, N, b, t0, tile, tile_slots, tile_present,
                                                     [&](int64_t t, int l) {
                                                       const int64_t local = t >> ((l - 1) * g.log2_pooling);
                                                       return local < g.size(l) ? local : int64_t{-1};
                                                     });
    const PositionRun run = position_run(N - t0 < tile ? static_cast<int>(N - t0) : tile);
    for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
      const int64_t r = inner / items, col = int64_t{inner % items} * W * step;
      const int which = r < H ? 0 : (r < H + kvn ? 1 : 2);
      const int64_t head = which == 0 ? r : (which == 1 ? r - H : r - H - kvn);
      const int64_t kvh = which == 0 ? r / group : head;
      const void* src = which == 0 ? p.grad_q_sel : (which == 1 ? p.grad_k_sel : p.grad_v_sel);
      const Strides ss = which == 0 ? p.grad_q_sel_strides : (which == 1 ? p.grad_k_sel_strides : p.grad_v_sel_strides);
      void* dst = which == 0 ? p.grad_q : (which == 1 ? p.grad_k : p.grad_v);
      const Strides ds = which == 0 ? p.grad_q_strides : (which == 1 ? p.grad_k_strides : p.grad_v_strides);
      const T* sel = static_cast<const T*>(src) + lighthouse::detail::at(ss, b, 0, head) + col;
      const int32_t* my_slots = tile_slots + kvh * tile;
      const uint32_t* my_present = tile_present + kvh * tile;
      const int64_t sel_seq = ss.seq;
      T* out = static_cast<T*>(dst) + lighthouse::detail::at(ds, b, t0 + run.first, head) + col;
      float cached[K][C][W];  // level first_cached + k's contribution, from slot cached_slot[k]
      int32_t cached_slot[K];
#pragma unroll
      for (int k = 0; k < K; ++k) cached_slot[k] = -1;
      for (int i = run.first; i < run.last; ++i, out += ds.seq) {
        float acc[C][W];
#pragma unroll
        for (int ch = 0; ch < C; ++ch)
#pragma unroll
          for (int j = 0; j < W; ++j) acc[ch][j] = 0.0f;
        // The contributing levels below first_cached, ascending: bit l - 1 for level l.
        for (uint32_t bits = my_present[i] & uncached; bits != 0; bits &= bits - 1) {
          const int l = __ffs(bits);
          const int32_t s = my_slots[(l - 1) * level_stride + i];
          float x[C][W];
#pragma unroll
          for (int ch = 0; ch < C; ++ch) load_row<T, W>(sel, s * sel_seq + ch * layout.offset, x[ch]);
          rotate_back_entry<W, M, PerPair>(p, x, which, b, t0 + i, l, col, layout);
          const float inv = block_reciprocal(g, l);
#pragma unroll
          for (int ch = 0; ch < C; ++ch)
#pragma unroll
            for (int j = 0; j < W; ++j) acc[ch][j] = __fadd_rn(acc[ch][j], __fmul_rn(x[ch][j], inv));
        }
        const int32_t* slot = my_slots + (first_cached - 1) * level_stride + i;  // the cached levels' slots
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int l = first_cached + k;
          if (l > g.levels) break;
          const int32_t s = slot[k * level_stride];
          if (s < 0) continue;
          if (s != cached_slot[k]) {
            cached_slot[k] = s;
#pragma unroll
            for (int ch = 0; ch < C; ++ch) load_row<T, W>(sel, s * sel_seq + ch * layout.offset, cached[k][ch]);
            rotate_back_entry<W, M, PerPair>(p, cached[k], which, b, t0 + i, l, col, layout);
            const float inv = block_reciprocal(g, l);
#pragma unroll
            for (int ch = 0; ch < C; ++ch)
#pragma unroll
              for (int j = 0; j < W; ++j) cached[k][ch][j] = __fmul_rn(cached[k][ch][j], inv);
          }
#pragma unroll
          for (int ch = 0; ch < C; ++ch)
#pragma unroll
            for (int j = 0; j < W; ++j) acc[ch][j] = __fadd_rn(acc[ch][j], cached[k][ch][j]);
        }
#pragma unroll
        for (int ch = 0; ch < C; ++ch) store_row<T, W>(out, ch * layout.offset, acc[ch]);
      }
    }
  }
}

}  // namespace lighthouse::cuda::detail
