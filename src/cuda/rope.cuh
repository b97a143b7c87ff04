// Rotary positions in the CUDA gather and gather_backward kernels: how a
// thread's work item covers rotation pairs, table loads, and the rotation of
// a thread's chunks with the shared arithmetic of lighthouse/detail/rope.h.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "lighthouse/detail/rope.h"

namespace lighthouse::cuda::detail {

// What one work item of a row covers (chosen by the launch):
//   kNone     one W-element chunk, no rotation (no tables: the plain path);
//   kPair     two W-element chunks whose elements pair up one to one: chunk 0
//             holds each pair's first element, chunk 1 (`offset` further) its
//             second. Rotate-half: chunk 0 in the first half, offset D/2.
//             Interleaved on the scalar path: W = 1, elements 2i and 2i + 1;
//   kInChunk  one W-element chunk (W even) of whole interleaved pairs.
enum class RopeMode { kNone, kPair, kInChunk };

template <RopeMode M>
constexpr int rope_chunks() {
  return M == RopeMode::kPair ? 2 : 1;
}

// Column layout of the work items: item i starts at column i * W * step; in
// kPair mode its second chunk starts `offset` columns after the first. With
// per-pair tables the item's first pair has table column col >> table_shift
// (1 for interleaved pairs, 0 for rotate-half: chunk 0's columns are its
// pairs' indices).
struct ItemLayout {
  int64_t step = 1;
  int64_t offset = 0;
  int table_shift = 0;
};

// Which way rotate_chunks turns: gather rotates, gather_backward rotates the
// gradient back (the transpose: each element takes sin at its partner's index).
enum class RopeTurn { kForward, kBack };

// Rotates one pair in place: x0 is the pair's first element, x1 its second;
// c0, s0 and c1, s1 are the tables' values at their indices.
template <RopeTurn Turn>
__device__ __forceinline__ void rotate_pair(float& x0, float& x1, float c0, float s0, float c1, float s1) {
  namespace ld = lighthouse::detail;
  const float a0 = x0, a1 = x1;
  if constexpr (Turn == RopeTurn::kForward) {
    x0 = ld::rope_rotate(a0, a1, c0, s0, true);
    x1 = ld::rope_rotate(a1, a0, c1, s1, false);
  } else {
    x0 = ld::rope_rotate_back(a0, a1, c0, s1, true);
    x1 = ld::rope_rotate_back(a1, a0, c1, s0, false);
  }
}

// Turns the item's chunks x in place with table rows cos / sin (`col` is the
// item's first column; chunk 1 of kPair at col + layout.offset). PerPair: the
// rows hold one value per pair (RopeTables::per_pair), so a pair's two
// elements take the same cos and sin, loaded once.
template <RopeTurn Turn, int W, RopeMode M, bool PerPair>
__device__ __forceinline__ void rotate_chunks(float (&x)[rope_chunks<M>()][W], const float* cos, const float* sin,
                                              int64_t col, const ItemLayout& layout) {
  if constexpr (M == RopeMode::kPair && PerPair) {
    float c[W], s[W];
    load_floats<W>(cos + (col >> layout.table_shift), c);
    load_floats<W>(sin + (col >> layout.table_shift), s);
#pragma unroll
    for (int j = 0; j < W; ++j) rotate_pair<Turn>(x[0][j], x[1][j], c[j], s[j], c[j], s[j]);
  } else if constexpr (M == RopeMode::kPair) {
    float c0[W], s0[W], c1[W], s1[W];
    load_floats<W>(cos + col, c0);
    load_floats<W>(sin + col, s0);
    load_floats<W>(cos + col + layout.offset, c1);
    load_floats<W>(sin + col + layout.offset, s1);
#pragma unroll
    for (int j = 0; j < W; ++j) rotate_pair<Turn>(x[0][j], x[1][j], c0[j], s0[j], c1[j], s1[j]);
  } else if constexpr (M == RopeMode::kInChunk && PerPair) {
    static_assert(W % 2 == 0, "interleaved pairs inside one chunk");
    float c[W / 2], s[W / 2];
    load_floats<W / 2>(cos + col / 2, c);
    load_floats<W / 2>(sin + col / 2, s);
#pragma unroll
    for (int j = 0; j < W; j += 2) rotate_pair<Turn>(x[0][j], x[0][j + 1], c[j / 2], s[j / 2], c[j / 2], s[j / 2]);
  } else if constexpr (M == RopeMode::kInChunk) {
    static_assert(W % 2 == 0, "interleaved pairs inside one chunk");
    float c[W], s[W];
    load_floats<W>(cos + col, c);
    load_floats<W>(sin + col, s);
#pragma unroll
    for (int j = 0; j < W; j += 2) rotate_pair<Turn>(x[0][j], x[0][j + 1], c[j], s[j], c[j + 1], s[j + 1]);
  }
}

// Prefetches into L1 the per-element table chunks that rotate_chunks will
// load for the item (prefetch_l1). gather issues it before the item's row
// loads, so that the tables' latency overlaps the rows' instead of following
// it: the compiler does not hoist the loads themselves above the mean and
// its rounding under the kernel's register cap.
template <RopeMode M>
__device__ __forceinline__ void prefetch_element_tables(const float* cos, const float* sin, int64_t col,
                                                        const ItemLayout& layout) {
  prefetch_l1(cos + col);
  prefetch_l1(sin + col);
  if constexpr (M == RopeMode::kPair) {
    prefetch_l1(cos + col + layout.offset);
    prefetch_l1(sin + col + layout.offset);
  }
}

// The launch's choice for a row of head_dim D: the mode, whether the 16-byte
// path stays possible (`vec` in: the data tensors allow it), the table form,
// and the items per row and their layout. Rotate-half pairs need
// (D/2) % W == 0 for the vector path; interleaved pairs fit any vector chunk.
// Tables must be 16-byte aligned with row starts a multiple of 4 floats for
// the vector path.
struct RopePlan {
  RopeMode mode = RopeMode::kNone;
  bool vec = false;
  bool per_pair = false;
  int64_t items = 0;
  ItemLayout layout;
};

inline RopePlan plan_rope(const RopeTables& rope, int64_t head_dim, int w, bool vec) {
  RopePlan plan;
  if (rope.cos == nullptr) {
    plan.vec = vec;
    plan.items = vec ? head_dim / w : head_dim;
    return plan;
  }
  const bool tables_aligned = reinterpret_cast<uintptr_t>(rope.cos) % 16 == 0 &&
                              reinterpret_cast<uintptr_t>(rope.sin) % 16 == 0 && rope.batch_stride % 4 == 0 &&
                              lighthouse::detail::rope_row_len(rope, head_dim) % 4 == 0;
  plan.per_pair = rope.per_pair;
  const int table_shift = rope.per_pair && rope.interleaved ? 1 : 0;
  if (rope.interleaved) {
    plan.vec = vec && tables_aligned;
    plan.mode = plan.vec ? RopeMode::kInChunk : RopeMode::kPair;
    plan.items = plan.vec ? head_dim / w : head_dim / 2;
    plan.layout = plan.vec ? ItemLayout{1, 0, table_shift} : ItemLayout{2, 1, table_shift};
    return plan;
  }
  plan.vec = vec && tables_aligned && (head_dim / 2) % w == 0;
  plan.mode = RopeMode::kPair;
  plan.items = plan.vec ? head_dim / (2 * w) : head_dim / 2;
  plan.layout = ItemLayout{1, head_dim / 2, table_shift};
  return plan;
}

// Calls f(width, mode, per_pair) with std::integral_constant arguments for
// the plan: width W on the 16-byte path, 1 on the scalar path; per_pair the
// table form (false without tables). One call per launch instantiates each
// kernel only for the combinations that exist.
template <int W, typename F>
void with_plan(const RopePlan& plan, F&& f) {
  const auto tables = [&](auto width, auto mode) {
    if (plan.per_pair) f(width, mode, std::true_type{});
    else f(width, mode, std::false_type{});
  };
  switch (plan.mode) {
    case RopeMode::kNone:
      with_width<W>(plan.vec, [&](auto width) {
        f(width, std::integral_constant<RopeMode, RopeMode::kNone>{}, std::false_type{});
      });
      return;
    case RopeMode::kPair:
      with_width<W>(plan.vec, [&](auto width) { tables(width, std::integral_constant<RopeMode, RopeMode::kPair>{}); });
      return;
    case RopeMode::kInChunk:
      tables(std::integral_constant<int, W>{}, std::integral_constant<RopeMode, RopeMode::kInChunk>{});
      return;
  }
}

}  // namespace lighthouse::cuda::detail
