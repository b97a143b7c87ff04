// CPU scatter: every output position gathers the attention outputs of the
// kept entries whose windows cover it, levels 1..L in order (no atomics).
#include <algorithm>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

// Output positions handled by one parallel work item.
constexpr int64_t kPositionsPerItem = 256;

template <typename T>
void scatter_typed(const ScatterParams& p) {
  const Dims& d = p.dims;
  const Geometry& g = p.geo;
  const int64_t group = d.heads / d.kv_heads;
  const int64_t chunks = (d.seq_len + kPositionsPerItem - 1) / kPositionsPerItem;
  parallel_for(d.batch * chunks, [&](int64_t item) {
    const int64_t b = item / chunks, chunk = item % chunks;
    std::vector<detail::acc_t<T>> acc(d.head_dim);
    const int64_t end = std::min(d.seq_len, (chunk + 1) * kPositionsPerItem);
    for (int64_t t = chunk * kPositionsPerItem; t < end; ++t) {
      for (int64_t h = 0; h < d.heads; ++h) {
        const int32_t* slots = p.slots + (b * d.kv_heads + h / group) * g.pyramid_len;
        std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
        for (int l = 1; l <= g.levels; ++l) {
          const int64_t c = g.block(l);
          if (t < c - 1) break;  // windows start at c - 1: no coarser level reaches t
          const int32_t s = slots[g.offset(l) + (t - c + 1) / c];
          if (s < 0) continue;
          const int64_t o = detail::at(p.o_sel_strides, b, s, h);
          for (int64_t j = 0; j < d.head_dim; ++j) acc[j] += detail::load<T>(p.o_sel, o + j);
        }
        const int64_t o = detail::at(p.out_strides, b, t, h);
        for (int64_t j = 0; j < d.head_dim; ++j) detail::store<T>(p.out, o + j, acc[j]);
      }
    }
  });
}

}  // namespace

void scatter(const ScatterParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { scatter_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
