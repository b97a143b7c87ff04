// Rotary positions of kept entries (docs/semantics.md, "Rotary positions"):
// the arithmetic of gather's rotation and of gather_backward's rotation back,
// shared by the CPU and CUDA kernels so both round the same way. Every
// product is one rounded multiply and every sum one rounded add (no fused
// multiply-add on either side).
#pragma once

#include <cstdint>

#include "lighthouse/detail/access.h"
#include "lighthouse/dtype.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"

namespace lighthouse::detail {

LH_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LH_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
LH_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
// float64 exists on the CPU only (gradient checks).
inline double mul_rn(double a, double b) { return a * b; }
inline double add_rn(double a, double b) { return a + b; }
inline double sub_rn(double a, double b) { return a - b; }

// x rounded to the storage type T and read back: what a store and a load of
// x would give. gather rounds a pooled mean before rotating it, so a mean
// re-pooled from the base and one copied from pool_score's pooled tensors
// (already stored in T) rotate to the same bits.
template <typename T>
LH_HD acc_t<T> round_to(acc_t<T> x) {
  return to_float(from_float<T>(x));
}
template <>
inline double round_to<double>(double x) {
  return x;
}

// The base position an entry of `level`, index `local` is rotated at: the
// last one it covers, (local + 1) * c_l - 1 (a level-1 entry: its own).
LH_HD int64_t rope_position(const Geometry& g, int level, int64_t local) { return (local + 1) * g.block(level) - 1; }

// Values per table row: head_dim, or head_dim / 2 for per-pair tables.
LH_HD int64_t rope_row_len(const RopeTables& r, int64_t head_dim) { return r.per_pair ? head_dim / 2 : head_dim; }

// Offset of row (batch, pos) in the tables.
LH_HD int64_t rope_row(const RopeTables& r, int64_t batch, int64_t pos, int64_t head_dim) {
  return batch * r.batch_stride + pos * rope_row_len(r, head_dim);
}

// The table column of element d: d itself, or with per-pair tables its pair's
// index (d / 2 interleaved, d mod D/2 rotate-half).
LH_HD int64_t rope_column(const RopeTables& r, int64_t d, int64_t head_dim) {
  if (!r.per_pair) return d;
  return r.interleaved ? d / 2 : d % (head_dim / 2);
}

// Element d's partner in its rotation pair, and whether d is the pair's first
// element (the one whose rotation subtracts). Rotate-half pairs (j, j + D/2);
// interleaved pairs (2j, 2j + 1).
LH_HD int64_t rope_partner(int64_t d, int64_t head_dim, bool interleaved) {
  if (interleaved) return d ^ 1;
  const int64_t half = head_dim / 2;
  return d < half ? d + half : d - half;
}
LH_HD bool rope_first(int64_t d, int64_t head_dim, bool interleaved) {
  return interleaved ? (d & 1) == 0 : d < head_dim / 2;
}

// gather: element d of a rotated row, from the row's values a (at d) and
// partner (at rope_partner(d)) and the tables' cos, sin at d's column:
// a*cos - partner*sin for a pair's first element, a*cos + partner*sin for its second.
template <typename A>
LH_HD A rope_rotate(A a, A partner, float cos_d, float sin_d, bool first) {
  const A product = mul_rn(a, static_cast<A>(cos_d)), cross = mul_rn(partner, static_cast<A>(sin_d));
  return first ? sub_rn(product, cross) : add_rn(product, cross);
}

// gather_backward: the transpose of rope_rotate. Element d of the gradient
// rotated back, from the incoming gradient g (at d) and partner (at
// rope_partner(d)), cos at d's column and sin at the partner's:
// g*cos[d] + partner*sin[p] for a pair's first element, g*cos[d] - partner*sin[p] for its second.
template <typename A>
LH_HD A rope_rotate_back(A g, A partner, float cos_d, float sin_partner, bool first) {
  const A product = mul_rn(g, static_cast<A>(cos_d)), cross = mul_rn(partner, static_cast<A>(sin_partner));
  return first ? add_rn(product, cross) : sub_rn(product, cross);
}

}  // namespace lighthouse::detail
