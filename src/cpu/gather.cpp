// CPU gather: pooled q, k, v of the kept entries, computed from the base
// tensors (mean of the entry's block, ascending positions, fp32 sums), q and
// k rotated at the entry's last position when rope tables are given.
#include <algorithm>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/detail/rope.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

// Kept entries handled by one parallel work item.
constexpr int64_t kEntriesPerItem = 64;

// Where a gathered row goes: the output row and, for q and k with rope
// tables, the table rows (nullptr: stored unrotated).
struct RowTarget {
  void* dst;
  int64_t offset;
  const float* cos;
  const float* sin;
};

// Stores row x of `dim` values. With tables, each value is first rounded to
// T and the row then rotated (x holds the rounded values afterwards).
template <typename T>
void store_row(std::vector<detail::acc_t<T>>& x, const RowTarget& out, int64_t dim, const RopeTables& rope) {
  if (out.cos == nullptr) {
    for (int64_t d = 0; d < dim; ++d) detail::store<T>(out.dst, out.offset + d, x[d]);
    return;
  }
  for (int64_t d = 0; d < dim; ++d) x[d] = detail::round_to<T>(x[d]);
  for (int64_t d = 0; d < dim; ++d) {
    const int64_t partner = detail::rope_partner(d, dim, rope.interleaved);
    const int64_t col = detail::rope_column(rope, d, dim);
    detail::store<T>(out.dst, out.offset + d,
                     detail::rope_rotate(x[d], x[partner], out.cos[col], out.sin[col],
                                         detail::rope_first(d, dim, rope.interleaved)));
  }
}

// Mean of rows [first, first + count) of (b, head), into acc.
template <typename T>
void pool_row(const void* src, const Strides& ss, int64_t b, int64_t head, int64_t first, int64_t count,
              int64_t dim, std::vector<detail::acc_t<T>>& acc) {
  std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
  for (int64_t t = first; t < first + count; ++t) {
    const int64_t o = detail::at(ss, b, t, head);
    for (int64_t d = 0; d < dim; ++d) acc[d] += detail::load<T>(src, o + d);
  }
  // count is a power of two, so the reciprocal is exact.
  const detail::acc_t<T> inv = detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(count);
  for (int64_t d = 0; d < dim; ++d) acc[d] *= inv;
}

// Row (b, local, head) of a pooled level-L tensor, into acc.
template <typename T>
void copy_row(const void* src, const Strides& ss, int64_t b, int64_t local, int64_t head, int64_t dim,
              std::vector<detail::acc_t<T>>& acc) {
  const int64_t o = detail::at(ss, b, local, head);
  for (int64_t d = 0; d < dim; ++d) acc[d] = detail::load<T>(src, o + d);
}

template <typename T>
void gather_typed(const GatherParams& p) {
  const Dims& d = p.dims;
  const Geometry& g = p.geo;
  const int64_t group = d.heads / d.kv_heads;
  const int64_t chunks = (g.kept + kEntriesPerItem - 1) / kEntriesPerItem;
  const bool rope = p.rope.cos != nullptr;
  parallel_for(d.batch * d.kv_heads * chunks, [&](int64_t item) {
    const int64_t bg = item / chunks, chunk = item % chunks;
    const int64_t b = bg / d.kv_heads, kvh = bg % d.kv_heads;
    std::vector<detail::acc_t<T>> acc(d.head_dim);
    const int64_t end = std::min(g.kept, (chunk + 1) * kEntriesPerItem);
    for (int64_t s = chunk * kEntriesPerItem; s < end; ++s) {
      const int64_t pyr = p.indices[bg * g.kept + s];
      const int level = g.level_of(pyr);
      const int64_t local = pyr - g.offset(level);
      const int64_t c = g.block(level), first = local * c;
      const float* cos = nullptr;
      const float* sin = nullptr;
      if (rope) {
        const int64_t row = detail::rope_row(p.rope, b, detail::rope_position(g, level, local), d.head_dim);
        cos = p.rope.cos + row;
        sin = p.rope.sin + row;
      }
      // pool_score may already have pooled level L: copy those means.
      const bool copy = level == g.levels && p.pooled_q != nullptr;
      auto row = [&](const void* src, const Strides& ss, const void* pooled, const Strides& ps, int64_t head,
                     const RowTarget& out) {
        if (copy) {
          copy_row<T>(pooled, ps, b, local, head, d.head_dim, acc);
        } else {
          pool_row<T>(src, ss, b, head, first, c, d.head_dim, acc);
        }
        store_row<T>(acc, out, d.head_dim, p.rope);
      };
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        row(p.q, p.q_strides, p.pooled_q, p.pooled_q_strides, h,
            {p.q_sel, detail::at(p.q_sel_strides, b, s, h), cos, sin});
      row(p.k, p.k_strides, p.pooled_k, p.pooled_k_strides, kvh,
          {p.k_sel, detail::at(p.k_sel_strides, b, s, kvh), cos, sin});
      row(p.v, p.v_strides, p.pooled_v, p.pooled_v_strides, kvh,
          {p.v_sel, detail::at(p.v_sel_strides, b, s, kvh), nullptr, nullptr});
    }
  });
}

}  // namespace

void gather(const GatherParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { gather_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
