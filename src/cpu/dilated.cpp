// CPU dilated scorer: per residue class t = j mod delta, causal attention over
// the class as a strided view of the base tensors (sequence stride delta
// times the base one, no copies), then the norm of each output row.
#include <cmath>
#include <string>
#include <vector>

#include "lighthouse/attention.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/dilated.h"
#include "lighthouse/error.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

void check_params(const DilatedParams& p) {
  const Dims& d = p.dims;
  if (d.batch < 1) fail("dims.batch", "at least 1", d.batch);
  if (d.seq_len < 1) fail("dims.seq_len", "at least 1", d.seq_len);
  if (d.heads < 1) fail("dims.heads", "at least 1", d.heads);
  if (d.kv_heads < 1) fail("dims.kv_heads", "at least 1", d.kv_heads);
  if (d.heads % d.kv_heads != 0)
    fail("dims.heads % dims.kv_heads",
         "0 (heads = " + std::to_string(d.heads) + ", kv_heads = " + std::to_string(d.kv_heads) + ")",
         d.heads % d.kv_heads);
  if (d.head_dim < 1) fail("dims.head_dim", "at least 1", d.head_dim);
  if (p.dilation < 1) fail("dilation", "an integer >= 1", p.dilation);
  if (!(p.scale >= 0.0f) || std::isinf(p.scale)) fail("scale", "a finite value >= 0 (0: 1/sqrt(head_dim))", p.scale);
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{p.q, "q"}, {p.k, "k"}, {p.v, "v"}, {p.base_qk, "base_qk"}, {p.base_kq, "base_kq"}};
  for (const auto& x : ptrs)
    if (x.ptr == nullptr) fail(x.name, "a non-null pointer", "nullptr");
  const struct {
    const Strides& s;
    const char* name;
  } strides[] = {{p.q_strides, "q_strides"}, {p.k_strides, "k_strides"}, {p.v_strides, "v_strides"}};
  for (const auto& x : strides)
    if (x.s.batch < 0 || x.s.seq < 0 || x.s.head < 0)
      fail(x.name, "non-negative element strides", std::to_string(x.s.batch) + ", " + std::to_string(x.s.seq) + ", " +
                                                        std::to_string(x.s.head));
}

// The view of residue class t of a [B, N, heads, D] tensor, as the
// [B, heads, n_t, D] layout attention expects (strides are per dimension, so
// only the sequence stride changes), starting at head `head0`, with
// `head_step` base heads between consecutive view heads.
struct View {
  const void* data;
  Strides strides;
};

View residue_view(const void* base, const Strides& s, DType dtype, int64_t t, int64_t delta, int64_t head0,
                  int64_t head_step) {
  const int64_t offset = t * s.seq + head0 * s.head;
  return {static_cast<const char*>(base) + offset * element_size(dtype), Strides{s.batch, s.seq * delta, s.head * head_step}};
}

// base[b, g, t + i * delta] = ||rows[b, g * per_kv + r, i]|| maxed over
// r = 0..per_kv-1 in ascending order; rows is a contiguous [B, heads, n, D]
// tensor of type T. Sums of squares run over d ascending without fused
// multiply-add, as in pool_score.
template <typename T>
void store_norms(const void* rows, int64_t batch, int64_t kv_heads, int64_t per_kv, int64_t n, int64_t dim, int64_t t,
                 int64_t delta, int64_t seq_len, float* base) {
  parallel_for(batch * kv_heads, [&](int64_t bg) {
    const int64_t b = bg / kv_heads, g = bg % kv_heads;
    for (int64_t i = 0; i < n; ++i) {
      float best = 0.0f;
      for (int64_t r = 0; r < per_kv; ++r) {
        const int64_t o = ((b * kv_heads * per_kv + g * per_kv + r) * n + i) * dim;
        detail::acc_t<T> sum = 0;
        for (int64_t d = 0; d < dim; ++d) {
          const detail::acc_t<T> x = detail::load<T>(rows, o + d);
          sum += x * x;
        }
        const float norm = static_cast<float>(std::sqrt(sum));
        best = r == 0 ? norm : detail::max_keep(best, norm);
      }
      base[bg * seq_len + t + i * delta] = best;
    }
  });
}

template <typename T>
void dilated_typed(const DilatedParams& p) {
  const Dims& d = p.dims;
  const int64_t delta = p.dilation, group = d.heads / d.kv_heads;
  const float scale = p.scale > 0.0f ? p.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  for (int64_t t = 0; t < delta && t < d.seq_len; ++t) {
    const int64_t n = (d.seq_len - t + delta - 1) / delta;
    // Query side: every query head against its KV head, as in the layer.
    std::vector<T> out(static_cast<size_t>(d.batch * d.heads * n * d.head_dim));
    AttentionParams a;
    a.batch = d.batch;
    a.seq_len = n;
    a.head_dim = d.head_dim;
    a.scale = scale;
    a.dtype = p.dtype;
    a.heads = d.heads;
    a.kv_heads = d.kv_heads;
    const View q = residue_view(p.q, p.q_strides, p.dtype, t, delta, 0, 1);
    const View k = residue_view(p.k, p.k_strides, p.dtype, t, delta, 0, 1);
    const View v = residue_view(p.v, p.v_strides, p.dtype, t, delta, 0, 1);
    a.q = q.data;
    a.q_strides = q.strides;
    a.k = k.data;
    a.k_strides = k.strides;
    a.v = v.data;
    a.v_strides = v.strides;
    a.out = out.data();
    a.out_strides = contiguous_bhsd(d.heads, n, d.head_dim);
    attention(a);
    store_norms<T>(out.data(), d.batch, d.kv_heads, group, n, d.head_dim, t, delta, d.seq_len, p.base_qk);

    // Key side: the KV head's keys attend to each of its query heads in turn
    // (query head g * group + r seen as the keys of a one-to-one call).
    std::vector<T> swapped(static_cast<size_t>(d.batch * d.kv_heads * group * n * d.head_dim));
    for (int64_t r = 0; r < group; ++r) {
      AttentionParams s = a;
      s.heads = s.kv_heads = d.kv_heads;
      const View qk = residue_view(p.q, p.q_strides, p.dtype, t, delta, r, group);
      s.q = k.data;
      s.q_strides = k.strides;
      s.k = qk.data;
      s.k_strides = qk.strides;
      // Head g of this call is query head g * group + r: interleave so the
      // result has the [B, H, n, D] layout store_norms reads.
      s.out = swapped.data() + r * n * d.head_dim;
      s.out_strides = Strides{d.heads * n * d.head_dim, d.head_dim, group * n * d.head_dim};
      attention(s);
    }
    store_norms<T>(swapped.data(), d.batch, d.kv_heads, group, n, d.head_dim, t, delta, d.seq_len, p.base_kq);
  }
}

}  // namespace

void dilated_scores(const DilatedParams& params) {
  check_params(params);
  detail::dispatch_cpu(params.dtype, [&](auto t) { dilated_typed<decltype(t)>(params); });
}

}  // namespace lighthouse::cpu
