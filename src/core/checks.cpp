#include "lighthouse/checks.h"

#include <string>

#include "lighthouse/error.h"

namespace lighthouse {
namespace {

void check_dims(const Dims& d, const Geometry& g) {
  if (g.levels < 2 || g.levels > kMaxLevels || g.tiles < 1)
    fail("geo", "a Geometry made by Geometry::make", "an uninitialised geometry");
  if (d.seq_len != g.seq_len) fail("dims.seq_len", "geo.seq_len = " + std::to_string(g.seq_len), d.seq_len);
  if (d.batch < 1) fail("dims.batch", "at least 1", d.batch);
  if (d.heads < 1) fail("dims.heads", "at least 1", d.heads);
  if (d.kv_heads < 1) fail("dims.kv_heads", "at least 1", d.kv_heads);
  if (d.heads % d.kv_heads != 0)
    fail("dims.heads % dims.kv_heads", "0 (heads = " + std::to_string(d.heads) +
                                           ", kv_heads = " + std::to_string(d.kv_heads) + ")",
         d.heads % d.kv_heads);
  if (d.head_dim < 1) fail("dims.head_dim", "at least 1", d.head_dim);
}

void check_dtype(DType t) {
  if (t != DType::kFloat32 && t != DType::kBFloat16 && t != DType::kFloat16 && t != DType::kFloat64)
    fail("dtype", "float32, bfloat16, float16 or float64", static_cast<int>(t));
}

void check_ptr(const void* p, const char* name) {
  if (p == nullptr) fail(name, "a non-null pointer", "nullptr");
}

// Strides of a tensor of sizes [batch, seq, heads, head_dim]. Inputs may
// broadcast (stride 0); outputs must not alias themselves.
void check_strides(const Strides& s, const char* name, int64_t batch, int64_t seq, int64_t heads, bool output) {
  const struct {
    int64_t stride, size;
    const char* dim;
  } dims[] = {{s.batch, batch, "batch"}, {s.seq, seq, "seq"}, {s.head, heads, "head"}};
  for (const auto& d : dims) {
    const std::string field = std::string(name) + "." + d.dim;
    if (d.stride < 0) fail(field, "a non-negative element stride", d.stride);
    if (output && d.stride == 0 && d.size > 1) fail(field, "a positive element stride for an output", d.stride);
  }
}

// The optional pooled level-L tensors: all three or none.
int count_pooled(const void* q, const void* k, const void* v) {
  const int set = (q != nullptr) + (k != nullptr) + (v != nullptr);
  if (set != 0 && set != 3) fail("pooled_q, pooled_k, pooled_v", "all three set or none", std::to_string(set) + " set");
  return set;
}

// The optional rope tables: cos and sin both or neither; rotation pairs need
// an even head_dim.
void check_rope(const RopeTables& r, const Dims& d) {
  if ((r.cos == nullptr) != (r.sin == nullptr))
    fail("rope.cos, rope.sin", "both set or neither", r.cos != nullptr ? "only rope.cos set" : "only rope.sin set");
  if (r.cos == nullptr) return;
  if (d.head_dim % 2 != 0) fail("dims.head_dim", "an even head_dim when rope tables are given", d.head_dim);
  if (r.batch_stride < 0) fail("rope.batch_stride", "a non-negative element stride", r.batch_stride);
}

}  // namespace

void check(const PoolScoreParams& p) {
  check_dims(p.dims, p.geo);
  check_dtype(p.dtype);
  const Dims& d = p.dims;
  if (p.base_qk == nullptr) {
    check_ptr(p.q, "q");
    check_strides(p.q_strides, "q_strides", d.batch, d.seq_len, d.heads, false);
  }
  if (p.base_kq == nullptr) {
    check_ptr(p.k, "k");
    check_strides(p.k_strides, "k_strides", d.batch, d.seq_len, d.kv_heads, false);
  }
  check_ptr(p.scores_qk, "scores_qk");
  check_ptr(p.scores_kq, "scores_kq");
  if (count_pooled(p.pooled_q, p.pooled_k, p.pooled_v) == 3) {
    check_ptr(p.q, "q (needed for pooled_q)");
    check_ptr(p.k, "k (needed for pooled_k)");
    check_ptr(p.v, "v (needed for pooled_v)");
    const int64_t n = p.geo.coarsest();
    check_strides(p.q_strides, "q_strides", d.batch, d.seq_len, d.heads, false);
    check_strides(p.k_strides, "k_strides", d.batch, d.seq_len, d.kv_heads, false);
    check_strides(p.v_strides, "v_strides", d.batch, d.seq_len, d.kv_heads, false);
    check_strides(p.pooled_q_strides, "pooled_q_strides", d.batch, n, d.heads, true);
    check_strides(p.pooled_k_strides, "pooled_k_strides", d.batch, n, d.kv_heads, true);
    check_strides(p.pooled_v_strides, "pooled_v_strides", d.batch, n, d.kv_heads, true);
  }
}

void check(const SelectParams& p) {
  check_dims(p.dims, p.geo);
  check_ptr(p.scores_qk, "scores_qk");
  check_ptr(p.scores_kq, "scores_kq");
  check_ptr(p.indices, "indices");
  check_ptr(p.slots, "slots");
  if (p.selection != Selection::kPaper && p.selection != Selection::kLagged && p.selection != Selection::kCausal)
    fail("selection", "paper (0), lagged (1) or causal (2)", static_cast<int>(p.selection));
}

void check(const GatherParams& p) {
  check_dims(p.dims, p.geo);
  check_dtype(p.dtype);
  const Dims& d = p.dims;
  const int64_t S = p.geo.kept;
  check_ptr(p.q, "q");
  check_ptr(p.k, "k");
  check_ptr(p.v, "v");
  check_ptr(p.indices, "indices");
  check_ptr(p.q_sel, "q_sel");
  check_ptr(p.k_sel, "k_sel");
  check_ptr(p.v_sel, "v_sel");
  check_strides(p.q_strides, "q_strides", d.batch, d.seq_len, d.heads, false);
  check_strides(p.k_strides, "k_strides", d.batch, d.seq_len, d.kv_heads, false);
  check_strides(p.v_strides, "v_strides", d.batch, d.seq_len, d.kv_heads, false);
  check_strides(p.q_sel_strides, "q_sel_strides", d.batch, S, d.heads, true);
  check_strides(p.k_sel_strides, "k_sel_strides", d.batch, S, d.kv_heads, true);
  check_strides(p.v_sel_strides, "v_sel_strides", d.batch, S, d.kv_heads, true);
  if (count_pooled(p.pooled_q, p.pooled_k, p.pooled_v) == 3) {
    const int64_t n = p.geo.coarsest();
    check_strides(p.pooled_q_strides, "pooled_q_strides", d.batch, n, d.heads, false);
    check_strides(p.pooled_k_strides, "pooled_k_strides", d.batch, n, d.kv_heads, false);
    check_strides(p.pooled_v_strides, "pooled_v_strides", d.batch, n, d.kv_heads, false);
  }
  check_rope(p.rope, d);
}

void check(const ScatterParams& p) {
  check_dims(p.dims, p.geo);
  check_dtype(p.dtype);
  const Dims& d = p.dims;
  check_ptr(p.o_sel, "o_sel");
  check_ptr(p.slots, "slots");
  check_ptr(p.out, "out");
  check_strides(p.o_sel_strides, "o_sel_strides", d.batch, p.geo.kept, d.heads, false);
  check_strides(p.out_strides, "out_strides", d.batch, d.seq_len, d.heads, true);
}

void check(const ScatterBackwardParams& p) {
  check_dims(p.dims, p.geo);
  check_dtype(p.dtype);
  const Dims& d = p.dims;
  check_ptr(p.grad_out, "grad_out");
  check_ptr(p.indices, "indices");
  check_ptr(p.grad_o_sel, "grad_o_sel");
  check_strides(p.grad_out_strides, "grad_out_strides", d.batch, d.seq_len, d.heads, false);
  check_strides(p.grad_o_sel_strides, "grad_o_sel_strides", d.batch, p.geo.kept, d.heads, true);
}

void check(const GatherBackwardParams& p) {
  check_dims(p.dims, p.geo);
  check_dtype(p.dtype);
  const Dims& d = p.dims;
  const int64_t S = p.geo.kept;
  check_ptr(p.grad_q_sel, "grad_q_sel");
  check_ptr(p.grad_k_sel, "grad_k_sel");
  check_ptr(p.grad_v_sel, "grad_v_sel");
  check_ptr(p.slots, "slots");
  check_ptr(p.grad_q, "grad_q");
  check_ptr(p.grad_k, "grad_k");
  check_ptr(p.grad_v, "grad_v");
  check_strides(p.grad_q_sel_strides, "grad_q_sel_strides", d.batch, S, d.heads, false);
  check_strides(p.grad_k_sel_strides, "grad_k_sel_strides", d.batch, S, d.kv_heads, false);
  check_strides(p.grad_v_sel_strides, "grad_v_sel_strides", d.batch, S, d.kv_heads, false);
  check_strides(p.grad_q_strides, "grad_q_strides", d.batch, d.seq_len, d.heads, true);
  check_strides(p.grad_k_strides, "grad_k_strides", d.batch, d.seq_len, d.kv_heads, true);
  check_strides(p.grad_v_strides, "grad_v_strides", d.batch, d.seq_len, d.kv_heads, true);
  check_rope(p.rope, d);
}

}  // namespace lighthouse
