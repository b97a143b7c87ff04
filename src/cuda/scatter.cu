// CUDA scatter: every output position gathers its at most L contributions
// (one kept entry per level whose window covers it, found through the slots
// map) in level order, so no atomics and the same bits as the CPU. One thread
// owns W consecutive elements (a 16-byte vector on the fast path) of one
// output row; the x-threads of a block cover the H rows of one position.
// Grid: y over batch, x over positions. That kernel is the fallback; the
// tiled kernel below (same per-element arithmetic) is the fast path.
#include <cstdlib>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"
#include "position_launch.cuh"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
constexpr int kLevelGroup = hz::kScatterLevelGroup;

template <typename T, int W>
__global__ void __launch_bounds__(hz::kStreamThreads) scatter_kernel(ScatterParams p, int64_t group, int vecs) {
  const Geometry& g = p.geo;
  const int64_t N = p.dims.seq_len;
  const int row_len = static_cast<int>(p.dims.heads) * vecs;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t h = inner / vecs, col = int64_t{inner % vecs} * W;
    for (int64_t b = blockIdx.y; b < p.dims.batch; b += gridDim.y) {
      const int32_t* slots = p.slots + (b * p.dims.kv_heads + h / group) * g.pyramid_len;
      const T* o_sel = static_cast<const T*>(p.o_sel) + lighthouse::detail::at(p.o_sel_strides, b, 0, h) + col;
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
            const int64_t c = l <= g.levels ? g.block(l) : 0;
            // A window starts at c - 1: levels whose first window starts after t do not reach it.
            s[i] = l <= g.levels && t >= c - 1 ? slots[g.offset(l) + ((t - c + 1) >> ((l - 1) * g.log2_pooling))] : -1;
          }
          float x[kLevelGroup][W];
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) detail::load_row<T, W>(o_sel, s[i] * p.o_sel_strides.seq, x[i]);
#pragma unroll
          for (int i = 0; i < kLevelGroup; ++i)
            if (s[i] >= 0) {
#pragma unroll
              for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], x[i][j]);
            }
        }
        detail::store_row<T, W>(p.out, lighthouse::detail::at(p.out_strides, b, t, h) + col, acc);
      }
    }
  }
}

// Tiled kernel: a block covers a tile of `tile` consecutive positions of one
// batch row at a time. It first stages the tile's slots (every level, every
// KV head; -1 where no window covers a position) and which levels contribute
// to each position in shared memory with coalesced loads, so the
// per-position slot lookups leave the dependent global-load chain and skip
// the absent levels (most positions have only the coarsest); then its
// x-threads cover one position's H rows of vectors and each y-thread walks
// its own contiguous run of the tile's positions (measured faster than
// interleaving them), decoding its item once per tile. Stores of consecutive
// x-threads are consecutive 16-byte vectors. The sum is the same as above:
// levels 1..L in order.
template <typename T, int W>
__global__ void __launch_bounds__(hz::kTiledMaxThreads, hz::kScatterTiledMinBlocksPerSm)
    scatter_tiled_kernel(ScatterParams p, int64_t group, int vecs, int tile) {
  extern __shared__ int32_t tile_slots[];  // [levels][kv_heads][tile], then present-level masks [kv_heads][tile]
  const Geometry& g = p.geo;
  const int64_t kvn = p.dims.kv_heads, N = p.dims.seq_len;
  const int row_len = static_cast<int>(p.dims.heads) * vecs;
  const int64_t tiles = (N + tile - 1) / tile;
  const int level_stride = static_cast<int>(kvn) * tile;
  uint32_t* tile_present = reinterpret_cast<uint32_t*>(tile_slots + g.levels * level_stride);
  for (int64_t item = blockIdx.x; item < p.dims.batch * tiles; item += gridDim.x) {
    const int64_t b = item / tiles, t0 = (item % tiles) * tile;
    // A window starts at c - 1: levels whose first window starts after t do not reach it.
    detail::stage_tile_slots<hz::kScatterStageLevels>(p.slots, g, kvn, N, b, t0, tile, tile_slots, tile_present,
                                                      [&](int64_t t, int l) {
                                                        const int64_t c = g.block(l);
                                                        return t >= c - 1 ? (t - c + 1) >> ((l - 1) * g.log2_pooling)
                                                                          : int64_t{-1};
                                                      });
    const detail::PositionRun run = detail::position_run(N - t0 < tile ? static_cast<int>(N - t0) : tile);
    for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
      const int64_t h = inner / vecs, col = int64_t{inner % vecs} * W;
      const T* o_sel = static_cast<const T*>(p.o_sel) + lighthouse::detail::at(p.o_sel_strides, b, 0, h) + col;
      const int32_t* my_slots = tile_slots + (h / group) * tile;
      const uint32_t* my_present = tile_present + (h / group) * tile;
      const int32_t sel_seq = static_cast<int32_t>(p.o_sel_strides.seq);  // slot * sel_seq fits: the launch checks
      T* out = static_cast<T*>(p.out) + lighthouse::detail::at(p.out_strides, b, t0 + run.first, h) + col;
      for (int i = run.first; i < run.last; ++i, out += p.out_strides.seq) {
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
        // The contributing levels, ascending: bit l - 1 for level l.
        for (uint32_t bits = my_present[i]; bits != 0; bits &= bits - 1) {
          const int32_t s = my_slots[(__ffs(bits) - 1) * level_stride + i];
          float x[W];
          detail::load_row<T, W>(o_sel, s * sel_seq, x);
#pragma unroll
          for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], x[j]);
        }
        detail::store_row<T, W>(out, 0, acc);
      }
    }
  }
}

template <typename T>
void launch(const ScatterParams& p, cudaStream_t stream) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const int64_t group = d.heads / d.kv_heads;
  const bool vec = d.head_dim % W == 0 && detail::aligned16(p.o_sel) && detail::aligned16(p.out) &&
                   detail::strides_multiple(p.o_sel_strides, W) && detail::strides_multiple(p.out_strides, W);
  const int64_t vecs = vec ? d.head_dim / W : d.head_dim;
  const int64_t row_len = d.heads * vecs;
  if (row_len > 0x7fffffff) fail("heads * head_dim", "below 2^31", row_len);
  detail::with_width<W>(vec, [&](auto width) {
    constexpr int V = decltype(width)::value;
    detail::launch_by_position("scatter", row_len, d, p.geo, p.geo.kept * std::abs(p.o_sel_strides.seq),
                               stream, scatter_tiled_kernel<T, V>, scatter_kernel<T, V>, p, group,
                               static_cast<int>(vecs));
  });
}

}  // namespace

void scatter(const ScatterParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
