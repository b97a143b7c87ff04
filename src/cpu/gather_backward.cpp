// CPU gather_backward: each base position sums grad_sel / c_l over the kept
// entries that cover it, levels 1..L in order (no atomics); with rope tables,
// the q and k gradients of an entry are rotated back first.
#include <algorithm>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/detail/rope.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

constexpr int64_t kPositionsPerItem = 256;

// grad[b, t, head] = sum over levels of grad_sel[b, slot_l, head] / c_l;
// with `rope` (q and k), each grad_sel row rotated back at its entry's position first.
template <typename T>
void accumulate_position(const Geometry& g, const int32_t* slots, int64_t b, int64_t t, int64_t head,
                         const void* grad_sel, const Strides& sel_strides, void* grad, const Strides& strides,
                         int64_t dim, const RopeTables* rope, std::vector<detail::acc_t<T>>& acc) {
  std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
  for (int l = 1; l <= g.levels; ++l) {
    const int64_t c = g.block(l), local = t / c;
    if (local >= g.size(l)) continue;  // t lies in this level's ragged tail
    const int32_t s = slots[g.offset(l) + local];
    if (s < 0) continue;
    const detail::acc_t<T> inv = detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(c);  // exact: c = 2^k
    const int64_t o = detail::at(sel_strides, b, s, head);
    if (rope == nullptr) {
      for (int64_t j = 0; j < dim; ++j) acc[j] += detail::load<T>(grad_sel, o + j) * inv;
      continue;
    }
    const int64_t row = detail::rope_row(*rope, b, detail::rope_position(g, l, local), dim);
    const float* cos = rope->cos + row;
    const float* sin = rope->sin + row;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t partner = detail::rope_partner(j, dim, rope->interleaved);
      const detail::acc_t<T> u = detail::rope_rotate_back(
          detail::load<T>(grad_sel, o + j), detail::load<T>(grad_sel, o + partner),
          cos[detail::rope_column(*rope, j, dim)], sin[detail::rope_column(*rope, partner, dim)],
          detail::rope_first(j, dim, rope->interleaved));
      acc[j] += u * inv;
    }
  }
  const int64_t o = detail::at(strides, b, t, head);
  for (int64_t j = 0; j < dim; ++j) detail::store<T>(grad, o + j, acc[j]);
}

template <typename T>
void gather_backward_typed(const GatherBackwardParams& p) {
  const Dims& d = p.dims;
  const Geometry& g = p.geo;
  const int64_t group = d.heads / d.kv_heads;
  const int64_t chunks = (d.seq_len + kPositionsPerItem - 1) / kPositionsPerItem;
  const RopeTables* rope = p.rope.cos != nullptr ? &p.rope : nullptr;
  parallel_for(d.batch * chunks, [&](int64_t item) {
    const int64_t b = item / chunks, chunk = item % chunks;
    std::vector<detail::acc_t<T>> acc(d.head_dim);
    const int64_t end = std::min(d.seq_len, (chunk + 1) * kPositionsPerItem);
    for (int64_t t = chunk * kPositionsPerItem; t < end; ++t) {
      for (int64_t kvh = 0; kvh < d.kv_heads; ++kvh) {
        const int32_t* slots = p.slots + (b * d.kv_heads + kvh) * g.pyramid_len;
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          accumulate_position<T>(g, slots, b, t, h, p.grad_q_sel, p.grad_q_sel_strides, p.grad_q, p.grad_q_strides,
                                 d.head_dim, rope, acc);
        accumulate_position<T>(g, slots, b, t, kvh, p.grad_k_sel, p.grad_k_sel_strides, p.grad_k, p.grad_k_strides,
                               d.head_dim, rope, acc);
        accumulate_position<T>(g, slots, b, t, kvh, p.grad_v_sel, p.grad_v_sel_strides, p.grad_v, p.grad_v_strides,
                               d.head_dim, nullptr, acc);
      }
    }
  });
}

}  // namespace

void gather_backward(const GatherBackwardParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { gather_backward_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
