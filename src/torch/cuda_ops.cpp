// CUDA implementations: the lighthouse::cuda kernels, launched on the current
// stream of the inputs' device. float64 is rejected (the CUDA kernels are
// float32 / bfloat16 / float16 only). The device guard is taken after the
// checks, which reject inputs spread over several devices.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "errors.h"
#include "lighthouse/cuda.h"
#include "stage_calls.h"

namespace lighthouse::torch_ops {
namespace {

using at::Tensor;
constexpr Float64 kCudaFloat64 = Float64::kRejected;

void* current_stream(const Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.get_device()).stream(); }

std::tuple<Tensor, Tensor> pool_score_cuda(const Tensor& q, const Tensor& k, const std::optional<Tensor>& base_qk,
    const std::optional<Tensor>& base_kq, int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call =
        prepare_pool_score(q, k, nullptr, base_qk, base_kq, make_config(levels, pooling, topk, tile_budget), kCudaFloat64);
    const c10::cuda::CUDAGuard guard(q.device());
    cuda::pool_score(call.params, current_stream(q));
    return std::make_tuple(call.scores_qk, call.scores_kq);
  });
}

std::tuple<Tensor, Tensor> select_cuda(const Tensor& scores_qk, const Tensor& scores_kq, int64_t seq_len,
                                       int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget,
                                      c10::string_view selection) {
  return translating_errors([&] {
    auto call = prepare_select(scores_qk, scores_kq, seq_len, make_config(levels, pooling, topk, tile_budget),
                               parse_selection(std::string(selection)));
    const c10::cuda::CUDAGuard guard(scores_qk.device());
    cuda::select(call.params, current_stream(scores_qk));
    return std::make_tuple(call.indices, call.slots);
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> pool_score_pooled_cuda(const Tensor& q, const Tensor& k,
    const Tensor& v, const std::optional<Tensor>& base_qk, const std::optional<Tensor>& base_kq, int64_t levels,
    int64_t pooling, int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call = prepare_pool_score(q, k, &v, base_qk, base_kq, make_config(levels, pooling, topk, tile_budget),
                                   kCudaFloat64);
    const c10::cuda::CUDAGuard guard(q.device());
    cuda::pool_score(call.params, current_stream(q));
    return std::make_tuple(call.scores_qk, call.scores_kq, call.pooled_q, call.pooled_k, call.pooled_v);
  });
}

std::tuple<Tensor, Tensor, Tensor> gather_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& indices, const std::optional<Tensor>& pooled_q, const std::optional<Tensor>& pooled_k,
    const std::optional<Tensor>& pooled_v, const std::optional<Tensor>& rope_cos, const std::optional<Tensor>& rope_sin,
    int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget, bool rope_interleaved) {
  return translating_errors([&] {
    auto call = prepare_gather(q, k, v, indices, pooled_q, pooled_k, pooled_v, rope_cos, rope_sin, rope_interleaved,
                               make_config(levels, pooling, topk, tile_budget), kCudaFloat64);
    const c10::cuda::CUDAGuard guard(q.device());
    cuda::gather(call.params, current_stream(q));
    return std::make_tuple(call.q_sel, call.k_sel, call.v_sel);
  });
}

Tensor scatter_cuda(const Tensor& o_sel, const Tensor& slots, int64_t seq_len, int64_t levels, int64_t pooling,
                    int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call = prepare_scatter(o_sel, slots, seq_len, make_config(levels, pooling, topk, tile_budget), kCudaFloat64);
    const c10::cuda::CUDAGuard guard(o_sel.device());
    cuda::scatter(call.params, current_stream(o_sel));
    return call.out;
  });
}

Tensor scatter_backward_cuda(const Tensor& grad_out, const Tensor& indices, int64_t levels, int64_t pooling,
                             int64_t topk, int64_t tile_budget) {
  return translating_errors([&] {
    auto call =
        prepare_scatter_backward(grad_out, indices, make_config(levels, pooling, topk, tile_budget), kCudaFloat64);
    const c10::cuda::CUDAGuard guard(grad_out.device());
    cuda::scatter_backward(call.params, current_stream(grad_out));
    return call.grad_o_sel;
  });
}

std::tuple<Tensor, Tensor, Tensor> gather_backward_cuda(const Tensor& grad_q_sel, const Tensor& grad_k_sel,
    const Tensor& grad_v_sel, const Tensor& slots, int64_t seq_len, const std::optional<Tensor>& rope_cos,
    const std::optional<Tensor>& rope_sin, int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget,
    bool rope_interleaved) {
  return translating_errors([&] {
    auto call = prepare_gather_backward(grad_q_sel, grad_k_sel, grad_v_sel, slots, seq_len, rope_cos, rope_sin,
                                        rope_interleaved, make_config(levels, pooling, topk, tile_budget), kCudaFloat64);
    const c10::cuda::CUDAGuard guard(grad_q_sel.device());
    // With rope tables the kernels take workspace: from PyTorch's allocator, like every other buffer of the step.
    const int64_t bytes = cuda::gather_backward_workspace_bytes(call.params);
    const Tensor workspace = at::empty({bytes}, grad_q_sel.options().dtype(at::kByte));
    cuda::gather_backward(call.params, current_stream(grad_q_sel), bytes > 0 ? workspace.data_ptr() : nullptr);
    return std::make_tuple(call.grad_q, call.grad_k, call.grad_v);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lighthouse, CUDA, m) {
  m.impl("pool_score", &pool_score_cuda);
  m.impl("pool_score_pooled", &pool_score_pooled_cuda);
  m.impl("select", &select_cuda);
  m.impl("gather", &gather_cuda);
  m.impl("scatter", &scatter_cuda);
  m.impl("scatter_backward", &scatter_backward_cuda);
  m.impl("gather_backward", &gather_backward_cuda);
}

}  // namespace lighthouse::torch_ops
