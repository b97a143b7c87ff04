// CPU gather: pooled q, k, v of the kept entries, computed from the base
// tensors (mean of the entry's block, ascending positions, fp32 sums).
#include <algorithm>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

// Kept entries handled by one parallel work item.
constexpr int64_t kEntriesPerItem = 64;

template <typename T>
void pool_row(const void* src, const Strides& ss, int64_t b, int64_t head, int64_t first, int64_t count,
              void* dst, int64_t dst_offset, int64_t dim, std::vector<detail::acc_t<T>>& acc) {
  std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
  for (int64_t t = first; t < first + count; ++t) {
    const int64_t o = detail::at(ss, b, t, head);
    for (int64_t d = 0; d < dim; ++d) acc[d] += detail::load<T>(src, o + d);
  }
  // count is a power of two, so the reciprocal is exact.
  const detail::acc_t<T> inv = detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(count);
  for (int64_t d = 0; d < dim; ++d) detail::store<T>(dst, dst_offset + d, acc[d] * inv);
}

// Copies row (b, local, head) of a pooled level-L tensor.
template <typename T>
void copy_row(const void* src, const Strides& ss, int64_t b, int64_t local, int64_t head, void* dst,
              int64_t dst_offset, int64_t dim) {
  const int64_t o = detail::at(ss, b, local, head);
  for (int64_t d = 0; d < dim; ++d) detail::store<T>(dst, dst_offset + d, detail::load<T>(src, o + d));
}

template <typename T>
void gather_typed(const GatherParams& p) {
  const Dims& d = p.dims;
  const Geometry& g = p.geo;
  const int64_t group = d.heads / d.kv_heads;
  const int64_t chunks = (g.kept + kEntriesPerItem - 1) / kEntriesPerItem;
  parallel_for(d.batch * d.kv_heads * chunks, [&](int64_t item) {
    const int64_t bg = item / chunks, chunk = item % chunks;
    const int64_t b = bg / d.kv_heads, kvh = bg % d.kv_heads;
    std::vector<detail::acc_t<T>> acc(d.head_dim);
    const int64_t end = std::min(g.kept, (chunk + 1) * kEntriesPerItem);
    for (int64_t s = chunk * kEntriesPerItem; s < end; ++s) {
      const int64_t pyr = p.indices[bg * g.kept + s];
      const int level = g.level_of(pyr);
      const int64_t c = g.block(level), first = (pyr - g.offset(level)) * c;
      if (level == g.levels && p.pooled_q != nullptr) {  // pool_score already pooled level L
        const int64_t local = pyr - g.offset(level);
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          copy_row<T>(p.pooled_q, p.pooled_q_strides, b, local, h, p.q_sel, detail::at(p.q_sel_strides, b, s, h), d.head_dim);
        copy_row<T>(p.pooled_k, p.pooled_k_strides, b, local, kvh, p.k_sel, detail::at(p.k_sel_strides, b, s, kvh), d.head_dim);
        copy_row<T>(p.pooled_v, p.pooled_v_strides, b, local, kvh, p.v_sel, detail::at(p.v_sel_strides, b, s, kvh), d.head_dim);
        continue;
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        pool_row<T>(p.q, p.q_strides, b, h, first, c, p.q_sel, detail::at(p.q_sel_strides, b, s, h), d.head_dim, acc);
      pool_row<T>(p.k, p.k_strides, b, kvh, first, c, p.k_sel, detail::at(p.k_sel_strides, b, s, kvh), d.head_dim, acc);
      pool_row<T>(p.v, p.v_strides, b, kvh, first, c, p.v_sel, detail::at(p.v_sel_strides, b, s, kvh), d.head_dim, acc);
    }
  });
}

}  // namespace

void gather(const GatherParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { gather_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
