// The Lighthouse layer on the CPU: forward chains
//   pool_score (or the dilated scorer) -> select -> gather -> attention -> scatter
// and keeps what the backward needs; backward runs
//   scatter_backward -> attention_backward -> gather_backward.
// Intermediate buffers are owned by the layer and have the inputs' dtype
// (scores, lse and indices are fp32 / int32).
#pragma once

#include <cstdint>
#include <vector>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"

namespace lighthouse {

// The layer's inputs. The tensors are not copied: they must stay alive and
// unchanged until the last backward.
struct LayerInputs {
  Dims dims;
  DType dtype = DType::kFloat32;
  const void* q = nullptr;  // [B, N, H, D]
  Strides q_strides;
  const void* k = nullptr;  // [B, N, Hkv, D]
  Strides k_strides;
  const void* v = nullptr;  // [B, N, Hkv, D]
  Strides v_strides;
  // Optional pyramid scores [B, Hkv, pyramid_len] (both or neither): select
  // from them instead of running the scorer.
  const float* scores_qk = nullptr;
  const float* scores_kq = nullptr;
};

// Wall time of each stage of the latest forward / backward, in seconds.
// pool_score includes the dilated scorer when it is used.
struct StageTimes {
  double pool_score = 0, select = 0, gather = 0, attention = 0, scatter = 0;
  double scatter_backward = 0, attention_backward = 0, gather_backward = 0;
};

class Layer {
 public:
  // Validates the configuration against the inputs; throws lighthouse::Error.
  Layer(const Config& config, const LayerInputs& inputs);

  // out: [B, N, H, D] of the inputs' dtype.
  void forward(void* out, Strides out_strides);

  // grad_out: [B, N, H, D]; grad_q: [B, N, H, D]; grad_k, grad_v:
  // [B, N, Hkv, D]; all of the inputs' dtype. Needs a forward first.
  void backward(const void* grad_out, Strides grad_out_strides, void* grad_q, Strides grad_q_strides, void* grad_k,
                Strides grad_k_strides, void* grad_v, Strides grad_v_strides);

  // [B, Hkv, S] pyramid indices of the kept entries, in causal order.
  const std::vector<int32_t>& indices() const { return indices_; }
  // [B, Hkv, pyramid_len] the scores selection used (copies of given scores).
  const std::vector<float>& scores_qk() const { return scores_qk_; }
  const std::vector<float>& scores_kq() const { return scores_kq_; }
  const Geometry& geometry() const { return geo_; }
  const Config& config() const { return config_; }
  const StageTimes& times() const { return times_; }

 private:
  Config config_;
  LayerInputs in_;
  Geometry geo_;
  float scale_ = 0.0f;
  bool forward_done_ = false;
  std::vector<float> scores_qk_, scores_kq_;
  std::vector<int32_t> indices_, slots_;
  std::vector<uint8_t> q_sel_, k_sel_, v_sel_, o_sel_;  // [B, H|Hkv, S, D] of dtype
  std::vector<float> lse_;                             // [B, H, S]
  StageTimes times_;
};

}  // namespace lighthouse
