#include "stage_calls.h"

#include <ATen/ops/empty.h>

#include <string>

#include "lighthouse/error.h"
#include "lighthouse/geometry.h"

namespace lighthouse::torch_ops {
namespace {

// [B, H, S, D] view of freshly allocated [B, S, H, D] memory.
at::Tensor empty_bhsd(int64_t batch, int64_t heads, int64_t kept, int64_t head_dim, const at::TensorOptions& options) {
  return at::empty({batch, kept, heads, head_dim}, options).transpose(1, 2);
}

// Geometry for seq_len with the dimensions' own checks (H % Hkv, seq_len
// long enough), reported with the op's argument names.
Geometry make_geometry(const Config& config, const Dims& dims) {
  validate(config, dims);
  return Geometry::make(config, dims.seq_len);
}

// The [B, H, S, D] tensors of one call (o_sel, grad_*_sel): rank, dtype,
// device, sizes and unit-stride head_dim.
void check_bhsd(const at::Tensor& t, const std::string& name, const at::Tensor& ref, const std::string& ref_name,
                int64_t batch, int64_t heads, const std::string& heads_name, int64_t kept, int64_t head_dim) {
  check_rank(t, 4, name, "[batch, " + heads_name + ", kept, head_dim]");
  check_same_dtype(t, name, ref, ref_name);
  check_same_device(t, name, ref, ref_name);
  check_dim(t, 0, batch, name, "batch");
  check_dim(t, 1, heads, name, heads_name);
  check_dim(t, 2, kept, name, "kept entries S");
  check_dim(t, 3, head_dim, name, "head_dim");
  check_last_dim_contiguous(t, name);
}

void check_seq_len(int64_t seq_len) {
  if (seq_len < 1) fail("seq_len", "a positive sequence length", seq_len);
}

// A pooled level-L tensor [B, n_L, heads, D] handed to gather.
void check_pooled(const at::Tensor& t, const std::string& name, const at::Tensor& q, const Dims& dims,
                  int64_t coarsest, int64_t heads, const std::string& heads_name) {
  check_rank(t, 4, name, "[batch, coarsest entries n_L, " + heads_name + ", head_dim]");
  check_same_dtype(t, name, q, "q");
  check_same_device(t, name, q, "q");
  check_dim(t, 0, dims.batch, name, "batch");
  check_dim(t, 1, coarsest, name, "coarsest entries n_L");
  check_dim(t, 2, heads, name, heads_name);
  check_dim(t, 3, dims.head_dim, name, "head_dim");
  check_last_dim_contiguous(t, name);
}

// The optional rope tables of gather / gather_backward, checked against
// dims and ref's device, as RopeTables.
RopeTables rope_tables(const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin, bool interleaved,
                       const Dims& dims, const at::Tensor& ref, const std::string& ref_name) {
  RopeTables r;
  if (cos.has_value() != sin.has_value())
    fail("rope_cos, rope_sin", "both given or neither", cos.has_value() ? "only rope_cos" : "only rope_sin");
  if (!cos.has_value()) return r;
  if (dims.head_dim % 2 != 0)
    fail("head_dim", "an even number when rope tables are given (rotation pairs)", dims.head_dim);
  r.per_pair = check_rope_table(*cos, "rope_cos", dims, ref, ref_name);
  check_rope_table(*sin, "rope_sin", dims, ref, ref_name);
  if (sin->sizes() != cos->sizes() || sin->strides() != cos->strides())
    fail("rope_sin", "the shape and strides of rope_cos " + shape_string(*cos), shape_string(*sin));
  r.cos = cos->data_ptr<float>();
  r.sin = sin->data_ptr<float>();
  r.batch_stride = cos->dim() == 3 ? cos->stride(0) : 0;
  r.interleaved = interleaved;
  return r;
}

}  // namespace

PoolScoreCall prepare_pool_score(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v,
                                 const std::optional<at::Tensor>& base_qk, const std::optional<at::Tensor>& base_kq,
                                 const Config& config, Float64 float64) {
  const Dims dims = check_qkv(q, k, v, "q", "k", "v", float64);
  PoolScoreCall call;
  PoolScoreParams& p = call.params;
  p.dims = dims;
  p.geo = make_geometry(config, dims);
  p.dtype = float_dtype(q, "q", float64);
  p.q = q.data_ptr();
  p.q_strides = bnhd_strides(q);
  p.k = k.data_ptr();
  p.k_strides = bnhd_strides(k);
  if (base_qk.has_value()) {
    check_score_tensor(*base_qk, "base_qk", dims.batch, dims.kv_heads, dims.seq_len, "seq_len", q, "q");
    p.base_qk = base_qk->data_ptr<float>();
  }
  if (base_kq.has_value()) {
    check_score_tensor(*base_kq, "base_kq", dims.batch, dims.kv_heads, dims.seq_len, "seq_len", q, "q");
    p.base_kq = base_kq->data_ptr<float>();
  }
  const auto options = q.options().dtype(at::kFloat);
  call.scores_qk = at::empty({dims.batch, dims.kv_heads, p.geo.pyramid_len}, options);
  call.scores_kq = at::empty({dims.batch, dims.kv_heads, p.geo.pyramid_len}, options);
  p.scores_qk = call.scores_qk.data_ptr<float>();
  p.scores_kq = call.scores_kq.data_ptr<float>();
  if (v != nullptr) {
    const int64_t n = p.geo.coarsest();
    p.v = v->data_ptr();
    p.v_strides = bnhd_strides(*v);
    call.pooled_q = at::empty({dims.batch, n, dims.heads, dims.head_dim}, q.options());
    call.pooled_k = at::empty({dims.batch, n, dims.kv_heads, dims.head_dim}, q.options());
    call.pooled_v = at::empty({dims.batch, n, dims.kv_heads, dims.head_dim}, q.options());
    p.pooled_q = call.pooled_q.data_ptr();
    p.pooled_q_strides = bnhd_strides(call.pooled_q);
    p.pooled_k = call.pooled_k.data_ptr();
    p.pooled_k_strides = bnhd_strides(call.pooled_k);
    p.pooled_v = call.pooled_v.data_ptr();
    p.pooled_v_strides = bnhd_strides(call.pooled_v);
  }
  return call;
}

SelectCall prepare_select(const at::Tensor& scores_qk, const at::Tensor& scores_kq, int64_t seq_len,
                          const Config& config, Selection selection) {
  check_seq_len(seq_len);
  check_rank(scores_qk, 3, "scores_qk", "[batch, kv_heads, pyramid_len]");
  Dims dims;
  dims.batch = scores_qk.size(0);
  dims.kv_heads = dims.heads = scores_qk.size(1);
  dims.seq_len = seq_len;
  dims.head_dim = 1;
  const Geometry geo = make_geometry(config, dims);
  check_score_tensor(scores_qk, "scores_qk", dims.batch, dims.kv_heads, geo.pyramid_len, "pyramid_len", scores_qk,
                     "scores_qk");
  check_score_tensor(scores_kq, "scores_kq", dims.batch, dims.kv_heads, geo.pyramid_len, "pyramid_len", scores_qk,
                     "scores_qk");
  SelectCall call;
  SelectParams& p = call.params;
  p.dims = dims;
  p.geo = geo;
  p.selection = selection;
  p.scores_qk = scores_qk.data_ptr<float>();
  p.scores_kq = scores_kq.data_ptr<float>();
  const auto options = scores_qk.options().dtype(at::kInt);
  call.indices = at::empty({dims.batch, dims.kv_heads, geo.kept}, options);
  call.slots = at::empty({dims.batch, dims.kv_heads, geo.pyramid_len}, options);
  p.indices = call.indices.data_ptr<int32_t>();
  p.slots = call.slots.data_ptr<int32_t>();
  return call;
}

GatherCall prepare_gather(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& indices,
                          const std::optional<at::Tensor>& pooled_q, const std::optional<at::Tensor>& pooled_k,
                          const std::optional<at::Tensor>& pooled_v, const std::optional<at::Tensor>& rope_cos,
                          const std::optional<at::Tensor>& rope_sin, bool rope_interleaved, const Config& config,
                          Float64 float64) {
  const Dims dims = check_qkv(q, k, &v, "q", "k", "v", float64);
  GatherCall call;
  GatherParams& p = call.params;
  p.dims = dims;
  p.geo = make_geometry(config, dims);
  p.dtype = float_dtype(q, "q", float64);
  check_index_tensor(indices, "indices", dims.batch, dims.kv_heads, p.geo.kept, "kept entries S", q, "q");
  p.q = q.data_ptr();
  p.q_strides = bnhd_strides(q);
  p.k = k.data_ptr();
  p.k_strides = bnhd_strides(k);
  p.v = v.data_ptr();
  p.v_strides = bnhd_strides(v);
  p.indices = indices.data_ptr<int32_t>();
  const int64_t S = p.geo.kept;
  call.q_sel = empty_bhsd(dims.batch, dims.heads, S, dims.head_dim, q.options());
  call.k_sel = empty_bhsd(dims.batch, dims.kv_heads, S, dims.head_dim, q.options());
  call.v_sel = empty_bhsd(dims.batch, dims.kv_heads, S, dims.head_dim, q.options());
  p.q_sel = call.q_sel.data_ptr();
  p.q_sel_strides = bhsd_strides(call.q_sel);
  p.k_sel = call.k_sel.data_ptr();
  p.k_sel_strides = bhsd_strides(call.k_sel);
  p.v_sel = call.v_sel.data_ptr();
  p.v_sel_strides = bhsd_strides(call.v_sel);
  const int pooled = int{pooled_q.has_value()} + int{pooled_k.has_value()} + int{pooled_v.has_value()};
  if (pooled != 0 && pooled != 3)
    fail("pooled_q, pooled_k, pooled_v", "all three or none", std::to_string(pooled) + " given");
  if (pooled == 3) {
    const int64_t n = p.geo.coarsest();
    check_pooled(*pooled_q, "pooled_q", q, dims, n, dims.heads, "heads");
    check_pooled(*pooled_k, "pooled_k", q, dims, n, dims.kv_heads, "kv_heads");
    check_pooled(*pooled_v, "pooled_v", q, dims, n, dims.kv_heads, "kv_heads");
    p.pooled_q = pooled_q->data_ptr();
    p.pooled_q_strides = bnhd_strides(*pooled_q);
    p.pooled_k = pooled_k->data_ptr();
    p.pooled_k_strides = bnhd_strides(*pooled_k);
    p.pooled_v = pooled_v->data_ptr();
    p.pooled_v_strides = bnhd_strides(*pooled_v);
  }
  p.rope = rope_tables(rope_cos, rope_sin, rope_interleaved, dims, q, "q");
  return call;
}

ScatterCall prepare_scatter(const at::Tensor& o_sel, const at::Tensor& slots, int64_t seq_len, const Config& config,
                            Float64 float64) {
  check_seq_len(seq_len);
  check_rank(o_sel, 4, "o_sel", "[batch, heads, kept, head_dim]");
  check_rank(slots, 3, "slots", "[batch, kv_heads, pyramid_len]");
  Dims dims;
  dims.batch = o_sel.size(0);
  dims.heads = o_sel.size(1);
  dims.kv_heads = slots.size(1);
  dims.seq_len = seq_len;
  dims.head_dim = o_sel.size(3);
  ScatterCall call;
  ScatterParams& p = call.params;
  p.dims = dims;
  p.geo = make_geometry(config, dims);
  p.dtype = float_dtype(o_sel, "o_sel", float64);
  check_bhsd(o_sel, "o_sel", o_sel, "o_sel", dims.batch, dims.heads, "heads", p.geo.kept, dims.head_dim);
  check_index_tensor(slots, "slots", dims.batch, dims.kv_heads, p.geo.pyramid_len, "pyramid_len", o_sel, "o_sel");
  p.o_sel = o_sel.data_ptr();
  p.o_sel_strides = bhsd_strides(o_sel);
  p.slots = slots.data_ptr<int32_t>();
  call.out = at::empty({dims.batch, seq_len, dims.heads, dims.head_dim}, o_sel.options());
  p.out = call.out.data_ptr();
  p.out_strides = bnhd_strides(call.out);
  return call;
}

ScatterBackwardCall prepare_scatter_backward(const at::Tensor& grad_out, const at::Tensor& indices,
                                             const Config& config, Float64 float64) {
  check_rank(grad_out, 4, "grad_out", "[batch, seq_len, heads, head_dim]");
  check_rank(indices, 3, "indices", "[batch, kv_heads, kept]");
  Dims dims;
  dims.batch = grad_out.size(0);
  dims.seq_len = grad_out.size(1);
  dims.heads = grad_out.size(2);
  dims.head_dim = grad_out.size(3);
  dims.kv_heads = indices.size(1);
  ScatterBackwardCall call;
  ScatterBackwardParams& p = call.params;
  p.dims = dims;
  p.geo = make_geometry(config, dims);
  p.dtype = float_dtype(grad_out, "grad_out", float64);
  check_last_dim_contiguous(grad_out, "grad_out");
  check_index_tensor(indices, "indices", dims.batch, dims.kv_heads, p.geo.kept, "kept entries S", grad_out,
                     "grad_out");
  p.grad_out = grad_out.data_ptr();
  p.grad_out_strides = bnhd_strides(grad_out);
  p.indices = indices.data_ptr<int32_t>();
  call.grad_o_sel = empty_bhsd(dims.batch, dims.heads, p.geo.kept, dims.head_dim, grad_out.options());
  p.grad_o_sel = call.grad_o_sel.data_ptr();
  p.grad_o_sel_strides = bhsd_strides(call.grad_o_sel);
  return call;
}

GatherBackwardCall prepare_gather_backward(const at::Tensor& grad_q_sel, const at::Tensor& grad_k_sel,
                                           const at::Tensor& grad_v_sel, const at::Tensor& slots, int64_t seq_len,
                                           const std::optional<at::Tensor>& rope_cos,
                                           const std::optional<at::Tensor>& rope_sin, bool rope_interleaved,
                                           const Config& config, Float64 float64) {
  check_seq_len(seq_len);
  check_rank(grad_q_sel, 4, "grad_q_sel", "[batch, heads, kept, head_dim]");
  check_rank(grad_k_sel, 4, "grad_k_sel", "[batch, kv_heads, kept, head_dim]");
  Dims dims;
  dims.batch = grad_q_sel.size(0);
  dims.heads = grad_q_sel.size(1);
  dims.kv_heads = grad_k_sel.size(1);
  dims.seq_len = seq_len;
  dims.head_dim = grad_q_sel.size(3);
  GatherBackwardCall call;
  GatherBackwardParams& p = call.params;
  p.dims = dims;
  p.geo = make_geometry(config, dims);
  p.dtype = float_dtype(grad_q_sel, "grad_q_sel", float64);
  const int64_t S = p.geo.kept;
  check_bhsd(grad_q_sel, "grad_q_sel", grad_q_sel, "grad_q_sel", dims.batch, dims.heads, "heads", S, dims.head_dim);
  check_bhsd(grad_k_sel, "grad_k_sel", grad_q_sel, "grad_q_sel", dims.batch, dims.kv_heads, "kv_heads", S,
             dims.head_dim);
  check_bhsd(grad_v_sel, "grad_v_sel", grad_q_sel, "grad_q_sel", dims.batch, dims.kv_heads, "kv_heads", S,
             dims.head_dim);
  check_index_tensor(slots, "slots", dims.batch, dims.kv_heads, p.geo.pyramid_len, "pyramid_len", grad_q_sel,
                     "grad_q_sel");
  p.grad_q_sel = grad_q_sel.data_ptr();
  p.grad_q_sel_strides = bhsd_strides(grad_q_sel);
  p.grad_k_sel = grad_k_sel.data_ptr();
  p.grad_k_sel_strides = bhsd_strides(grad_k_sel);
  p.grad_v_sel = grad_v_sel.data_ptr();
  p.grad_v_sel_strides = bhsd_strides(grad_v_sel);
  p.slots = slots.data_ptr<int32_t>();
  const auto options = grad_q_sel.options();
  call.grad_q = at::empty({dims.batch, seq_len, dims.heads, dims.head_dim}, options);
  call.grad_k = at::empty({dims.batch, seq_len, dims.kv_heads, dims.head_dim}, options);
  call.grad_v = at::empty({dims.batch, seq_len, dims.kv_heads, dims.head_dim}, options);
  p.grad_q = call.grad_q.data_ptr();
  p.grad_q_strides = bnhd_strides(call.grad_q);
  p.grad_k = call.grad_k.data_ptr();
  p.grad_k_strides = bnhd_strides(call.grad_k);
  p.grad_v = call.grad_v.data_ptr();
  p.grad_v_strides = bnhd_strides(call.grad_v);
  p.rope = rope_tables(rope_cos, rope_sin, rope_interleaved, dims, grad_q_sel, "grad_q_sel");
  return call;
}

}  // namespace lighthouse::torch_ops
