// Invalid-input family: one test per validation rule. Each checks that
// lighthouse::Error is thrown and that its message names the argument
// ("lighthouse: <argument>: expected ..."), and for the stages that no output
// was touched before the error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "expect_error.h"
#include "lighthouse/checks.h"
#include "lighthouse/config.h"
#include "lighthouse/cpu.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"

namespace {

using lighthouse::Config;
using lighthouse::Dims;
using lhtest::throws_naming;

Dims valid_dims() {
  Dims d;
  d.batch = 1;
  d.seq_len = 64;
  d.heads = 2;
  d.kv_heads = 1;
  d.head_dim = 4;
  return d;
}

Config valid_config() {
  Config c;
  c.levels = 2;
  c.pooling = 2;
  c.tile_budget = 2;
  c.topk = 4;
  return c;
}

// Checks `argument` is named both by validate(config) and by
// Geometry::make(config, N).
void expect_config_error(const Config& c, const std::string& argument) {
  EXPECT_TRUE(throws_naming([&] { lighthouse::validate(c); }, argument));
  EXPECT_TRUE(throws_naming([&] { lighthouse::Geometry::make(c, 1 << 20); }, argument));
}

TEST(ConfigValidation, ValidConfigurationPasses) {
  EXPECT_NO_THROW(lighthouse::validate(valid_config(), valid_dims()));
  EXPECT_NO_THROW(lighthouse::validate(Config{}));  // the defaults
}

TEST(ConfigValidation, PoolingMustBeAPowerOfTwoAtLeastTwo) {
  for (int p : {0, 1, 3, 6, -2}) {
    Config c = valid_config();
    c.pooling = p;
    SCOPED_TRACE(p);
    expect_config_error(c, "pooling");
  }
}

TEST(ConfigValidation, LevelsWithinRange) {
  for (int l : {1, 0, -1, lighthouse::kMaxLevels + 1}) {
    Config c = valid_config();
    c.levels = l;
    SCOPED_TRACE(l);
    expect_config_error(c, "levels");
  }
}

TEST(ConfigValidation, CoarsestBlockFits) {
  Config c = valid_config();
  c.pooling = 8;
  c.levels = 16;  // 8^15 = 2^45
  expect_config_error(c, "pooling^(levels-1)");
}

TEST(ConfigValidation, TopkIsAPositiveMultipleOfTileBudget) {
  for (int64_t k : {int64_t{0}, int64_t{-4}, int64_t{3}, int64_t{130}}) {
    Config c = valid_config();
    c.tile_budget = 4;
    c.topk = k;
    SCOPED_TRACE(k);
    expect_config_error(c, "topk");
  }
}

TEST(ConfigValidation, TileBudgetIsEvenAndAtLeastTwo) {
  for (int m : {0, 1, 3, -2}) {
    Config c = valid_config();
    c.tile_budget = m;
    c.topk = 6;
    SCOPED_TRACE(m);
    expect_config_error(c, "tile_budget");
  }
}

TEST(ConfigValidation, ScaleIsFiniteAndNonNegative) {
  for (float s : {-1.0f, -0.0001f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    Config c = valid_config();
    c.scale = s;
    SCOPED_TRACE(s);
    expect_config_error(c, "scale");
  }
}

TEST(ConfigValidation, ScorerIsKnown) {
  Config c = valid_config();
  c.scorer = static_cast<lighthouse::Scorer>(5);
  expect_config_error(c, "scorer");
}

TEST(ConfigValidation, SelectionRuleIsKnown) {
  Config c = valid_config();
  c.selection = static_cast<lighthouse::Selection>(7);
  expect_config_error(c, "selection");
}

TEST(ConfigValidation, DilationOfTheDilatedScorerIsPositive) {
  Config c = valid_config();
  c.scorer = lighthouse::Scorer::kDilated;
  c.dilation = 0;
  expect_config_error(c, "dilation");
}

TEST(ConfigValidation, DimsArePositive) {
  const struct {
    int64_t Dims::*field;
    const char* name;
  } fields[] = {{&Dims::batch, "batch"}, {&Dims::heads, "heads"}, {&Dims::kv_heads, "kv_heads"},
                {&Dims::head_dim, "head_dim"}};
  for (const auto& f : fields)
    for (int64_t bad : {0, -1}) {
      Dims d = valid_dims();
      d.*f.field = bad;
      if (f.field == &Dims::heads) d.kv_heads = 1;
      SCOPED_TRACE(std::string(f.name) + " = " + std::to_string(bad));
      EXPECT_TRUE(throws_naming([&] { lighthouse::validate(valid_config(), d); }, f.name));
    }
}

TEST(ConfigValidation, HeadsAreAMultipleOfKvHeads) {
  Dims d = valid_dims();
  d.heads = 6;
  d.kv_heads = 4;
  EXPECT_TRUE(throws_naming([&] { lighthouse::validate(valid_config(), d); }, "heads % kv_heads"));
}

TEST(ConfigValidation, SequenceTooShortForTheTiles) {
  // topk * p^(L-1) = 4 * 2 = 8 positions at least.
  Dims d = valid_dims();
  d.seq_len = 7;
  EXPECT_TRUE(throws_naming([&] { lighthouse::validate(valid_config(), d); }, "seq_len"));
  EXPECT_TRUE(throws_naming([&] { lighthouse::Geometry::make(valid_config(), 7); }, "seq_len"));
  EXPECT_NO_THROW(lighthouse::Geometry::make(valid_config(), 8));
}

TEST(ConfigValidation, PyramidMustFitInt32Indices) {
  EXPECT_TRUE(throws_naming([&] { lighthouse::Geometry::make(valid_config(), int64_t{1} << 31); }, "seq_len"));
}

// Valid params of all six stages over small poisoned buffers.
struct Stages {
  static constexpr float kPoison = -12345.0f;
  lighthouse::Geometry geo = lighthouse::Geometry::make(valid_config(), 64);
  Dims dims = valid_dims();
  int64_t S = geo.kept, P = geo.pyramid_len, N = 64, H = 2, G = 1, D = 4;
  std::vector<float> q = std::vector<float>(N * H * D, 1.0f), k = std::vector<float>(N * G * D, 1.0f),
                     v = k, scores_qk = std::vector<float>(G * P, kPoison), scores_kq = scores_qk,
                     q_sel = std::vector<float>(H * S * D, kPoison), k_sel = std::vector<float>(G * S * D, kPoison),
                     v_sel = k_sel, o_sel = q_sel, out = std::vector<float>(N * H * D, kPoison), grad_out = out,
                     grad_o_sel = q_sel, grad_q = out, grad_k = std::vector<float>(N * G * D, kPoison), grad_v = grad_k;
  std::vector<int32_t> indices = std::vector<int32_t>(G * S, -7), slots = std::vector<int32_t>(G * P, -7);
  // pool_score's optional level-L means, [B, n_L, H or Hkv, D].
  int64_t n_L = geo.coarsest();
  std::vector<float> pooled_q = std::vector<float>(n_L * H * D, kPoison),
                     pooled_k = std::vector<float>(n_L * G * D, kPoison), pooled_v = pooled_k;
  // Rope tables, [N, D].
  std::vector<float> rope_table = std::vector<float>(N * D, 0.5f);

  lighthouse::PoolScoreParams pool;
  lighthouse::SelectParams select;
  lighthouse::GatherParams gather;
  lighthouse::ScatterParams scatter;
  lighthouse::ScatterBackwardParams scatter_back;
  lighthouse::GatherBackwardParams gather_back;

  Stages() {
    const auto bnhd = [&](int64_t h) { return lighthouse::contiguous_bnhd(N, h, D); };
    const auto bhsd = [&](int64_t h) { return lighthouse::contiguous_bhsd(h, S, D); };
    pool.dims = select.dims = gather.dims = scatter.dims = scatter_back.dims = gather_back.dims = dims;
    pool.geo = select.geo = gather.geo = scatter.geo = scatter_back.geo = gather_back.geo = geo;
    pool.q = q.data(), pool.q_strides = bnhd(H), pool.k = k.data(), pool.k_strides = bnhd(G);
    pool.scores_qk = scores_qk.data(), pool.scores_kq = scores_kq.data();
    select.scores_qk = scores_qk.data(), select.scores_kq = scores_kq.data();
    select.indices = indices.data(), select.slots = slots.data();
    gather.q = q.data(), gather.q_strides = bnhd(H), gather.k = k.data(), gather.k_strides = bnhd(G);
    gather.v = v.data(), gather.v_strides = bnhd(G), gather.indices = indices.data();
    gather.q_sel = q_sel.data(), gather.q_sel_strides = bhsd(H);
    gather.k_sel = k_sel.data(), gather.k_sel_strides = bhsd(G);
    gather.v_sel = v_sel.data(), gather.v_sel_strides = bhsd(G);
    scatter.o_sel = o_sel.data(), scatter.o_sel_strides = bhsd(H), scatter.slots = slots.data();
    scatter.out = out.data(), scatter.out_strides = bnhd(H);
    scatter_back.grad_out = grad_out.data(), scatter_back.grad_out_strides = bnhd(H);
    scatter_back.indices = indices.data();
    scatter_back.grad_o_sel = grad_o_sel.data(), scatter_back.grad_o_sel_strides = bhsd(H);
    gather_back.grad_q_sel = q_sel.data(), gather_back.grad_q_sel_strides = bhsd(H);
    gather_back.grad_k_sel = k_sel.data(), gather_back.grad_k_sel_strides = bhsd(G);
    gather_back.grad_v_sel = v_sel.data(), gather_back.grad_v_sel_strides = bhsd(G);
    gather_back.slots = slots.data();
    gather_back.grad_q = grad_q.data(), gather_back.grad_q_strides = bnhd(H);
    gather_back.grad_k = grad_k.data(), gather_back.grad_k_strides = bnhd(G);
    gather_back.grad_v = grad_v.data(), gather_back.grad_v_strides = bnhd(G);
  }

  // pool_score writing the level-L means as well (valid).
  lighthouse::PoolScoreParams pool_with_pooled() {
    lighthouse::PoolScoreParams p = pool;
    p.v = v.data(), p.v_strides = lighthouse::contiguous_bnhd(N, G, D);
    p.pooled_q = pooled_q.data(), p.pooled_q_strides = lighthouse::contiguous_bnhd(n_L, H, D);
    p.pooled_k = pooled_k.data(), p.pooled_k_strides = lighthouse::contiguous_bnhd(n_L, G, D);
    p.pooled_v = pooled_v.data(), p.pooled_v_strides = lighthouse::contiguous_bnhd(n_L, G, D);
    return p;
  }

  // gather reading level L from pool_score's means (valid).
  lighthouse::GatherParams gather_with_pooled() {
    lighthouse::GatherParams p = gather;
    p.pooled_q = pooled_q.data(), p.pooled_q_strides = lighthouse::contiguous_bnhd(n_L, H, D);
    p.pooled_k = pooled_k.data(), p.pooled_k_strides = lighthouse::contiguous_bnhd(n_L, G, D);
    p.pooled_v = pooled_v.data(), p.pooled_v_strides = lighthouse::contiguous_bnhd(n_L, G, D);
    return p;
  }

  // True while no stage output has been written.
  bool outputs_untouched() const {
    for (const auto* buf : {&scores_qk, &scores_kq, &q_sel, &k_sel, &v_sel, &out, &grad_o_sel, &grad_q, &grad_k,
                            &grad_v, &pooled_q, &pooled_k, &pooled_v})
      for (float x : *buf)
        if (x != kPoison) return false;
    for (const auto* buf : {&indices, &slots})
      for (int32_t x : *buf)
        if (x != -7) return false;
    return true;
  }
};

// Runs a stage on mutated params: it must throw naming `argument` and write
// nothing.
template <typename Params>
void expect_stage_error(const Params& p, void (*stage)(const Params&), const std::string& argument, Stages& s) {
  EXPECT_TRUE(throws_naming([&] { stage(p); }, argument));
  EXPECT_TRUE(throws_naming([&] { lighthouse::check(p); }, argument));
  EXPECT_TRUE(s.outputs_untouched()) << "an output was written before the error on " << argument;
}

TEST(StageValidation, ValidParamsRunEveryStage) {
  Stages s;
  lighthouse::cpu::pool_score(s.pool);
  lighthouse::cpu::select(s.select);
  lighthouse::cpu::gather(s.gather);
  lighthouse::cpu::scatter(s.scatter);
  lighthouse::cpu::scatter_backward(s.scatter_back);
  lighthouse::cpu::gather_backward(s.gather_back);
  EXPECT_FALSE(s.outputs_untouched());
}

TEST(StageValidation, NullPointersAreNamed) {
  Stages s;
  const auto null_case = [&](auto params, auto member, const char* name, auto stage) {
    params.*member = nullptr;
    SCOPED_TRACE(name);
    expect_stage_error(params, stage, name, s);
  };
  null_case(s.pool, &lighthouse::PoolScoreParams::q, "q", &lighthouse::cpu::pool_score);
  null_case(s.pool, &lighthouse::PoolScoreParams::k, "k", &lighthouse::cpu::pool_score);
  null_case(s.pool, &lighthouse::PoolScoreParams::scores_qk, "scores_qk", &lighthouse::cpu::pool_score);
  null_case(s.pool, &lighthouse::PoolScoreParams::scores_kq, "scores_kq", &lighthouse::cpu::pool_score);
  null_case(s.select, &lighthouse::SelectParams::scores_qk, "scores_qk", &lighthouse::cpu::select);
  null_case(s.select, &lighthouse::SelectParams::scores_kq, "scores_kq", &lighthouse::cpu::select);
  null_case(s.select, &lighthouse::SelectParams::indices, "indices", &lighthouse::cpu::select);
  null_case(s.select, &lighthouse::SelectParams::slots, "slots", &lighthouse::cpu::select);
  null_case(s.gather, &lighthouse::GatherParams::q, "q", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::k, "k", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::v, "v", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::indices, "indices", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::q_sel, "q_sel", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::k_sel, "k_sel", &lighthouse::cpu::gather);
  null_case(s.gather, &lighthouse::GatherParams::v_sel, "v_sel", &lighthouse::cpu::gather);
  null_case(s.scatter, &lighthouse::ScatterParams::o_sel, "o_sel", &lighthouse::cpu::scatter);
  null_case(s.scatter, &lighthouse::ScatterParams::slots, "slots", &lighthouse::cpu::scatter);
  null_case(s.scatter, &lighthouse::ScatterParams::out, "out", &lighthouse::cpu::scatter);
  null_case(s.scatter_back, &lighthouse::ScatterBackwardParams::grad_out, "grad_out", &lighthouse::cpu::scatter_backward);
  null_case(s.scatter_back, &lighthouse::ScatterBackwardParams::indices, "indices", &lighthouse::cpu::scatter_backward);
  null_case(s.scatter_back, &lighthouse::ScatterBackwardParams::grad_o_sel, "grad_o_sel",
            &lighthouse::cpu::scatter_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_q_sel, "grad_q_sel", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_k_sel, "grad_k_sel", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_v_sel, "grad_v_sel", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::slots, "slots", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_q, "grad_q", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_k, "grad_k", &lighthouse::cpu::gather_backward);
  null_case(s.gather_back, &lighthouse::GatherBackwardParams::grad_v, "grad_v", &lighthouse::cpu::gather_backward);
}

TEST(StageValidation, NegativeStridesAreNamed) {
  Stages s;
  auto gather = s.gather;
  gather.q_strides.seq = -gather.q_strides.seq;
  expect_stage_error(gather, &lighthouse::cpu::gather, "q_strides.seq", s);
  auto scatter = s.scatter;
  scatter.out_strides.head = -1;
  expect_stage_error(scatter, &lighthouse::cpu::scatter, "out_strides.head", s);
  auto back = s.scatter_back;
  back.grad_o_sel_strides.batch = -5;
  expect_stage_error(back, &lighthouse::cpu::scatter_backward, "grad_o_sel_strides.batch", s);
}

TEST(StageValidation, ZeroOutputStridesAreNamed) {
  Stages s;
  auto gather = s.gather;
  gather.k_sel_strides.seq = 0;
  expect_stage_error(gather, &lighthouse::cpu::gather, "k_sel_strides.seq", s);
  auto scatter = s.scatter;
  scatter.out_strides.head = 0;  // H = 2 heads would alias
  expect_stage_error(scatter, &lighthouse::cpu::scatter, "out_strides.head", s);
  auto back = s.gather_back;
  back.grad_q_strides.seq = 0;
  expect_stage_error(back, &lighthouse::cpu::gather_backward, "grad_q_strides.seq", s);
}

TEST(StageValidation, UninitialisedGeometryIsNamed) {
  Stages s;
  auto select = s.select;
  select.geo = lighthouse::Geometry{};
  expect_stage_error(select, &lighthouse::cpu::select, "geo", s);
  auto scatter = s.scatter;
  scatter.geo = lighthouse::Geometry{};
  expect_stage_error(scatter, &lighthouse::cpu::scatter, "geo", s);
}

TEST(StageValidation, DimsMustMatchTheGeometry) {
  Stages s;
  auto gather = s.gather;
  gather.dims.seq_len = 65;
  expect_stage_error(gather, &lighthouse::cpu::gather, "dims.seq_len", s);
}

TEST(StageValidation, StageDimsArePositive) {
  Stages s;
  auto pool = s.pool;
  pool.dims.batch = 0;
  expect_stage_error(pool, &lighthouse::cpu::pool_score, "dims.batch", s);
  auto back = s.scatter_back;
  back.dims.head_dim = 0;
  expect_stage_error(back, &lighthouse::cpu::scatter_backward, "dims.head_dim", s);
  auto gather = s.gather;
  gather.dims.kv_heads = 0;
  expect_stage_error(gather, &lighthouse::cpu::gather, "dims.kv_heads", s);
}

TEST(StageValidation, StageHeadsArePositive) {
  Stages s;
  auto select = s.select;
  select.dims.heads = 0;
  expect_stage_error(select, &lighthouse::cpu::select, "dims.heads", s);
  auto back = s.gather_back;
  back.dims.heads = -2;
  expect_stage_error(back, &lighthouse::cpu::gather_backward, "dims.heads", s);
}

TEST(StageValidation, StageHeadsAreAMultipleOfKvHeads) {
  Stages s;
  auto scatter = s.scatter;
  scatter.dims.heads = 3;
  scatter.dims.kv_heads = 2;
  expect_stage_error(scatter, &lighthouse::cpu::scatter, "dims.heads % dims.kv_heads", s);
}

TEST(StageValidation, UnknownDtypeIsNamed) {
  Stages s;
  auto gather = s.gather;
  gather.dtype = static_cast<lighthouse::DType>(9);
  expect_stage_error(gather, &lighthouse::cpu::gather, "dtype", s);
}

TEST(StageValidation, UnknownSelectionRuleIsNamed) {
  Stages s;
  auto select = s.select;
  select.selection = static_cast<lighthouse::Selection>(7);
  expect_stage_error(select, &lighthouse::cpu::select, "selection", s);
}

TEST(StageValidation, ValidPooledTensorsRun) {
  Stages s;
  lighthouse::cpu::pool_score(s.pool_with_pooled());
  EXPECT_FALSE(s.outputs_untouched());
}

TEST(StageValidation, PooledTensorsAreAllThreeOrNone) {
  Stages s;
  for (int set = 1; set <= 2; ++set) {
    SCOPED_TRACE(std::to_string(set) + " of 3 set");
    auto pool = s.pool_with_pooled();
    auto gather = s.gather_with_pooled();
    pool.pooled_v = nullptr, gather.pooled_v = nullptr;
    if (set == 1) pool.pooled_k = nullptr, gather.pooled_k = nullptr;
    expect_stage_error(pool, &lighthouse::cpu::pool_score, "pooled_q, pooled_k, pooled_v", s);
    expect_stage_error(gather, &lighthouse::cpu::gather, "pooled_q, pooled_k, pooled_v", s);
  }
}

TEST(StageValidation, PooledTensorsNeedTheBaseTensors) {
  // With given base scores pool_score reads no q or k, unless it pools them.
  Stages s;
  auto pool = s.pool_with_pooled();
  pool.base_qk = pool.base_kq = s.q.data();
  auto no_q = pool;
  no_q.q = nullptr;
  expect_stage_error(no_q, &lighthouse::cpu::pool_score, "q (needed for pooled_q)", s);
  auto no_k = pool;
  no_k.k = nullptr;
  expect_stage_error(no_k, &lighthouse::cpu::pool_score, "k (needed for pooled_k)", s);
  auto no_v = pool;
  no_v.v = nullptr;
  expect_stage_error(no_v, &lighthouse::cpu::pool_score, "v (needed for pooled_v)", s);
}

TEST(StageValidation, PooledStridesAreNamed) {
  Stages s;
  auto pool = s.pool_with_pooled();
  pool.v_strides.seq = -1;
  expect_stage_error(pool, &lighthouse::cpu::pool_score, "v_strides.seq", s);
  pool = s.pool_with_pooled();
  pool.pooled_q_strides.seq = 0;  // an output: n_L > 1 rows would alias
  expect_stage_error(pool, &lighthouse::cpu::pool_score, "pooled_q_strides.seq", s);
  pool = s.pool_with_pooled();
  pool.pooled_v_strides.batch = -3;
  expect_stage_error(pool, &lighthouse::cpu::pool_score, "pooled_v_strides.batch", s);
  auto gather = s.gather_with_pooled();
  gather.pooled_k_strides.head = -1;  // an input: broadcasting (0) is allowed, negative is not
  expect_stage_error(gather, &lighthouse::cpu::gather, "pooled_k_strides.head", s);
}

TEST(StageValidation, RopeTablesComeInPairs) {
  Stages s;
  auto gather = s.gather;
  gather.rope.cos = s.rope_table.data();
  expect_stage_error(gather, &lighthouse::cpu::gather, "rope.cos, rope.sin", s);
  auto back = s.gather_back;
  back.rope.sin = s.rope_table.data();
  expect_stage_error(back, &lighthouse::cpu::gather_backward, "rope.cos, rope.sin", s);
}

TEST(StageValidation, RopeNeedsAnEvenHeadDim) {
  Stages s;
  auto gather = s.gather;
  gather.rope.cos = gather.rope.sin = s.rope_table.data();
  gather.dims.head_dim = 3;
  expect_stage_error(gather, &lighthouse::cpu::gather, "dims.head_dim", s);
}

TEST(StageValidation, RopeBatchStrideIsNonNegative) {
  Stages s;
  auto back = s.gather_back;
  back.rope.cos = back.rope.sin = s.rope_table.data();
  back.rope.batch_stride = -1;
  expect_stage_error(back, &lighthouse::cpu::gather_backward, "rope.batch_stride", s);
}

}  // namespace
