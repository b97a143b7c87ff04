// The dilated scorer's base scores. Position j belongs to residue class
// j mod delta; each class runs as its own causal sequence (the authors' fold
// of delta consecutive tokens into heads, extended to any N). Per query head
// h with KV head g:
//   s_qk_h[j] = || SDPA(q_h, k_g, v_g)[j] ||   (queries attend to keys)
//   s_kq_h[j] = || SDPA(k_g, q_h, v_g)[j] ||   (roles of q and k swapped)
// and a KV head scores the max over its group's query heads. The pyramid
// follows from pool_score with these as base_qk / base_kq.
#pragma once

#include <cstdint>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/params.h"

namespace lighthouse {

struct DilatedParams {
  Dims dims;
  DType dtype = DType::kFloat32;
  int dilation = 4;           // delta >= 1
  float scale = 0.0f;         // softmax scale; 0 means 1/sqrt(head_dim)
  const void* q = nullptr;    // [B, N, H, D]
  Strides q_strides;
  const void* k = nullptr;    // [B, N, Hkv, D]
  Strides k_strides;
  const void* v = nullptr;    // [B, N, Hkv, D]
  Strides v_strides;
  float* base_qk = nullptr;   // [B, Hkv, N] out
  float* base_kq = nullptr;   // [B, Hkv, N] out
};

namespace cpu {
void dilated_scores(const DilatedParams& params);
}  // namespace cpu

}  // namespace lighthouse
