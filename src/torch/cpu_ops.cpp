// CPU implementations: the reference kernels of lighthouse::cpu, which also
// accept float64 (for fp64 gradcheck).
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "errors.h"
#include "lighthouse/cpu.h"
#include "stage_calls.h"

namespace lighthouse::torch_ops {
namespace {

using at::Tensor;
constexpr Float64 kCpuFloat64 = Float64::kAccepted;

std::tuple<Tensor, Tensor> pool_score_cpu(const Tensor& q, const Tensor& k, const std::optional<Tensor>& base_qk,
    const std::optional<Tensor>& base_kq, int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call = prepare_pool_score(q, k, nullptr, base_qk, base_kq, make_config(levels, pooling, topk, tile_budget), kCpuFloat64);
    cpu::pool_score(call.params);
    return std::make_tuple(call.scores_qk, call.scores_kq);
  });
}

std::tuple<Tensor, Tensor> select_cpu(const Tensor& scores_qk, const Tensor& scores_kq, int64_t seq_len,
                                      int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget,
                                      c10::string_view selection) {
  return translating_errors([&] {
    auto call = prepare_select(scores_qk, scores_kq, seq_len, make_config(levels, pooling, topk, tile_budget),
                               parse_selection(std::string(selection)));
    cpu::select(call.params);
    return std::make_tuple(call.indices, call.slots);
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> pool_score_pooled_cpu(const Tensor& q, const Tensor& k,
    const Tensor& v, const std::optional<Tensor>& base_qk, const std::optional<Tensor>& base_kq, int64_t levels,
    int64_t pooling, int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call = prepare_pool_score(q, k, &v, base_qk, base_kq, make_config(levels, pooling, topk, tile_budget),
                                   kCpuFloat64);
    cpu::pool_score(call.params);
    return std::make_tuple(call.scores_qk, call.scores_kq, call.pooled_q, call.pooled_k, call.pooled_v);
  });
}

std::tuple<Tensor, Tensor, Tensor> gather_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& indices, const std::optional<Tensor>& pooled_q, const std::optional<Tensor>& pooled_k,
    const std::optional<Tensor>& pooled_v, const std::optional<Tensor>& rope_cos, const std::optional<Tensor>& rope_sin,
    int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget, bool rope_interleaved) {
  return translating_errors([&] {
    auto call = prepare_gather(q, k, v, indices, pooled_q, pooled_k, pooled_v, rope_cos, rope_sin, rope_interleaved,
                               make_config(levels, pooling, topk, tile_budget), kCpuFloat64);
    cpu::gather(call.params);
    return std::make_tuple(call.q_sel, call.k_sel, call.v_sel);
  });
}

Tensor scatter_cpu(const Tensor& o_sel, const Tensor& slots, int64_t seq_len, int64_t levels, int64_t pooling,
                   int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call = prepare_scatter(o_sel, slots, seq_len, make_config(levels, pooling, topk, tile_budget), kCpuFloat64);
    cpu::scatter(call.params);
    return call.out;
  });
}

Tensor scatter_backward_cpu(const Tensor& grad_out, const Tensor& indices, int64_t levels, int64_t pooling,
                            int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call =
        prepare_scatter_backward(grad_out, indices, make_config(levels, pooling, topk, tile_budget), kCpuFloat64);
    cpu::scatter_backward(call.params);
    return call.grad_o_sel;
  });
}

std::tuple<Tensor, Tensor, Tensor> gather_backward_cpu(const Tensor& grad_q_sel, const Tensor& grad_k_sel,
    const Tensor& grad_v_sel, const Tensor& slots, int64_t seq_len, const std::optional<Tensor>& rope_cos,
    const std::optional<Tensor>& rope_sin, int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget,
    bool rope_interleaved) {
  return translating_errors([&] {
    auto call = prepare_gather_backward(grad_q_sel, grad_k_sel, grad_v_sel, slots, seq_len, rope_cos, rope_sin,
                                        rope_interleaved, make_config(levels, pooling, topk, tile_budget), kCpuFloat64);
    cpu::gather_backward(call.params);
    return std::make_tuple(call.grad_q, call.grad_k, call.grad_v);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lighthouse, CPU, m) {
  m.impl("pool_score", &pool_score_cpu);
  m.impl("pool_score_pooled", &pool_score_pooled_cpu);
  m.impl("select", &select_cpu);
  m.impl("gather", &gather_cpu);
  m.impl("scatter", &scatter_cpu);
  m.impl("scatter_backward", &scatter_backward_cpu);
  m.impl("gather_backward", &gather_backward_cpu);
}

}  // namespace lighthouse::torch_ops
