// The golden vectors (made by the paper authors' kernels) through the GPU
// path: pool_score close to the authors' scores (their norms sum in another
// order) and bitwise equal to the CPU's; selection exactly theirs for both
// score sets; gather close to their pooled pyramid at the selected indices.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "golden.h"
#include "gpu_harness.h"
#include "lighthouse/cpu.h"
#include "lighthouse/cuda.h"
#include "lighthouse/geometry.h"

namespace gputest {
namespace {

// ||got - want|| / ||want|| over the whole tensor; NaN never passes.
::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                                 const std::string& what) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double err = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i];
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    ref += double(want[i]) * want[i];
  }
  const double rel = std::sqrt(err / ref);
  if (rel <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel << " > " << tol;
}

Array<float> device_floats(const std::vector<float>& values) {
  Array<float> a(static_cast<int64_t>(values.size()));
  a.values() = values;
  a.upload();
  return a;
}

class GpuGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuGolden, PoolScoreSelectGather) {
  const lhtest::GoldenCase c = lhtest::load_golden(GetParam());
  const lighthouse::Geometry g = lighthouse::Geometry::make(c.config, c.seq_len);
  ASSERT_EQ(g.kept, c.kept);
  ASSERT_EQ(g.pyramid_len, c.pyramid_len);
  lighthouse::Dims d;
  d.batch = c.batch;
  d.seq_len = c.seq_len;
  d.heads = c.heads;
  d.kv_heads = c.heads;
  d.head_dim = c.head_dim;
  const int64_t B = c.batch, H = c.heads, N = c.seq_len, D = c.head_dim, S = c.kept, P = c.pyramid_len;
  const lighthouse::Strides in_strides = lighthouse::contiguous_bnhd(N, H, D);

  Array<float> q = device_floats(c.floats("q")), k = device_floats(c.floats("k")), v = device_floats(c.floats("v"));
  const std::vector<float> want_qk = c.floats("scores_qk"), want_kq = c.floats("scores_kq");

  // pool_score: from q and k for the norm scorer; from the given level-1
  // scores for the dilated one (its attention runs outside these kernels).
  Array<float> qk(B * H * P), kq(B * H * P), cpu_qk(B * H * P), cpu_kq(B * H * P);
  lighthouse::PoolScoreParams ps;
  ps.dims = d;
  ps.geo = g;
  ps.dtype = lighthouse::DType::kFloat32;
  std::vector<float> base_qk, base_kq;
  const bool dilated = c.config.scorer == lighthouse::Scorer::kDilated;
  if (dilated) {
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t t = 0; t < N; ++t) {
        base_qk.push_back(want_qk[bh * P + t]);
        base_kq.push_back(want_kq[bh * P + t]);
      }
  }
  Array<float> base_qk_dev = device_floats(base_qk), base_kq_dev = device_floats(base_kq);
  ps.q = q.host(), ps.q_strides = in_strides;
  ps.k = k.host(), ps.k_strides = in_strides;
  ps.base_qk = dilated ? base_qk.data() : nullptr;
  ps.base_kq = dilated ? base_kq.data() : nullptr;
  ps.scores_qk = cpu_qk.host(), ps.scores_kq = cpu_kq.host();
  lighthouse::cpu::pool_score(ps);
  ps.q = q.device(), ps.k = k.device();
  ps.base_qk = dilated ? base_qk_dev.device() : nullptr;
  ps.base_kq = dilated ? base_kq_dev.device() : nullptr;
  ps.scores_qk = qk.device(), ps.scores_kq = kq.device();
  qk.poison_device();
  kq.poison_device();
  lighthouse::cuda::pool_score(ps, nullptr);
  sync();
  const std::vector<float> got_qk = qk.download(), got_kq = kq.download();
  EXPECT_TRUE(same_array(cpu_qk.values(), got_qk, "scores_qk vs CPU"));
  EXPECT_TRUE(same_array(cpu_kq.values(), got_kq, "scores_kq vs CPU"));
  EXPECT_TRUE(close(got_qk, want_qk, dilated ? 0.0 : 1e-5, "scores_qk vs golden"));
  EXPECT_TRUE(close(got_kq, want_kq, dilated ? 0.0 : 1e-5, "scores_kq vs golden"));

  // select: exactly the authors' selection, for both score sets.
  const struct {
    const char *qk, *kq, *indices;
  } sets[] = {{"scores_qk", "scores_kq", "indices"}, {"sel_scores_qk", "sel_scores_kq", "sel_indices"}};
  for (const auto& set : sets) {
    Array<float> sqk = device_floats(c.floats(set.qk)), skq = device_floats(c.floats(set.kq));
    Array<int32_t> indices(B * H * S), slots(B * H * P);
    lighthouse::SelectParams p;
    p.dims = d;
    p.geo = g;
    p.scores_qk = sqk.device(), p.scores_kq = skq.device();
    p.indices = indices.device(), p.slots = slots.device();
    indices.poison_device();
    slots.poison_device();
    lighthouse::cuda::select(p, nullptr);
    sync();
    EXPECT_TRUE(same_array(c.ints(set.indices), indices.download(), set.indices));
    const std::vector<int32_t> got_slots = slots.download(), want_indices = c.ints(set.indices);
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t s = 0; s < S; ++s)
        ASSERT_EQ(got_slots[bh * P + want_indices[bh * S + s]], s) << set.indices << " slots, head " << bh;
  }

  // gather at the golden indices: the pooled pyramid rows.
  {
    const std::vector<int32_t> idx = c.ints("indices");
    Array<int32_t> indices(B * H * S);
    indices.values() = idx;
    indices.upload();
    const lighthouse::Strides sel_strides = lighthouse::contiguous_bhsd(H, S, D);
    Array<float> q_sel(B * H * S * D), k_sel(B * H * S * D), v_sel(B * H * S * D);
    lighthouse::GatherParams p;
    p.dims = d;
    p.geo = g;
    p.dtype = lighthouse::DType::kFloat32;
    p.q = q.device(), p.q_strides = in_strides;
    p.k = k.device(), p.k_strides = in_strides;
    p.v = v.device(), p.v_strides = in_strides;
    p.indices = indices.device();
    p.q_sel = q_sel.device(), p.q_sel_strides = sel_strides;
    p.k_sel = k_sel.device(), p.k_sel_strides = sel_strides;
    p.v_sel = v_sel.device(), p.v_sel_strides = sel_strides;
    for (auto* a : {&q_sel, &k_sel, &v_sel}) a->poison_device();
    lighthouse::cuda::gather(p, nullptr);
    sync();
    const struct {
      const char* pyramid;
      Array<float>* got;
    } outs[] = {{"q_pyramid", &q_sel}, {"k_pyramid", &k_sel}, {"v_pyramid", &v_sel}};
    for (const auto& o : outs) {
      const std::vector<float> pyr = c.floats(o.pyramid);
      std::vector<float> want(static_cast<size_t>(B * H * S * D));
      for (int64_t bh = 0; bh < B * H; ++bh)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t j = 0; j < D; ++j) want[(bh * S + s) * D + j] = pyr[(bh * P + idx[bh * S + s]) * D + j];
      EXPECT_TRUE(close(o.got->download(), want, 1e-5, o.pyramid));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuGolden, ::testing::ValuesIn(lhtest::golden_case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace gputest
