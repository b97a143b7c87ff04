// CUDA gather: pooled q (per query head), k and v of every kept entry, from
// the base tensors. One thread owns W consecutive elements (one 16-byte
// vector on the fast path) of one output row and sums the entry's block in
// ascending positions, as the CPU does; the x-threads of a block cover the
// G + 2 rows of one entry (the group's query heads, k, v), so loads and
// stores are coalesced row by row. Grid: y over (batch, KV head), x over S.
// With pool_score's pooled level-L tensors given, level-L entries (most of
// the bytes) are copied from them instead of re-pooled from the base.
#include <string>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;

template <typename T, int W>
__global__ void __launch_bounds__(hz::kStreamThreads) gather_kernel(GatherParams p, int64_t group, int vecs) {
  const Geometry& g = p.geo;
  const int64_t S = g.kept, kvn = p.dims.kv_heads;
  const int row_len = static_cast<int>(group + 2) * vecs;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t r = inner / vecs, col = int64_t{inner % vecs} * W;
    const bool is_q = r < group;
    const void* src = is_q ? p.q : (r == group ? p.k : p.v);
    const Strides ss = is_q ? p.q_strides : (r == group ? p.k_strides : p.v_strides);
    void* dst = is_q ? p.q_sel : (r == group ? p.k_sel : p.v_sel);
    const Strides ds = is_q ? p.q_sel_strides : (r == group ? p.k_sel_strides : p.v_sel_strides);
    const void* pooled = is_q ? p.pooled_q : (r == group ? p.pooled_k : p.pooled_v);
    const Strides ps = is_q ? p.pooled_q_strides : (r == group ? p.pooled_k_strides : p.pooled_v_strides);
    for (int64_t bg = blockIdx.y; bg < p.dims.batch * kvn; bg += gridDim.y) {
      const int64_t b = bg / kvn, kvh = bg % kvn;
      const int64_t head = is_q ? kvh * group + r : kvh;
      const int32_t* indices = p.indices + bg * S;
      for (int64_t s = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; s < S; s += int64_t{gridDim.x} * blockDim.y) {
        const int64_t pyr = indices[s];
        const int level = g.level_of(pyr);
        const int64_t local = pyr - g.offset(level);
        if (pooled != nullptr && level == g.levels) {
          // pool_score already made this mean: copy its bits.
          float x[W];
          detail::load_row<T, W>(pooled, lighthouse::detail::at(ps, b, local, head) + col, x);
          detail::store_row<T, W>(dst, lighthouse::detail::at(ds, b, s, head) + col, x);
          continue;
        }
        const int64_t c = g.block(level), first = local * c;
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
        const T* row = static_cast<const T*>(src) + lighthouse::detail::at(ss, b, first, head) + col;
#pragma unroll 4
        for (int64_t t = 0; t < c; ++t) {
          float x[W];
          detail::load_row<T, W>(row, t * ss.seq, x);
#pragma unroll
          for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], x[j]);
        }
        const float inv = 1.0f / static_cast<float>(c);  // exact: c is a power of two
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = __fmul_rn(acc[j], inv);
        detail::store_row<T, W>(dst, lighthouse::detail::at(ds, b, s, head) + col, acc);
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
  const int64_t vecs = vec ? d.head_dim / W : d.head_dim;
  const int64_t row_len = (group + 2) * vecs;
  if (row_len > 0x7fffffff) fail("(heads / kv_heads + 2) * head_dim", "below 2^31", row_len);
  const detail::StreamShape sh =
      detail::stream_shape(row_len, d.batch * d.kv_heads, p.geo.kept, hz::kStreamThreads, hz::kStreamBlocksPerSm);
  if (vec) {
    gather_kernel<T, W><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  } else {
    gather_kernel<T, 1><<<sh.grid, sh.block, 0, stream>>>(p, group, static_cast<int>(vecs));
  }
  detail::check_launch("gather_kernel");
}

}  // namespace

void gather(const GatherParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
