// CUDA scatter_backward: each kept entry sums the output gradient over its
// scatter window in ascending positions (fp32), as the CPU does. One thread
// owns W consecutive elements (a 16-byte vector on the fast path) of one
// (entry, query head) row; the x-threads of a block cover the group's query
// heads of one entry. Grid: y over (batch, KV head), x over S.
#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;

template <typename T, int W>
__global__ void __launch_bounds__(hz::kStreamThreads)
    scatter_backward_kernel(ScatterBackwardParams p, int64_t group, int vecs) {
  const Geometry& g = p.geo;
  const int64_t S = g.kept, kvn = p.dims.kv_heads;
  const int row_len = static_cast<int>(group) * vecs;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t r = inner / vecs, col = int64_t{inner % vecs} * W;
    for (int64_t bg = blockIdx.y; bg < p.dims.batch * kvn; bg += gridDim.y) {
      const int64_t b = bg / kvn, h = (bg % kvn) * group + r;
      const int32_t* indices = p.indices + bg * S;
      const T* grad_out = static_cast<const T*>(p.grad_out) + lighthouse::detail::at(p.grad_out_strides, b, 0, h) + col;
      for (int64_t s = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; s < S; s += int64_t{gridDim.x} * blockDim.y) {
        const int64_t pyr = indices[s];
        const int level = g.level_of(pyr);
        const int64_t local = pyr - g.offset(level);
        const int64_t first = g.window_first(level, local), last = g.window_last(level, local);
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
#pragma unroll 4
        for (int64_t t = first; t <= last; ++t) {
          float x[W];
          detail::load_row<T, W>(grad_out, t * p.grad_out_strides.seq, x);
#pragma unroll
          for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], x[j]);
        }
        detail::store_row<T, W>(p.grad_o_sel, lighthouse::detail::at(p.grad_o_sel_strides, b, s, h) + col, acc);
      }
    }
  }
}

template <typename T>
void launch(const ScatterBackwardParams& p, cudaStream_t stream) {
  constexpr int W = detail::vec_width<T>();
  const Dims& d = p.dims;
  const int64_t group = d.heads / d.kv_heads;
  const bool vec = d.head_dim % W == 0 && detail::aligned16(p.grad_out) && detail::aligned16(p.grad_o_sel) &&
                   detail::strides_multiple(p.grad_out_strides, W) &&
                   detail::strides_multiple(p.grad_o_sel_strides, W);
  const int64_t vecs = vec ? d.head_dim / W : d.head_dim;
  const int64_t row_len = group * vecs;
  if (row_len > 0x7fffffff) fail("heads / kv_heads * head_dim", "below 2^31", row_len);
  const detail::StreamShape sh =
      detail::stream_shape(row_len, d.batch * d.kv_heads, p.geo.kept, hz::kStreamThreads, hz::kStreamBlocksPerSm);
  if (vec) {
    scatter_backward_kernel<T, W><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  } else {
    scatter_backward_kernel<T, 1><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  }
  detail::check_launch("scatter_backward_kernel");
}

}  // namespace

void scatter_backward(const ScatterBackwardParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
