// One parameter struct per stage. Pointers are device or host memory as the
// backend requires; each comment gives the logical shape. Float tensors of one
// call share `dtype` (scores are always fp32, indices int32). Every rank-4
// tensor has a contiguous last (head_dim) dimension and the element strides
// of its other three dimensions in a Strides; rank-3 tensors are contiguous.
#pragma once

#include <cstdint>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/geometry.h"

namespace lighthouse {

// Element strides of the batch, sequence and head dimensions of a rank-4
// tensor. For a [B, N, H, D] tensor `seq` steps over N; for a [B, H, S, D]
// tensor `seq` steps over S.
struct Strides {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t head = 0;
};

// Strides of a contiguous [B, N, H, D] tensor.
inline Strides contiguous_bnhd(int64_t n, int64_t h, int64_t d) { return {n * h * d, h * d, d}; }
// Strides of a contiguous [B, H, S, D] tensor.
inline Strides contiguous_bhsd(int64_t h, int64_t s, int64_t d) { return {h * s * d, d, s * d}; }

// Rotary position tables (RoPE) for gather and gather_backward. Row `pos` of
// cos / sin holds the model's rotation at base position pos; a kept q or k
// entry is rotated at the last base position it covers (docs/semantics.md,
// "Rotary positions"). The same rows serve every head. Both null: no rotation.
// A row holds one value per element (R = D, Hugging Face's tables) or, with
// per_pair, one per rotation pair (R = D/2: pair j at column j, FlashAttention's
// form), which is the per-element table with both elements of a pair equal,
// read at half the bytes.
struct RopeTables {
  const float* cos = nullptr;  // [B, N, R], or [N, R] when batch_stride is 0: row (b, pos) at b * batch_stride + pos*R
  const float* sin = nullptr;  // [B, N, R] or [N, R], laid out as cos
  int64_t batch_stride = 0;    // elements between batch rows; 0: one [N, R] table for every batch row
  bool interleaved = false;    // pairs (2j, 2j+1) (torchtitan); false: pairs (j, j + D/2) (Hugging Face)
  bool per_pair = false;       // rows of R = D/2 values, one per pair; false: R = D, one per element
};

// pool_score: per-KV-head scores of every pyramid entry. The base score of a
// position is ||q|| maxed over the KV head's query heads (query side) and ||k||
// (key side), unless base scores are given (the dilated scorer); an entry of
// level l >= 2 scores the max of its block's base scores.
struct PoolScoreParams {
  Dims dims;
  Geometry geo;
  DType dtype = DType::kFloat32;
  const void* q = nullptr;         // [B, N, H, D]      (unused when base_qk is set)
  Strides q_strides;
  const void* k = nullptr;         // [B, N, Hkv, D]    (unused when base_kq is set)
  Strides k_strides;
  const float* base_qk = nullptr;  // [B, Hkv, N] optional given base scores, query side
  const float* base_kq = nullptr;  // [B, Hkv, N] optional given base scores, key side
  float* scores_qk = nullptr;      // [B, Hkv, pyramid_len] out
  float* scores_kq = nullptr;      // [B, Hkv, pyramid_len] out
  // Optional fusion (all three or none; nullptr: not produced): the pooled
  // level-L q, k, v, i.e. the mean of each coarsest block (fp32 sums in
  // ascending positions, stored in dtype), computed during the same pass over
  // the base so gather can read level-L entries from them (see GatherParams).
  const void* v = nullptr;         // [B, N, Hkv, D]    (read only for pooled_v)
  Strides v_strides;
  void* pooled_q = nullptr;        // [B, n_L, H, D] out
  Strides pooled_q_strides;
  void* pooled_k = nullptr;        // [B, n_L, Hkv, D] out
  Strides pooled_k_strides;
  void* pooled_v = nullptr;        // [B, n_L, Hkv, D] out
  Strides pooled_v_strides;
};

// select: chunked, stratified, coarse-to-fine selection per (batch, KV
// head) under `selection` (see Selection), kept entries in causal order, plus
// the inverse map used by scatter and gather_backward. Ties break towards the
// lower index.
struct SelectParams {
  Dims dims;
  Geometry geo;
  Selection selection = Selection::kPaper;
  const float* scores_qk = nullptr;  // [B, Hkv, pyramid_len]
  const float* scores_kq = nullptr;  // [B, Hkv, pyramid_len]
  int32_t* indices = nullptr;        // [B, Hkv, S] out: pyramid indices in causal order
  int32_t* slots = nullptr;          // [B, Hkv, pyramid_len] out: position in indices, or -1
};

// gather: pooled q, k, v (means of each entry's base block, accumulated in
// fp32 in ascending position order) at the selected pyramid indices,
// computed from the base tensors. Query heads use their KV head's indices.
// With rope tables, each q and k mean is rounded to dtype and then rotated at
// its entry's last covered position; v is never rotated.
struct GatherParams {
  Dims dims;
  Geometry geo;
  DType dtype = DType::kFloat32;
  const void* q = nullptr;  // [B, N, H, D]
  Strides q_strides;
  const void* k = nullptr;  // [B, N, Hkv, D]
  Strides k_strides;
  const void* v = nullptr;  // [B, N, Hkv, D]
  Strides v_strides;
  const int32_t* indices = nullptr;  // [B, Hkv, S]
  void* q_sel = nullptr;    // [B, H, S, D] out
  Strides q_sel_strides;
  void* k_sel = nullptr;    // [B, Hkv, S, D] out
  Strides k_sel_strides;
  void* v_sel = nullptr;    // [B, Hkv, S, D] out
  Strides v_sel_strides;
  // Optional (all three or none): pool_score's pooled level-L tensors. When
  // set, level-L entries are copied from them instead of re-pooled from the
  // base; the result is the same bits, since they hold the same means.
  const void* pooled_q = nullptr;  // [B, n_L, H, D]
  Strides pooled_q_strides;
  const void* pooled_k = nullptr;  // [B, n_L, Hkv, D]
  Strides pooled_k_strides;
  const void* pooled_v = nullptr;  // [B, n_L, Hkv, D]
  Strides pooled_v_strides;
  RopeTables rope;                 // optional: rotate q_sel and k_sel (head_dim even)
};

// scatter: out[t] = sum over levels l = 1..L (in that order, fp32) of the
// attention output of the kept level-l entry whose window covers t; zero
// where nothing covers t. No atomics: each position gathers.
struct ScatterParams {
  Dims dims;
  Geometry geo;
  DType dtype = DType::kFloat32;
  const void* o_sel = nullptr;     // [B, H, S, D] attention output of the kept entries
  Strides o_sel_strides;
  const int32_t* slots = nullptr;  // [B, Hkv, pyramid_len] from select
  void* out = nullptr;             // [B, N, H, D] out
  Strides out_strides;
};

// scatter_backward: grad_o_sel[s] = sum of grad_out over entry s's window, in
// ascending position order (fp32).
struct ScatterBackwardParams {
  Dims dims;
  Geometry geo;
  DType dtype = DType::kFloat32;
  const void* grad_out = nullptr;    // [B, N, H, D]
  Strides grad_out_strides;
  const int32_t* indices = nullptr;  // [B, Hkv, S]
  void* grad_o_sel = nullptr;        // [B, H, S, D] out
  Strides grad_o_sel_strides;
};

// gather_backward: each base position sums grad_x_sel[s] / c_l over the kept
// entries s that cover it, levels 1..L in that order (fp32); zero when none.
// With rope tables, grad_q_sel and grad_k_sel rows are first rotated back
// (the transpose of gather's rotation at the same position).
struct GatherBackwardParams {
  Dims dims;
  Geometry geo;
  DType dtype = DType::kFloat32;
  const void* grad_q_sel = nullptr;  // [B, H, S, D]
  Strides grad_q_sel_strides;
  const void* grad_k_sel = nullptr;  // [B, Hkv, S, D]
  Strides grad_k_sel_strides;
  const void* grad_v_sel = nullptr;  // [B, Hkv, S, D]
  Strides grad_v_sel_strides;
  const int32_t* slots = nullptr;    // [B, Hkv, pyramid_len] from select
  void* grad_q = nullptr;            // [B, N, H, D] out
  Strides grad_q_strides;
  void* grad_k = nullptr;            // [B, N, Hkv, D] out
  Strides grad_k_strides;
  void* grad_v = nullptr;            // [B, N, Hkv, D] out
  Strides grad_v_strides;
  RopeTables rope;                   // optional: the tables gather rotated with (head_dim even)
};

}  // namespace lighthouse
