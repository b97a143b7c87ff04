// Rotary positions (spec section 10): gather and gather_backward with rope
// tables against the spec model, bit for bit, on fresh random inputs: fp32,
// bf16 and fp16, both pair conventions, one [N, D] table for every batch row
// or [B, N, D] tables (with padding between batch rows), per-element rows
// (D values) or per-pair rows (D/2 values, the spec model reading each pair's
// value at both of its elements), GQA, ragged N,
// levels 2..4, strided views, and the pooled level-L fusion (which must give
// the bits of re-pooling). The tables hold random values, not rotations, so
// that an index or sign slip cannot hide behind the symmetries of real RoPE
// tables. Outputs and table padding are poisoned with NaN first.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "buffers.h"
#include "lighthouse/config.h"
#include "lighthouse/cpu.h"
#include "lighthouse/geometry.h"
#include "spec_model.h"
#include "stage_calls.h"

namespace {

using lhtest::Buffer;
using lhtest::Layout;
using lighthouse::DType;

struct RopeCase {
  DType dtype = DType::kFloat32;
  int64_t seq_len = 0, batch = 1, heads = 1, kv_heads = 1, head_dim = 2;
  int levels = 2, pooling = 2, tile_budget = 2;
  int64_t topk = 2;
  bool interleaved = false;
  bool batched_tables = false;  // [B, N, R] tables (else one [N, R] table)
  int64_t table_pad = 0;        // floats between batched tables' batch rows
  bool per_pair = false;        // rows of R = D/2 values, one per pair (else R = D)
  Layout input = Layout::kSeqMajor, selected = Layout::kHeadMajor;

  std::string describe() const {
    std::ostringstream os;
    os << lighthouse::dtype_name(dtype) << " N=" << seq_len << " B=" << batch << " H=" << heads << " Hkv=" << kv_heads
       << " D=" << head_dim << " L=" << levels << " p=" << pooling << " m=" << tile_budget << " topk=" << topk
       << (interleaved ? " interleaved" : " rotate-half") << (per_pair ? " per-pair" : " per-element")
       << (batched_tables ? " [B,N,R]+" : " [N,R]")
       << (batched_tables ? std::to_string(table_pad) : "") << " layouts in/sel=" << lhtest::layout_name(input) << "/"
       << lhtest::layout_name(selected);
    return os.str();
  }
};

// Choices a family fixes; unset fields are drawn at random.
struct Draw {
  bool has_dtype = false;
  DType dtype = DType::kFloat32;
  int levels = 0;      // 0: 2..4
  int64_t group = 0;   // heads / kv_heads; 0: 1, 2 or 4
  int ragged = -1;     // -1: either; 0: N a multiple of c_L * T; 1: ragged
  int interleaved = -1;
  int per_pair = -1;
  bool scrambled = false;
};

constexpr int64_t kMaxMinLen = 4096;

RopeCase random_case(std::mt19937_64& rng, const Draw& draw) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (;;) {
    RopeCase c;
    c.dtype = draw.has_dtype ? draw.dtype : static_cast<DType>(pick(0, 2));
    c.pooling = 1 << pick(1, 3);
    c.levels = draw.levels ? draw.levels : static_cast<int>(pick(2, 4));
    c.tile_budget = 1 << pick(1, 4);
    c.topk = c.tile_budget * pick(1, 4);
    int64_t min_n = c.topk;
    for (int l = 1; l < c.levels; ++l) min_n *= c.pooling;
    if (min_n > kMaxMinLen) continue;
    const int64_t unit = min_n / c.tile_budget;
    const bool ragged = draw.ragged < 0 ? pick(0, 1) == 1 : draw.ragged == 1;
    c.seq_len = ragged ? min_n + pick(1, min_n) : unit * pick(c.tile_budget, 2 * c.tile_budget);
    c.batch = pick(1, 2);
    c.kv_heads = pick(1, 2);
    c.heads = c.kv_heads * (draw.group ? draw.group : int64_t{1} << pick(0, 2));
    const int64_t dims[] = {2, 4, 6, 8, 10, 16};
    c.head_dim = dims[pick(0, 5)];
    c.interleaved = draw.interleaved < 0 ? pick(0, 1) == 1 : draw.interleaved == 1;
    c.per_pair = draw.per_pair < 0 ? pick(0, 1) == 1 : draw.per_pair == 1;
    c.batched_tables = pick(0, 1) == 1;
    c.table_pad = c.batched_tables ? pick(0, 3) : 0;
    if (draw.scrambled) {
      c.input = c.selected = Layout::kScrambled;
    } else {
      c.input = pick(0, 1) ? Layout::kSeqMajor : Layout::kScrambled;
      c.selected = pick(0, 2) == 0 ? Layout::kSeqMajor : Layout::kHeadMajor;
    }
    return c;
  }
}

// The storage round trips the spec model rounds a mean with before rotating it.
float round_f32(float x) { return x; }
float round_bf16(float x) { return lighthouse::to_float(lighthouse::from_float<lighthouse::bf16_t>(x)); }
float round_f16(float x) { return lighthouse::to_float(lighthouse::from_float<lighthouse::f16_t>(x)); }

float (*round_of(DType t))(float) {
  return t == DType::kBFloat16 ? &round_bf16 : (t == DType::kFloat16 ? &round_f16 : &round_f32);
}

// Random tables; the padding between batch rows holds NaN, so reading it
// fails. Per-pair tables draw one value per pair; the spec model reads them
// expanded to one value per element (both elements of a pair the same).
struct Tables {
  std::vector<float> cos, sin;
  std::vector<float> model_cos, model_sin;
  lighthouse::RopeTables params;
  spec::Rope model;
};

Tables make_tables(const RopeCase& c, std::mt19937_64& rng) {
  Tables t;
  const int64_t D = c.head_dim, R = c.per_pair ? D / 2 : D, row_elems = c.seq_len * R;
  const int64_t stride = c.batched_tables ? row_elems + c.table_pad : 0;
  const int64_t table_rows = c.batched_tables ? c.batch : 1;
  const int64_t total = c.batched_tables ? c.batch * stride : row_elems;
  t.cos.assign(total, std::numeric_limits<float>::quiet_NaN());
  t.sin = t.cos;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t b = 0; b < table_rows; ++b)
    for (int64_t i = 0; i < row_elems; ++i) {
      t.cos[b * stride + i] = normal(rng);
      t.sin[b * stride + i] = normal(rng);
    }
  t.params.cos = t.cos.data();
  t.params.sin = t.sin.data();
  t.params.batch_stride = stride;
  t.params.interleaved = c.interleaved;
  t.params.per_pair = c.per_pair;
  t.model_cos.assign(table_rows * c.seq_len * D, 0.0f);
  t.model_sin = t.model_cos;
  for (int64_t b = 0; b < table_rows; ++b)
    for (int64_t n = 0; n < c.seq_len; ++n)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t col = !c.per_pair ? d : (c.interleaved ? d / 2 : d % (D / 2));
        t.model_cos[(b * c.seq_len + n) * D + d] = t.cos[b * stride + n * R + col];
        t.model_sin[(b * c.seq_len + n) * D + d] = t.sin[b * stride + n * R + col];
      }
  t.model.cos = t.model_cos.data();
  t.model.sin = t.model_sin.data();
  t.model.batch_stride = c.batched_tables ? c.seq_len * D : 0;
  t.model.dim = D;
  t.model.interleaved = c.interleaved;
  return t;
}

// Every logical element of a and b holds the same bits.
::testing::AssertionResult same_elements(const Buffer& a, const Buffer& b, int64_t batch, int64_t seq, int64_t heads,
                                         int64_t dim, const std::string& what) {
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t s = 0; s < seq; ++s)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t d = 0; d < dim; ++d)
          if (a.bits(a.offset(i, s, h, d)) != b.bits(b.offset(i, s, h, d)))
            return ::testing::AssertionFailure() << what << " [b=" << i << ", seq=" << s << ", head=" << h
                                                 << ", d=" << d << "]: " << a.get(i, s, h, d) << " vs "
                                                 << b.get(i, s, h, d);
  return ::testing::AssertionSuccess();
}

bool report(std::initializer_list<::testing::AssertionResult> results) {
  bool ok = true;
  for (const auto& r : results)
    if (!r) {
      ADD_FAILURE() << r.message();
      ok = false;
    }
  return ok;
}

// gather (re-pooled and fused) and gather_backward of one configuration;
// false on the first failure.
bool check_rope(const RopeCase& c, uint64_t seed) {
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
  const int64_t group = c.heads / c.kv_heads, S = pyr.kept, nL = geo.coarsest();
  const int64_t B = c.batch, N = c.seq_len, H = c.heads, G = c.kv_heads, D = c.head_dim;

  Buffer q(c.dtype, B, N, H, D, c.input, rng), k(c.dtype, B, N, G, D, c.input, rng), v(c.dtype, B, N, G, D, c.input, rng);
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);
  const spec::Tensor qv = q.values(), kv = k.values(), vv = v.values();
  std::vector<spec::Selection> sel;
  std::vector<int32_t> indices, slots;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      std::vector<float> qk, kq;
      spec::norm_scores(pyr, qv, kv, b, g, &qk, &kq);
      sel.push_back(spec::select(pyr, qk.data(), kq.data()));
      indices.insert(indices.end(), sel.back().indices.begin(), sel.back().indices.end());
      slots.insert(slots.end(), sel.back().slots.begin(), sel.back().slots.end());
    }
  const Tables tables = make_tables(c, rng);

  // gather, re-pooling every level.
  Buffer q_sel(c.dtype, B, S, H, D, c.selected, rng), k_sel(c.dtype, B, S, G, D, c.selected, rng),
      v_sel(c.dtype, B, S, G, D, c.selected, rng);
  q_sel.poison();
  k_sel.poison();
  v_sel.poison();
  lhtest::run_gather(dims, geo, q, k, v, indices.data(), q_sel, k_sel, v_sel, tables.params);
  const auto round = round_of(c.dtype);
  if (!report({q_sel.matches(spec::gather_rotated(pyr, qv, sel, group, tables.model, round), "gather q_sel"),
               k_sel.matches(spec::gather_rotated(pyr, kv, sel, 1, tables.model, round), "gather k_sel"),
               v_sel.matches(spec::gather(pyr, vv, sel, 1), "gather v_sel (never rotated)")}))
    return false;

  // gather copying level L from pool_score's pooled tensors: the same bits.
  Buffer pq(c.dtype, B, nL, H, D, c.selected, rng), pk(c.dtype, B, nL, G, D, c.selected, rng),
      pv(c.dtype, B, nL, G, D, c.selected, rng);
  pq.poison();
  pk.poison();
  pv.poison();
  auto scores_qk = lhtest::poisoned<float>(B * G * pyr.pyramid_len), scores_kq = scores_qk;
  lighthouse::PoolScoreParams pp;
  pp.dims = dims;
  pp.geo = geo;
  pp.dtype = c.dtype;
  pp.q = q.data(), pp.q_strides = q.strides();
  pp.k = k.data(), pp.k_strides = k.strides();
  pp.v = v.data(), pp.v_strides = v.strides();
  pp.scores_qk = scores_qk.data(), pp.scores_kq = scores_kq.data();
  pp.pooled_q = pq.data(), pp.pooled_q_strides = pq.strides();
  pp.pooled_k = pk.data(), pp.pooled_k_strides = pk.strides();
  pp.pooled_v = pv.data(), pp.pooled_v_strides = pv.strides();
  lighthouse::cpu::pool_score(pp);
  Buffer fq(c.dtype, B, S, H, D, c.selected, rng), fk(c.dtype, B, S, G, D, c.selected, rng),
      fv(c.dtype, B, S, G, D, c.selected, rng);
  fq.poison();
  fk.poison();
  fv.poison();
  lighthouse::GatherParams gp;
  gp.dims = dims;
  gp.geo = geo;
  gp.dtype = c.dtype;
  gp.q = q.data(), gp.q_strides = q.strides();
  gp.k = k.data(), gp.k_strides = k.strides();
  gp.v = v.data(), gp.v_strides = v.strides();
  gp.indices = indices.data();
  gp.q_sel = fq.data(), gp.q_sel_strides = fq.strides();
  gp.k_sel = fk.data(), gp.k_sel_strides = fk.strides();
  gp.v_sel = fv.data(), gp.v_sel_strides = fv.strides();
  gp.pooled_q = pq.data(), gp.pooled_q_strides = pq.strides();
  gp.pooled_k = pk.data(), gp.pooled_k_strides = pk.strides();
  gp.pooled_v = pv.data(), gp.pooled_v_strides = pv.strides();
  gp.rope = tables.params;
  lighthouse::cpu::gather(gp);
  if (!report({same_elements(fq, q_sel, B, S, H, D, "fused q_sel"), same_elements(fk, k_sel, B, S, G, D, "fused k_sel"),
               same_elements(fv, v_sel, B, S, G, D, "fused v_sel")}))
    return false;

  // gather_backward of random gradients of the gathered tensors.
  Buffer gq_sel(c.dtype, B, S, H, D, c.selected, rng), gk_sel(c.dtype, B, S, G, D, c.selected, rng),
      gv_sel(c.dtype, B, S, G, D, c.selected, rng);
  gq_sel.fill_normal(rng);
  gk_sel.fill_normal(rng);
  gv_sel.fill_normal(rng);
  Buffer gq(c.dtype, B, N, H, D, c.input, rng), gk(c.dtype, B, N, G, D, c.input, rng), gv(c.dtype, B, N, G, D, c.input, rng);
  gq.poison();
  gk.poison();
  gv.poison();
  lhtest::run_gather_backward(dims, geo, gq_sel, gk_sel, gv_sel, slots.data(), gq, gk, gv, tables.params);
  const spec::Rope& model = tables.model;
  return report({gq.matches(spec::gather_backward_rotated(pyr, gq_sel.values(), sel, group, model), "grad_q"),
                 gk.matches(spec::gather_backward_rotated(pyr, gk_sel.values(), sel, 1, model), "grad_k"),
                 gv.matches(spec::gather_backward(pyr, gv_sel.values(), sel, 1), "grad_v (never rotated)")});
}

int run_family(const char* family, int count, uint64_t base_seed, const Draw& draw) {
  int done = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base_seed + static_cast<uint64_t>(i);
    std::mt19937_64 rng(seed);
    if (!check_rope(random_case(rng, draw), seed)) break;
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

TEST(Rope, Float32) { EXPECT_EQ(run_family("rope fp32", 40, 31000, with_dtype(DType::kFloat32)), 40); }

TEST(Rope, BFloat16) { EXPECT_EQ(run_family("rope bf16", 40, 32000, with_dtype(DType::kBFloat16)), 40); }

TEST(Rope, Float16) { EXPECT_EQ(run_family("rope fp16", 40, 33000, with_dtype(DType::kFloat16)), 40); }

TEST(Rope, BothConventions) {
  int done = 0;
  for (int interleaved : {0, 1}) {
    Draw d;
    d.interleaved = interleaved;
    done += run_family(interleaved ? "rope interleaved" : "rope rotate-half", 20, 34000 + 100 * interleaved, d);
  }
  EXPECT_EQ(done, 40);
}

TEST(Rope, PerPairTables) {
  int done = 0;
  for (int interleaved : {0, 1}) {
    Draw d;
    d.interleaved = interleaved;
    d.per_pair = 1;
    done += run_family(interleaved ? "rope per-pair interleaved" : "rope per-pair rotate-half", 20,
                       39000 + 100 * interleaved, d);
  }
  EXPECT_EQ(done, 40);
}

TEST(Rope, GroupedQueryHeads) {
  int done = 0;
  for (int64_t group : {1, 2, 4, 8}) {
    Draw d;
    d.group = group;
    done += run_family(("rope GQA group " + std::to_string(group)).c_str(), 10, 35000 + 100 * group, d);
  }
  EXPECT_EQ(done, 40);
}

TEST(Rope, RaggedAndRegularSequences) {
  int done = 0;
  for (int ragged : {0, 1}) {
    Draw d;
    d.ragged = ragged;
    done += run_family(ragged ? "rope ragged N" : "rope regular N", 20, 36000 + 100 * ragged, d);
  }
  EXPECT_EQ(done, 40);
}

TEST(Rope, PyramidDepths) {
  int done = 0;
  for (int levels : {2, 3, 4}) {
    Draw d;
    d.levels = levels;
    done += run_family(("rope levels " + std::to_string(levels)).c_str(), 15, 37000 + 100 * levels, d);
  }
  EXPECT_EQ(done, 45);
}

TEST(Rope, StridedViews) {
  Draw d;
  d.scrambled = true;
  EXPECT_EQ(run_family("rope strided views", 30, 38000, d), 30);
}

}  // namespace
