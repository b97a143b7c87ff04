// Golden family: the stages against the vectors the paper authors' kernels
// produced, one parameter per case of tests/data/golden/manifest.json.
// pool_score vs scores_* (norm cases), selection from scores_* and
// sel_scores_* vs indices / sel_indices exactly, gather at every pyramid
// index vs *_pyramid, and the spec model's selection vs the same files (so
// the model the property families trust is itself anchored to the authors).
// Layer outputs and gradients need the attention and are tested with the
// layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "buffers.h"
#include "golden.h"
#include "lighthouse/geometry.h"
#include "spec_model.h"
#include "stage_calls.h"

namespace {

using lhtest::Buffer;
using lhtest::GoldenCase;
using lighthouse::DType;

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = lhtest::load_golden(GetParam());
    geo_ = lighthouse::Geometry::make(golden_.config, golden_.seq_len);
    ASSERT_EQ(geo_.kept, golden_.kept);
    ASSERT_EQ(geo_.pyramid_len, golden_.pyramid_len);
    dims_ = lhtest::make_dims(golden_.batch, golden_.seq_len, golden_.heads, golden_.heads, golden_.head_dim);
  }

  // An fp32 [B, N, H, D] input from the file, contiguous.
  Buffer input(const std::string& name) const {
    std::mt19937_64 unused_rng(0);
    const auto values = golden_.floats(name);
    Buffer buf(DType::kFloat32, golden_.batch, golden_.seq_len, golden_.heads, golden_.head_dim,
               lhtest::Layout::kSeqMajor, unused_rng);
    int64_t i = 0;
    for (int64_t b = 0; b < golden_.batch; ++b)
      for (int64_t t = 0; t < golden_.seq_len; ++t)
        for (int64_t h = 0; h < golden_.heads; ++h)
          for (int64_t d = 0; d < golden_.head_dim; ++d) buf.set(b, t, h, d, values[i++]);
    return buf;
  }

  // Selection from the file's scores must equal the file's indices exactly,
  // for the library and for the spec model.
  void expect_selection(const std::string& qk_name, const std::string& kq_name, const std::string& indices_name) {
    SCOPED_TRACE(GetParam() + ": " + qk_name + " / " + kq_name + " -> " + indices_name);
    const auto qk = golden_.floats(qk_name), kq = golden_.floats(kq_name);
    const auto want = golden_.ints(indices_name);
    const int64_t heads = golden_.batch * golden_.heads;
    ASSERT_EQ(static_cast<int64_t>(want.size()), heads * geo_.kept);
    auto indices = lhtest::poisoned<int32_t>(heads * geo_.kept);
    auto slots = lhtest::poisoned<int32_t>(heads * geo_.pyramid_len);
    lhtest::run_select(dims_, geo_, qk.data(), kq.data(), indices.data(), slots.data());
    EXPECT_EQ(indices, want);
    const spec::Pyramid pyr = spec::make_pyramid(golden_.seq_len, golden_.config.levels, golden_.config.pooling,
                                                 golden_.config.tile_budget, golden_.config.topk);
    for (int64_t bh = 0; bh < heads; ++bh) {
      const auto model = spec::select(pyr, qk.data() + bh * pyr.pyramid_len, kq.data() + bh * pyr.pyramid_len);
      EXPECT_TRUE(std::equal(model.indices.begin(), model.indices.end(), want.begin() + bh * pyr.kept))
          << "spec model, batch*head item " << bh;
      for (int64_t i = 0; i < pyr.pyramid_len; ++i)
        ASSERT_EQ(slots[bh * pyr.pyramid_len + i], model.slots[i]) << "slots, item " << bh << " index " << i;
    }
  }

  GoldenCase golden_;
  lighthouse::Geometry geo_;
  lighthouse::Dims dims_;
};

// Relative closeness for values computed by a different implementation:
// within 1e-5 of the reference's magnitude (floored at 1e-6); NaN fails.
::testing::AssertionResult close_to(const std::vector<float>& got, const std::vector<float>& want,
                                    const std::string& what) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": size differs";
  int64_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const float tol = 1e-5f * std::max(std::fabs(want[i]), 1e-1f);
    if (std::fabs(got[i] - want[i]) <= tol) continue;
    if (bad++ < 5) first << "\n  " << what << "[" << i << "] = " << got[i] << ", golden " << want[i];
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " differ" << first.str();
}

// The norm scorer's cases; the dilated case's scores need the attention and
// are checked by Dilated.GoldenPyramidScores.
class GoldenNorm : public Golden {};

TEST_P(GoldenNorm, PoolScoreMatchesScores) {
  const Buffer q = input("q"), k = input("k");
  const int64_t n = golden_.batch * golden_.heads * geo_.pyramid_len;
  auto qk = lhtest::poisoned<float>(n), kq = lhtest::poisoned<float>(n);
  lhtest::run_pool_score(dims_, geo_, q, k, qk.data(), kq.data());
  EXPECT_TRUE(close_to(qk, golden_.floats("scores_qk"), "scores_qk"));
  EXPECT_TRUE(close_to(kq, golden_.floats("scores_kq"), "scores_kq"));
}

TEST_P(Golden, SelectionFromScoresMatchesIndices) { expect_selection("scores_qk", "scores_kq", "indices"); }

TEST_P(Golden, SelectionFromUniformScoresMatchesSelIndices) {
  expect_selection("sel_scores_qk", "sel_scores_kq", "sel_indices");
}

TEST_P(Golden, GatherAtEveryPyramidIndexMatchesPyramid) {
  // Gather reads the geometry only for levels and offsets, so a geometry
  // whose kept count is the pyramid length gathers the whole pyramid.
  lighthouse::Geometry whole = geo_;
  whole.kept = geo_.pyramid_len;
  const int64_t B = golden_.batch, H = golden_.heads, P = geo_.pyramid_len, D = golden_.head_dim;
  std::vector<int32_t> all(B * H * P);
  for (int64_t i = 0; i < B * H * P; ++i) all[i] = static_cast<int32_t>(i % P);
  const Buffer q = input("q"), k = input("k"), v = input("v");
  std::mt19937_64 unused_rng(0);
  Buffer q_sel(DType::kFloat32, B, P, H, D, lhtest::Layout::kHeadMajor, unused_rng),
      k_sel(DType::kFloat32, B, P, H, D, lhtest::Layout::kHeadMajor, unused_rng),
      v_sel(DType::kFloat32, B, P, H, D, lhtest::Layout::kHeadMajor, unused_rng);
  q_sel.poison();
  k_sel.poison();
  v_sel.poison();
  lhtest::run_gather(dims_, whole, q, k, v, all.data(), q_sel, k_sel, v_sel);
  // The pyramids are [B, H, P, D], i.e. head-major.
  auto flat = [&](const Buffer& buf) {
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < P; ++i)
          for (int64_t d = 0; d < D; ++d) out.push_back(buf.get(b, i, h, d));
    return out;
  };
  EXPECT_TRUE(close_to(flat(q_sel), golden_.floats("q_pyramid"), "q_pyramid"));
  EXPECT_TRUE(close_to(flat(k_sel), golden_.floats("k_pyramid"), "k_pyramid"));
  EXPECT_TRUE(close_to(flat(v_sel), golden_.floats("v_pyramid"), "v_pyramid"));
}

TEST_P(Golden, FileScoresAreMaxPooledUpTheLevels) {
  // The file's own scores obey the spec's pooling rule: level l >= 2 is the
  // max of level 1 over its block (for the dilated scorer too).
  const spec::Pyramid pyr = spec::make_pyramid(golden_.seq_len, golden_.config.levels, golden_.config.pooling,
                                               golden_.config.tile_budget, golden_.config.topk);
  for (const char* name : {"scores_qk", "scores_kq"}) {
    const auto scores = golden_.floats(name);
    for (int64_t bh = 0; bh < golden_.batch * golden_.heads; ++bh) {
      const std::vector<float> base(scores.begin() + bh * pyr.pyramid_len, scores.begin() + bh * pyr.pyramid_len + pyr.seq_len);
      const auto pooled = spec::pool_max(pyr, base);
      ASSERT_TRUE(std::equal(pooled.begin(), pooled.end(), scores.begin() + bh * pyr.pyramid_len))
          << name << ", batch*head item " << bh;
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

// The cases are listed while tests register; an unreadable manifest yields
// none here and fails GoldenManifest.ListsSixCases with the reason.
std::vector<std::string> registered_cases(const std::string& scorer = "") {
  try {
    return lhtest::golden_case_names(scorer);
  } catch (const std::exception&) {
    return {};
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Golden, ::testing::ValuesIn(registered_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Cases, GoldenNorm, ::testing::ValuesIn(registered_cases("norm")), case_name);

TEST(GoldenManifest, ListsSixCases) { EXPECT_EQ(lhtest::golden_case_names().size(), 6u); }

}  // namespace
