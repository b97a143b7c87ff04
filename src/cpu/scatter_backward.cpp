// CPU scatter_backward: each kept entry sums the output gradient over its
// scatter window, ascending positions.
#include <algorithm>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

constexpr int64_t kEntriesPerItem = 64;

template <typename T>
void scatter_backward_typed(const ScatterBackwardParams& p) {
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
      const int64_t local = pyr - g.offset(level);
      const int64_t first = g.window_first(level, local), last = g.window_last(level, local);
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
        for (int64_t t = first; t <= last; ++t) {
          const int64_t o = detail::at(p.grad_out_strides, b, t, h);
          for (int64_t j = 0; j < d.head_dim; ++j) acc[j] += detail::load<T>(p.grad_out, o + j);
        }
        const int64_t o = detail::at(p.grad_o_sel_strides, b, s, h);
        for (int64_t j = 0; j < d.head_dim; ++j) detail::store<T>(p.grad_o_sel, o + j, acc[j]);
      }
    }
  });
}

}  // namespace

void scatter_backward(const ScatterBackwardParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { scatter_backward_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
