// Dense causal attention on the CPU (tiled, online softmax, fp32
// accumulation): the attention inside the C++ layer and the building block of
// the dilated scorer. q is [B, H, S, D]; k and v are [B, Hkv, S, D] with
// H % Hkv == 0 (query head h reads KV head h / (H / Hkv)).
#pragma once

#include <cstdint>

#include "lighthouse/dtype.h"
#include "lighthouse/params.h"

namespace lighthouse {

struct AttentionParams {
  int64_t batch = 0, heads = 0, kv_heads = 0, seq_len = 0, head_dim = 0;
  float scale = 0.0f;            // softmax scale (> 0)
  DType dtype = DType::kFloat32;
  const void* q = nullptr;       // [B, H, S, D]
  Strides q_strides;
  const void* k = nullptr;       // [B, Hkv, S, D]
  Strides k_strides;
  const void* v = nullptr;       // [B, Hkv, S, D]
  Strides v_strides;
  void* out = nullptr;           // [B, H, S, D] out
  Strides out_strides;
  float* lse = nullptr;          // [B, H, S] out, natural-log sum of exp of scaled scores; may be null
};

struct AttentionBackwardParams {
  int64_t batch = 0, heads = 0, kv_heads = 0, seq_len = 0, head_dim = 0;
  float scale = 0.0f;
  DType dtype = DType::kFloat32;
  const void* q = nullptr;         // [B, H, S, D]
  Strides q_strides;
  const void* k = nullptr;         // [B, Hkv, S, D]
  Strides k_strides;
  const void* v = nullptr;         // [B, Hkv, S, D]
  Strides v_strides;
  const void* out = nullptr;       // [B, H, S, D] forward output
  Strides out_strides;
  const float* lse = nullptr;      // [B, H, S] from the forward
  const void* grad_out = nullptr;  // [B, H, S, D]
  Strides grad_out_strides;
  void* grad_q = nullptr;          // [B, H, S, D] out
  Strides grad_q_strides;
  void* grad_k = nullptr;          // [B, Hkv, S, D] out (summed over the group's query heads)
  Strides grad_k_strides;
  void* grad_v = nullptr;          // [B, Hkv, S, D] out
  Strides grad_v_strides;
};

namespace cpu {
void attention(const AttentionParams& params);
void attention_backward(const AttentionBackwardParams& params);
}  // namespace cpu

}  // namespace lighthouse
