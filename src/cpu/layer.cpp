// The CPU layer: the stage kernels chained with layer-owned buffers, each
// stage timed on its own.
#include "lighthouse/layer.h"

#include <chrono>
#include <string>

#include "lighthouse/attention.h"
#include "lighthouse/cpu.h"
#include "lighthouse/dilated.h"
#include "lighthouse/error.h"

namespace lighthouse {
namespace {

// Runs fn and stores its wall time in seconds.
template <typename F>
void timed(double& seconds, F&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<uint8_t> buffer(int64_t elements, DType dtype) {
  return std::vector<uint8_t>(static_cast<size_t>(elements * element_size(dtype)));
}

}  // namespace

Layer::Layer(const Config& config, const LayerInputs& inputs) : config_(config), in_(inputs) {
  validate(config_, in_.dims);
  geo_ = Geometry::make(config_, in_.dims.seq_len);
  scale_ = softmax_scale(config_, in_.dims.head_dim);
  if (in_.dtype != DType::kFloat32 && in_.dtype != DType::kBFloat16 && in_.dtype != DType::kFloat16 &&
      in_.dtype != DType::kFloat64)
    fail("dtype", "float32, bfloat16, float16 or float64", static_cast<int>(in_.dtype));
  if (in_.q == nullptr) fail("q", "a non-null pointer", "nullptr");
  if (in_.k == nullptr) fail("k", "a non-null pointer", "nullptr");
  if (in_.v == nullptr) fail("v", "a non-null pointer", "nullptr");
  if ((in_.scores_qk == nullptr) != (in_.scores_kq == nullptr))
    fail("scores_qk / scores_kq", "both given or both absent", in_.scores_qk == nullptr ? "only scores_kq" : "only scores_qk");
}

void Layer::forward(void* out, Strides out_strides) {
  const Dims& d = in_.dims;
  const int64_t S = geo_.kept, pyr = d.batch * d.kv_heads * geo_.pyramid_len;
  times_ = StageTimes{};
  forward_done_ = false;

  scores_qk_.assign(static_cast<size_t>(pyr), 0.0f);
  scores_kq_.assign(static_cast<size_t>(pyr), 0.0f);
  if (in_.scores_qk != nullptr) {
    scores_qk_.assign(in_.scores_qk, in_.scores_qk + pyr);
    scores_kq_.assign(in_.scores_kq, in_.scores_kq + pyr);
  } else {
    timed(times_.pool_score, [&] {
      PoolScoreParams p;
      p.dims = d;
      p.geo = geo_;
      p.dtype = in_.dtype;
      p.q = in_.q;
      p.q_strides = in_.q_strides;
      p.k = in_.k;
      p.k_strides = in_.k_strides;
      p.scores_qk = scores_qk_.data();
      p.scores_kq = scores_kq_.data();
      std::vector<float> base_qk, base_kq;
      if (config_.scorer == Scorer::kDilated) {
        base_qk.resize(static_cast<size_t>(d.batch * d.kv_heads * d.seq_len));
        base_kq.resize(base_qk.size());
        DilatedParams dp;
        dp.dims = d;
        dp.dtype = in_.dtype;
        dp.dilation = config_.dilation;
        dp.q = in_.q;
        dp.q_strides = in_.q_strides;
        dp.k = in_.k;
        dp.k_strides = in_.k_strides;
        dp.v = in_.v;
        dp.v_strides = in_.v_strides;
        dp.base_qk = base_qk.data();
        dp.base_kq = base_kq.data();
        cpu::dilated_scores(dp);
        p.base_qk = base_qk.data();
        p.base_kq = base_kq.data();
      }
      cpu::pool_score(p);
    });
  }

  indices_.assign(static_cast<size_t>(d.batch * d.kv_heads * S), -1);
  slots_.assign(static_cast<size_t>(pyr), -1);
  timed(times_.select, [&] {
    SelectParams p;
    p.dims = d;
    p.geo = geo_;
    p.selection = config_.selection;
    p.scores_qk = scores_qk_.data();
    p.scores_kq = scores_kq_.data();
    p.indices = indices_.data();
    p.slots = slots_.data();
    cpu::select(p);
  });

  const Strides q_sel_strides = contiguous_bhsd(d.heads, S, d.head_dim);
  const Strides kv_sel_strides = contiguous_bhsd(d.kv_heads, S, d.head_dim);
  q_sel_ = buffer(d.batch * d.heads * S * d.head_dim, in_.dtype);
  k_sel_ = buffer(d.batch * d.kv_heads * S * d.head_dim, in_.dtype);
  v_sel_ = buffer(d.batch * d.kv_heads * S * d.head_dim, in_.dtype);
  timed(times_.gather, [&] {
    GatherParams p;
    p.dims = d;
    p.geo = geo_;
    p.dtype = in_.dtype;
    p.q = in_.q;
    p.q_strides = in_.q_strides;
    p.k = in_.k;
    p.k_strides = in_.k_strides;
    p.v = in_.v;
    p.v_strides = in_.v_strides;
    p.indices = indices_.data();
    p.q_sel = q_sel_.data();
    p.q_sel_strides = q_sel_strides;
    p.k_sel = k_sel_.data();
    p.k_sel_strides = kv_sel_strides;
    p.v_sel = v_sel_.data();
    p.v_sel_strides = kv_sel_strides;
    cpu::gather(p);
  });

  o_sel_ = buffer(d.batch * d.heads * S * d.head_dim, in_.dtype);
  lse_.assign(static_cast<size_t>(d.batch * d.heads * S), 0.0f);
  timed(times_.attention, [&] {
    AttentionParams p;
    p.batch = d.batch;
    p.heads = d.heads;
    p.kv_heads = d.kv_heads;
    p.seq_len = S;
    p.head_dim = d.head_dim;
    p.scale = scale_;
    p.dtype = in_.dtype;
    p.q = q_sel_.data();
    p.q_strides = q_sel_strides;
    p.k = k_sel_.data();
    p.k_strides = kv_sel_strides;
    p.v = v_sel_.data();
    p.v_strides = kv_sel_strides;
    p.out = o_sel_.data();
    p.out_strides = q_sel_strides;
    p.lse = lse_.data();
    cpu::attention(p);
  });

  timed(times_.scatter, [&] {
    ScatterParams p;
    p.dims = d;
    p.geo = geo_;
    p.dtype = in_.dtype;
    p.o_sel = o_sel_.data();
    p.o_sel_strides = q_sel_strides;
    p.slots = slots_.data();
    p.out = out;
    p.out_strides = out_strides;
    cpu::scatter(p);
  });
  forward_done_ = true;
}

void Layer::backward(const void* grad_out, Strides grad_out_strides, void* grad_q, Strides grad_q_strides,
                     void* grad_k, Strides grad_k_strides, void* grad_v, Strides grad_v_strides) {
  if (!forward_done_) fail("Layer::backward", "a call after a successful forward", "no forward yet");
  const Dims& d = in_.dims;
  const int64_t S = geo_.kept;
  const Strides q_sel_strides = contiguous_bhsd(d.heads, S, d.head_dim);
  const Strides kv_sel_strides = contiguous_bhsd(d.kv_heads, S, d.head_dim);
  times_.scatter_backward = times_.attention_backward = times_.gather_backward = 0;

  std::vector<uint8_t> grad_o_sel = buffer(d.batch * d.heads * S * d.head_dim, in_.dtype);
  timed(times_.scatter_backward, [&] {
    ScatterBackwardParams p;
    p.dims = d;
    p.geo = geo_;
    p.dtype = in_.dtype;
    p.grad_out = grad_out;
    p.grad_out_strides = grad_out_strides;
    p.indices = indices_.data();
    p.grad_o_sel = grad_o_sel.data();
    p.grad_o_sel_strides = q_sel_strides;
    cpu::scatter_backward(p);
  });

  std::vector<uint8_t> grad_q_sel = buffer(d.batch * d.heads * S * d.head_dim, in_.dtype);
  std::vector<uint8_t> grad_k_sel = buffer(d.batch * d.kv_heads * S * d.head_dim, in_.dtype);
  std::vector<uint8_t> grad_v_sel = buffer(d.batch * d.kv_heads * S * d.head_dim, in_.dtype);
  timed(times_.attention_backward, [&] {
    AttentionBackwardParams p;
    p.batch = d.batch;
    p.heads = d.heads;
    p.kv_heads = d.kv_heads;
    p.seq_len = S;
    p.head_dim = d.head_dim;
    p.scale = scale_;
    p.dtype = in_.dtype;
    p.q = q_sel_.data();
    p.q_strides = q_sel_strides;
    p.k = k_sel_.data();
    p.k_strides = kv_sel_strides;
    p.v = v_sel_.data();
    p.v_strides = kv_sel_strides;
    p.out = o_sel_.data();
    p.out_strides = q_sel_strides;
    p.lse = lse_.data();
    p.grad_out = grad_o_sel.data();
    p.grad_out_strides = q_sel_strides;
    p.grad_q = grad_q_sel.data();
    p.grad_q_strides = q_sel_strides;
    p.grad_k = grad_k_sel.data();
    p.grad_k_strides = kv_sel_strides;
    p.grad_v = grad_v_sel.data();
    p.grad_v_strides = kv_sel_strides;
    cpu::attention_backward(p);
  });

  timed(times_.gather_backward, [&] {
    GatherBackwardParams p;
    p.dims = d;
    p.geo = geo_;
    p.dtype = in_.dtype;
    p.grad_q_sel = grad_q_sel.data();
    p.grad_q_sel_strides = q_sel_strides;
    p.grad_k_sel = grad_k_sel.data();
    p.grad_k_sel_strides = kv_sel_strides;
    p.grad_v_sel = grad_v_sel.data();
    p.grad_v_sel_strides = kv_sel_strides;
    p.slots = slots_.data();
    p.grad_q = grad_q;
    p.grad_q_strides = grad_q_strides;
    p.grad_k = grad_k;
    p.grad_k_strides = grad_k_strides;
    p.grad_v = grad_v;
    p.grad_v_strides = grad_v_strides;
    cpu::gather_backward(p);
  });
}

}  // namespace lighthouse
