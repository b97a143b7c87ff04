// CPU pool_score: base scores per position, then the max up the levels.
#include <algorithm>
#include <cmath>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

// ||row||_2 as a sequential sum of squares (no fused multiply-add).
template <typename T>
float row_norm(const void* base, int64_t offset, int64_t dim) {
  detail::acc_t<T> sum = 0;
  for (int64_t d = 0; d < dim; ++d) {
    const detail::acc_t<T> x = detail::load<T>(base, offset + d);
    sum += x * x;
  }
  return static_cast<float>(std::sqrt(sum));
}

// dst[b, i, head] = mean of src over coarsest block i (ascending positions).
template <typename T>
void pool_coarsest(const Geometry& g, const void* src, const Strides& ss, void* dst, const Strides& ds, int64_t b,
                   int64_t head, int64_t dim, std::vector<detail::acc_t<T>>& acc) {
  const int64_t c = g.block(g.levels);
  const detail::acc_t<T> inv = detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(c);  // exact: c = 2^k
  for (int64_t i = 0; i < g.coarsest(); ++i) {
    std::fill(acc.begin(), acc.end(), detail::acc_t<T>(0));
    for (int64_t t = i * c; t < (i + 1) * c; ++t) {
      const int64_t o = detail::at(ss, b, t, head);
      for (int64_t j = 0; j < dim; ++j) acc[j] += detail::load<T>(src, o + j);
    }
    const int64_t o = detail::at(ds, b, i, head);
    for (int64_t j = 0; j < dim; ++j) detail::store<T>(dst, o + j, acc[j] * inv);
  }
}

template <typename T>
void pool_score_typed(const PoolScoreParams& p) {
  const Dims& d = p.dims;
  const Geometry& g = p.geo;
  const int64_t group = d.heads / d.kv_heads;
  parallel_for(d.batch * d.kv_heads, [&](int64_t bg) {
    const int64_t b = bg / d.kv_heads, kvh = bg % d.kv_heads;
    float* qk = p.scores_qk + bg * g.pyramid_len;
    float* kq = p.scores_kq + bg * g.pyramid_len;
    for (int64_t t = 0; t < d.seq_len; ++t) {
      if (p.base_qk != nullptr) {
        qk[t] = p.base_qk[bg * d.seq_len + t];
      } else {
        float m = row_norm<T>(p.q, detail::at(p.q_strides, b, t, kvh * group), d.head_dim);
        for (int64_t h = 1; h < group; ++h)
          m = detail::max_keep(m, row_norm<T>(p.q, detail::at(p.q_strides, b, t, kvh * group + h), d.head_dim));
        qk[t] = m;
      }
      kq[t] = p.base_kq != nullptr ? p.base_kq[bg * d.seq_len + t]
                                   : row_norm<T>(p.k, detail::at(p.k_strides, b, t, kvh), d.head_dim);
    }
    // An entry of level l covers its p children of level l - 1, so the max
    // over children equals the max over the entry's base block.
    for (int l = 2; l <= g.levels; ++l) {
      for (float* s : {qk, kq}) {
        const float* child = s + g.offset(l - 1);
        float* parent = s + g.offset(l);
        for (int64_t i = 0; i < g.size(l); ++i) {
          float m = child[i * g.pooling];
          for (int r = 1; r < g.pooling; ++r) m = detail::max_keep(m, child[i * g.pooling + r]);
          parent[i] = m;
        }
      }
    }
    if (p.pooled_q != nullptr) {
      std::vector<detail::acc_t<T>> acc(d.head_dim);
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        pool_coarsest<T>(g, p.q, p.q_strides, p.pooled_q, p.pooled_q_strides, b, h, d.head_dim, acc);
      pool_coarsest<T>(g, p.k, p.k_strides, p.pooled_k, p.pooled_k_strides, b, kvh, d.head_dim, acc);
      pool_coarsest<T>(g, p.v, p.v_strides, p.pooled_v, p.pooled_v_strides, b, kvh, d.head_dim, acc);
    }
  });
}

}  // namespace

void pool_score(const PoolScoreParams& params) {
  check(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { pool_score_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
