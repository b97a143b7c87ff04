// Uses the installed library the way a C++ user would: the CPU layer forward
// and backward on random inputs, and an argument error. Prints "consumer: ok"
// when everything holds.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "lighthouse/error.h"
#include "lighthouse/geometry.h"
#include "lighthouse/layer.h"

int main() {
  lighthouse::Config config;
  config.levels = 2;
  config.pooling = 2;
  config.topk = 64;
  config.tile_budget = 32;
  const int64_t n = 1024, heads = 2, kv_heads = 1, dim = 8;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(n * heads * dim), kv(n * kv_heads * dim);
  for (float& x : q) x = normal(rng);
  for (float& x : kv) x = normal(rng);

  lighthouse::LayerInputs in;
  in.dims = {1, n, heads, kv_heads, dim};
  in.q = q.data();
  in.k = in.v = kv.data();
  in.q_strides = lighthouse::contiguous_bnhd(n, heads, dim);
  in.k_strides = in.v_strides = lighthouse::contiguous_bnhd(n, kv_heads, dim);
  lighthouse::Layer layer(config, in);
  std::vector<float> out(q.size()), grad_q(q.size()), grad_k(kv.size()), grad_v(kv.size());
  layer.forward(out.data(), in.q_strides);
  layer.backward(q.data(), in.q_strides, grad_q.data(), in.q_strides, grad_k.data(), in.k_strides, grad_v.data(),
                 in.k_strides);
  const int64_t kept = lighthouse::Geometry::make(config, n).kept;
  if (static_cast<int64_t>(layer.indices().size()) != kept) {
    std::printf("consumer: expected %lld indices, got %zu\n", static_cast<long long>(kept), layer.indices().size());
    return 1;
  }
  for (const auto* t : {&out, &grad_q, &grad_k, &grad_v})
    for (float x : *t)
      if (!std::isfinite(x)) {
        std::printf("consumer: a non-finite result\n");
        return 1;
      }

  try {
    lighthouse::Geometry::make(config, 100);
    std::printf("consumer: no error for a short sequence\n");
    return 1;
  } catch (const lighthouse::Error& e) {
    if (std::string(e.what()).rfind("lighthouse: seq_len: expected", 0) != 0) {
      std::printf("consumer: unexpected message: %s\n", e.what());
      return 1;
    }
  }
  std::printf("consumer: ok (S = %lld of N = %lld)\n", static_cast<long long>(kept), static_cast<long long>(n));
  return 0;
}
