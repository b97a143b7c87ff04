// The dilated scorer: the golden dilated case's pyramid scores, and base
// scores for a ragged N (not a multiple of delta), GQA and strided inputs
// against a naive double-precision computation per residue class, and an
// error naming the argument for every rule of its params.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "expect_error.h"
#include "golden.h"
#include "lighthouse/dilated.h"
#include "lighthouse/error.h"
#include "lighthouse/layer.h"

namespace {

using lighthouse::Strides;

double rel_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

TEST(Dilated, GoldenPyramidScores) {
  const lhtest::GoldenCase g = lhtest::load_golden("n4096_p4_l3_k256_dilated");
  ASSERT_EQ(g.config.scorer, lighthouse::Scorer::kDilated);
  const int64_t N = g.seq_len, H = g.heads, D = g.head_dim;
  const std::vector<float> q = g.floats("q"), k = g.floats("k"), v = g.floats("v");
  lighthouse::LayerInputs in;
  in.dims = {g.batch, N, H, H, D};
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.q_strides = in.k_strides = in.v_strides = lighthouse::contiguous_bnhd(N, H, D);
  lighthouse::Layer layer(g.config, in);
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  layer.forward(out.data(), in.q_strides);
  for (const char* name : {"scores_qk", "scores_kq"}) {
    const std::vector<float> ref = g.floats(name);
    const std::vector<float>& got = name[7] == 'q' ? layer.scores_qk() : layer.scores_kq();
    ASSERT_EQ(got.size(), ref.size());
    EXPECT_LT(rel_error(got, std::vector<double>(ref.begin(), ref.end())), 1e-5) << name;
  }
  EXPECT_EQ(layer.indices(), g.ints("indices"));
}

// Naive per residue class: base[b, g, j] = max over the group's query heads of
// ||softmax-attention output row||, with queries `a` and keys `c` (values v).
void naive_side(int64_t B, int64_t N, int64_t H, int64_t Hkv, int64_t D, int delta, bool swapped,
                const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                std::vector<double>& base) {
  const int64_t group = H / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // Dense [B, N, heads, D] inputs.
  auto qrow = [&](int64_t b, int64_t n, int64_t h) { return &q[((b * N + n) * H + h) * D]; };
  auto krow = [&](int64_t b, int64_t n, int64_t g) { return &k[((b * N + n) * Hkv + g) * D]; };
  auto vrow = [&](int64_t b, int64_t n, int64_t g) { return &v[((b * N + n) * Hkv + g) * D]; };
  base.assign(static_cast<size_t>(B * Hkv * N), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      for (int64_t j = 0; j < N; ++j) {
        const double* a = swapped ? krow(b, j, g) : qrow(b, j, h);
        std::vector<double> w;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t i = j % delta; i <= j; i += delta) {
          const double* c = swapped ? qrow(b, i, h) : krow(b, i, g);
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += a[d] * c[d];
          w.push_back(s * scale);
          mx = std::max(mx, w.back());
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        std::vector<double> o(static_cast<size_t>(D), 0.0);
        size_t idx = 0;
        for (int64_t i = j % delta; i <= j; i += delta, ++idx)
          for (int64_t d = 0; d < D; ++d) o[d] += w[idx] / sum * vrow(b, i, g)[d];
        double norm = 0;
        for (double x : o) norm += x * x;
        double& slot = base[(b * Hkv + g) * N + j];
        slot = h % group == 0 ? std::sqrt(norm) : std::max(slot, std::sqrt(norm));
      }
    }
}

TEST(Dilated, RaggedGqaStridedMatchesNaive) {
  const int64_t B = 2, N = 103, H = 4, Hkv = 2, D = 8;
  const int delta = 4;
  std::mt19937 gen(11);
  std::normal_distribution<double> dist;
  auto normal = [&](int64_t n) {
    std::vector<double> x(static_cast<size_t>(n));
    for (double& e : x) e = static_cast<float>(dist(gen));
    return x;
  };
  const std::vector<double> q = normal(B * N * H * D), k = normal(B * N * Hkv * D), v = normal(B * N * Hkv * D);
  std::vector<double> ref_qk, ref_kq;
  naive_side(B, N, H, Hkv, D, delta, false, q, k, v, ref_qk);
  naive_side(B, N, H, Hkv, D, delta, true, q, k, v, ref_kq);

  // Ours reads q as a [B, H, N, D] buffer through strides and k, v from a
  // buffer with a padded row (D + 3 elements per token and head).
  std::vector<float> qs(q.size()), ks(static_cast<size_t>(B * N * Hkv * (D + 3)), 0.0f), vs(ks.size(), 0.0f);
  const Strides q_st{H * N * D, D, N * D}, kv_st{N * Hkv * (D + 3), Hkv * (D + 3), D + 3};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          qs[b * q_st.batch + n * q_st.seq + h * q_st.head + d] = static_cast<float>(q[((b * N + n) * H + h) * D + d]);
      for (int64_t g = 0; g < Hkv; ++g)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t o = b * kv_st.batch + n * kv_st.seq + g * kv_st.head + d;
          ks[o] = static_cast<float>(k[((b * N + n) * Hkv + g) * D + d]);
          vs[o] = static_cast<float>(v[((b * N + n) * Hkv + g) * D + d]);
        }
    }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> qk(static_cast<size_t>(B * Hkv * N), nan), kq(qk.size(), nan);
  lighthouse::DilatedParams p;
  p.dims = {B, N, H, Hkv, D};
  p.dilation = delta;
  p.q = qs.data();
  p.q_strides = q_st;
  p.k = ks.data();
  p.k_strides = kv_st;
  p.v = vs.data();
  p.v_strides = kv_st;
  p.base_qk = qk.data();
  p.base_kq = kq.data();
  lighthouse::cpu::dilated_scores(p);
  EXPECT_LT(rel_error(qk, ref_qk), 1e-5);
  EXPECT_LT(rel_error(kq, ref_kq), 1e-5);
  // Every element, not just the norm of the whole: the first tokens of each
  // class attend only to themselves, so their score is ||v||.
  for (size_t i = 0; i < qk.size(); ++i) {
    ASSERT_NEAR(qk[i], ref_qk[i], 1e-5 * (1.0 + std::abs(ref_qk[i]))) << i;
    ASSERT_NEAR(kq[i], ref_kq[i], 1e-5 * (1.0 + std::abs(ref_kq[i]))) << i;
  }
}

TEST(Dilated, EveryRuleNamesItsArgument) {
  std::vector<float> x(64, 0.0f);
  lighthouse::DilatedParams valid;
  valid.dims = {1, 4, 2, 2, 4};
  valid.q = valid.k = valid.v = x.data();
  valid.q_strides = valid.k_strides = valid.v_strides = lighthouse::contiguous_bnhd(4, 2, 4);
  valid.base_qk = valid.base_kq = x.data();
  valid.dilation = 2;
  EXPECT_NO_THROW(lighthouse::cpu::dilated_scores(valid));
  const struct {
    const char* argument;
    std::function<void(lighthouse::DilatedParams&)> change;
  } breakages[] = {
      {"dims.batch", [](auto& p) { p.dims.batch = 0; }},
      {"dims.seq_len", [](auto& p) { p.dims.seq_len = 0; }},
      {"dims.heads", [](auto& p) { p.dims.heads = -1; }},
      {"dims.kv_heads", [](auto& p) { p.dims.kv_heads = 0; }},
      {"dims.heads % dims.kv_heads", [](auto& p) { p.dims.kv_heads = 3; }},
      {"dims.head_dim", [](auto& p) { p.dims.head_dim = 0; }},
      {"dilation", [](auto& p) { p.dilation = 0; }},
      {"scale", [](auto& p) { p.scale = -1.0f; }},
      {"scale", [](auto& p) { p.scale = std::numeric_limits<float>::quiet_NaN(); }},
      {"q", [](auto& p) { p.q = nullptr; }},
      {"k", [](auto& p) { p.k = nullptr; }},
      {"v", [](auto& p) { p.v = nullptr; }},
      {"base_qk", [](auto& p) { p.base_qk = nullptr; }},
      {"base_kq", [](auto& p) { p.base_kq = nullptr; }},
      {"q_strides", [](auto& p) { p.q_strides.seq = -1; }},
      {"k_strides", [](auto& p) { p.k_strides.head = -1; }},
      {"v_strides", [](auto& p) { p.v_strides.batch = -1; }},
  };
  for (const auto& b : breakages) {
    SCOPED_TRACE(b.argument);
    lighthouse::DilatedParams p = valid;
    b.change(p);
    EXPECT_TRUE(lhtest::throws_naming([&] { lighthouse::cpu::dilated_scores(p); }, b.argument));
  }
}

}  // namespace
