#include "tensor_checks.h"

#include <c10/core/ScalarType.h>

#include <limits>
#include <sstream>

#include "lighthouse/error.h"

namespace lighthouse::torch_ops {

std::string shape_string(const at::Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (int64_t i = 0; i < t.dim(); ++i) os << (i ? ", " : "") << t.size(i);
  os << "]";
  return os.str();
}

DType float_dtype(const at::Tensor& t, const std::string& name, Float64 float64) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kDouble:
      if (float64 == Float64::kAccepted) return DType::kFloat64;
      fail(name + ".dtype", "float32, bfloat16 or float16 (float64 is supported on the CPU only)", "float64");
    default: break;
  }
  fail(name + ".dtype",
       float64 == Float64::kAccepted ? "float32, bfloat16, float16 or float64" : "float32, bfloat16 or float16",
       c10::toString(t.scalar_type()));
}

void check_rank(const at::Tensor& t, int64_t rank, const std::string& name, const std::string& layout) {
  if (t.dim() != rank)
    fail(name, std::to_string(rank) + " dimensions " + layout, std::to_string(t.dim()) + " dimensions " + shape_string(t));
}

void check_dim(const at::Tensor& t, int64_t dim, int64_t expected, const std::string& name, const std::string& what) {
  if (t.size(dim) != expected)
    fail(name + ".shape[" + std::to_string(dim) + "]", what + " = " + std::to_string(expected),
         std::to_string(t.size(dim)) + " (shape " + shape_string(t) + ")");
}

void check_same_device(const at::Tensor& t, const std::string& name, const at::Tensor& ref, const std::string& ref_name) {
  if (t.device() != ref.device())
    fail(name + ".device", "the device of " + ref_name + " (" + ref.device().str() + ")", t.device().str());
}

void check_same_dtype(const at::Tensor& t, const std::string& name, const at::Tensor& ref, const std::string& ref_name) {
  if (t.scalar_type() != ref.scalar_type())
    fail(name + ".dtype", "the dtype of " + ref_name + " (" + std::string(c10::toString(ref.scalar_type())) + ")",
         c10::toString(t.scalar_type()));
}

void check_last_dim_contiguous(const at::Tensor& t, const std::string& name) {
  const int64_t last = t.dim() - 1;
  if (t.size(last) > 1 && t.stride(last) != 1)
    fail(name + ".stride(-1)", "1 (a contiguous last dimension; call .contiguous())", t.stride(last));
}

namespace {

void check_rank3(const at::Tensor& t, const std::string& name, at::ScalarType dtype, int64_t batch,
                 int64_t kv_heads, int64_t length, const std::string& length_name, const at::Tensor& ref,
                 const std::string& ref_name) {
  check_rank(t, 3, name, "[batch, kv_heads, " + length_name + "]");
  check_same_device(t, name, ref, ref_name);
  if (t.scalar_type() != dtype)
    fail(name + ".dtype", c10::toString(dtype), c10::toString(t.scalar_type()));
  check_dim(t, 0, batch, name, "batch");
  check_dim(t, 1, kv_heads, name, "kv_heads");
  check_dim(t, 2, length, name, length_name);
  if (!t.is_contiguous()) fail(name, "a contiguous tensor", "strides that are not contiguous");
}

}  // namespace

void check_index_tensor(const at::Tensor& t, const std::string& name, int64_t batch, int64_t kv_heads,
                        int64_t length, const std::string& length_name, const at::Tensor& ref,
                        const std::string& ref_name) {
  check_rank3(t, name, at::kInt, batch, kv_heads, length, length_name, ref, ref_name);
}

void check_score_tensor(const at::Tensor& t, const std::string& name, int64_t batch, int64_t kv_heads,
                        int64_t length, const std::string& length_name, const at::Tensor& ref,
                        const std::string& ref_name) {
  check_rank3(t, name, at::kFloat, batch, kv_heads, length, length_name, ref, ref_name);
}

bool check_rope_table(const at::Tensor& t, const std::string& name, const Dims& dims, const at::Tensor& ref,
                      const std::string& ref_name) {
  if (t.dim() != 2 && t.dim() != 3)
    fail(name, "2 dimensions [seq_len, R] or 3 dimensions [batch, seq_len, R] (R = head_dim or head_dim / 2)",
         std::to_string(t.dim()) + " dimensions " + shape_string(t));
  if (t.scalar_type() != at::kFloat) fail(name + ".dtype", "float32", c10::toString(t.scalar_type()));
  check_same_device(t, name, ref, ref_name);
  const int64_t seq = t.dim() - 2;
  if (t.dim() == 3) check_dim(t, 0, dims.batch, name, "batch");
  check_dim(t, seq, dims.seq_len, name, "seq_len");
  const int64_t row = t.size(seq + 1);
  if (row != dims.head_dim && row != dims.head_dim / 2)
    fail(name + ".shape[" + std::to_string(seq + 1) + "]",
         "head_dim = " + std::to_string(dims.head_dim) + " (a value per element) or head_dim / 2 = " +
             std::to_string(dims.head_dim / 2) + " (a value per rotation pair)",
         std::to_string(row) + " (shape " + shape_string(t) + ")");
  const bool rows = row <= 1 || t.stride(seq + 1) == 1;
  const bool positions = t.size(seq) <= 1 || t.stride(seq) == row;
  if (!rows || !positions) {
    std::ostringstream got;
    got << "(";
    for (int64_t i = 0; i < t.dim(); ++i) got << (i ? ", " : "") << t.stride(i);
    got << ")";
    fail(name + ".stride()", "rows contiguous, one row per position: (..., " + std::to_string(row) +
                                 ", 1) (call .contiguous())",
         got.str());
  }
  return row != dims.head_dim;
}

Dims check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v, const std::string& q_name,
               const std::string& k_name, const std::string& v_name, Float64 float64) {
  check_rank(q, 4, q_name, "[batch, seq_len, heads, head_dim]");
  check_rank(k, 4, k_name, "[batch, seq_len, kv_heads, head_dim]");
  float_dtype(q, q_name, float64);
  check_same_dtype(k, k_name, q, q_name);
  check_same_device(k, k_name, q, q_name);
  Dims d;
  d.batch = q.size(0);
  d.seq_len = q.size(1);
  d.heads = q.size(2);
  d.head_dim = q.size(3);
  d.kv_heads = k.size(2);
  check_dim(k, 0, d.batch, k_name, "batch of " + q_name);
  check_dim(k, 1, d.seq_len, k_name, "seq_len of " + q_name);
  check_dim(k, 3, d.head_dim, k_name, "head_dim of " + q_name);
  if (d.kv_heads < 1 || d.heads % d.kv_heads != 0)
    fail(q_name + ".shape[2] % " + k_name + ".shape[2]",
         "0: heads (" + std::to_string(d.heads) + ") a multiple of kv_heads (" + std::to_string(d.kv_heads) + ")",
         d.kv_heads < 1 ? std::string("kv_heads = 0") : std::to_string(d.heads % d.kv_heads));
  check_last_dim_contiguous(q, q_name);
  check_last_dim_contiguous(k, k_name);
  if (v != nullptr) {
    check_rank(*v, 4, v_name, "[batch, seq_len, kv_heads, head_dim]");
    check_same_dtype(*v, v_name, q, q_name);
    check_same_device(*v, v_name, q, q_name);
    if (v->sizes() != k.sizes()) fail(v_name + ".shape", "the shape of " + k_name + " " + shape_string(k), shape_string(*v));
    check_last_dim_contiguous(*v, v_name);
  }
  return d;
}

Strides bnhd_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }
Strides bhsd_strides(const at::Tensor& t) { return {t.stride(0), t.stride(2), t.stride(1)}; }

namespace {

int narrow_int(int64_t value, const char* name) {
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max())
    fail(name, "a value that fits in a 32-bit int", value);
  return static_cast<int>(value);
}

}  // namespace

Config make_config(int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget) {
  Config c;
  c.levels = narrow_int(levels, "levels");
  c.pooling = narrow_int(pooling, "pooling");
  c.topk = topk;
  c.tile_budget = narrow_int(tile_budget, "tile_budget");
  validate(c);
  return c;
}

}  // namespace lighthouse::torch_ops
