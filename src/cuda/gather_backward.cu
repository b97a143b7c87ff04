// CUDA gather_backward: each base position sums grad_sel / c_l over the kept
// entries covering it (found through the slots map), levels 1..L in order,
// multiply then add as the CPU does, so no atomics and the same bits. One
// thread owns W consecutive elements (a 16-byte vector on the fast path) of
// one output row; the x-threads of a block cover one position's rows: the H
// query heads of grad_q, then the KV heads of grad_k and of grad_v.
// Grid: y over batch, x over positions. That kernel is the fallback; the
// tiled kernel below (same per-element arithmetic) is the fast path.
// With rope tables, q and k rows are rotated back at their entry's position
// before the sum, one of two ways (heuristics.h picks): a first pass
// (rotate_back_kernel) rotates every kept q and k row once and multiplies it
// by 1 / c_l, in fp32 into workspace (the products the CPU adds), and the
// kernels here add those rows (times 1, exact) and v as without tables; or,
// where kept entries are many against the positions and that workspace
// traffic costs more than it saves, the tiled kernel of
// gather_backward_rope_inline.cuh rotates inside its position loop.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"
#include "gather_backward_rope_inline.cuh"
#include "position_launch.cuh"
#include "rope.cuh"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
using detail::RopeMode;
constexpr int kLevelGroup = hz::kScatterLevelGroup;

// The first pass's output with rope tables: row (b, head, s) is grad_x_sel's
// row of slot s rotated back at its entry's position, times 1 / c_l.
struct RotatedRows {
  float* q = nullptr;  // [B, H, S, D], contiguous
  float* k = nullptr;  // [B, Hkv, S, D], contiguous
};

// The work items of one kept entry (the group's q rows, then the k row, of
// `items` items each) and the warp's step through them: 32 items written in
// the digits (entry, row, item), so that a lane moves to its next item by
// adding them with carries instead of dividing.
struct EntryItems {
  int items;       // items per row
  int rows;        // rows per entry: group + 1
  int step_item;   // 32 % items
  int step_row;    // (32 / items) % rows
  int step_entry;  // 32 / (items * rows)
};

// Each warp takes 32 consecutive pyramid indices of one (batch, KV head) at a
// time, lists the kept ones (their slots and levels) in shared memory, and its
// lanes then share the kept entries' work items (EntryItems), W * C elements
// each (the rotation pairs of rope.cuh).
template <typename T, int W, RopeMode M, bool PerPair>
__global__ void __launch_bounds__(hz::kStreamThreads)
    rotate_back_kernel(GatherBackwardParams p, RotatedRows rows, EntryItems ei, detail::ItemLayout layout) {
  constexpr int C = detail::rope_chunks<M>();
  constexpr int kWarps = hz::kStreamThreads / 32;
  __shared__ int32_t kept_slot[kWarps][32];
  __shared__ int32_t kept_lane[kWarps][32];
  __shared__ int32_t kept_level[kWarps][32];
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, S = g.kept, D = p.dims.head_dim;
  const int64_t group = ei.rows - 1;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t rows_per_chunk = p.dims.batch * kvn, total = rows_per_chunk * ((g.pyramid_len + 31) / 32);
  const int64_t step = M == RopeMode::kPair ? layout.step : 1;  // constant 1 without pairs
  // The lane's first item in the digits (entry, row, item).
  const int lane_item = lane % ei.items, lane_row = (lane / ei.items) % ei.rows;
  const int lane_entry = lane / (ei.items * ei.rows);
  for (int64_t c = blockIdx.x * int64_t{kWarps} + warp; c < total; c += int64_t{gridDim.x} * kWarps) {
    // Chunk-major: neighbouring warps take one chunk's entries for every (batch, KV head), so the rope table rows
    // they load (one per entry position, the same for every KV head) come from cache after the first.
    const int64_t bk = c % rows_per_chunk, b = bk / kvn, kvh = bk % kvn, first = (c / rows_per_chunk) * 32;
    const int32_t s = first + lane < g.pyramid_len ? p.slots[bk * g.pyramid_len + first + lane] : -1;
    const unsigned kept = __ballot_sync(0xffffffffu, s >= 0);
    if (s >= 0) {
      const int rank = __popc(kept & ((1u << lane) - 1u));
      kept_slot[warp][rank] = s;
      kept_lane[warp][rank] = lane;
      kept_level[warp][rank] = g.level_of(first + lane);
    }
    __syncwarp();
    const int entries = __popc(kept);
    for (int e = lane_entry, row = lane_row, item = lane_item; e < entries;) {
      const int64_t col = int64_t{item} * W * step;
      const int32_t slot = kept_slot[warp][e];
      const int64_t index = first + kept_lane[warp][e];
      const int level = kept_level[warp][e];
      const bool is_q = row < group;
      const int64_t head = is_q ? kvh * group + row : kvh;
      const void* src = is_q ? p.grad_q_sel : p.grad_k_sel;
      const int64_t at = lighthouse::detail::at(is_q ? p.grad_q_sel_strides : p.grad_k_sel_strides, b, slot, head);
      float x[C][W];
#pragma unroll
      for (int ch = 0; ch < C; ++ch) detail::load_row<T, W>(src, at + col + ch * layout.offset, x[ch]);
      const int64_t tr = lighthouse::detail::rope_row(
          p.rope, b, lighthouse::detail::rope_position(g, level, index - g.offset(level)), D);
      detail::rotate_chunks<detail::RopeTurn::kBack, W, M, PerPair>(x, p.rope.cos + tr, p.rope.sin + tr, col, layout);
      const float inv = detail::block_reciprocal(g, level);
      float* out = (is_q ? rows.q + ((b * H + head) * S + slot) * D : rows.k + ((b * kvn + head) * S + slot) * D) + col;
#pragma unroll
      for (int ch = 0; ch < C; ++ch) {
#pragma unroll
        for (int j = 0; j < W; ++j) x[ch][j] = __fmul_rn(x[ch][j], inv);
        detail::store_floats<W>(out + ch * layout.offset, x[ch]);
      }
      // The next item, 32 further: add the step's digits with carries.
      item += ei.step_item;
      const int carry_item = item >= ei.items;
      item -= carry_item * ei.items;
      row += ei.step_row + carry_item;
      const int carry_row = row >= ei.rows;
      row -= carry_row * ei.rows;
      e += ei.step_entry + carry_row;
    }
    __syncwarp();  // the lanes are done with the list before the next chunk's
  }
}

// A position kernel's work item `inner` of batch row b: the kept entries'
// rows it reads and the output row it writes. `rotated`: the rows are the
// first pass's fp32 rows (already times 1 / c_l), else grad_x_sel in T.
struct ItemRows {
  const void* src;  // the item's first element in the entry of slot 0
  int64_t src_seq;  // elements between slots
  bool rotated;
  int64_t kvh;      // the KV head whose slots it follows
  void* dst;        // the item's first element at position 0
  int64_t dst_seq;  // elements between positions
};

template <typename T, int W, bool Rotated>
__device__ __forceinline__ ItemRows item_rows(const GatherBackwardParams& p, const RotatedRows& rows, int64_t group,
                                              int items, int inner, int64_t b) {
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads;
  const int64_t r = inner / items, col = int64_t{inner % items} * W;
  const int which = r < H ? 0 : (r < H + kvn ? 1 : 2);
  const int64_t head = which == 0 ? r : (which == 1 ? r - H : r - H - kvn);
  const Strides ds = which == 0 ? p.grad_q_strides : (which == 1 ? p.grad_k_strides : p.grad_v_strides);
  void* dst = which == 0 ? p.grad_q : (which == 1 ? p.grad_k : p.grad_v);
  ItemRows it{};
  it.kvh = which == 0 ? r / group : head;
  it.dst = static_cast<T*>(dst) + lighthouse::detail::at(ds, b, 0, head) + col;
  it.dst_seq = ds.seq;
  it.rotated = Rotated && which < 2;
  if (it.rotated) {
    const int64_t S = p.geo.kept, D = p.dims.head_dim;
    it.src = (which == 0 ? rows.q + (b * H + head) * S * D : rows.k + (b * kvn + head) * S * D) + col;
    it.src_seq = D;
  } else {
    const void* src = which == 0 ? p.grad_q_sel : (which == 1 ? p.grad_k_sel : p.grad_v_sel);
    const Strides ss = which == 0 ? p.grad_q_sel_strides : (which == 1 ? p.grad_k_sel_strides : p.grad_v_sel_strides);
    it.src = static_cast<const T*>(src) + lighthouse::detail::at(ss, b, 0, head) + col;
    it.src_seq = ss.seq;
  }
  return it;
}

// Row i of the item's kept entries as floats.
template <typename T, int W, bool Rotated>
__device__ __forceinline__ void load_entry(const ItemRows& it, int64_t i, float (&x)[W]) {
  if (Rotated && it.rotated) detail::load_floats<W>(static_cast<const float*>(it.src) + i, x);
  else detail::load_row<T, W>(it.src, i, x);
}

// The factor of a level-l entry's row: 1 / c_l, or 1 for rows already scaled.
template <bool Rotated>
__device__ __forceinline__ float entry_factor(const ItemRows& it, const Geometry& g, int level) {
  return Rotated && it.rotated ? 1.0f : detail::block_reciprocal(g, level);
}

template <typename T, int W, bool Rotated>
__global__ void __launch_bounds__(hz::kStreamThreads)
    gather_backward_kernel(GatherBackwardParams p, RotatedRows rows, int64_t group, int items) {
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(H + 2 * kvn) * items;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    for (int64_t b = blockIdx.y; b < p.dims.batch; b += gridDim.y) {
      const ItemRows it = item_rows<T, W, Rotated>(p, rows, group, items, inner, b);
      const int32_t* slots = p.slots + (b * kvn + it.kvh) * g.pyramid_len;
      for (int64_t t = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; t < N; t += int64_t{gridDim.x} * blockDim.y) {
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
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
          float x[kLevelGroup][W];
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) load_entry<T, W, Rotated>(it, s[i] * it.src_seq, x[i]);
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) {
              const float f = entry_factor<Rotated>(it, g, l0 + i);
#pragma unroll
              for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], __fmul_rn(x[i][j], f));
            }
        }
        detail::store_row<T, W>(it.dst, t * it.dst_seq, acc);
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
// same as above: levels 1..L in order. Rotated: q and k rows come from the
// first pass's fp32 rows, as in the kernel above.
template <typename T, int W, bool Rotated>
__global__ void __launch_bounds__(hz::kTiledMaxThreads, hz::kGatherBackwardMinBlocksPerSm)
    gather_backward_tiled_kernel(GatherBackwardParams p, RotatedRows rows, int64_t group, int items, int tile) {
  extern __shared__ int32_t tile_slots[];  // [levels][kv_heads][tile], then present-level masks [kv_heads][tile]
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(H + 2 * kvn) * items;
  const int64_t tiles = (N + tile - 1) / tile;
  const int level_stride = static_cast<int>(kvn) * tile;
  uint32_t* tile_present = reinterpret_cast<uint32_t*>(tile_slots + g.levels * level_stride);
  for (int64_t item = blockIdx.x; item < p.dims.batch * tiles; item += gridDim.x) {
    const int64_t b = item / tiles, t0 = (item % tiles) * tile;
    // Past a level's last whole block (its ragged tail) nothing covers t.
    detail::stage_tile_slots<hz::kGatherBackwardStageLevels>(p.slots, g, kvn, N, b, t0, tile, tile_slots,
                                                             tile_present, [&](int64_t t, int l) {
                                                               const int64_t local = t >> ((l - 1) * g.log2_pooling);
                                                               return local < g.size(l) ? local : int64_t{-1};
                                                             });
    const int positions = N - t0 < tile ? static_cast<int>(N - t0) : tile;
    for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
      const ItemRows it = item_rows<T, W, Rotated>(p, rows, group, items, inner, b);
      const int32_t* my_slots = tile_slots + it.kvh * tile;
      const uint32_t* my_present = tile_present + it.kvh * tile;
      const int32_t src_seq = static_cast<int32_t>(it.src_seq);  // slot * src_seq fits: the launch checks
      const int64_t out_step = it.dst_seq * blockDim.y;
      T* out = static_cast<T*>(it.dst) + (t0 + threadIdx.y) * it.dst_seq;
      for (int i = threadIdx.y; i < positions; i += blockDim.y, out += out_step) {
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
        // The contributing levels, ascending: bit l - 1 for level l.
        for (uint32_t bits = my_present[i]; bits != 0; bits &= bits - 1) {
          const int l = __ffs(bits);
          float x[W];
          load_entry<T, W, Rotated>(it, my_slots[(l - 1) * level_stride + i] * src_seq, x);
          const float f = entry_factor<Rotated>(it, g, l);
#pragma unroll
          for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], __fmul_rn(x[j], f));
        }
        detail::store_row<T, W>(out, 0, acc);
      }
    }
  }
}

// The first pass with rope tables, into rows (its own vector width and pair
// layout from the tables: rope.cuh).
template <typename T>
void rotate_back(const GatherBackwardParams& p, const RotatedRows& rows, bool vec, cudaStream_t stream) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const detail::RopePlan plan = detail::plan_rope(p.rope, d.head_dim, W, vec);
  const int items = static_cast<int>(plan.items), entry_rows = static_cast<int>(d.heads / d.kv_heads + 1);
  const EntryItems ei{items, entry_rows, 32 % items, (32 / items) % entry_rows, 32 / (items * entry_rows)};
  const int64_t warps = d.batch * d.kv_heads * ((p.geo.pyramid_len + 31) / 32);
  const unsigned grid = detail::grid_for(warps * 32, hz::kStreamThreads, hz::kStreamBlocksPerSm);
  detail::with_plan<W>(plan, [&](auto width, auto mode, auto per_pair) {
    constexpr int V = decltype(width)::value;
    constexpr RopeMode M = decltype(mode)::value;
    if constexpr (M != RopeMode::kNone) {
      rotate_back_kernel<T, V, M, decltype(per_pair)::value>
          <<<grid, hz::kStreamThreads, 0, stream>>>(p, rows, ei, plan.layout);
    }
  });
  detail::check_launch("gather_backward rotate_back_kernel");
}

// Whether the call rotates in a first pass (with rope tables: heuristics.h),
// else inside the tiled kernel's position loop.
bool rotates_first(const GatherBackwardParams& p) {
  if (p.rope.cos == nullptr) return false;
  const bool tiled = detail::tiled_max_tile(p.dims, p.geo) >= 1;
  return !tiled || p.dims.seq_len >= hz::kGatherBackwardRotateFirstMinPositions * p.geo.kept;
}

// Rope tables, rotated inside the tiled kernel's position loop: its own items
// per row (rotation pairs) and layout from the tables (rope.cuh).
template <typename T>
void launch_rope_inline(const GatherBackwardParams& p, cudaStream_t stream, bool vec) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const detail::RopePlan plan = detail::plan_rope(p.rope, d.head_dim, W, vec);
  const int64_t row_len = (d.heads + 2 * d.kv_heads) * plan.items;
  if (row_len > 0x7fffffff) fail("(heads + 2 * kv_heads) * head_dim", "below 2^31", row_len);
  const detail::TiledShape ts = detail::tiled_shape(row_len, d, p.geo, hz::kGatherBackwardInlinePositions);
  detail::with_plan<W>(plan, [&](auto width, auto mode, auto per_pair) {
    constexpr int V = decltype(width)::value;
    constexpr RopeMode M = decltype(mode)::value;
    if constexpr (M != RopeMode::kNone) {
      detail::gather_backward_rope_inline_kernel<T, V, M, decltype(per_pair)::value>
          <<<ts.grid, ts.block, ts.shared_bytes, stream>>>(
          p, d.heads / d.kv_heads, static_cast<int>(plan.items), plan.layout, ts.tile);
    }
  });
  detail::check_launch("gather_backward_rope_inline_kernel");
}

// Elements of RotatedRows' q and k rows.
int64_t rotated_q_elems(const GatherBackwardParams& p) {
  return p.dims.batch * p.dims.heads * p.geo.kept * p.dims.head_dim;
}
int64_t rotated_k_elems(const GatherBackwardParams& p) {
  return p.dims.batch * p.dims.kv_heads * p.geo.kept * p.dims.head_dim;
}

// workspace: gather_backward_workspace_bytes(p) bytes for the rotated rows
// where the first pass runs (rotates_first), else null.
template <typename T>
void launch(const GatherBackwardParams& p, cudaStream_t stream, void* workspace) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const int64_t group = d.heads / d.kv_heads;
  const bool vec = d.head_dim % W == 0 && detail::aligned16(p.grad_q_sel) && detail::aligned16(p.grad_k_sel) &&
                   detail::aligned16(p.grad_v_sel) && detail::aligned16(p.grad_q) && detail::aligned16(p.grad_k) &&
                   detail::aligned16(p.grad_v) && detail::strides_multiple(p.grad_q_sel_strides, W) &&
                   detail::strides_multiple(p.grad_k_sel_strides, W) &&
                   detail::strides_multiple(p.grad_v_sel_strides, W) && detail::strides_multiple(p.grad_q_strides, W) &&
                   detail::strides_multiple(p.grad_k_strides, W) && detail::strides_multiple(p.grad_v_strides, W);
  const int64_t items = vec ? d.head_dim / W : d.head_dim;
  const int64_t row_len = (d.heads + 2 * d.kv_heads) * items;
  if (row_len > 0x7fffffff) fail("(heads + 2 * kv_heads) * head_dim", "below 2^31", row_len);
  const auto positions = [&](auto rotated, const RotatedRows& rows) {
    constexpr bool R = decltype(rotated)::value;
    detail::with_width<W>(vec, [&](auto width) {
      constexpr int V = decltype(width)::value;
      const int64_t seq = std::max({std::abs(p.grad_q_sel_strides.seq), std::abs(p.grad_k_sel_strides.seq),
                                    std::abs(p.grad_v_sel_strides.seq), R ? d.head_dim : int64_t{0}});
      detail::launch_by_position("gather_backward", row_len, d, p.geo, p.geo.kept * seq, stream,
                                 gather_backward_tiled_kernel<T, V, R>, gather_backward_kernel<T, V, R>, p, rows,
                                 group, static_cast<int>(items));
    });
  };
  if (p.rope.cos == nullptr) {
    positions(std::false_type{}, RotatedRows{});
    return;
  }
  if (workspace == nullptr) {
    launch_rope_inline<T>(p, stream, vec);
    return;
  }
  float* space = static_cast<float*>(workspace);
  const RotatedRows rows{space, space + rotated_q_elems(p)};
  rotate_back<T>(p, rows, vec, stream);
  positions(std::true_type{}, rows);
}

// Launches checked params; workspace as launch takes it.
void run(const GatherBackwardParams& p, cudaStream_t stream, void* workspace) {
  lighthouse::detail::dispatch(p.dtype, [&](auto t) { launch<decltype(t)>(p, stream, workspace); });
}

}  // namespace

int64_t gather_backward_workspace_bytes(const GatherBackwardParams& params) {
  if (!rotates_first(params)) return 0;
  return static_cast<int64_t>(sizeof(float)) * (rotated_q_elems(params) + rotated_k_elems(params));
}

void gather_backward(const GatherBackwardParams& params, void* stream, void* workspace) {
  check(params);
  const int64_t bytes = gather_backward_workspace_bytes(params);
  if (bytes > 0 && workspace == nullptr)
    fail("workspace", std::to_string(bytes) + " bytes of device memory", "null");
  if (bytes > 0 && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    fail("workspace", "a 16-byte aligned address",
         "an address " + std::to_string(reinterpret_cast<uintptr_t>(workspace) % 16) + " bytes past one");
  run(params, detail::as_stream(stream), bytes > 0 ? workspace : nullptr);
}

void gather_backward(const GatherBackwardParams& params, void* stream) {
  check(params);  // before allocating
  const int64_t bytes = gather_backward_workspace_bytes(params);
  const cudaStream_t s = detail::as_stream(stream);
  if (bytes == 0) {
    run(params, s, nullptr);
    return;
  }
  // Stream-ordered: the memory is free for the stream's next user once the kernels are done with it.
  void* space = nullptr;
  detail::check_cuda(cudaMallocAsync(&space, static_cast<size_t>(bytes), s),
                     "cudaMallocAsync(gather_backward workspace)");
  try {
    run(params, s, space);
  } catch (...) {
    cudaFreeAsync(space, s);
    throw;
  }
  detail::check_cuda(cudaFreeAsync(space, s), "cudaFreeAsync(gather_backward workspace)");
}

}  // namespace lighthouse::cuda
