// CUDA scatter: every output position gathers its at most L contributions
// (one kept entry per level whose window covers it, found through the slots
// map) in level order, so no atomics and the same bits as the CPU. One thread
// owns W consecutive elements (a 16-byte vector on the fast path) of one
// output row; the x-threads of a block cover the H rows of one position.
// Grid: y over batch, x over positions.
#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"

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
  const detail::StreamShape sh = detail::stream_shape(row_len, d.batch, d.seq_len, hz::kStreamThreads, hz::kStreamBlocksPerSm);
  if (vec) {
    scatter_kernel<T, W><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  } else {
    scatter_kernel<T, 1><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  }
  detail::check_launch("scatter_kernel");
}

}  // namespace

void scatter(const ScatterParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
