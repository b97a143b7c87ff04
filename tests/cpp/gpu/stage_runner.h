// Runs every stage on the CPU reference and on the GPU with the same inputs
// for one problem shape, and checks the GPU bits against the CPU bits. Each
// GPU stage consumes the CPU's outputs of the previous stage, so a failure
// names one stage. Each GPU stage runs three times, its outputs poisoned
// before each run, and must give the CPU's bits every time.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <utility>
#include <random>
#include <string>

#include "gpu_harness.h"
#include "lighthouse/config.h"
#include "lighthouse/cpu.h"
#include "lighthouse/cuda.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"

namespace gputest {

struct Shape {
  std::string name;
  int64_t batch = 1, seq_len = 4096, heads = 2, kv_heads = 2, head_dim = 64;
  int pooling = 4, levels = 3;
  int64_t topk = 256;
  int tile_budget = 128;
  lighthouse::Selection selection = lighthouse::Selection::kPaper;
  DType dtype = DType::kBFloat16;
  Layout in_layout = Layout::kSeqMajor;    // [B, N, *, D] tensors
  Layout sel_layout = Layout::kHeadMajor;  // [B, *, S, D] tensors
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.name; }

inline lighthouse::Config config_of(const Shape& s) {
  lighthouse::Config c;
  c.levels = s.levels;
  c.pooling = s.pooling;
  c.topk = s.topk;
  c.tile_budget = s.tile_budget;
  c.selection = s.selection;
  return c;
}

inline lighthouse::Dims dims_of(const Shape& s) {
  lighthouse::Dims d;
  d.batch = s.batch;
  d.seq_len = s.seq_len;
  d.heads = s.heads;
  d.kv_heads = s.kv_heads;
  d.head_dim = s.head_dim;
  return d;
}

constexpr int kRuns = 3;

// Poisons the outputs' device copies, runs `gpu`, and compares every output
// with its CPU bits; kRuns times.
template <typename Gpu>
void expect_same_tensors(std::initializer_list<std::pair<Tensor*, const char*>> outs, Gpu&& gpu) {
  for (int run = 0; run < kRuns; ++run) {
    for (auto& o : outs) o.first->poison_device();
    gpu();
    sync();
    for (auto& o : outs)
      EXPECT_TRUE(same_bits(*o.first, o.first->download(), (std::string(o.second) + " (run " + std::to_string(run) + ")").c_str()));
  }
}

template <typename T, typename Gpu>
void expect_same_arrays(std::initializer_list<std::pair<Array<T>*, const char*>> outs, Gpu&& gpu) {
  for (int run = 0; run < kRuns; ++run) {
    for (auto& o : outs) o.first->poison_device();
    gpu();
    sync();
    for (auto& o : outs)
      EXPECT_TRUE(same_array(o.first->values(), o.first->download(),
                             (std::string(o.second) + " (run " + std::to_string(run) + ")").c_str()));
  }
}

// The CPU's selection (paper rule) from the scores qk, kq: indices and slots
// on the host, for the stages after select.
inline void cpu_select(const lighthouse::Dims& d, const lighthouse::Geometry& g, Array<float>& qk, Array<float>& kq,
                       Array<int32_t>& indices, Array<int32_t>& slots) {
  lighthouse::SelectParams sp;
  sp.dims = d;
  sp.geo = g;
  sp.scores_qk = qk.host(), sp.scores_kq = kq.host();
  sp.indices = indices.host(), sp.slots = slots.host();
  lighthouse::cpu::select(sp);
}

// scatter of o_sel (on the device) through `slots` into an output of
// `out_layout`: the GPU's bits against the CPU's.
inline void check_scatter(const lighthouse::Dims& d, const lighthouse::Geometry& g, DType t, Tensor& o_sel,
                          Array<int32_t>& slots, Layout out_layout, std::mt19937_64& rng) {
  Tensor out(t, d.batch, d.seq_len, d.heads, d.head_dim, out_layout, rng);
  lighthouse::ScatterParams p;
  p.dims = d;
  p.geo = g;
  p.dtype = t;
  p.o_sel = o_sel.host(), p.o_sel_strides = o_sel.strides();
  p.slots = slots.host();
  p.out = out.host(), p.out_strides = out.strides();
  lighthouse::cpu::scatter(p);
  p.o_sel = o_sel.device_ptr();
  p.slots = slots.device();
  p.out = out.device_ptr();
  SCOPED_TRACE("scatter");
  expect_same_tensors({{&out, "out"}}, [&] { lighthouse::cuda::scatter(p, nullptr); });
}

// gather_backward of the gradients gq_sel, gk_sel, gv_sel (on the device)
// through `slots` into gradients of `out_layout`, with the rope tables
// rope_host / rope_device (none by default): the GPU's bits against the CPU's.
inline void check_gather_backward(const lighthouse::Dims& d, const lighthouse::Geometry& g, DType t, Tensor& gq_sel,
                                  Tensor& gk_sel, Tensor& gv_sel, Array<int32_t>& slots, Layout out_layout,
                                  std::mt19937_64& rng, const lighthouse::RopeTables& rope_host = {},
                                  const lighthouse::RopeTables& rope_device = {}) {
  const int64_t B = d.batch, N = d.seq_len, H = d.heads, Hkv = d.kv_heads, D = d.head_dim;
  Tensor gq(t, B, N, H, D, out_layout, rng), gk(t, B, N, Hkv, D, out_layout, rng), gv(t, B, N, Hkv, D, out_layout, rng);
  lighthouse::GatherBackwardParams p;
  p.dims = d;
  p.geo = g;
  p.dtype = t;
  p.grad_q_sel = gq_sel.host(), p.grad_q_sel_strides = gq_sel.strides();
  p.grad_k_sel = gk_sel.host(), p.grad_k_sel_strides = gk_sel.strides();
  p.grad_v_sel = gv_sel.host(), p.grad_v_sel_strides = gv_sel.strides();
  p.slots = slots.host();
  p.grad_q = gq.host(), p.grad_q_strides = gq.strides();
  p.grad_k = gk.host(), p.grad_k_strides = gk.strides();
  p.grad_v = gv.host(), p.grad_v_strides = gv.strides();
  p.rope = rope_host;
  lighthouse::cpu::gather_backward(p);
  p.grad_q_sel = gq_sel.device_ptr(), p.grad_k_sel = gk_sel.device_ptr(), p.grad_v_sel = gv_sel.device_ptr();
  p.slots = slots.device();
  p.grad_q = gq.device_ptr(), p.grad_k = gk.device_ptr(), p.grad_v = gv.device_ptr();
  p.rope = rope_device;
  SCOPED_TRACE("gather_backward");
  expect_same_tensors({{&gq, "grad_q"}, {&gk, "grad_k"}, {&gv, "grad_v"}},
                      [&] { lighthouse::cuda::gather_backward(p, nullptr); });
}

// All six stages of `shape` on fresh random inputs drawn from `seed`.
inline void check_all_stages(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const lighthouse::Dims d = dims_of(shape);
  const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(shape), shape.seq_len);
  const int64_t B = d.batch, N = d.seq_len, H = d.heads, Hkv = d.kv_heads, D = d.head_dim, S = g.kept;
  const DType t = shape.dtype;
  const int64_t score_len = B * Hkv * g.pyramid_len;

  Tensor q(t, B, N, H, D, shape.in_layout, rng), k(t, B, N, Hkv, D, shape.in_layout, rng),
      v(t, B, N, Hkv, D, shape.in_layout, rng);
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);
  q.upload();
  k.upload();
  v.upload();

  // pool_score
  Array<float> qk(score_len), kq(score_len);
  {
    lighthouse::PoolScoreParams p;
    p.dims = d;
    p.geo = g;
    p.dtype = t;
    p.q = q.host();
    p.q_strides = q.strides();
    p.k = k.host();
    p.k_strides = k.strides();
    p.scores_qk = qk.host();
    p.scores_kq = kq.host();
    lighthouse::cpu::pool_score(p);
    p.q = q.device_ptr();
    p.k = k.device_ptr();
    p.scores_qk = qk.device();
    p.scores_kq = kq.device();
    SCOPED_TRACE("pool_score");
    expect_same_arrays<float>({{&qk, "scores_qk"}, {&kq, "scores_kq"}}, [&] {
      lighthouse::cuda::pool_score(p, nullptr);
    });
  }
  qk.upload();
  kq.upload();

  // select, on the CPU's scores
  Array<int32_t> indices(B * Hkv * S), slots(score_len);
  {
    lighthouse::SelectParams p;
    p.dims = d;
    p.geo = g;
    p.selection = shape.selection;
    p.scores_qk = qk.host();
    p.scores_kq = kq.host();
    p.indices = indices.host();
    p.slots = slots.host();
    lighthouse::cpu::select(p);
    p.scores_qk = qk.device();
    p.scores_kq = kq.device();
    p.indices = indices.device();
    p.slots = slots.device();
    SCOPED_TRACE("select");
    expect_same_arrays<int32_t>({{&indices, "indices"}, {&slots, "slots"}}, [&] {
      lighthouse::cuda::select(p, nullptr);
    });
  }
  indices.upload();
  slots.upload();

  // gather
  {
    Tensor q_sel(t, B, S, H, D, shape.sel_layout, rng), k_sel(t, B, S, Hkv, D, shape.sel_layout, rng),
        v_sel(t, B, S, Hkv, D, shape.sel_layout, rng);
    lighthouse::GatherParams p;
    p.dims = d;
    p.geo = g;
    p.dtype = t;
    p.q = q.host(), p.q_strides = q.strides();
    p.k = k.host(), p.k_strides = k.strides();
    p.v = v.host(), p.v_strides = v.strides();
    p.indices = indices.host();
    p.q_sel = q_sel.host(), p.q_sel_strides = q_sel.strides();
    p.k_sel = k_sel.host(), p.k_sel_strides = k_sel.strides();
    p.v_sel = v_sel.host(), p.v_sel_strides = v_sel.strides();
    lighthouse::cpu::gather(p);
    p.q = q.device_ptr(), p.k = k.device_ptr(), p.v = v.device_ptr();
    p.indices = indices.device();
    p.q_sel = q_sel.device_ptr(), p.k_sel = k_sel.device_ptr(), p.v_sel = v_sel.device_ptr();
    SCOPED_TRACE("gather");
    expect_same_tensors({{&q_sel, "q_sel"}, {&k_sel, "k_sel"}, {&v_sel, "v_sel"}},
                        [&] { lighthouse::cuda::gather(p, nullptr); });
  }

  // scatter, of random attention outputs
  {
    Tensor o_sel(t, B, S, H, D, shape.sel_layout, rng);
    o_sel.fill_normal(rng);
    o_sel.upload();
    check_scatter(d, g, t, o_sel, slots, shape.in_layout, rng);
  }

  // scatter_backward, of a random output gradient
  {
    Tensor grad_out(t, B, N, H, D, shape.in_layout, rng), grad_o_sel(t, B, S, H, D, shape.sel_layout, rng);
    grad_out.fill_normal(rng);
    grad_out.upload();
    lighthouse::ScatterBackwardParams p;
    p.dims = d;
    p.geo = g;
    p.dtype = t;
    p.grad_out = grad_out.host(), p.grad_out_strides = grad_out.strides();
    p.indices = indices.host();
    p.grad_o_sel = grad_o_sel.host(), p.grad_o_sel_strides = grad_o_sel.strides();
    lighthouse::cpu::scatter_backward(p);
    p.grad_out = grad_out.device_ptr();
    p.indices = indices.device();
    p.grad_o_sel = grad_o_sel.device_ptr();
    SCOPED_TRACE("scatter_backward");
    expect_same_tensors({{&grad_o_sel, "grad_o_sel"}}, [&] { lighthouse::cuda::scatter_backward(p, nullptr); });
  }

  // gather_backward, of random gradients of the gathered tensors (with some -0 elements), through a slots map
  // with entries dropped (not kept): every 5th coarsest entry and the ragged tail's, so that some positions lack
  // the coarsest term and some have no term at all
  for (int64_t bk = 0; bk < B * Hkv; ++bk) {
    int32_t* row = slots.values().data() + bk * g.pyramid_len;
    for (int64_t i = 0; i < g.coarsest(); i += 5) row[g.offset(g.levels) + i] = -1;
    for (int64_t t = g.coarsest() * g.block(g.levels); t < N; ++t) row[t] = -1;  // level 1 starts the pyramid
  }
  slots.upload();
  {
    Tensor gq_sel(t, B, S, H, D, shape.sel_layout, rng), gk_sel(t, B, S, Hkv, D, shape.sel_layout, rng),
        gv_sel(t, B, S, Hkv, D, shape.sel_layout, rng);
    for (Tensor* x : {&gq_sel, &gk_sel, &gv_sel}) {
      x->fill_normal(rng);
      x->negative_zeros(7);
      x->upload();
    }
    check_gather_backward(d, g, t, gq_sel, gk_sel, gv_sel, slots, shape.in_layout, rng);
  }
}

}  // namespace gputest
