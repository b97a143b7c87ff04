// CPU dense causal attention against a naive double-precision reference:
// forward, lse and backward, MHA and GQA, sequence lengths that are not a
// multiple of the tile, strided views, 16-bit inputs, thread-count
// independence and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "lighthouse/attention.h"
#include "lighthouse/threading.h"

namespace lighthouse {
namespace {

struct Case {
  int64_t batch, heads, kv_heads, seq_len, head_dim;
};

// Dense [B, H, S, D] tensors in double, the reference's layout.
struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

std::vector<double> normal(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist;
  std::vector<double> x(static_cast<size_t>(n));
  for (double& v : x) v = dist(gen);
  return x;
}

Reference naive(const Case& c, double scale, const std::vector<double>& q, const std::vector<double>& k,
                const std::vector<double>& v, const std::vector<double>& dout) {
  const int64_t S = c.seq_len, D = c.head_dim, group = c.heads / c.kv_heads;
  Reference r;
  r.out.assign(q.size(), 0.0);
  r.lse.assign(static_cast<size_t>(c.batch * c.heads * S), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  std::vector<double> p(static_cast<size_t>(S)), dp(static_cast<size_t>(S));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t qh = (b * c.heads + h) * S * D, kh = (b * c.kv_heads + h / group) * S * D;
      for (int64_t i = 0; i < S; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += q[qh + i * D + d] * k[kh + j * D + d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(p[j] - mx);
        r.lse[(b * c.heads + h) * S + i] = mx + std::log(sum);
        double dsum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = std::exp(p[j] - mx) / sum;
          dp[j] = 0;
          for (int64_t d = 0; d < D; ++d) {
            r.out[qh + i * D + d] += p[j] * v[kh + j * D + d];
            dp[j] += dout[qh + i * D + d] * v[kh + j * D + d];
          }
          dsum += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - dsum) * scale;
          for (int64_t d = 0; d < D; ++d) {
            r.dq[qh + i * D + d] += ds * k[kh + j * D + d];
            r.dk[kh + j * D + d] += ds * q[qh + i * D + d];
            r.dv[kh + j * D + d] += p[j] * dout[qh + i * D + d];
          }
        }
      }
    }
  return r;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// Runs our attention on fp32 copies of the inputs laid out [B, H, S, D]
// (or, with `interleaved`, as [B, S, H, D] views) and returns everything as
// [B, H, S, D] doubles.
struct Ours {
  std::vector<double> out, lse, dq, dk, dv;
};

template <typename T>
std::vector<T> convert(const std::vector<double>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = from_float<T>(static_cast<float>(x[i]));
  return y;
}

template <>
std::vector<double> convert<double>(const std::vector<double>& x) {
  return x;
}

template <typename T>
double back(T x) {
  return static_cast<double>(to_float(x));
}
template <>
double back<double>(double x) {
  return x;
}

template <typename T>
Ours run_ours(const Case& c, DType dtype, float scale, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, const std::vector<double>& dout, bool interleaved) {
  const int64_t S = c.seq_len, D = c.head_dim;
  // Physical layout: [B, H, S, D], or [B, S, H, D] when interleaved.
  auto strides = [&](int64_t heads) {
    return interleaved ? Strides{S * heads * D, heads * D, D} : contiguous_bhsd(heads, S, D);
  };
  auto to_physical = [&](const std::vector<double>& x, int64_t heads) {
    std::vector<double> y(x.size());
    const Strides st = strides(heads);
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d)
            y[b * st.batch + s * st.seq + h * st.head + d] = x[((b * heads + h) * S + s) * D + d];
    return y;
  };
  auto from_physical = [&](const std::vector<T>& y, int64_t heads) {
    std::vector<double> x(y.size());
    const Strides st = strides(heads);
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d)
            x[((b * heads + h) * S + s) * D + d] = back(y[b * st.batch + s * st.seq + h * st.head + d]);
    return x;
  };
  const std::vector<T> tq = convert<T>(to_physical(q, c.heads)), tk = convert<T>(to_physical(k, c.kv_heads));
  const std::vector<T> tv = convert<T>(to_physical(v, c.kv_heads)), tdo = convert<T>(to_physical(dout, c.heads));
  const T poison = convert<T>({std::numeric_limits<double>::quiet_NaN()})[0];
  std::vector<T> out(tq.size(), poison), dq(tq.size(), poison), dk(tk.size(), poison), dv(tv.size(), poison);
  std::vector<float> lse(static_cast<size_t>(c.batch * c.heads * S), std::numeric_limits<float>::quiet_NaN());

  AttentionParams f;
  f.batch = c.batch;
  f.heads = c.heads;
  f.kv_heads = c.kv_heads;
  f.seq_len = S;
  f.head_dim = D;
  f.scale = scale;
  f.dtype = dtype;
  f.q = tq.data();
  f.k = tk.data();
  f.v = tv.data();
  f.out = out.data();
  f.q_strides = f.out_strides = strides(c.heads);
  f.k_strides = f.v_strides = strides(c.kv_heads);
  f.lse = lse.data();
  cpu::attention(f);

  AttentionBackwardParams g;
  g.batch = c.batch;
  g.heads = c.heads;
  g.kv_heads = c.kv_heads;
  g.seq_len = S;
  g.head_dim = D;
  g.scale = scale;
  g.dtype = dtype;
  g.q = tq.data();
  g.k = tk.data();
  g.v = tv.data();
  g.out = out.data();
  g.lse = lse.data();
  g.grad_out = tdo.data();
  g.grad_q = dq.data();
  g.grad_k = dk.data();
  g.grad_v = dv.data();
  g.q_strides = g.out_strides = g.grad_out_strides = g.grad_q_strides = strides(c.heads);
  g.k_strides = g.v_strides = g.grad_k_strides = g.grad_v_strides = strides(c.kv_heads);
  cpu::attention_backward(g);

  Ours r;
  r.out = from_physical(out, c.heads);
  r.dq = from_physical(dq, c.heads);
  r.dk = from_physical(dk, c.kv_heads);
  r.dv = from_physical(dv, c.kv_heads);
  r.lse.assign(lse.begin(), lse.end());
  return r;
}

// Rounds the reference inputs through T so the reference sees what we see.
template <typename T>
std::vector<double> rounded(const std::vector<double>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = back(convert<T>({x[i]})[0]);
  return y;
}

template <typename T>
void check_case(const Case& c, DType dtype, double tol, bool interleaved = false) {
  const int64_t nq = c.batch * c.heads * c.seq_len * c.head_dim, nk = c.batch * c.kv_heads * c.seq_len * c.head_dim;
  const std::vector<double> q = rounded<T>(normal(nq, 1)), k = rounded<T>(normal(nk, 2));
  const std::vector<double> v = rounded<T>(normal(nk, 3)), dout = rounded<T>(normal(nq, 4));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  const Reference ref = naive(c, scale, q, k, v, dout);
  const Ours ours = run_ours<T>(c, dtype, scale, q, k, v, dout, interleaved);
  EXPECT_LT(rel_error(ours.out, ref.out), tol) << "out";
  // lse is stored in fp32 for every dtype.
  EXPECT_LT(rel_error(ours.lse, ref.lse), std::max(tol, 1e-6)) << "lse";
  EXPECT_LT(rel_error(ours.dq, ref.dq), tol) << "grad_q";
  EXPECT_LT(rel_error(ours.dk, ref.dk), tol) << "grad_k";
  EXPECT_LT(rel_error(ours.dv, ref.dv), tol) << "grad_v";
}

TEST(CpuAttention, Float32MhaMatchesNaive) { check_case<float>({1, 2, 2, 128, 32}, DType::kFloat32, 1e-5); }

TEST(CpuAttention, Float32GqaRaggedMatchesNaive) { check_case<float>({2, 4, 2, 150, 16}, DType::kFloat32, 1e-5); }

TEST(CpuAttention, Float32ShortSequence) { check_case<float>({1, 3, 1, 5, 8}, DType::kFloat32, 1e-5); }

TEST(CpuAttention, Float32StridedViews) { check_case<float>({2, 4, 4, 97, 24}, DType::kFloat32, 1e-5, true); }

TEST(CpuAttention, Float64MatchesNaiveClosely) { check_case<double>({1, 2, 1, 130, 16}, DType::kFloat64, 1e-12); }

TEST(CpuAttention, BFloat16WithinItsPrecision) { check_case<bf16_t>({1, 4, 2, 100, 32}, DType::kBFloat16, 1e-2); }

TEST(CpuAttention, Float16WithinItsPrecision) { check_case<f16_t>({1, 2, 2, 70, 32}, DType::kFloat16, 2e-3); }

TEST(CpuAttention, IndependentOfThreadCount) {
  const Case c{1, 4, 2, 200, 32};
  const int64_t nq = c.batch * c.heads * c.seq_len * c.head_dim, nk = c.batch * c.kv_heads * c.seq_len * c.head_dim;
  const std::vector<double> q = normal(nq, 5), k = normal(nk, 6), v = normal(nk, 7), dout = normal(nq, 8);
  set_num_threads(1);
  const Ours one = run_ours<float>(c, DType::kFloat32, 0.2f, q, k, v, dout, false);
  set_num_threads(3);
  const Ours three = run_ours<float>(c, DType::kFloat32, 0.2f, q, k, v, dout, false);
  set_num_threads(0);
  EXPECT_EQ(one.out, three.out);
  EXPECT_EQ(one.lse, three.lse);
  EXPECT_EQ(one.dq, three.dq);
  EXPECT_EQ(one.dk, three.dk);
  EXPECT_EQ(one.dv, three.dv);
}

// A valid forward and backward call over one buffer (B = 1, H = 2, Hkv = 1,
// S = 2, D = 4), each broken one rule at a time by the tests below.
struct ErrorCase {
  std::vector<float> buf = std::vector<float>(64, 0.0f);
  std::vector<float> lse = std::vector<float>(8, 0.0f);
  AttentionParams fwd;
  AttentionBackwardParams bwd;

  ErrorCase() {
    fwd.batch = bwd.batch = 1;
    fwd.heads = bwd.heads = 2;
    fwd.kv_heads = bwd.kv_heads = 1;
    fwd.seq_len = bwd.seq_len = 2;
    fwd.head_dim = bwd.head_dim = 4;
    fwd.scale = bwd.scale = 0.5f;
    fwd.q = fwd.k = fwd.v = bwd.q = bwd.k = bwd.v = bwd.out = bwd.grad_out = buf.data();
    fwd.out = bwd.grad_q = bwd.grad_k = bwd.grad_v = buf.data();
    bwd.lse = lse.data();
    fwd.q_strides = fwd.out_strides = bwd.q_strides = bwd.out_strides = bwd.grad_out_strides = bwd.grad_q_strides =
        contiguous_bhsd(2, 2, 4);
    fwd.k_strides = fwd.v_strides = bwd.k_strides = bwd.v_strides = bwd.grad_k_strides = bwd.grad_v_strides =
        contiguous_bhsd(1, 2, 4);
  }
};

struct Breakage {
  const char* argument;
  std::function<void(AttentionParams&)> forward;
  std::function<void(AttentionBackwardParams&)> backward;  // empty: forward only
};

// Rules shared by the forward and the backward: the same change breaks both.
template <typename F>
Breakage both(const char* argument, F change) {
  return {argument, change, change};
}

TEST(CpuAttention, ValidErrorCaseRuns) {
  ErrorCase c;
  EXPECT_NO_THROW(cpu::attention(c.fwd));
  EXPECT_NO_THROW(cpu::attention_backward(c.bwd));
}

TEST(CpuAttention, EveryRuleNamesItsArgument) {
  const std::vector<Breakage> breakages = {
      both("batch", [](auto& p) { p.batch = 0; }),
      both("heads", [](auto& p) { p.heads = 0; }),
      both("kv_heads", [](auto& p) { p.kv_heads = -1; }),
      both("heads % kv_heads", [](auto& p) { p.heads = 3, p.kv_heads = 2; }),
      both("seq_len", [](auto& p) { p.seq_len = -1; }),
      both("head_dim", [](auto& p) { p.head_dim = 0; }),
      both("scale", [](auto& p) { p.scale = 0.0f; }),
      both("scale", [](auto& p) { p.scale = std::numeric_limits<float>::infinity(); }),
      both("dtype", [](auto& p) { p.dtype = static_cast<DType>(9); }),
      both("q", [](auto& p) { p.q = nullptr; }),
      both("k", [](auto& p) { p.k = nullptr; }),
      both("v", [](auto& p) { p.v = nullptr; }),
      both("out", [](auto& p) { p.out = nullptr; }),
      both("q_strides.seq", [](auto& p) { p.q_strides.seq = -4; }),
      both("k_strides.batch", [](auto& p) { p.k_strides.batch = -1; }),
      both("v_strides.head", [](auto& p) { p.v_strides.head = -1; }),
      {"out_strides.seq", [](AttentionParams& p) { p.out_strides.seq = 0; }, {}},  // an output may not alias
      {"lse", {}, [](AttentionBackwardParams& p) { p.lse = nullptr; }},
      {"grad_out", {}, [](AttentionBackwardParams& p) { p.grad_out = nullptr; }},
      {"grad_q", {}, [](AttentionBackwardParams& p) { p.grad_q = nullptr; }},
      {"grad_k", {}, [](AttentionBackwardParams& p) { p.grad_k = nullptr; }},
      {"grad_v", {}, [](AttentionBackwardParams& p) { p.grad_v = nullptr; }},
      {"out_strides.head", {}, [](AttentionBackwardParams& p) { p.out_strides.head = -1; }},
      {"grad_out_strides.seq", {}, [](AttentionBackwardParams& p) { p.grad_out_strides.seq = -1; }},
      {"grad_q_strides.head", {}, [](AttentionBackwardParams& p) { p.grad_q_strides.head = 0; }},
      {"grad_k_strides.seq", {}, [](AttentionBackwardParams& p) { p.grad_k_strides.seq = 0; }},
      {"grad_v_strides.batch", {}, [](AttentionBackwardParams& p) { p.grad_v_strides.batch = -8; }},
  };
  for (const Breakage& b : breakages) {
    SCOPED_TRACE(b.argument);
    ErrorCase c;
    if (b.forward) {
      b.forward(c.fwd);
      EXPECT_TRUE(lhtest::throws_naming([&] { cpu::attention(c.fwd); }, b.argument)) << "forward";
    }
    if (b.backward) {
      b.backward(c.bwd);
      EXPECT_TRUE(lhtest::throws_naming([&] { cpu::attention_backward(c.bwd); }, b.argument)) << "backward";
    }
  }
}

}  // namespace
}  // namespace lighthouse
