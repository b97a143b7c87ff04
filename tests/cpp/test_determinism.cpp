// Determinism family: every stage produces the same bits with 1, 2 and 7
// threads and across repeated runs, in fp32, bf16 and fp16.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "buffers.h"
#include "lighthouse/config.h"
#include "lighthouse/geometry.h"
#include "lighthouse/threading.h"
#include "stage_calls.h"

namespace {

using lhtest::Buffer;
using lhtest::Layout;
using lighthouse::DType;

// Raw bytes of every output of the six stages, run once on fixed inputs.
std::vector<std::vector<uint8_t>> run_all_stages(DType dtype) {
  std::mt19937_64 rng(0x5eed);  // same inputs on every call
  lighthouse::Config config;
  config.levels = 3;
  config.pooling = 4;
  config.tile_budget = 8;
  config.topk = 24;
  const int64_t B = 2, H = 4, G = 2, D = 16, N = 3 * 8 * 16 * 3 + 21;  // ragged, uneven tiles
  const auto geo = lighthouse::Geometry::make(config, N);
  const auto dims = lhtest::make_dims(B, N, H, G, D);
  const int64_t S = geo.kept, P = geo.pyramid_len;

  Buffer q(dtype, B, N, H, D, Layout::kSeqMajor, rng), k(dtype, B, N, G, D, Layout::kSeqMajor, rng),
      v(dtype, B, N, G, D, Layout::kSeqMajor, rng);
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);
  auto scores_qk = lhtest::poisoned<float>(B * G * P), scores_kq = lhtest::poisoned<float>(B * G * P);
  lhtest::run_pool_score(dims, geo, q, k, scores_qk.data(), scores_kq.data());
  auto indices = lhtest::poisoned<int32_t>(B * G * S), slots = lhtest::poisoned<int32_t>(B * G * P);
  lhtest::run_select(dims, geo, scores_qk.data(), scores_kq.data(), indices.data(), slots.data());

  Buffer q_sel(dtype, B, S, H, D, Layout::kHeadMajor, rng), k_sel(dtype, B, S, G, D, Layout::kHeadMajor, rng),
      v_sel(dtype, B, S, G, D, Layout::kHeadMajor, rng);
  q_sel.poison();
  k_sel.poison();
  v_sel.poison();
  lhtest::run_gather(dims, geo, q, k, v, indices.data(), q_sel, k_sel, v_sel);

  Buffer o_sel(dtype, B, S, H, D, Layout::kHeadMajor, rng), out(dtype, B, N, H, D, Layout::kSeqMajor, rng);
  o_sel.fill_normal(rng);
  out.poison();
  lhtest::run_scatter(dims, geo, o_sel, slots.data(), out);

  Buffer grad_out(dtype, B, N, H, D, Layout::kSeqMajor, rng), grad_o_sel(dtype, B, S, H, D, Layout::kHeadMajor, rng);
  grad_out.fill_normal(rng);
  grad_o_sel.poison();
  lhtest::run_scatter_backward(dims, geo, grad_out, indices.data(), grad_o_sel);

  Buffer gq(dtype, B, N, H, D, Layout::kSeqMajor, rng), gk(dtype, B, N, G, D, Layout::kSeqMajor, rng),
      gv(dtype, B, N, G, D, Layout::kSeqMajor, rng);
  gq.poison();
  gk.poison();
  gv.poison();
  lhtest::run_gather_backward(dims, geo, q_sel, k_sel, v_sel, slots.data(), gq, gk, gv);

  auto raw = [](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    return std::vector<uint8_t>(b, b + n);
  };
  return {raw(scores_qk.data(), scores_qk.size() * 4), raw(scores_kq.data(), scores_kq.size() * 4),
          raw(indices.data(), indices.size() * 4),     raw(slots.data(), slots.size() * 4),
          q_sel.bytes(), k_sel.bytes(), v_sel.bytes(), out.bytes(), grad_o_sel.bytes(),
          gq.bytes(), gk.bytes(), gv.bytes()};
}

const char* const kOutputNames[] = {"pool_score scores_qk", "pool_score scores_kq", "select indices",
                                    "select slots",         "gather q_sel",         "gather k_sel",
                                    "gather v_sel",         "scatter out",          "scatter_backward grad_o_sel",
                                    "gather_backward grad_q", "gather_backward grad_k", "gather_backward grad_v"};

class Determinism : public ::testing::TestWithParam<DType> {
 protected:
  void TearDown() override { lighthouse::set_num_threads(0); }
};

TEST_P(Determinism, SameBitsForAnyThreadCountAndRun) {
  lighthouse::set_num_threads(1);
  const auto reference = run_all_stages(GetParam());
  ASSERT_EQ(reference.size(), std::size(kOutputNames));
  for (int threads : {1, 2, 7, 2, 7}) {
    lighthouse::set_num_threads(threads);
    ASSERT_EQ(lighthouse::num_threads(), threads);
    const auto again = run_all_stages(GetParam());
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_TRUE(again[i] == reference[i]) << kOutputNames[i] << " differs with " << threads << " threads";
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, Determinism,
                         ::testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return lighthouse::dtype_name(info.param);
                         });

TEST(Determinism, ParallelForCoversEveryItemOnce) {
  for (int threads : {1, 2, 7}) {
    lighthouse::set_num_threads(threads);
    std::vector<int> hits(1000, 0);
    lighthouse::parallel_for(1000, [&](int64_t i) { hits[i] += 1; });
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(hits[i], 1) << "item " << i << " with " << threads << " threads";
  }
  lighthouse::set_num_threads(0);
}

}  // namespace
