// The CPU layer against every golden case made by the authors' kernels:
// selection exact, output and input gradients within 1e-5 relative, plus the
// selection from given (independent) scores and argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "golden.h"
#include "lighthouse/error.h"
#include "lighthouse/layer.h"
#include "lighthouse/threading.h"

namespace {

using lighthouse::Strides;

// ||got - ref|| / ||ref|| with got read through a permutation: got_index(i)
// maps reference element i to ours. NaN anywhere gives NaN, which fails.
template <typename Index>
double rel_error(const std::vector<float>& got, const std::vector<float>& ref, Index got_index) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double diff = static_cast<double>(got[got_index(i)]) - ref[i];
    num += diff * diff;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

class LayerGolden : public testing::TestWithParam<std::string> {};

TEST_P(LayerGolden, ForwardAndBackwardMatch) {
  const lhtest::GoldenCase g = lhtest::load_golden(GetParam());
  const int64_t B = g.batch, N = g.seq_len, H = g.heads, D = g.head_dim;
  const std::vector<float> q = g.floats("q"), k = g.floats("k"), v = g.floats("v");
  const Strides bnhd = lighthouse::contiguous_bnhd(N, H, D);
  // grad_out and out are stored [B, H, N, D]: read them through strides.
  const Strides bhnd{H * N * D, D, N * D};

  lighthouse::LayerInputs in;
  in.dims = {B, N, H, H, D};
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.q_strides = in.k_strides = in.v_strides = bnhd;
  lighthouse::Layer layer(g.config, in);
  ASSERT_EQ(layer.geometry().kept, g.kept);
  ASSERT_EQ(layer.geometry().pyramid_len, g.pyramid_len);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(q.size(), nan);
  layer.forward(out.data(), bnhd);
  EXPECT_EQ(layer.indices(), g.ints("indices"));

  // Ours is [B, N, H, D]; the reference's element i is (b, h, n, d).
  auto from_bhnd = [&](size_t i) {
    const int64_t d = static_cast<int64_t>(i) % D, n = static_cast<int64_t>(i) / D % N;
    const int64_t h = static_cast<int64_t>(i) / (D * N) % H, b = static_cast<int64_t>(i) / (D * N * H);
    return static_cast<size_t>(((b * N + n) * H + h) * D + d);
  };
  auto same = [](size_t i) { return i; };
  EXPECT_LT(rel_error(out, g.floats("out"), from_bhnd), 1e-5);

  const std::vector<float> grad_out = g.floats("grad_out");
  std::vector<float> gq(q.size(), nan), gk(k.size(), nan), gv(v.size(), nan);
  layer.backward(grad_out.data(), bhnd, gq.data(), bnhd, gk.data(), bnhd, gv.data(), bnhd);
  EXPECT_LT(rel_error(gq, g.floats("grad_q"), same), 1e-5);
  EXPECT_LT(rel_error(gk, g.floats("grad_k"), same), 1e-5);
  EXPECT_LT(rel_error(gv, g.floats("grad_v"), same), 1e-5);
}

TEST_P(LayerGolden, SelectsFromGivenScores) {
  const lhtest::GoldenCase g = lhtest::load_golden(GetParam());
  const int64_t B = g.batch, N = g.seq_len, H = g.heads, D = g.head_dim;
  const std::vector<float> q = g.floats("q"), k = g.floats("k"), v = g.floats("v");
  const std::vector<float> sqk = g.floats("sel_scores_qk"), skq = g.floats("sel_scores_kq");
  lighthouse::LayerInputs in;
  in.dims = {B, N, H, H, D};
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.q_strides = in.k_strides = in.v_strides = lighthouse::contiguous_bnhd(N, H, D);
  in.scores_qk = sqk.data();
  in.scores_kq = skq.data();
  lighthouse::Layer layer(g.config, in);
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  layer.forward(out.data(), in.q_strides);
  EXPECT_EQ(layer.indices(), g.ints("sel_indices"));
  for (float x : out) ASSERT_TRUE(std::isfinite(x));
}

INSTANTIATE_TEST_SUITE_P(Golden, LayerGolden, testing::ValuesIn(lhtest::golden_case_names()),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

// Valid layer inputs: B = 1, N = 4096, H = Hkv = 1, D = 16, L = 2, p = 2, topk = 128.
struct LayerErrorCase {
  std::vector<float> x = std::vector<float>(4096 * 16, 0.0f);
  lighthouse::Config config;
  lighthouse::LayerInputs in;

  LayerErrorCase() {
    config.levels = 2;
    config.pooling = 2;
    config.topk = 128;
    in.dims = {1, 4096, 1, 1, 16};
    in.q = in.k = in.v = x.data();
    in.q_strides = in.k_strides = in.v_strides = lighthouse::contiguous_bnhd(4096, 1, 16);
  }
};

TEST(Layer, BackwardBeforeForwardIsAnError) {
  LayerErrorCase c;
  lighthouse::Layer layer(c.config, c.in);
  float* x = c.x.data();
  const Strides s = c.in.q_strides;
  EXPECT_TRUE(lhtest::throws_naming([&] { layer.backward(x, s, x, s, x, s, x, s); }, "Layer::backward"));
}

TEST(Layer, EveryInputRuleNamesItsArgument) {
  const struct {
    const char* argument;
    std::function<void(LayerErrorCase&)> change;
  } breakages[] = {
      {"seq_len", [](auto& c) { c.in.dims.seq_len = 100; }},  // shorter than topk * pooling^(levels-1)
      {"heads % kv_heads", [](auto& c) { c.in.dims.heads = 3, c.in.dims.kv_heads = 2; }},
      {"topk", [](auto& c) { c.config.topk = 100; }},
      {"dtype", [](auto& c) { c.in.dtype = static_cast<lighthouse::DType>(9); }},
      {"q", [](auto& c) { c.in.q = nullptr; }},
      {"k", [](auto& c) { c.in.k = nullptr; }},
      {"v", [](auto& c) { c.in.v = nullptr; }},
      {"scores_qk / scores_kq", [](auto& c) { c.in.scores_qk = c.x.data(); }},
      {"scores_qk / scores_kq", [](auto& c) { c.in.scores_kq = c.x.data(); }},
  };
  {
    LayerErrorCase c;
    EXPECT_NO_THROW(lighthouse::Layer(c.config, c.in));
  }
  for (const auto& b : breakages) {
    SCOPED_TRACE(b.argument);
    LayerErrorCase c;
    b.change(c);
    EXPECT_TRUE(lhtest::throws_naming([&] { lighthouse::Layer(c.config, c.in); }, b.argument));
  }
}

}  // namespace

namespace {

// A float64 layer with GQA and a ragged N (a tail past the last coarsest
// block): the backward must be the gradient of the forward for the fixed
// selection. Checked as directional derivatives along random directions by
// central differences, and the whole pass must not depend on the thread count.
struct Fp64Layer {
  lighthouse::Config config;
  lighthouse::Dims dims{1, 2048 + 37, 4, 2, 8};
  std::vector<double> q, k, v, g;

  Fp64Layer() {
    config.levels = 3;
    config.pooling = 2;
    config.topk = 256;
    std::mt19937 gen(7);
    std::normal_distribution<double> normal;
    auto fill = [&](std::vector<double>& x, int64_t heads) {
      x.resize(static_cast<size_t>(dims.batch * dims.seq_len * heads * dims.head_dim));
      for (double& e : x) e = normal(gen);
    };
    fill(q, dims.heads);
    fill(k, dims.kv_heads);
    fill(v, dims.kv_heads);
    fill(g, dims.heads);
  }

  lighthouse::LayerInputs inputs(const std::vector<double>& qq, const std::vector<double>& kk,
                                 const std::vector<double>& vv) const {
    lighthouse::LayerInputs in;
    in.dims = dims;
    in.dtype = lighthouse::DType::kFloat64;
    in.q = qq.data();
    in.k = kk.data();
    in.v = vv.data();
    in.q_strides = lighthouse::contiguous_bnhd(dims.seq_len, dims.heads, dims.head_dim);
    in.k_strides = in.v_strides = lighthouse::contiguous_bnhd(dims.seq_len, dims.kv_heads, dims.head_dim);
    return in;
  }

  // sum(out * g) and the selection it used.
  double loss(const std::vector<double>& qq, const std::vector<double>& kk, const std::vector<double>& vv,
              std::vector<int32_t>& indices) const {
    const lighthouse::LayerInputs in = inputs(qq, kk, vv);
    lighthouse::Layer layer(config, in);
    std::vector<double> out(qq.size(), std::numeric_limits<double>::quiet_NaN());
    layer.forward(out.data(), in.q_strides);
    indices = layer.indices();
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += out[i] * g[i];
    return sum;
  }
};

TEST(Layer, Float64BackwardIsTheGradientWithGqaAndRaggedN) {
  const Fp64Layer f;
  const lighthouse::LayerInputs in = f.inputs(f.q, f.k, f.v);
  lighthouse::Layer layer(f.config, in);
  ASSERT_GT(layer.geometry().tail, 0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> out(f.q.size(), nan), gq(f.q.size(), nan), gk(f.k.size(), nan), gv(f.v.size(), nan);
  layer.forward(out.data(), in.q_strides);
  layer.backward(f.g.data(), in.q_strides, gq.data(), in.q_strides, gk.data(), in.k_strides, gv.data(), in.v_strides);
  const std::vector<int32_t> base_indices = layer.indices();

  std::mt19937 gen(8);
  std::normal_distribution<double> normal;
  const double eps = 1e-5;
  for (int which = 0; which < 3; ++which) {
    const std::vector<double>& grad = which == 0 ? gq : which == 1 ? gk : gv;
    std::vector<double> dir(grad.size());
    for (double& e : dir) e = normal(gen);
    std::vector<double> plus[3] = {f.q, f.k, f.v}, minus[3] = {f.q, f.k, f.v};
    for (size_t i = 0; i < dir.size(); ++i) {
      plus[which][i] += eps * dir[i];
      minus[which][i] -= eps * dir[i];
    }
    std::vector<int32_t> ip, im;
    const double numeric = (f.loss(plus[0], plus[1], plus[2], ip) - f.loss(minus[0], minus[1], minus[2], im)) / (2 * eps);
    ASSERT_EQ(ip, base_indices) << "the perturbation changed the selection";
    ASSERT_EQ(im, base_indices) << "the perturbation changed the selection";
    double analytic = 0;
    for (size_t i = 0; i < dir.size(); ++i) analytic += grad[i] * dir[i];
    EXPECT_NEAR(analytic, numeric, 1e-7 * std::abs(numeric)) << "input " << "qkv"[which];
  }
}

TEST(Layer, IndependentOfThreadCount) {
  const Fp64Layer f;
  const lighthouse::LayerInputs in = f.inputs(f.q, f.k, f.v);
  std::vector<double> runs[2][4];
  for (int r = 0; r < 2; ++r) {
    lighthouse::set_num_threads(r == 0 ? 1 : 3);
    lighthouse::Layer layer(f.config, in);
    for (int t = 0; t < 4; ++t) runs[r][t].assign(t == 0 || t == 1 ? f.q.size() : f.k.size(), -1.0);
    layer.forward(runs[r][0].data(), in.q_strides);
    layer.backward(f.g.data(), in.q_strides, runs[r][1].data(), in.q_strides, runs[r][2].data(), in.k_strides,
                   runs[r][3].data(), in.v_strides);
  }
  lighthouse::set_num_threads(0);
  for (int t = 0; t < 4; ++t) EXPECT_EQ(runs[0][t], runs[1][t]) << "tensor " << t;
}

}  // namespace
