// Invalid params make every CUDA stage throw lighthouse::Error naming the
// argument before any launch: missing pointers, dims that disagree with the
// geometry, an uninitialised geometry, a dtype the GPU does not take, GQA
// that does not divide, gather_backward's missing workspace, and the shortest
// sequence check of Geometry::make.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "expect_error.h"
#include "gpu_harness.h"
#include "lighthouse/config.h"
#include "lighthouse/cuda.h"
#include "lighthouse/error.h"
#include "lighthouse/geometry.h"

namespace gputest {
namespace {

struct Fixture {
  lighthouse::Config config;
  lighthouse::Geometry geo;
  lighthouse::Dims dims;
  // Real device memory behind every pointer, large enough for any stage here.
  DeviceBytes memory{size_t{1} << 24};

  Fixture() {
    config.topk = 256;
    geo = lighthouse::Geometry::make(config, 4096);
    dims.batch = 1;
    dims.seq_len = 4096;
    dims.heads = 2;
    dims.kv_heads = 2;
    dims.head_dim = 16;
  }
  void* mem() const { return memory.get(); }
  float* fmem() const { return static_cast<float*>(memory.get()); }
  int32_t* imem() const { return static_cast<int32_t*>(memory.get()); }
};

lighthouse::Strides bnhd(int64_t heads) { return lighthouse::contiguous_bnhd(4096, heads, 16); }
lighthouse::Strides bhsd(const Fixture& f, int64_t heads) { return lighthouse::contiguous_bhsd(heads, f.geo.kept, 16); }

// A breakage of the params: what it does, the argument the error must name,
// and how it changes the params.
template <typename P>
struct Breakage {
  const char* what;
  const char* argument;
  std::function<void(P&)> apply;
};

template <typename P>
std::vector<Breakage<P>> common_breakages() {
  return {
      {"seq_len differs from the geometry", "dims.seq_len", [](P& p) { p.dims.seq_len += 1; }},
      {"uninitialised geometry", "geo", [](P& p) { p.geo = lighthouse::Geometry{}; }},
      {"batch 0", "dims.batch", [](P& p) { p.dims.batch = 0; }},
      {"heads not a multiple of kv_heads", "dims.heads % dims.kv_heads", [](P& p) { p.dims.heads = 3; }},
  };
}

template <typename P, typename Call>
void expect_all_throw(const P& valid, std::vector<Breakage<P>> breakages, Call&& call) {
  EXPECT_NO_THROW(call(valid));
  sync();
  for (const auto& b : breakages) {
    P p = valid;
    b.apply(p);
    EXPECT_TRUE(lhtest::throws_naming([&] { call(p); }, b.argument)) << b.what;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

template <typename P>
void add_dtype_breakage(std::vector<Breakage<P>>& v) {
  v.push_back({"float64 (CPU only)", "dtype", [](P& p) { p.dtype = lighthouse::DType::kFloat64; }});
  v.push_back({"an unknown dtype", "dtype", [](P& p) { p.dtype = static_cast<lighthouse::DType>(42); }});
}

TEST(GpuErrors, PoolScore) {
  Fixture f;
  lighthouse::PoolScoreParams p;
  p.dims = f.dims, p.geo = f.geo;
  p.q = f.mem(), p.q_strides = bnhd(2);
  p.k = f.mem(), p.k_strides = bnhd(2);
  p.scores_qk = f.fmem() + (1 << 20), p.scores_kq = f.fmem() + (1 << 21);
  auto v = common_breakages<lighthouse::PoolScoreParams>();
  add_dtype_breakage(v);
  v.push_back({"null q", "q", [](auto& x) { x.q = nullptr; }});
  v.push_back({"null scores_kq", "scores_kq", [](auto& x) { x.scores_kq = nullptr; }});
  v.push_back({"negative stride", "k_strides.seq", [](auto& x) { x.k_strides.seq = -1; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::pool_score(x, nullptr); });
}

TEST(GpuErrors, Select) {
  Fixture f;
  lighthouse::SelectParams p;
  p.dims = f.dims, p.geo = f.geo;
  p.scores_qk = f.fmem(), p.scores_kq = f.fmem() + (1 << 20);
  p.indices = f.imem() + (1 << 21), p.slots = f.imem() + (3 << 20);
  auto v = common_breakages<lighthouse::SelectParams>();
  v.push_back({"null indices", "indices", [](auto& x) { x.indices = nullptr; }});
  v.push_back({"null slots", "slots", [](auto& x) { x.slots = nullptr; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::select(x, nullptr); });
}

TEST(GpuErrors, Gather) {
  Fixture f;
  Array<int32_t> indices(2 * f.geo.kept);
  for (auto& i : indices.values()) i = 0;
  indices.upload();
  lighthouse::GatherParams p;
  p.dims = f.dims, p.geo = f.geo;
  p.q = p.k = p.v = f.mem();
  p.q_strides = p.k_strides = p.v_strides = bnhd(2);
  p.indices = indices.device();
  p.q_sel = f.fmem() + (1 << 20), p.k_sel = f.fmem() + (3 << 19), p.v_sel = f.fmem() + (1 << 21);
  p.q_sel_strides = p.k_sel_strides = p.v_sel_strides = bhsd(f, 2);
  auto v = common_breakages<lighthouse::GatherParams>();
  add_dtype_breakage(v);
  v.push_back({"null v_sel", "v_sel", [](auto& x) { x.v_sel = nullptr; }});
  v.push_back({"null indices", "indices", [](auto& x) { x.indices = nullptr; }});
  v.push_back({"output stride 0", "q_sel_strides.seq", [](auto& x) { x.q_sel_strides.seq = 0; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::gather(x, nullptr); });
}

TEST(GpuErrors, Scatter) {
  Fixture f;
  Array<int32_t> slots(2 * f.geo.pyramid_len);
  for (auto& s : slots.values()) s = -1;
  slots.upload();
  lighthouse::ScatterParams p;
  p.dims = f.dims, p.geo = f.geo;
  p.o_sel = f.mem(), p.o_sel_strides = bhsd(f, 2);
  p.slots = slots.device();
  p.out = f.fmem() + (1 << 21), p.out_strides = bnhd(2);
  auto v = common_breakages<lighthouse::ScatterParams>();
  add_dtype_breakage(v);
  v.push_back({"null out", "out", [](auto& x) { x.out = nullptr; }});
  v.push_back({"null slots", "slots", [](auto& x) { x.slots = nullptr; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::scatter(x, nullptr); });
}

TEST(GpuErrors, ScatterBackward) {
  Fixture f;
  Array<int32_t> indices(2 * f.geo.kept);
  for (auto& i : indices.values()) i = 0;
  indices.upload();
  lighthouse::ScatterBackwardParams p;
  p.dims = f.dims, p.geo = f.geo;
  p.grad_out = f.mem(), p.grad_out_strides = bnhd(2);
  p.indices = indices.device();
  p.grad_o_sel = f.fmem() + (1 << 21), p.grad_o_sel_strides = bhsd(f, 2);
  auto v = common_breakages<lighthouse::ScatterBackwardParams>();
  add_dtype_breakage(v);
  v.push_back({"null grad_out", "grad_out", [](auto& x) { x.grad_out = nullptr; }});
  v.push_back({"null grad_o_sel", "grad_o_sel", [](auto& x) { x.grad_o_sel = nullptr; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::scatter_backward(x, nullptr); });
}

// Valid gather_backward params over the fixture's buffers for pyramid `geo`
// (the fixture's pyramid length; its own kept entries).
lighthouse::GatherBackwardParams gather_backward_params(const Fixture& f, const lighthouse::Geometry& geo,
                                                       const int32_t* slots) {
  lighthouse::GatherBackwardParams p;
  p.dims = f.dims, p.geo = geo;
  p.grad_q_sel = p.grad_k_sel = p.grad_v_sel = f.mem();
  p.grad_q_sel_strides = p.grad_k_sel_strides = p.grad_v_sel_strides = lighthouse::contiguous_bhsd(2, geo.kept, 16);
  p.slots = slots;
  p.grad_q = f.fmem() + (1 << 20), p.grad_k = f.fmem() + (3 << 19), p.grad_v = f.fmem() + (1 << 21);
  p.grad_q_strides = p.grad_k_strides = p.grad_v_strides = bnhd(2);
  return p;
}

TEST(GpuErrors, GatherBackward) {
  Fixture f;
  Array<int32_t> slots(2 * f.geo.pyramid_len);
  for (auto& s : slots.values()) s = -1;
  slots.upload();
  const lighthouse::GatherBackwardParams p = gather_backward_params(f, f.geo, slots.device());
  auto v = common_breakages<lighthouse::GatherBackwardParams>();
  add_dtype_breakage(v);
  v.push_back({"null grad_k", "grad_k", [](auto& x) { x.grad_k = nullptr; }});
  v.push_back({"null slots", "slots", [](auto& x) { x.slots = nullptr; }});
  expect_all_throw(p, v, [](const auto& x) { lighthouse::cuda::gather_backward(x, nullptr); });
}

// gather_backward's workspace with rope tables: none where the tiled kernel
// rotates in its loop (4,096 positions, 2,304 kept entries), the fp32 q and k
// rows of every kept entry where a first pass rotates them (768 kept entries);
// the error for none or an unaligned one (the call without it allocates its own).
TEST(GpuErrors, GatherBackwardWorkspace) {
  Fixture f;
  Array<int32_t> slots(2 * f.geo.pyramid_len);
  for (auto& s : slots.values()) s = -1;
  slots.upload();
  float* const cos = f.fmem() + (3 << 20);
  lighthouse::GatherBackwardParams p = gather_backward_params(f, f.geo, slots.device());
  EXPECT_EQ(lighthouse::cuda::gather_backward_workspace_bytes(p), 0);
  p.rope.cos = cos, p.rope.sin = cos + (1 << 18);
  EXPECT_EQ(lighthouse::cuda::gather_backward_workspace_bytes(p), 0);
  EXPECT_NO_THROW(lighthouse::cuda::gather_backward(p, nullptr, nullptr));

  lighthouse::Config few = f.config;
  few.topk = few.tile_budget = 64;
  const lighthouse::Geometry geo = lighthouse::Geometry::make(few, 4096);
  ASSERT_EQ(geo.pyramid_len, f.geo.pyramid_len);
  p = gather_backward_params(f, geo, slots.device());
  p.rope.cos = cos, p.rope.sin = cos + (1 << 18);
  const int64_t bytes = lighthouse::cuda::gather_backward_workspace_bytes(p);
  EXPECT_EQ(bytes, int64_t{4} * (2 + 2) * geo.kept * 16);
  DeviceBytes workspace(static_cast<size_t>(bytes) + 16);
  char* space = static_cast<char*>(workspace.get());
  EXPECT_NO_THROW(lighthouse::cuda::gather_backward(p, nullptr, space));
  EXPECT_NO_THROW(lighthouse::cuda::gather_backward(p, nullptr));
  sync();
  EXPECT_TRUE(lhtest::throws_naming([&] { lighthouse::cuda::gather_backward(p, nullptr, nullptr); }, "workspace"));
  EXPECT_TRUE(lhtest::throws_naming([&] { lighthouse::cuda::gather_backward(p, nullptr, space + 4); }, "workspace"));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(GpuErrors, SequenceTooShortForTheConfig) {
  lighthouse::Config c;
  c.topk = 2048;
  EXPECT_TRUE(lhtest::throws_naming([&] { lighthouse::Geometry::make(c, lighthouse::min_seq_len(c) - 1); }, "seq_len"));
}

}  // namespace
}  // namespace gputest
