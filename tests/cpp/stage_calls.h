// Calls of the six CPU stages on test buffers: fills each stage's params from
// the buffers' pointers and strides so the tests read as data flow.
#pragma once

#include <cstdint>

#include "buffers.h"
#include "lighthouse/cpu.h"
#include "lighthouse/params.h"

namespace lhtest {

inline lighthouse::Dims make_dims(int64_t batch, int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  lighthouse::Dims d;
  d.batch = batch;
  d.seq_len = seq_len;
  d.heads = heads;
  d.kv_heads = kv_heads;
  d.head_dim = head_dim;
  return d;
}

inline void run_pool_score(const lighthouse::Dims& dims, const lighthouse::Geometry& geo, const Buffer& q,
                           const Buffer& k, float* scores_qk, float* scores_kq) {
  lighthouse::PoolScoreParams p;
  p.dims = dims;
  p.geo = geo;
  p.dtype = q.dtype();
  p.q = q.data();
  p.q_strides = q.strides();
  p.k = k.data();
  p.k_strides = k.strides();
  p.scores_qk = scores_qk;
  p.scores_kq = scores_kq;
  lighthouse::cpu::pool_score(p);
}

inline void run_select(const lighthouse::Dims& dims, const lighthouse::Geometry& geo, const float* scores_qk,
                       const float* scores_kq, int32_t* indices, int32_t* slots,
                       lighthouse::Selection rule = lighthouse::Selection::kPaper) {
  lighthouse::SelectParams p;
  p.dims = dims;
  p.geo = geo;
  p.selection = rule;
  p.scores_qk = scores_qk;
  p.scores_kq = scores_kq;
  p.indices = indices;
  p.slots = slots;
  lighthouse::cpu::select(p);
}

inline void run_gather(const lighthouse::Dims& dims, const lighthouse::Geometry& geo, const Buffer& q,
                       const Buffer& k, const Buffer& v, const int32_t* indices, Buffer& q_sel, Buffer& k_sel,
                       Buffer& v_sel, const lighthouse::RopeTables& rope = {}) {
  lighthouse::GatherParams p;
  p.dims = dims;
  p.geo = geo;
  p.dtype = q.dtype();
  p.q = q.data();
  p.q_strides = q.strides();
  p.k = k.data();
  p.k_strides = k.strides();
  p.v = v.data();
  p.v_strides = v.strides();
  p.indices = indices;
  p.q_sel = q_sel.data();
  p.q_sel_strides = q_sel.strides();
  p.k_sel = k_sel.data();
  p.k_sel_strides = k_sel.strides();
  p.v_sel = v_sel.data();
  p.v_sel_strides = v_sel.strides();
  p.rope = rope;
  lighthouse::cpu::gather(p);
}

inline void run_scatter(const lighthouse::Dims& dims, const lighthouse::Geometry& geo, const Buffer& o_sel,
                        const int32_t* slots, Buffer& out) {
  lighthouse::ScatterParams p;
  p.dims = dims;
  p.geo = geo;
  p.dtype = o_sel.dtype();
  p.o_sel = o_sel.data();
  p.o_sel_strides = o_sel.strides();
  p.slots = slots;
  p.out = out.data();
  p.out_strides = out.strides();
  lighthouse::cpu::scatter(p);
}

inline void run_scatter_backward(const lighthouse::Dims& dims, const lighthouse::Geometry& geo,
                                 const Buffer& grad_out, const int32_t* indices, Buffer& grad_o_sel) {
  lighthouse::ScatterBackwardParams p;
  p.dims = dims;
  p.geo = geo;
  p.dtype = grad_out.dtype();
  p.grad_out = grad_out.data();
  p.grad_out_strides = grad_out.strides();
  p.indices = indices;
  p.grad_o_sel = grad_o_sel.data();
  p.grad_o_sel_strides = grad_o_sel.strides();
  lighthouse::cpu::scatter_backward(p);
}

inline void run_gather_backward(const lighthouse::Dims& dims, const lighthouse::Geometry& geo,
                                const Buffer& grad_q_sel, const Buffer& grad_k_sel, const Buffer& grad_v_sel,
                                const int32_t* slots, Buffer& grad_q, Buffer& grad_k, Buffer& grad_v,
                                const lighthouse::RopeTables& rope = {}) {
  lighthouse::GatherBackwardParams p;
  p.dims = dims;
  p.geo = geo;
  p.dtype = grad_q_sel.dtype();
  p.grad_q_sel = grad_q_sel.data();
  p.grad_q_sel_strides = grad_q_sel.strides();
  p.grad_k_sel = grad_k_sel.data();
  p.grad_k_sel_strides = grad_k_sel.strides();
  p.grad_v_sel = grad_v_sel.data();
  p.grad_v_sel_strides = grad_v_sel.strides();
  p.slots = slots;
  p.grad_q = grad_q.data();
  p.grad_q_strides = grad_q.strides();
  p.grad_k = grad_k.data();
  p.grad_k_strides = grad_k.strides();
  p.grad_v = grad_v.data();
  p.grad_v_strides = grad_v.strides();
  p.rope = rope;
  lighthouse::cpu::gather_backward(p);
}

}  // namespace lhtest
