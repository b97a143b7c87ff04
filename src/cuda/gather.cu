// CUDA gather: pooled q (per query head), k and v of every kept entry, from
// the base tensors. One thread owns W consecutive elements (one 16-byte
// vector on the fast path) of one output row and sums the entry's block in
// ascending positions, as the CPU does; the x-threads of a block cover the
// G + 2 rows of one entry (the group's query heads, k, v), so loads and
// stores are coalesced row by row. Grid: y over (batch, KV head), x over S.
// With pool_score's pooled level-L tensors given, level-L entries (most of
// the bytes) are copied from them instead of re-pooled from the base.
// With rope tables, a thread owns whole rotation pairs (rope.cuh): for
// rotate-half, a chunk in the first half of the row and its partner chunk
// D/2 further; q and k means are rounded to T, rotated and stored. Per-pair
// tables (one cos / sin per pair) are their own instantiation: half the
// table loads and registers. Where the kept entries are many (heuristics.h),
// the v rows, which are never rotated, take the table-free kernel in a launch
// of their own instead of the rope kernel's lower occupancy.
#include <string>

#include "block_mean.cuh"
#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"
#include "rope.cuh"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
using detail::RopeMode;

// The kernel's __launch_bounds__ minimum of resident blocks per SM by rope
// mode and table form (heuristics.h); 0: none, ptxas chooses.
constexpr int gather_min_blocks(RopeMode m, bool per_pair) {
  if (m == RopeMode::kNone) return hz::kGatherMinBlocksPerSm;
  return m == RopeMode::kPair && !per_pair ? hz::kGatherPairMinBlocksPerSm : 0;
}

template <typename T, int W, RopeMode M, bool PerPair>
__global__ void __launch_bounds__(hz::kStreamThreads, gather_min_blocks(M, PerPair))
    gather_kernel(GatherParams p, int64_t group, int rows, int v_only, int items, detail::ItemLayout layout) {
  constexpr int C = detail::rope_chunks<M>();
  const Geometry& g = p.geo;
  const int64_t S = g.kept, kvn = p.dims.kv_heads;
  const int row_len = rows * items;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t step = M == RopeMode::kPair ? layout.step : 1;  // constant 1 without pairs
    // The entry's rows: rows = group + 2 (its q heads, k, v), group + 1 (the
    // rotated ones), or 1 with v_only; a rope kernel never takes v_only.
    const int64_t r = (M == RopeMode::kNone && v_only ? group + 1 : 0) + inner / items;
    const int64_t col = int64_t{inner % items} * W * step;
    const bool is_q = r < group;
    for (int64_t bg = blockIdx.y; bg < p.dims.batch * kvn; bg += gridDim.y) {
      const int64_t b = bg / kvn, kvh = bg % kvn;
      const int64_t head = is_q ? kvh * group + r : kvh;
      // The thread's rows of (b, head) as base pointers and sequence strides:
      // only these stay live through the entry loop (registers bound the
      // blocks per SM here), the batch and head strides do not.
      const Strides& ss = is_q ? p.q_strides : (r == group ? p.k_strides : p.v_strides);
      const Strides& ds = is_q ? p.q_sel_strides : (r == group ? p.k_sel_strides : p.v_sel_strides);
      const Strides& ps = is_q ? p.pooled_q_strides : (r == group ? p.pooled_k_strides : p.pooled_v_strides);
      const void* pooled = is_q ? p.pooled_q : (r == group ? p.pooled_k : p.pooled_v);
      const T* src = static_cast<const T*>(is_q ? p.q : (r == group ? p.k : p.v)) +
                     lighthouse::detail::at(ss, b, 0, head) + col;
      T* dst = static_cast<T*>(is_q ? p.q_sel : (r == group ? p.k_sel : p.v_sel)) +
               lighthouse::detail::at(ds, b, 0, head) + col;
      const T* pooled_row =
          pooled == nullptr ? nullptr : static_cast<const T*>(pooled) + lighthouse::detail::at(ps, b, 0, head) + col;
      const int64_t src_seq = ss.seq, dst_seq = ds.seq, pooled_seq = ps.seq;
      const int32_t* indices = p.indices + bg * S;
      for (int64_t s = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; s < S; s += int64_t{gridDim.x} * blockDim.y) {
        const int64_t pyr = indices[s];
        const int level = g.level_of(pyr);
        const int64_t local = pyr - g.offset(level);
        if constexpr (M != RopeMode::kNone && !PerPair) {
          // Per-element tables: four chunks per rotate-half item, their loads
          // otherwise waiting for the rows'. Not for per-pair tables, whose
          // kernel would then need a register cap (bench/NOTES.md).
          if (r <= group) {
            const int64_t tr = lighthouse::detail::rope_row(
                p.rope, b, lighthouse::detail::rope_position(g, level, local), p.dims.head_dim);
            detail::prefetch_element_tables<M>(p.rope.cos + tr, p.rope.sin + tr, col, layout);
          }
        }
        float x[C][W];
        if (pooled_row != nullptr && level == g.levels) {
          // pool_score already made this mean: copy its bits.
#pragma unroll
          for (int ch = 0; ch < C; ++ch)
            detail::load_row<T, W>(pooled_row, local * pooled_seq + ch * layout.offset, x[ch]);
        } else {
          const int64_t c = g.block(level);
          detail::block_mean<T, W, C>(src + local * c * src_seq, src_seq, c, layout.offset, x);
        }
        if constexpr (M != RopeMode::kNone) {
          if (r <= group) {  // q and k rows; v is never rotated
            // Rotate the mean as stored in T (what a copy from pooled_* holds).
#pragma unroll
            for (int ch = 0; ch < C; ++ch) detail::round_row<T, W>(x[ch]);
            const int64_t tr = lighthouse::detail::rope_row(
                p.rope, b, lighthouse::detail::rope_position(g, level, local), p.dims.head_dim);
            detail::rotate_chunks<detail::RopeTurn::kForward, W, M, PerPair>(x, p.rope.cos + tr, p.rope.sin + tr,
                                                                             col, layout);
          }
        }
#pragma unroll
        for (int ch = 0; ch < C; ++ch)
          detail::store_row<T, W>(dst, s * dst_seq + ch * layout.offset, x[ch]);
      }
    }
  }
}

template <typename T>
void launch(const GatherParams& p, cudaStream_t stream) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const int64_t group = d.heads / d.kv_heads;
  const bool vec = d.head_dim % W == 0 && detail::aligned16(p.q) && detail::aligned16(p.k) &&
                   detail::aligned16(p.v) && detail::aligned16(p.q_sel) && detail::aligned16(p.k_sel) &&
                   detail::aligned16(p.v_sel) && detail::strides_multiple(p.q_strides, W) &&
                   detail::strides_multiple(p.k_strides, W) && detail::strides_multiple(p.v_strides, W) &&
                   detail::strides_multiple(p.q_sel_strides, W) && detail::strides_multiple(p.k_sel_strides, W) &&
                   detail::strides_multiple(p.v_sel_strides, W) &&
                   (p.pooled_q == nullptr ||
                    (detail::aligned16(p.pooled_q) && detail::aligned16(p.pooled_k) && detail::aligned16(p.pooled_v) &&
                     detail::strides_multiple(p.pooled_q_strides, W) && detail::strides_multiple(p.pooled_k_strides, W) &&
                     detail::strides_multiple(p.pooled_v_strides, W)));
  const detail::RopePlan plan = detail::plan_rope(p.rope, d.head_dim, W, vec);
  if ((group + 2) * plan.items > 0x7fffffff)
    fail("(heads / kv_heads + 2) * head_dim", "below 2^31", (group + 2) * plan.items);
  const bool split = plan.mode != RopeMode::kNone && d.batch * d.kv_heads * p.geo.kept >= hz::kGatherSplitMinEntries;
  // One launch of `plan`'s kernel over `rows` rows of every entry (v alone with v_only).
  const auto run = [&](const detail::RopePlan& pl, int rows, bool v_only) {
    const detail::StreamShape sh = detail::stream_shape(rows * pl.items, d.batch * d.kv_heads, p.geo.kept,
                                                        hz::kStreamThreads, hz::kStreamBlocksPerSm);
    detail::with_plan<W>(pl, [&](auto width, auto mode, auto per_pair) {
      gather_kernel<T, decltype(width)::value, decltype(mode)::value, decltype(per_pair)::value>
          <<<sh.grid, sh.block, 0, stream>>>(p, group, rows, v_only, static_cast<int>(pl.items), pl.layout);
    });
    detail::check_launch("gather_kernel");
  };
  run(plan, static_cast<int>(split ? group + 1 : group + 2), false);
  if (split) run(detail::plan_rope(RopeTables{}, d.head_dim, W, vec), 1, true);
}

}  // namespace

void gather(const GatherParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
