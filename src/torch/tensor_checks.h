// Checks of the tensors handed to the ops, shared by the CPU and CUDA
// implementations. Each failure throws lighthouse::Error ("lighthouse: <arg>:
// expected <...>, got <...>"), which the op boundary turns into ValueError.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/params.h"

namespace lighthouse::torch_ops {

// Which element types a backend accepts: float64 exists for the CPU kernels
// only (it is there for fp64 gradcheck).
enum class Float64 : bool { kRejected = false, kAccepted = true };

// "[2, 1024, 8, 64]" for messages.
std::string shape_string(const at::Tensor& t);

// The lighthouse element type of a floating-point tensor.
DType float_dtype(const at::Tensor& t, const std::string& name, Float64 float64);

void check_rank(const at::Tensor& t, int64_t rank, const std::string& name, const std::string& layout);
void check_dim(const at::Tensor& t, int64_t dim, int64_t expected, const std::string& name, const std::string& what);
void check_same_device(const at::Tensor& t, const std::string& name, const at::Tensor& ref, const std::string& ref_name);
void check_same_dtype(const at::Tensor& t, const std::string& name, const at::Tensor& ref, const std::string& ref_name);
// The kernels read head_dim vectors with unit stride.
void check_last_dim_contiguous(const at::Tensor& t, const std::string& name);

// An int32 tensor of shape [batch, kv_heads, length], contiguous, on ref's device.
void check_index_tensor(const at::Tensor& t, const std::string& name, int64_t batch, int64_t kv_heads,
                        int64_t length, const std::string& length_name, const at::Tensor& ref,
                        const std::string& ref_name);
// A float32 tensor of shape [batch, kv_heads, length], contiguous, on ref's device.
void check_score_tensor(const at::Tensor& t, const std::string& name, int64_t batch, int64_t kv_heads,
                        int64_t length, const std::string& length_name, const at::Tensor& ref,
                        const std::string& ref_name);

// A rope table (rope_cos / rope_sin): float32, [seq_len, R] or
// [batch, seq_len, R] with R = head_dim (a value per element) or head_dim / 2
// (a value per rotation pair), on ref's device, with each row contiguous and
// consecutive positions one row apart (strides (R, 1); any batch stride).
// Not copied: the caller passes tables in that layout. Returns whether the
// rows are per pair.
bool check_rope_table(const at::Tensor& t, const std::string& name, const Dims& dims, const at::Tensor& ref,
                      const std::string& ref_name);

// q [B, N, H, D] and k (and v when defined) [B, N, Hkv, D]: ranks, matching
// sizes, H % Hkv, one dtype, one device, unit-stride head_dim.
Dims check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v, const std::string& q_name,
               const std::string& k_name, const std::string& v_name, Float64 float64);

// Strides of a [B, N, H, D] tensor and of a [B, H, S, D] tensor.
Strides bnhd_strides(const at::Tensor& t);
Strides bhsd_strides(const at::Tensor& t);

// Config from the op's integer arguments (range-checked before narrowing).
Config make_config(int64_t levels, int64_t pooling, int64_t topk, int64_t tile_budget);

}  // namespace lighthouse::torch_ops
