// Selection on the GPU equals the CPU's exactly: long sequences (N = 4M, so
// tiles of 16K and 128K coarsest entries), deep pyramids (L = 16), a tile
// workspace too large for shared memory, and scores full of ties, signed
// zeros, infinities and NaNs. Also pool_score at N = 4M and 768K (on 132 SMs
// its blocks then cover 1,024, 512 and 256 positions; the short shapes of the
// other suites take 256).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "stage_runner.h"

namespace gputest {
namespace {

lighthouse::Config config(int pooling, int levels, int64_t topk, int tile_budget) {
  lighthouse::Config c;
  c.pooling = pooling;
  c.levels = levels;
  c.topk = topk;
  c.tile_budget = tile_budget;
  return c;
}

// CPU and GPU select on the same scores under every selection rule, three
// GPU runs each.
template <typename Draw>
void check_select(const lighthouse::Config& c, int64_t batch, int64_t kv_heads, int64_t seq_len, Draw&& draw) {
  const lighthouse::Geometry g = lighthouse::Geometry::make(c, seq_len);
  lighthouse::Dims d;
  d.batch = batch;
  d.seq_len = seq_len;
  d.heads = kv_heads;
  d.kv_heads = kv_heads;
  d.head_dim = 1;
  const int64_t len = batch * kv_heads * g.pyramid_len;
  Array<float> qk(len), kq(len);
  for (int64_t i = 0; i < len; ++i) {
    qk.host()[i] = draw();
    kq.host()[i] = draw();
  }
  qk.upload();
  kq.upload();
  for (lighthouse::Selection rule :
       {lighthouse::Selection::kPaper, lighthouse::Selection::kLagged, lighthouse::Selection::kCausal}) {
    SCOPED_TRACE(std::string("selection ") + lighthouse::selection_name(rule));
    Array<int32_t> indices(batch * kv_heads * g.kept), slots(len);
    lighthouse::SelectParams p;
    p.dims = d;
    p.geo = g;
    p.selection = rule;
    p.scores_qk = qk.host();
    p.scores_kq = kq.host();
    p.indices = indices.host();
    p.slots = slots.host();
    lighthouse::cpu::select(p);
    p.scores_qk = qk.device();
    p.scores_kq = kq.device();
    p.indices = indices.device();
    p.slots = slots.device();
    expect_same_arrays<int32_t>({{&indices, "indices"}, {&slots, "slots"}},
                                [&] { lighthouse::cuda::select(p, nullptr); });
  }
}

TEST(GpuSelect, FourMillionPositions) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  // 16 tiles of 16,384 coarsest entries.
  check_select(config(4, 3, 2048, 128), 1, 2, int64_t{1} << 22, [&] { return uniform(rng); });
  // 2 tiles of 131,072 coarsest entries, ragged.
  check_select(config(4, 3, 256, 128), 1, 1, (int64_t{1} << 22) + 13, [&] { return uniform(rng); });
}

TEST(GpuSelect, DeepPyramid) {
  std::mt19937_64 rng(12);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  check_select(config(2, 16, 128, 128), 1, 1, int64_t{1} << 22, [&] { return normal(rng); });
  // A tile workspace over 48 KB of shared memory (the opt-in limit).
  check_select(config(8, 5, 128, 128), 1, 1, 524288 + 99, [&] { return normal(rng); });
}

TEST(GpuSelect, WorkspaceInGlobalMemory) {
  std::mt19937_64 rng(13);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  check_select(config(8, 3, 2048, 2048), 2, 1, 131072 + 11, [&] { return uniform(rng); });
}

TEST(GpuSelect, TiesZerosInfinitiesAndNaNs) {
  std::mt19937_64 rng(14);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float values[] = {0.0f, -0.0f, 0.5f, 1.0f, -1.0f, inf, -inf, nan, -nan, 0.25f};
  std::uniform_int_distribution<int> pick(0, 9);
  check_select(config(4, 3, 256, 128), 2, 2, 8192 + 33, [&] { return values[pick(rng)]; });
  std::uniform_int_distribution<int> two(0, 1);
  check_select(config(2, 4, 128, 16), 1, 3, 4096 + 7, [&] { return two(rng) ? 1.0f : 0.0f; });
}

TEST(GpuPoolScore, LongSequences) {
  const std::pair<int64_t, int64_t> shapes[] = {{int64_t{1} << 22, 2}, {int64_t{1} << 22, 1}, {786432 + 7, 1}};
  for (const auto& [seq_len, kv_heads] : shapes) {
    SCOPED_TRACE("seq_len " + std::to_string(seq_len) + ", kv_heads " + std::to_string(kv_heads));
    Shape s;
    s.seq_len = seq_len;
    s.heads = 2 * kv_heads;
    s.kv_heads = kv_heads;
    s.head_dim = 8;
    s.topk = 2048;
    std::mt19937_64 rng(15);
    const lighthouse::Dims d = dims_of(s);
    const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(s), s.seq_len);
    Tensor q(s.dtype, 1, s.seq_len, s.heads, 8, Layout::kSeqMajor, rng);
    Tensor k(s.dtype, 1, s.seq_len, s.kv_heads, 8, Layout::kSeqMajor, rng);
    q.fill_normal(rng);
    k.fill_normal(rng);
    q.upload();
    k.upload();
    Array<float> qk(s.kv_heads * g.pyramid_len), kq(s.kv_heads * g.pyramid_len);
    lighthouse::PoolScoreParams p;
    p.dims = d;
    p.geo = g;
    p.dtype = s.dtype;
    p.q = q.host(), p.q_strides = q.strides();
    p.k = k.host(), p.k_strides = k.strides();
    p.scores_qk = qk.host(), p.scores_kq = kq.host();
    lighthouse::cpu::pool_score(p);
    p.q = q.device_ptr(), p.k = k.device_ptr();
    p.scores_qk = qk.device(), p.scores_kq = kq.device();
    expect_same_arrays<float>({{&qk, "scores_qk"}, {&kq, "scores_kq"}},
                              [&] { lighthouse::cuda::pool_score(p, nullptr); });
  }
}

// Given base scores (the dilated scorer's path) are max-pooled as on the CPU.
TEST(GpuPoolScore, GivenBaseScores) {
  Shape s;
  s.seq_len = 4096 + 45;
  s.heads = 4;
  s.kv_heads = 2;
  std::mt19937_64 rng(16);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const lighthouse::Dims d = dims_of(s);
  const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(s), s.seq_len);
  Array<float> base_qk(2 * s.seq_len), base_kq(2 * s.seq_len);
  for (float& x : base_qk.values()) x = normal(rng);
  for (float& x : base_kq.values()) x = normal(rng);
  base_qk.upload();
  base_kq.upload();
  Array<float> qk(2 * g.pyramid_len), kq(2 * g.pyramid_len);
  lighthouse::PoolScoreParams p;
  p.dims = d;
  p.geo = g;
  p.dtype = s.dtype;
  p.base_qk = base_qk.host(), p.base_kq = base_kq.host();
  p.scores_qk = qk.host(), p.scores_kq = kq.host();
  lighthouse::cpu::pool_score(p);
  p.base_qk = base_qk.device(), p.base_kq = base_kq.device();
  p.scores_qk = qk.device(), p.scores_kq = kq.device();
  expect_same_arrays<float>({{&qk, "scores_qk"}, {&kq, "scores_kq"}},
                            [&] { lighthouse::cuda::pool_score(p, nullptr); });
}

}  // namespace
}  // namespace gputest
