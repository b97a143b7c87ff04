// Stage families: pool_score, gather, scatter, scatter_backward and
// gather_backward against the spec model on fresh random inputs, in fp32,
// bf16 and fp16, with GQA, ragged N and strided views (padded, permuted,
// head-major outputs laid out seq-major and back). Every output buffer is
// poisoned with NaN first; every element must come back finite and equal to
// the model, and nothing outside the view may change.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "buffers.h"
#include "lighthouse/config.h"
#include "lighthouse/geometry.h"
#include "spec_model.h"
#include "stage_calls.h"

namespace {

using lhtest::Buffer;
using lhtest::Layout;
using lighthouse::DType;

struct StageCase {
  DType dtype = DType::kFloat32;
  int64_t seq_len = 0, batch = 1, heads = 1, kv_heads = 1, head_dim = 1;
  int levels = 2, pooling = 2, tile_budget = 2;
  int64_t topk = 2;
  Layout input = Layout::kSeqMajor, selected = Layout::kHeadMajor, output = Layout::kSeqMajor;

  std::string describe() const {
    std::ostringstream os;
    os << lighthouse::dtype_name(dtype) << " N=" << seq_len << " B=" << batch << " H=" << heads << " Hkv=" << kv_heads
       << " D=" << head_dim << " L=" << levels << " p=" << pooling << " m=" << tile_budget << " topk=" << topk
       << " layouts in/sel/out=" << lhtest::layout_name(input) << "/" << lhtest::layout_name(selected) << "/"
       << lhtest::layout_name(output);
    return os.str();
  }
};

// Choices a family fixes; zero / unset fields are drawn at random.
struct Draw {
  bool has_dtype = false;
  DType dtype = DType::kFloat32;
  int64_t group = 0;      // heads / kv_heads
  bool ragged = false;    // N not a multiple of c_L * T
  bool scrambled = false; // every tensor a padded, permuted view
};

constexpr int64_t kMaxMinLen = 8192;

StageCase random_case(std::mt19937_64& rng, const Draw& draw) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (;;) {
    StageCase c;
    c.dtype = draw.has_dtype ? draw.dtype : static_cast<DType>(pick(0, 2));
    c.pooling = 1 << pick(1, 3);
    c.levels = static_cast<int>(pick(2, 5));
    c.tile_budget = 1 << pick(1, 4);
    c.topk = c.tile_budget * pick(1, 8);
    int64_t min_n = c.topk;
    for (int l = 1; l < c.levels; ++l) min_n *= c.pooling;
    if (min_n > kMaxMinLen) continue;
    const int64_t unit = min_n / c.tile_budget;
    c.seq_len = draw.ragged ? min_n + pick(1, min_n) : unit * pick(c.tile_budget, 2 * c.tile_budget);
    c.batch = pick(1, 2);
    c.kv_heads = pick(1, 2);
    c.heads = c.kv_heads * (draw.group ? draw.group : int64_t{1} << pick(0, 3));
    const int64_t dims[] = {1, 2, 3, 4, 5, 8, 16};
    c.head_dim = dims[pick(0, 6)];
    if (draw.scrambled) {
      c.input = c.selected = c.output = Layout::kScrambled;
    } else {
      c.input = pick(0, 1) ? Layout::kSeqMajor : Layout::kScrambled;
      c.selected = pick(0, 2) == 0 ? Layout::kSeqMajor : Layout::kHeadMajor;
      c.output = pick(0, 2) == 0 ? Layout::kHeadMajor : Layout::kSeqMajor;
    }
    return c;
  }
}

// Runs every stage of one configuration; returns false on the first failure.
bool check_stages(const StageCase& c, uint64_t seed) {
  SCOPED_TRACE(c.describe() + " seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  lighthouse::Config config;
  config.levels = c.levels;
  config.pooling = c.pooling;
  config.tile_budget = c.tile_budget;
  config.topk = c.topk;
  const auto geo = lighthouse::Geometry::make(config, c.seq_len);
  const spec::Pyramid pyr = spec::make_pyramid(c.seq_len, c.levels, c.pooling, c.tile_budget, c.topk);
  const auto dims = lhtest::make_dims(c.batch, c.seq_len, c.heads, c.kv_heads, c.head_dim);
  const int64_t group = c.heads / c.kv_heads, S = pyr.kept, P = pyr.pyramid_len;
  const int64_t B = c.batch, N = c.seq_len, H = c.heads, G = c.kv_heads, D = c.head_dim;

  Buffer q(c.dtype, B, N, H, D, c.input, rng), k(c.dtype, B, N, G, D, c.input, rng), v(c.dtype, B, N, G, D, c.input, rng);
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);
  const spec::Tensor qv = q.values(), kv = k.values(), vv = v.values();

  // pool_score: exact, since both sides follow the same summation order.
  auto scores_qk = lhtest::poisoned<float>(B * G * P), scores_kq = lhtest::poisoned<float>(B * G * P);
  lhtest::run_pool_score(dims, geo, q, k, scores_qk.data(), scores_kq.data());
  std::vector<spec::Selection> sel;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      std::vector<float> want_qk, want_kq;
      spec::norm_scores(pyr, qv, kv, b, g, &want_qk, &want_kq);
      const int64_t base = (b * G + g) * P;
      for (int64_t i = 0; i < P; ++i)
        if (!(scores_qk[base + i] == want_qk[i] && scores_kq[base + i] == want_kq[i])) {
          ADD_FAILURE() << "pool_score b=" << b << " kv_head=" << g << " pyramid index " << i << ": got "
                        << scores_qk[base + i] << " / " << scores_kq[base + i] << ", spec model " << want_qk[i]
                        << " / " << want_kq[i];
          return false;
        }
      sel.push_back(spec::select(pyr, want_qk.data(), want_kq.data()));
    }
  std::vector<int32_t> indices, slots;
  for (const auto& s : sel) {
    indices.insert(indices.end(), s.indices.begin(), s.indices.end());
    slots.insert(slots.end(), s.slots.begin(), s.slots.end());
  }

  Buffer q_sel(c.dtype, B, S, H, D, c.selected, rng), k_sel(c.dtype, B, S, G, D, c.selected, rng),
      v_sel(c.dtype, B, S, G, D, c.selected, rng);
  q_sel.poison();
  k_sel.poison();
  v_sel.poison();
  lhtest::run_gather(dims, geo, q, k, v, indices.data(), q_sel, k_sel, v_sel);
  const auto q_sel_ok = q_sel.matches(spec::gather(pyr, qv, sel, group), "gather q_sel");
  const auto k_sel_ok = k_sel.matches(spec::gather(pyr, kv, sel, 1), "gather k_sel");
  const auto v_sel_ok = v_sel.matches(spec::gather(pyr, vv, sel, 1), "gather v_sel");
  if (!(q_sel_ok && k_sel_ok && v_sel_ok)) {
    ADD_FAILURE() << (q_sel_ok ? "" : q_sel_ok.message()) << (k_sel_ok ? "" : k_sel_ok.message())
                  << (v_sel_ok ? "" : v_sel_ok.message());
    return false;
  }

  Buffer o_sel(c.dtype, B, S, H, D, c.selected, rng), out(c.dtype, B, N, H, D, c.output, rng);
  o_sel.fill_normal(rng);
  out.poison();
  lhtest::run_scatter(dims, geo, o_sel, slots.data(), out);
  const auto scatter_ok = out.matches(spec::scatter(pyr, o_sel.values(), sel, group), "scatter out");
  if (!scatter_ok) {
    ADD_FAILURE() << scatter_ok.message();
    return false;
  }

  Buffer grad_out(c.dtype, B, N, H, D, c.output, rng), grad_o_sel(c.dtype, B, S, H, D, c.selected, rng);
  grad_out.fill_normal(rng);
  grad_o_sel.poison();
  lhtest::run_scatter_backward(dims, geo, grad_out, indices.data(), grad_o_sel);
  const auto scatter_back_ok =
      grad_o_sel.matches(spec::scatter_backward(pyr, grad_out.values(), sel, group), "scatter_backward grad_o_sel");
  if (!scatter_back_ok) {
    ADD_FAILURE() << scatter_back_ok.message();
    return false;
  }

  Buffer gq_sel(c.dtype, B, S, H, D, c.selected, rng), gk_sel(c.dtype, B, S, G, D, c.selected, rng),
      gv_sel(c.dtype, B, S, G, D, c.selected, rng);
  gq_sel.fill_normal(rng);
  gk_sel.fill_normal(rng);
  gv_sel.fill_normal(rng);
  Buffer gq(c.dtype, B, N, H, D, c.output, rng), gk(c.dtype, B, N, G, D, c.output, rng), gv(c.dtype, B, N, G, D, c.output, rng);
  gq.poison();
  gk.poison();
  gv.poison();
  lhtest::run_gather_backward(dims, geo, gq_sel, gk_sel, gv_sel, slots.data(), gq, gk, gv);
  const auto gq_ok = gq.matches(spec::gather_backward(pyr, gq_sel.values(), sel, group), "gather_backward grad_q");
  const auto gk_ok = gk.matches(spec::gather_backward(pyr, gk_sel.values(), sel, 1), "gather_backward grad_k");
  const auto gv_ok = gv.matches(spec::gather_backward(pyr, gv_sel.values(), sel, 1), "gather_backward grad_v");
  if (!(gq_ok && gk_ok && gv_ok)) {
    ADD_FAILURE() << (gq_ok ? "" : gq_ok.message()) << (gk_ok ? "" : gk_ok.message())
                  << (gv_ok ? "" : gv_ok.message());
    return false;
  }
  return true;
}

int run_family(const char* family, int count, uint64_t base_seed, const Draw& draw) {
  int done = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base_seed + static_cast<uint64_t>(i);
    std::mt19937_64 rng(seed);
    if (!check_stages(random_case(rng, draw), seed)) break;
    ++done;
  }
  std::printf("%s: %d random configurations\n", family, done);
  return done;
}

Draw with_dtype(DType t) {
  Draw d;
  d.has_dtype = true;
  d.dtype = t;
  return d;
}

TEST(StageProperties, Float32) { EXPECT_EQ(run_family("stages fp32", 60, 11000, with_dtype(DType::kFloat32)), 60); }

TEST(StageProperties, BFloat16) { EXPECT_EQ(run_family("stages bf16", 60, 12000, with_dtype(DType::kBFloat16)), 60); }

TEST(StageProperties, Float16) { EXPECT_EQ(run_family("stages fp16", 60, 13000, with_dtype(DType::kFloat16)), 60); }

TEST(StageProperties, GroupedQueryHeads) {
  int done = 0;
  for (int64_t group : {1, 2, 4, 8}) {
    Draw d;
    d.group = group;
    done += run_family(("stages GQA group " + std::to_string(group)).c_str(), 15, 14000 + 100 * group, d);
  }
  EXPECT_EQ(done, 60);
}

TEST(StageProperties, RaggedSequences) {
  Draw d;
  d.ragged = true;
  EXPECT_EQ(run_family("stages ragged N", 60, 15000, d), 60);
}

TEST(StageProperties, StridedViews) {
  // Every tensor a padded view with its batch, seq and head dimensions in a
  // random memory order (e.g. [B, H, S, D] outputs laid out as [B, S, H, D]).
  Draw d;
  d.scrambled = true;
  EXPECT_EQ(run_family("stages strided views", 60, 16000, d), 60);
}

TEST(StageProperties, PoolScoreFromGivenBaseScores) {
  // The dilated scorer hands its base scores in; pool_score only max-pools them.
  std::mt19937_64 rng(17000);
  lighthouse::Config config;
  config.levels = 4;
  config.pooling = 2;
  config.tile_budget = 4;
  config.topk = 8;
  const int64_t B = 2, G = 2, N = 200;
  const auto geo = lighthouse::Geometry::make(config, N);
  const spec::Pyramid pyr = spec::make_pyramid(N, 4, 2, 4, 8);
  std::vector<float> base_qk(B * G * N), base_kq(B * G * N);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& x : base_qk) x = uniform(rng);
  for (float& x : base_kq) x = uniform(rng);
  auto scores_qk = lhtest::poisoned<float>(B * G * pyr.pyramid_len), scores_kq = scores_qk;
  lighthouse::PoolScoreParams p;
  p.dims = lhtest::make_dims(B, N, 2 * G, G, 8);
  p.geo = geo;
  p.base_qk = base_qk.data();
  p.base_kq = base_kq.data();
  p.scores_qk = scores_qk.data();
  p.scores_kq = scores_kq.data();
  lighthouse::cpu::pool_score(p);
  for (int64_t bg = 0; bg < B * G; ++bg) {
    const auto want_qk = spec::pool_max(pyr, std::vector<float>(base_qk.begin() + bg * N, base_qk.begin() + (bg + 1) * N));
    const auto want_kq = spec::pool_max(pyr, std::vector<float>(base_kq.begin() + bg * N, base_kq.begin() + (bg + 1) * N));
    for (int64_t i = 0; i < pyr.pyramid_len; ++i) {
      ASSERT_EQ(scores_qk[bg * pyr.pyramid_len + i], want_qk[i]) << "item " << bg << " index " << i;
      ASSERT_EQ(scores_kq[bg * pyr.pyramid_len + i], want_kq[i]) << "item " << bg << " index " << i;
    }
  }
}

}  // namespace
