// Dense causal attention on the CPU: query blocks x key blocks with an online
// softmax in the forward, and the two-pass backward (dQ per query block, dK/dV
// per key block) so every output element is written by exactly one work item
// in a fixed order: results do not depend on the thread count.
//
// Every product of blocks is one small matrix product (gemm_acc) on fp32 (or
// fp64) copies of the blocks, register-blocked over SIMD lanes; operands are
// copied transposed where needed so its inner loop reads contiguous memory.
// Masked probabilities are stored as zeros, so products run over whole blocks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "lighthouse/attention.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/error.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

// Query and key rows per tile: 64 x head_dim fp32 blocks stay in L1/L2.
constexpr int64_t kBlock = 64;

using detail::acc_t;

struct Shape {
  int64_t batch, heads, kv_heads, seq_len, head_dim;
};

void check_strides(const Strides& s, const std::string& name, int64_t batch, int64_t seq, int64_t heads,
                   bool output) {
  const struct {
    int64_t stride, size;
    const char* dim;
  } dims[] = {{s.batch, batch, "batch"}, {s.seq, seq, "seq"}, {s.head, heads, "head"}};
  for (const auto& d : dims) {
    if (d.stride < 0) fail(name + "." + d.dim, "a non-negative element stride", d.stride);
    if (output && d.stride == 0 && d.size > 1)
      fail(name + "." + d.dim, "a positive element stride for an output", d.stride);
  }
}

void check_ptr(const void* p, const char* name) {
  if (p == nullptr) fail(name, "a non-null pointer", "nullptr");
}

void check_shape(const Shape& s, float scale, DType dtype) {
  if (s.batch < 1) fail("batch", "at least 1", s.batch);
  if (s.heads < 1) fail("heads", "at least 1", s.heads);
  if (s.kv_heads < 1) fail("kv_heads", "at least 1", s.kv_heads);
  if (s.heads % s.kv_heads != 0)
    fail("heads % kv_heads", "0 (heads = " + std::to_string(s.heads) + ", kv_heads = " + std::to_string(s.kv_heads) + ")",
         s.heads % s.kv_heads);
  if (s.seq_len < 0) fail("seq_len", "at least 0", s.seq_len);
  if (s.head_dim < 1) fail("head_dim", "at least 1", s.head_dim);
  if (!(scale > 0.0f) || std::isinf(scale)) fail("scale", "a finite value > 0", scale);
  if (dtype != DType::kFloat32 && dtype != DType::kBFloat16 && dtype != DType::kFloat16 && dtype != DType::kFloat64)
    fail("dtype", "float32, bfloat16, float16 or float64", static_cast<int>(dtype));
}

// Copies rows [row0, row0 + rows) of one head into dst[rows][D] (accumulation type).
template <typename T>
void load_rows(const void* src, const Strides& st, int64_t b, int64_t head, int64_t row0, int64_t rows, int64_t dim,
               acc_t<T>* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = detail::at(st, b, row0 + r, head);
    for (int64_t d = 0; d < dim; ++d) dst[r * dim + d] = detail::load<T>(src, o + d);
  }
}

// Copies rows [row0, row0 + rows) of one head into dst[D][kBlock], transposed.
template <typename T>
void load_rows_t(const void* src, const Strides& st, int64_t b, int64_t head, int64_t row0, int64_t rows, int64_t dim,
                 acc_t<T>* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = detail::at(st, b, row0 + r, head);
    for (int64_t d = 0; d < dim; ++d) dst[d * kBlock + r] = detail::load<T>(src, o + d);
  }
}

template <typename T>
void store_rows(const acc_t<T>* src, void* dst, const Strides& st, int64_t b, int64_t head, int64_t row0, int64_t rows,
                int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = detail::at(st, b, row0 + r, head);
    for (int64_t d = 0; d < dim; ++d) detail::store<T>(dst, o + d, src[r * dim + d]);
  }
}

// C[m][n] += sum_k A[m][k] * B[k][n] for m < M, n < N, each element summed
// in ascending k. Tiles of 4 rows x 2 SIMD vectors (GCC / Clang vector
// extension, kBytes per vector) stay in registers while k runs, so each
// loaded piece of a B row serves four rows of A. Lanes compute exactly what
// scalar code would (multiply, then add; no contraction), so every vector
// width and the scalar edges give the same bits.
template <typename A, int kBytes>
__attribute__((always_inline)) inline void gemm_tiles(const A* a, int64_t lda, const A* b, int64_t ldb, A* c,
                                                      int64_t ldc, int64_t M, int64_t N, int64_t K) {
  typedef A V __attribute__((vector_size(kBytes)));
  constexpr int kLanes = kBytes / static_cast<int>(sizeof(A)), kWidth = 2 * kLanes;
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    int64_t n = 0;
    for (; n + kWidth <= N; n += kWidth) {
      V acc[4][2];
      for (int r = 0; r < 4; ++r)
        for (int x = 0; x < 2; ++x) std::memcpy(&acc[r][x], c + (m + r) * ldc + n + x * kLanes, sizeof(V));
      for (int64_t k = 0; k < K; ++k) {
        V bk[2];
        for (int x = 0; x < 2; ++x) std::memcpy(&bk[x], b + k * ldb + n + x * kLanes, sizeof(V));
        for (int r = 0; r < 4; ++r) {
          const A ar = a[(m + r) * lda + k];
          for (int x = 0; x < 2; ++x) acc[r][x] += ar * bk[x];
        }
      }
      for (int r = 0; r < 4; ++r)
        for (int x = 0; x < 2; ++x) std::memcpy(c + (m + r) * ldc + n + x * kLanes, &acc[r][x], sizeof(V));
    }
    for (; n < N; ++n)
      for (int r = 0; r < 4; ++r) {
        A acc = c[(m + r) * ldc + n];
        for (int64_t k = 0; k < K; ++k) acc += a[(m + r) * lda + k] * b[k * ldb + n];
        c[(m + r) * ldc + n] = acc;
      }
  }
  for (; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      A acc = c[m * ldc + n];
      for (int64_t k = 0; k < K; ++k) acc += a[m * lda + k] * b[k * ldb + n];
      c[m * ldc + n] = acc;
    }
}

#if defined(__x86_64__) || defined(__i386__)
// 32-byte vectors on CPUs with AVX2, chosen at run time so the library still
// runs on any x86-64; the portable build only assumes 16-byte vectors.
template <typename A>
__attribute__((target("avx2"))) void gemm_avx2(const A* a, int64_t lda, const A* b, int64_t ldb, A* c, int64_t ldc,
                                               int64_t M, int64_t N, int64_t K) {
  gemm_tiles<A, 32>(a, lda, b, ldb, c, ldc, M, N, K);
}

template <typename A>
void gemm_acc(const A* a, int64_t lda, const A* b, int64_t ldb, A* c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    gemm_avx2(a, lda, b, ldb, c, ldc, M, N, K);
    return;
  }
  gemm_tiles<A, 16>(a, lda, b, ldb, c, ldc, M, N, K);
}
#else
template <typename A>
void gemm_acc(const A* a, int64_t lda, const A* b, int64_t ldb, A* c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  gemm_tiles<A, 16>(a, lda, b, ldb, c, ldc, M, N, K);
}
#endif

// cond ? yes : no on bit patterns, without a branch (cond is 0 or 1).
inline uint32_t select_bits(uint32_t cond, uint32_t yes, uint32_t no) { return no ^ ((no ^ yes) & (0u - cond)); }

// exp for the softmax, written so loops over it vectorise under strict fp
// semantics (no float comparisons, no float-to-int conversion): 2^n * e^r with
// n = round(x / ln 2), |r| <= ln 2 / 2 and a degree-7 Taylor polynomial
// (relative error below 1e-7). Inputs are clamped to [-87, 88], where 2^n is
// a normal float; below that the true value is negligible next to the
// softmax's largest term, which is 1. NaN stays NaN.
inline float exp_softmax(float x) {
  const uint32_t u = float_bits(x), mag = u & 0x7fffffffu, neg = u >> 31;
  const uint32_t nan = static_cast<uint32_t>(mag > 0x7f800000u);
  const uint32_t low = neg & static_cast<uint32_t>(mag > 0x42ae0000u);          // x < -87
  const uint32_t high = (neg ^ 1u) & static_cast<uint32_t>(mag > 0x42b00000u);  // x > 88
  const float xc =
      bits_float(select_bits(nan, 0u, select_bits(low, 0xc2ae0000u, select_bits(high, 0x42b00000u, u))));
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = xc * 1.44269504f + shifter;
  const float n = t - shifter;
  const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 in two parts: n * hi is exact
  float poly = 1.0f / 5040.0f;
  poly = poly * r + 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  // t's low mantissa bits hold n (the shifter fixes the exponent), so 2^n is
  // built from integer bits.
  const float y = poly * bits_float((float_bits(t) - 0x4b400000u + 127u) << 23);
  return bits_float(select_bits(nan, u, float_bits(y)));
}
inline double exp_softmax(double x) { return std::exp(x); }

// Number of keys of key block kb visible to query row i of query block qb
// (both blocks of kBlock rows, block starts aligned): all of them below the
// diagonal, keys 0..i on it.
inline int64_t visible_keys(int64_t qb, int64_t kb, int64_t i, int64_t nk) { return kb < qb ? nk : std::min(nk, i + 1); }

int64_t blocks_of(int64_t n) { return (n + kBlock - 1) / kBlock; }

template <typename T>
void forward_typed(const AttentionParams& p) {
  using A = acc_t<T>;
  const int64_t S = p.seq_len, D = p.head_dim, group = p.heads / p.kv_heads, nb = blocks_of(S);
  const A scale = static_cast<A>(p.scale);
  parallel_for(p.batch * p.heads * nb, [&](int64_t item) {
    // Later query blocks see more keys: hand them out first.
    const int64_t qb = nb - 1 - item % nb, bh = item / nb, b = bh / p.heads, h = bh % p.heads, g = h / group;
    const int64_t q0 = qb * kBlock, nq = std::min(kBlock, S - q0);
    std::vector<A> q(nq * D), o(nq * D, A(0)), kt(D * kBlock), v(kBlock * D), s(nq * kBlock);
    std::vector<A> m(nq, -std::numeric_limits<A>::infinity()), l(nq, A(0));
    load_rows<T>(p.q, p.q_strides, b, h, q0, nq, D, q.data());
    for (int64_t kb = 0; kb <= qb; ++kb) {
      const int64_t k0 = kb * kBlock, nk = std::min(kBlock, S - k0);
      load_rows_t<T>(p.k, p.k_strides, b, g, k0, nk, D, kt.data());
      load_rows<T>(p.v, p.v_strides, b, g, k0, nk, D, v.data());
      std::fill(s.begin(), s.end(), A(0));
      gemm_acc(q.data(), D, kt.data(), kBlock, s.data(), kBlock, nq, nk, D);
      for (int64_t i = 0; i < nq; ++i) {
        // The row becomes the unnormalised probabilities, zero where masked.
        A* row = s.data() + i * kBlock;
        const int64_t nj = visible_keys(qb, kb, i, nk);
        A mnew = m[i];
        for (int64_t j = 0; j < nj; ++j) {
          row[j] *= scale;
          mnew = std::max(mnew, row[j]);
        }
        const A alpha = std::exp(m[i] - mnew);
        for (int64_t j = 0; j < nj; ++j) row[j] = exp_softmax(row[j] - mnew);
        std::fill(row + nj, row + nk, A(0));
        A sum = 0;
        for (int64_t j = 0; j < nj; ++j) sum += row[j];
        l[i] = l[i] * alpha + sum;
        m[i] = mnew;
        for (int64_t d = 0; d < D; ++d) o[i * D + d] *= alpha;
      }
      gemm_acc(s.data(), kBlock, v.data(), D, o.data(), D, nq, D, nk);
    }
    for (int64_t i = 0; i < nq; ++i) {
      const A inv = A(1) / l[i];
      for (int64_t d = 0; d < D; ++d) o[i * D + d] *= inv;
      if (p.lse != nullptr) p.lse[bh * S + q0 + i] = static_cast<float>(m[i] + std::log(l[i]));
    }
    store_rows<T>(o.data(), p.out, p.out_strides, b, h, q0, nq, D);
  });
}

// Row log-sum-exp of the scaled scores in the accumulation type: the
// forward's fp32 lse when accumulating in fp32; recomputed in fp64 for fp64
// inputs (gradient checks), whose gradients would otherwise carry the fp32
// rounding of lse (about 1e-7 relative).
template <typename T>
std::vector<acc_t<T>> backward_lse(const AttentionBackwardParams& p) {
  using A = acc_t<T>;
  const int64_t S = p.seq_len, D = p.head_dim, group = p.heads / p.kv_heads, nb = blocks_of(S);
  std::vector<A> lse(static_cast<size_t>(p.batch * p.heads * S));
  if (!std::is_same<A, double>::value) {
    std::copy(p.lse, p.lse + lse.size(), lse.begin());
    return lse;
  }
  const A scale = static_cast<A>(p.scale);
  parallel_for(p.batch * p.heads * nb, [&](int64_t item) {
    const int64_t qb = nb - 1 - item % nb, bh = item / nb, b = bh / p.heads, h = bh % p.heads, g = h / group;
    const int64_t q0 = qb * kBlock, nq = std::min(kBlock, S - q0);
    std::vector<A> q(nq * D), kt(D * kBlock), s(nq * kBlock);
    std::vector<A> m(nq, -std::numeric_limits<A>::infinity()), l(nq, A(0));
    load_rows<T>(p.q, p.q_strides, b, h, q0, nq, D, q.data());
    for (int64_t kb = 0; kb <= qb; ++kb) {
      const int64_t k0 = kb * kBlock, nk = std::min(kBlock, S - k0);
      load_rows_t<T>(p.k, p.k_strides, b, g, k0, nk, D, kt.data());
      std::fill(s.begin(), s.end(), A(0));
      gemm_acc(q.data(), D, kt.data(), kBlock, s.data(), kBlock, nq, nk, D);
      for (int64_t i = 0; i < nq; ++i) {
        const A* row = s.data() + i * kBlock;
        const int64_t nj = visible_keys(qb, kb, i, nk);
        A mnew = m[i];
        for (int64_t j = 0; j < nj; ++j) mnew = std::max(mnew, row[j] * scale);
        A sum = 0;
        for (int64_t j = 0; j < nj; ++j) sum += std::exp(row[j] * scale - mnew);
        l[i] = l[i] * std::exp(m[i] - mnew) + sum;
        m[i] = mnew;
      }
    }
    for (int64_t i = 0; i < nq; ++i) lse[bh * S + q0 + i] = m[i] + std::log(l[i]);
  });
  return lse;
}

template <typename T>
void backward_typed(const AttentionBackwardParams& p) {
  using A = acc_t<T>;
  const int64_t S = p.seq_len, D = p.head_dim, group = p.heads / p.kv_heads, nb = blocks_of(S);
  const A scale = static_cast<A>(p.scale);

  const std::vector<A> lse_all = backward_lse<T>(p);

  // delta[b, h, i] = rowsum(dO * O): the softmax backward's correction term.
  std::vector<A> delta(p.batch * p.heads * S);
  parallel_for(p.batch * p.heads * nb, [&](int64_t item) {
    const int64_t bh = item / nb, b = bh / p.heads, h = bh % p.heads;
    const int64_t end = std::min(S, (item % nb + 1) * kBlock);
    for (int64_t i = (item % nb) * kBlock; i < end; ++i) {
      const int64_t od = detail::at(p.out_strides, b, i, h), gd = detail::at(p.grad_out_strides, b, i, h);
      A sum = 0;
      for (int64_t d = 0; d < D; ++d) sum += detail::load<T>(p.grad_out, gd + d) * detail::load<T>(p.out, od + d);
      delta[bh * S + i] = sum;
    }
  });

  // dQ = scale * dS K per query block, over the visible key blocks in
  // ascending order, with dS = P * (dP - delta) and dP = dO V^T.
  parallel_for(p.batch * p.heads * nb, [&](int64_t item) {
    const int64_t qb = nb - 1 - item % nb, bh = item / nb, b = bh / p.heads, h = bh % p.heads, g = h / group;
    const int64_t q0 = qb * kBlock, nq = std::min(kBlock, S - q0);
    std::vector<A> q(nq * D), dout(nq * D), dq(nq * D, A(0)), k(kBlock * D), kt(D * kBlock), vt(D * kBlock);
    std::vector<A> s(nq * kBlock), dp(nq * kBlock);
    load_rows<T>(p.q, p.q_strides, b, h, q0, nq, D, q.data());
    load_rows<T>(p.grad_out, p.grad_out_strides, b, h, q0, nq, D, dout.data());
    const A* lse = lse_all.data() + bh * S + q0;
    const A* dl = delta.data() + bh * S + q0;
    for (int64_t kb = 0; kb <= qb; ++kb) {
      const int64_t k0 = kb * kBlock, nk = std::min(kBlock, S - k0);
      load_rows<T>(p.k, p.k_strides, b, g, k0, nk, D, k.data());
      load_rows_t<T>(p.k, p.k_strides, b, g, k0, nk, D, kt.data());
      load_rows_t<T>(p.v, p.v_strides, b, g, k0, nk, D, vt.data());
      std::fill(s.begin(), s.end(), A(0));
      std::fill(dp.begin(), dp.end(), A(0));
      gemm_acc(q.data(), D, kt.data(), kBlock, s.data(), kBlock, nq, nk, D);
      gemm_acc(dout.data(), D, vt.data(), kBlock, dp.data(), kBlock, nq, nk, D);
      for (int64_t i = 0; i < nq; ++i) {
        // The score row becomes dS, zero where masked.
        A* si = s.data() + i * kBlock;
        const A* dpi = dp.data() + i * kBlock;
        const A li = lse[i], di = dl[i];
        const int64_t nj = visible_keys(qb, kb, i, nk);
        for (int64_t j = 0; j < nj; ++j) si[j] = exp_softmax(si[j] * scale - li) * (dpi[j] - di);
        std::fill(si + nj, si + nk, A(0));
      }
      gemm_acc(s.data(), kBlock, k.data(), D, dq.data(), D, nq, D, nk);
    }
    for (A& x : dq) x *= scale;
    store_rows<T>(dq.data(), p.grad_q, p.grad_q_strides, b, h, q0, nq, D);
  });

  // dV = P^T dO and dK = scale * dS^T Q per key block of a KV head, over the
  // group's query heads and the query blocks that see the keys, ascending.
  parallel_for(p.batch * p.kv_heads * nb, [&](int64_t item) {
    const int64_t kb = item % nb, bg = item / nb, b = bg / p.kv_heads, g = bg % p.kv_heads;
    const int64_t k0 = kb * kBlock, nk = std::min(kBlock, S - k0);
    std::vector<A> k(nk * D), v(nk * D), dk(nk * D, A(0)), dv(nk * D, A(0));
    std::vector<A> q(kBlock * D), qt(D * kBlock), dout(kBlock * D), doutt(D * kBlock);
    std::vector<A> pt(nk * kBlock), dst(nk * kBlock);
    load_rows<T>(p.k, p.k_strides, b, g, k0, nk, D, k.data());
    load_rows<T>(p.v, p.v_strides, b, g, k0, nk, D, v.data());
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const int64_t bh = b * p.heads + h;
      for (int64_t qb = kb; qb < nb; ++qb) {
        const int64_t q0 = qb * kBlock, nq = std::min(kBlock, S - q0);
        load_rows<T>(p.q, p.q_strides, b, h, q0, nq, D, q.data());
        load_rows_t<T>(p.q, p.q_strides, b, h, q0, nq, D, qt.data());
        load_rows<T>(p.grad_out, p.grad_out_strides, b, h, q0, nq, D, dout.data());
        load_rows_t<T>(p.grad_out, p.grad_out_strides, b, h, q0, nq, D, doutt.data());
        std::fill(pt.begin(), pt.end(), A(0));
        std::fill(dst.begin(), dst.end(), A(0));
        gemm_acc(k.data(), D, qt.data(), kBlock, pt.data(), kBlock, nk, nq, D);
        gemm_acc(v.data(), D, doutt.data(), kBlock, dst.data(), kBlock, nk, nq, D);
        const A* lse = lse_all.data() + bh * S + q0;
        const A* dl = delta.data() + bh * S + q0;
        for (int64_t j = 0; j < nk; ++j) {
          // Scores become P^T and dP^T becomes dS^T, zero where masked
          // (query i sees key j when q0 + i >= k0 + j).
          A* pj = pt.data() + j * kBlock;
          A* dsj = dst.data() + j * kBlock;
          const int64_t first = qb == kb ? std::min(j, nq) : 0;
          std::fill(pj, pj + first, A(0));
          std::fill(dsj, dsj + first, A(0));
          for (int64_t i = first; i < nq; ++i) pj[i] = exp_softmax(pj[i] * scale - lse[i]);
          for (int64_t i = first; i < nq; ++i) dsj[i] = pj[i] * (dsj[i] - dl[i]);
        }
        gemm_acc(pt.data(), kBlock, dout.data(), D, dv.data(), D, nk, D, nq);
        gemm_acc(dst.data(), kBlock, q.data(), D, dk.data(), D, nk, D, nq);
      }
    }
    for (A& x : dk) x *= scale;
    store_rows<T>(dk.data(), p.grad_k, p.grad_k_strides, b, g, k0, nk, D);
    store_rows<T>(dv.data(), p.grad_v, p.grad_v_strides, b, g, k0, nk, D);
  });
}

}  // namespace

void attention(const AttentionParams& p) {
  const Shape s{p.batch, p.heads, p.kv_heads, p.seq_len, p.head_dim};
  check_shape(s, p.scale, p.dtype);
  check_ptr(p.q, "q");
  check_ptr(p.k, "k");
  check_ptr(p.v, "v");
  check_ptr(p.out, "out");
  check_strides(p.q_strides, "q_strides", s.batch, s.seq_len, s.heads, false);
  check_strides(p.k_strides, "k_strides", s.batch, s.seq_len, s.kv_heads, false);
  check_strides(p.v_strides, "v_strides", s.batch, s.seq_len, s.kv_heads, false);
  check_strides(p.out_strides, "out_strides", s.batch, s.seq_len, s.heads, true);
  detail::dispatch_cpu(p.dtype, [&](auto t) { forward_typed<decltype(t)>(p); });
}

void attention_backward(const AttentionBackwardParams& p) {
  const Shape s{p.batch, p.heads, p.kv_heads, p.seq_len, p.head_dim};
  check_shape(s, p.scale, p.dtype);
  check_ptr(p.q, "q");
  check_ptr(p.k, "k");
  check_ptr(p.v, "v");
  check_ptr(p.out, "out");
  check_ptr(p.lse, "lse");
  check_ptr(p.grad_out, "grad_out");
  check_ptr(p.grad_q, "grad_q");
  check_ptr(p.grad_k, "grad_k");
  check_ptr(p.grad_v, "grad_v");
  check_strides(p.q_strides, "q_strides", s.batch, s.seq_len, s.heads, false);
  check_strides(p.k_strides, "k_strides", s.batch, s.seq_len, s.kv_heads, false);
  check_strides(p.v_strides, "v_strides", s.batch, s.seq_len, s.kv_heads, false);
  check_strides(p.out_strides, "out_strides", s.batch, s.seq_len, s.heads, false);
  check_strides(p.grad_out_strides, "grad_out_strides", s.batch, s.seq_len, s.heads, false);
  check_strides(p.grad_q_strides, "grad_q_strides", s.batch, s.seq_len, s.heads, true);
  check_strides(p.grad_k_strides, "grad_k_strides", s.batch, s.seq_len, s.kv_heads, true);
  check_strides(p.grad_v_strides, "grad_v_strides", s.batch, s.seq_len, s.kv_heads, true);
  detail::dispatch_cpu(p.dtype, [&](auto t) { backward_typed<decltype(t)>(p); });
}

}  // namespace lighthouse::cpu
