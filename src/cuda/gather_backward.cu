// CUDA gather_backward: each base position sums grad_sel / c_l over the kept
// entries covering it (found through the slots map), levels 1..L in order,
// multiply then add as the CPU does, so no atomics and the same bits. One
// thread owns W consecutive elements (a 16-byte vector on the fast path) of
// one output row; the x-threads of a block cover one position's rows: the H
// query heads of grad_q, then the KV heads of grad_k and of grad_v.
// Grid: y over batch, x over positions. That kernel is the fallback; the
// tiled kernel below (same per-element arithmetic) is the fast path.
// With rope tables, a thread owns whole rotation pairs (rope.cuh) and rotates
// each q and k gradient row back at its entry's position before the sum.
#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"
#include "position_launch.cuh"
#include "rope.cuh"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
using detail::RopeMode;
constexpr int kLevelGroup = hz::kScatterLevelGroup;

// With rope tables: rotates the gradient chunks x of the level-`level` entry
// covering position t back, for q and k rows (which < 2).
template <int W, RopeMode M>
__device__ __forceinline__ void rotate_back_entry(const GatherBackwardParams& p,
                                                  float (&x)[detail::rope_chunks<M>()][W], int which, int64_t b,
                                                  int64_t t, int level, int64_t col, int64_t offset) {
  if constexpr (M != RopeMode::kNone) {
    if (which < 2) {
      const Geometry& g = p.geo;
      const int64_t local = t >> ((level - 1) * g.log2_pooling);
      const int64_t tr = lighthouse::detail::rope_row(p.rope, b, lighthouse::detail::rope_position(g, level, local),
                                                      p.dims.head_dim);
      detail::rotate_chunks<detail::RopeTurn::kBack, W, M>(x, p.rope.cos + tr, p.rope.sin + tr, col, offset);
    }
  }
}

template <typename T, int W, RopeMode M>
__global__ void __launch_bounds__(hz::kStreamThreads)
    gather_backward_kernel(GatherBackwardParams p, int64_t group, int items, detail::ItemLayout layout) {
  constexpr int C = detail::rope_chunks<M>();
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(H + 2 * kvn) * items;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t step = M == RopeMode::kPair ? layout.step : 1;  // constant 1 without pairs
    const int64_t r = inner / items, col = int64_t{inner % items} * W * step;
    const int which = r < H ? 0 : (r < H + kvn ? 1 : 2);
    const int64_t head = which == 0 ? r : (which == 1 ? r - H : r - H - kvn);
    const int64_t kvh = which == 0 ? r / group : head;
    const void* src = which == 0 ? p.grad_q_sel : (which == 1 ? p.grad_k_sel : p.grad_v_sel);
    const Strides ss = which == 0 ? p.grad_q_sel_strides : (which == 1 ? p.grad_k_sel_strides : p.grad_v_sel_strides);
    void* dst = which == 0 ? p.grad_q : (which == 1 ? p.grad_k : p.grad_v);
    const Strides ds = which == 0 ? p.grad_q_strides : (which == 1 ? p.grad_k_strides : p.grad_v_strides);
    for (int64_t b = blockIdx.y; b < p.dims.batch; b += gridDim.y) {
      const int32_t* slots = p.slots + (b * kvn + kvh) * g.pyramid_len;
      const T* sel = static_cast<const T*>(src) + lighthouse::detail::at(ss, b, 0, head) + col;
      for (int64_t t = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; t < N; t += int64_t{gridDim.x} * blockDim.y) {
        float acc[C][W];
#pragma unroll
        for (int ch = 0; ch < C; ++ch)
#pragma unroll
          for (int j = 0; j < W; ++j) acc[ch][j] = 0.0f;
        // Levels in groups of kLevelGroup: the group's slot and row loads are
        // independent and in flight together; the sum stays in level order.
        for (int l0 = 1; l0 <= g.levels; l0 += kLevelGroup) {
          int32_t s[kLevelGroup];
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i) {
            const int l = l0 + i;
            const int64_t local = l <= g.levels ? t >> ((l - 1) * g.log2_pooling) : 0;
            // Past a level's last whole block (its ragged tail) nothing covers t.
            s[i] = l <= g.levels && local < g.size(l) ? slots[g.offset(l) + local] : -1;
          }
          float x[kLevelGroup][C][W];
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) {
#pragma unroll
              for (int ch = 0; ch < C; ++ch) detail::load_row<T, W>(sel, s[i] * ss.seq + ch * layout.offset, x[i][ch]);
            }
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) {
              rotate_back_entry<W, M>(p, x[i], which, b, t, l0 + i, col, layout.offset);
              const float inv = detail::block_reciprocal(g, l0 + i);
#pragma unroll
              for (int ch = 0; ch < C; ++ch)
#pragma unroll
                for (int j = 0; j < W; ++j) acc[ch][j] = __fadd_rn(acc[ch][j], __fmul_rn(x[i][ch][j], inv));
            }
        }
#pragma unroll
        for (int ch = 0; ch < C; ++ch)
          detail::store_row<T, W>(dst, lighthouse::detail::at(ds, b, t, head) + col + ch * layout.offset, acc[ch]);
      }
    }
  }
}

// Tiled kernel: a block covers a tile of `tile` consecutive positions of one
// batch row at a time. It first stages the tile's slots (every level, every
// KV head; -1 where nothing covers a position) and which levels contribute to
// each position in shared memory with coalesced loads, so the per-position
// slot lookups leave the dependent global-load chain and skip the absent
// levels (most positions have only the coarsest); then its x-threads cover
// one position's row items (as in the kernel above) and its y-threads share
// the tile's positions, each thread decoding its item once per tile. Stores
// of consecutive x-threads are consecutive 16-byte vectors. The sum is the
// same as above: levels 1..L in order.
// With rope tables, a level-l entry contributes the same values (its row
// rotated back at its own position, times 1/c_l) to each of the c_l positions
// it covers, so each y-thread walks a contiguous run of positions and keeps
// the kGatherBackwardCachedLevels coarsest levels' contributions in registers
// with the slot they came from, reusing them while the slot repeats: the
// coarsest level covers every position, and without the reuse each of its
// rows was loaded and rotated c_L times. Without tables the reuse saves only
// an L1 load and its registers cost more (measured), so the positions
// interleave over the y-threads as before.
template <typename T, int W, RopeMode M>
__global__ void __launch_bounds__(hz::kTiledMaxThreads, M == RopeMode::kNone ? hz::kGatherBackwardPlainMinBlocksPerSm
                                                                              : hz::kTiledMinBlocksPerSm)
    gather_backward_tiled_kernel(GatherBackwardParams p, int64_t group, int items, detail::ItemLayout layout,
                                 int tile) {
  constexpr int C = detail::rope_chunks<M>();
  constexpr int K = M == RopeMode::kNone ? 0 : hz::kGatherBackwardCachedLevels;
  extern __shared__ int32_t tile_slots[];  // [levels][kv_heads][tile], then present-level masks [kv_heads][tile]
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(H + 2 * kvn) * items;
  const int64_t tiles = (N + tile - 1) / tile;
  const int level_stride = static_cast<int>(kvn) * tile;
  uint32_t* tile_present = reinterpret_cast<uint32_t*>(tile_slots + g.levels * level_stride);
  // Levels first_cached..L are reused across positions (none: L + 1); level 1 never is, its entries cover one
  // position each. The levels below first_cached are visited through the present-level masks.
  const int first_cached = K == 0 ? g.levels + 1 : (g.levels - K + 1 > 2 ? g.levels - K + 1 : 2);
  const uint32_t uncached = (1u << (first_cached - 1)) - 1u;
  for (int64_t item = blockIdx.x; item < p.dims.batch * tiles; item += gridDim.x) {
    const int64_t b = item / tiles, t0 = (item % tiles) * tile;
    // Past a level's last whole block (its ragged tail) nothing covers t.
    detail::stage_tile_slots<hz::kGatherBackwardStageLevels>(p.slots, g, kvn, N, b, t0, tile, tile_slots,
                                                             tile_present, [&](int64_t t, int l) {
                                                               const int64_t local = t >> ((l - 1) * g.log2_pooling);
                                                               return local < g.size(l) ? local : int64_t{-1};
                                                             });
    const int positions = N - t0 < tile ? static_cast<int>(N - t0) : tile;
    const detail::PositionRun run =
        K > 0 ? detail::position_run(positions) : detail::PositionRun{static_cast<int>(threadIdx.y), positions};
    const int stride = K > 0 ? 1 : static_cast<int>(blockDim.y);
    for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
      const int64_t step = M == RopeMode::kPair ? layout.step : 1;  // constant 1 without pairs
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
      const int64_t sel_seq = ss.seq, out_step = ds.seq * stride;
      T* out = static_cast<T*>(dst) + lighthouse::detail::at(ds, b, t0 + run.first, head) + col;
      float cached[K > 0 ? K : 1][C][W];  // level first_cached + k's contribution, from slot cached_slot[k]
      int32_t cached_slot[K > 0 ? K : 1];
#pragma unroll
      for (int k = 0; k < K; ++k) cached_slot[k] = -1;
      for (int i = run.first; i < run.last; i += stride, out += out_step) {
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
          for (int ch = 0; ch < C; ++ch) detail::load_row<T, W>(sel, s * sel_seq + ch * layout.offset, x[ch]);
          rotate_back_entry<W, M>(p, x, which, b, t0 + i, l, col, layout.offset);
          const float inv = detail::block_reciprocal(g, l);
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
            for (int ch = 0; ch < C; ++ch) detail::load_row<T, W>(sel, s * sel_seq + ch * layout.offset, cached[k][ch]);
            rotate_back_entry<W, M>(p, cached[k], which, b, t0 + i, l, col, layout.offset);
            const float inv = detail::block_reciprocal(g, l);
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
        for (int ch = 0; ch < C; ++ch) detail::store_row<T, W>(out, ch * layout.offset, acc[ch]);
      }
    }
  }
}

template <typename T>
void launch(const GatherBackwardParams& p, cudaStream_t stream) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const int64_t group = d.heads / d.kv_heads;
  const bool vec = d.head_dim % W == 0 && detail::aligned16(p.grad_q_sel) && detail::aligned16(p.grad_k_sel) &&
                   detail::aligned16(p.grad_v_sel) && detail::aligned16(p.grad_q) && detail::aligned16(p.grad_k) &&
                   detail::aligned16(p.grad_v) && detail::strides_multiple(p.grad_q_sel_strides, W) &&
                   detail::strides_multiple(p.grad_k_sel_strides, W) &&
                   detail::strides_multiple(p.grad_v_sel_strides, W) && detail::strides_multiple(p.grad_q_strides, W) &&
                   detail::strides_multiple(p.grad_k_strides, W) && detail::strides_multiple(p.grad_v_strides, W);
  const detail::RopePlan plan = detail::plan_rope(p.rope, d.head_dim, W, vec);
  const int64_t row_len = (d.heads + 2 * d.kv_heads) * plan.items;
  if (row_len > 0x7fffffff) fail("(heads + 2 * kv_heads) * head_dim", "below 2^31", row_len);
  const int items = static_cast<int>(plan.items);
  detail::with_plan<W>(plan, [&](auto width, auto mode) {
    constexpr int V = decltype(width)::value;
    constexpr RopeMode M = decltype(mode)::value;
    detail::launch_by_position("gather_backward", row_len, d, p.geo.levels, stream,
                               gather_backward_tiled_kernel<T, V, M>, gather_backward_kernel<T, V, M>, p, group,
                               items, plan.layout);
  });
}

}  // namespace

void gather_backward(const GatherBackwardParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
