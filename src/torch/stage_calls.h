// One "prepare" function per stage: checks the op's tensors, derives the
// geometry, allocates the outputs on the inputs' device and fills the
// stage's params. The CPU and CUDA ops differ only in the kernel they then
// call, so both share these.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "lighthouse/params.h"
#include "tensor_checks.h"

namespace lighthouse::torch_ops {

// With v (pool_score_pooled) the call also fills the pooled level-L
// tensors that gather can take instead of re-pooling level L.
struct PoolScoreCall {
  PoolScoreParams params;
  at::Tensor scores_qk, scores_kq;      // [B, Hkv, pyramid_len] fp32
  at::Tensor pooled_q;                  // [B, n_L, H, D] contiguous; undefined without v
  at::Tensor pooled_k, pooled_v;        // [B, n_L, Hkv, D] contiguous; undefined without v
};
PoolScoreCall prepare_pool_score(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v,
                                 const std::optional<at::Tensor>& base_qk, const std::optional<at::Tensor>& base_kq,
                                 const Config& config, Float64 float64);

struct SelectCall {
  SelectParams params;
  at::Tensor indices;  // [B, Hkv, S] int32
  at::Tensor slots;    // [B, Hkv, pyramid_len] int32
};
SelectCall prepare_select(const at::Tensor& scores_qk, const at::Tensor& scores_kq, int64_t seq_len,
                          const Config& config, Selection selection);

// q_sel, k_sel and v_sel are [B, H|Hkv, S, D] views of [B, S, H|Hkv, D]
// memory: the layout the fused SDPA kernels read without a copy.
struct GatherCall {
  GatherParams params;
  at::Tensor q_sel, k_sel, v_sel;
};
// pooled_q/k/v: pool_score_pooled's level-L tensors, all three or none.
// rope_cos/rope_sin: float32 rotation tables, both or none (see RopeTables).
GatherCall prepare_gather(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& indices,
                          const std::optional<at::Tensor>& pooled_q, const std::optional<at::Tensor>& pooled_k,
                          const std::optional<at::Tensor>& pooled_v, const std::optional<at::Tensor>& rope_cos,
                          const std::optional<at::Tensor>& rope_sin, bool rope_interleaved, const Config& config,
                          Float64 float64);

struct ScatterCall {
  ScatterParams params;
  at::Tensor out;  // [B, N, H, D] contiguous
};
ScatterCall prepare_scatter(const at::Tensor& o_sel, const at::Tensor& slots, int64_t seq_len, const Config& config,
                            Float64 float64);

struct ScatterBackwardCall {
  ScatterBackwardParams params;
  at::Tensor grad_o_sel;  // [B, H, S, D] view of [B, S, H, D] memory, like gather's outputs
};
ScatterBackwardCall prepare_scatter_backward(const at::Tensor& grad_out, const at::Tensor& indices,
                                             const Config& config, Float64 float64);

struct GatherBackwardCall {
  GatherBackwardParams params;
  at::Tensor grad_q, grad_k, grad_v;  // [B, N, H|Hkv, D] contiguous
};
// rope_cos/rope_sin: the tables gather rotated with, both or none.
GatherBackwardCall prepare_gather_backward(const at::Tensor& grad_q_sel, const at::Tensor& grad_k_sel,
                                           const at::Tensor& grad_v_sel, const at::Tensor& slots, int64_t seq_len,
                                           const std::optional<at::Tensor>& rope_cos,
                                           const std::optional<at::Tensor>& rope_sin, bool rope_interleaved,
                                           const Config& config, Float64 float64);

}  // namespace lighthouse::torch_ops
