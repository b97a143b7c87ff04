// The operator schemas, declared once. Every stage takes the layer's
// integer configuration as keyword arguments (tensors stay positional, as
// torch.library.register_autograd requires); seq_len is explicit where the
// inputs do not carry it. Implementations live in cpu_ops.cpp and
// cuda_ops.cpp; fake (meta) kernels and autograd are registered from Python.
// pool_score_pooled is pool_score that also returns the pooled level-L q, k,
// v (the means of each coarsest block); gather copies level-L entries from
// them when given (all three or none) instead of re-pooling: same bits.
// rope_cos / rope_sin (float32 [N, R] or [B, N, R], both or none; R = D, a
// value per element, or D/2, a value per rotation pair): gather
// rotates each kept q and k entry at its last covered position and
// gather_backward rotates their gradients back (rope_interleaved picks the
// pairs (2j, 2j+1) instead of (j, j + D/2)).
#include <torch/library.h>

TORCH_LIBRARY(lighthouse, m) {
  m.def(
      "pool_score(Tensor q, Tensor k, Tensor? base_qk=None, Tensor? base_kq=None, *, int levels, int pooling, "
      "int topk, int tile_budget=128) -> (Tensor scores_qk, Tensor scores_kq)");
  m.def(
      "pool_score_pooled(Tensor q, Tensor k, Tensor v, Tensor? base_qk=None, Tensor? base_kq=None, *, int levels, "
      "int pooling, int topk, int tile_budget=128) -> (Tensor scores_qk, Tensor scores_kq, Tensor pooled_q, "
      "Tensor pooled_k, Tensor pooled_v)");
  m.def(
      "select(Tensor scores_qk, Tensor scores_kq, SymInt seq_len, *, int levels, int pooling, int topk, "
      "int tile_budget=128, str selection=\"paper\") -> (Tensor indices, Tensor slots)");
  m.def(
      "gather(Tensor q, Tensor k, Tensor v, Tensor indices, Tensor? pooled_q=None, Tensor? pooled_k=None, "
      "Tensor? pooled_v=None, Tensor? rope_cos=None, Tensor? rope_sin=None, *, int levels, int pooling, int topk, "
      "int tile_budget=128, bool rope_interleaved=False) -> (Tensor q_sel, Tensor k_sel, Tensor v_sel)");
  m.def(
      "scatter(Tensor o_sel, Tensor slots, SymInt seq_len, *, int levels, int pooling, int topk, "
      "int tile_budget=128) -> Tensor out");
  m.def(
      "scatter_backward(Tensor grad_out, Tensor indices, *, int levels, int pooling, int topk, "
      "int tile_budget=128) -> Tensor grad_o_sel");
  m.def(
      "gather_backward(Tensor grad_q_sel, Tensor grad_k_sel, Tensor grad_v_sel, Tensor slots, SymInt seq_len, "
      "Tensor? rope_cos=None, Tensor? rope_sin=None, *, int levels, int pooling, int topk, int tile_budget=128, "
      "bool rope_interleaved=False) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}
