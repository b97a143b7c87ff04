// The optional fusion: pool_score also writes the pooled level-L q, k, v, and
// gather copies level-L entries from them. The pooled tensors must hold the
// exact means (fp32 sums in ascending positions times 1 / c_L, rounded to the
// dtype), the scores must not change, and gather must give the CPU's bits.
// Covers the fused path (aligned rows; coarsest blocks inside a warp's 32-row
// batch, or of several batches with running sums carried between them) and
// the separate pooling launch (unaligned rows, a coarsest block longer than
// pool_score's chunk, running sums too large for shared memory), GQA, ragged
// N and given base scores.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <tuple>

#include "lighthouse/error.h"
#include "stage_runner.h"

namespace gputest {
namespace {

struct PooledCase {
  Shape shape;
  bool given_base_scores = false;
};

std::ostream& operator<<(std::ostream& os, const PooledCase& c) { return os << c.shape.name; }

void check_pooled(const PooledCase& pc, uint64_t seed) {
  const Shape& shape = pc.shape;
  std::mt19937_64 rng(seed);
  const lighthouse::Dims d = dims_of(shape);
  const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(shape), shape.seq_len);
  const int64_t B = d.batch, N = d.seq_len, H = d.heads, Hkv = d.kv_heads, D = d.head_dim, S = g.kept;
  const int64_t nL = g.coarsest(), cL = g.block(g.levels);
  const DType t = shape.dtype;
  Tensor q(t, B, N, H, D, shape.in_layout, rng), k(t, B, N, Hkv, D, shape.in_layout, rng),
      v(t, B, N, Hkv, D, shape.in_layout, rng);
  for (Tensor* x : {&q, &k, &v}) {
    x->fill_normal(rng);
    x->upload();
  }
  Array<float> base_qk(B * Hkv * N), base_kq(B * Hkv * N);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : base_qk.values()) x = normal(rng);
  for (float& x : base_kq.values()) x = normal(rng);
  base_qk.upload();
  base_kq.upload();

  // The expected pooled tensors, computed here as gather defines them.
  Tensor pq(t, B, nL, H, D, shape.sel_layout, rng), pk(t, B, nL, Hkv, D, shape.sel_layout, rng),
      pv(t, B, nL, Hkv, D, shape.sel_layout, rng);
  const float inv = 1.0f / static_cast<float>(cL);
  for (auto [src, dst, heads] : {std::tuple{&q, &pq, H}, std::tuple{&k, &pk, Hkv}, std::tuple{&v, &pv, Hkv}})
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < nL; ++i)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t j = 0; j < D; ++j) {
            float sum = 0.0f;
            for (int64_t r = 0; r < cL; ++r) sum += src->get(b, i * cL + r, h, j);
            dst->set(b, i, h, j, sum * inv);
          }

  // Scores on the CPU without the fusion, on the GPU with it.
  Array<float> qk(B * Hkv * g.pyramid_len), kq(B * Hkv * g.pyramid_len);
  lighthouse::PoolScoreParams p;
  p.dims = d;
  p.geo = g;
  p.dtype = t;
  p.q = q.host(), p.q_strides = q.strides();
  p.k = k.host(), p.k_strides = k.strides();
  if (pc.given_base_scores) p.base_qk = base_qk.host(), p.base_kq = base_kq.host();
  p.scores_qk = qk.host(), p.scores_kq = kq.host();
  lighthouse::cpu::pool_score(p);
  p.q = q.device_ptr(), p.k = k.device_ptr();
  if (pc.given_base_scores) p.base_qk = base_qk.device(), p.base_kq = base_kq.device();
  p.scores_qk = qk.device(), p.scores_kq = kq.device();
  p.v = v.device_ptr(), p.v_strides = v.strides();
  p.pooled_q = pq.device_ptr(), p.pooled_q_strides = pq.strides();
  p.pooled_k = pk.device_ptr(), p.pooled_k_strides = pk.strides();
  p.pooled_v = pv.device_ptr(), p.pooled_v_strides = pv.strides();
  for (int run = 0; run < kRuns; ++run) {
    for (Tensor* x : {&pq, &pk, &pv}) x->poison_device();
    qk.poison_device();
    kq.poison_device();
    lighthouse::cuda::pool_score(p, nullptr);
    sync();
    EXPECT_TRUE(same_array(qk.values(), qk.download(), "scores_qk"));
    EXPECT_TRUE(same_array(kq.values(), kq.download(), "scores_kq"));
    EXPECT_TRUE(same_bits(pq, pq.download(), "pooled_q"));
    EXPECT_TRUE(same_bits(pk, pk.download(), "pooled_k"));
    EXPECT_TRUE(same_bits(pv, pv.download(), "pooled_v"));
  }
  pq.upload();
  pk.upload();
  pv.upload();

  // Selection on the CPU, then gather: the CPU from the base, the GPU from the pooled tensors.
  Array<int32_t> indices(B * Hkv * S), slots(B * Hkv * g.pyramid_len);
  cpu_select(d, g, qk, kq, indices, slots);
  indices.upload();
  Tensor q_sel(t, B, S, H, D, shape.sel_layout, rng), k_sel(t, B, S, Hkv, D, shape.sel_layout, rng),
      v_sel(t, B, S, Hkv, D, shape.sel_layout, rng);
  lighthouse::GatherParams gp;
  gp.dims = d;
  gp.geo = g;
  gp.dtype = t;
  gp.q = q.host(), gp.q_strides = q.strides();
  gp.k = k.host(), gp.k_strides = k.strides();
  gp.v = v.host(), gp.v_strides = v.strides();
  gp.indices = indices.host();
  gp.q_sel = q_sel.host(), gp.q_sel_strides = q_sel.strides();
  gp.k_sel = k_sel.host(), gp.k_sel_strides = k_sel.strides();
  gp.v_sel = v_sel.host(), gp.v_sel_strides = v_sel.strides();
  lighthouse::cpu::gather(gp);
  gp.q = q.device_ptr(), gp.k = k.device_ptr(), gp.v = v.device_ptr();
  gp.indices = indices.device();
  gp.q_sel = q_sel.device_ptr(), gp.k_sel = k_sel.device_ptr(), gp.v_sel = v_sel.device_ptr();
  gp.pooled_q = pq.device_ptr(), gp.pooled_q_strides = pq.strides();
  gp.pooled_k = pk.device_ptr(), gp.pooled_k_strides = pk.strides();
  gp.pooled_v = pv.device_ptr(), gp.pooled_v_strides = pv.strides();
  expect_same_tensors({{&q_sel, "q_sel"}, {&k_sel, "k_sel"}, {&v_sel, "v_sel"}},
                      [&] { lighthouse::cuda::gather(gp, nullptr); });
}

PooledCase make(const char* name, int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim, int pooling,
                int levels, int64_t topk, DType dtype, Layout in, Layout sel, bool given = false) {
  PooledCase c;
  c.shape.name = name;
  c.shape.seq_len = seq_len;
  c.shape.heads = heads;
  c.shape.kv_heads = kv_heads;
  c.shape.head_dim = head_dim;
  c.shape.pooling = pooling;
  c.shape.levels = levels;
  c.shape.topk = topk;
  c.shape.dtype = dtype;
  c.shape.in_layout = in;
  c.shape.sel_layout = sel;
  c.given_base_scores = given;
  return c;
}

constexpr DType kF32 = DType::kFloat32, kBF16 = DType::kBFloat16, kF16 = DType::kFloat16;
constexpr Layout kSeq = Layout::kSeqMajor, kHead = Layout::kHeadMajor, kAligned = Layout::kAligned,
                 kScrambled = Layout::kScrambled;

class GpuPooled : public ::testing::TestWithParam<PooledCase> {};

TEST_P(GpuPooled, ExactMeansAndGatherBits) {
  check_pooled(GetParam(), 0xb00c + std::hash<std::string>{}(GetParam().shape.name));
}

INSTANTIATE_TEST_SUITE_P(
    Paths, GpuPooled,
    ::testing::Values(make("fused_bf16_gqa_ragged", 5119, 4, 2, 64, 4, 3, 256, kBF16, kSeq, kHead),
                      make("fused_f32_aligned", 4096 + 40, 2, 2, 32, 4, 3, 256, kF32, kAligned, kAligned),
                      make("fused_f16_block_32", 4096 + 31, 2, 1, 16, 2, 6, 128, kF16, kSeq, kSeq),
                      make("fused_given_scores", 4096, 2, 2, 136, 4, 3, 256, kBF16, kSeq, kHead, true),
                      // A row's last staged chunk holds 3 vectors (12 / 6 element pairs), counts that do not
                      // divide a warp's 32 lanes: a lane's items there fall in different rows and blocks.
                      make("fused_bf16_partial_chunk", 4096 + 17, 2, 1, 56, 4, 3, 256, kBF16, kSeq, kHead),
                      make("fused_f32_partial_chunk", 4096, 2, 2, 44, 4, 3, 256, kF32, kSeq, kSeq),
                      // Coarsest blocks of 2 and 4 batches (c_L = 64, 128), a last block cut by N.
                      make("fused_bf16_block_64", 8192 + 70, 2, 1, 32, 8, 3, 128, kBF16, kSeq, kHead),
                      make("fused_f32_block_128_partial_chunk", 16384 + 100, 2, 2, 44, 2, 8, 128, kF32, kSeq, kSeq),
                      // c_L = 512 against a chunk of 256 positions at this length.
                      make("separate_block_512", 65536 + 70, 1, 1, 32, 8, 4, 128, kBF16, kSeq, kHead),
                      // 8 warps' running sums of 34 rows of 256 floats: 272 KiB, more than a block's shared memory.
                      make("separate_carry_too_large", 8192 + 67, 32, 1, 256, 4, 4, 128, kBF16, kSeq, kSeq),
                      make("separate_scrambled", 4096 + 5, 4, 2, 12, 4, 3, 256, kF32, kScrambled, kScrambled)),
    [](const ::testing::TestParamInfo<PooledCase>& info) { return info.param.shape.name; });

TEST(GpuPooledErrors, AllThreeOrNone) {
  lighthouse::Config c;
  c.topk = 256;
  lighthouse::PoolScoreParams p;
  p.geo = lighthouse::Geometry::make(c, 4096);
  p.dims.batch = 1, p.dims.seq_len = 4096, p.dims.heads = 1, p.dims.kv_heads = 1, p.dims.head_dim = 8;
  DeviceBytes mem(size_t{1} << 22);
  float* f = static_cast<float*>(mem.get());
  p.q = p.k = p.v = f;
  p.q_strides = p.k_strides = p.v_strides = lighthouse::contiguous_bnhd(4096, 1, 8);
  p.scores_qk = f + 40000, p.scores_kq = f + 50000;
  p.pooled_q = f + 60000;
  EXPECT_THROW(lighthouse::cuda::pool_score(p, nullptr), lighthouse::Error);
  lighthouse::GatherParams gp;
  gp.pooled_k = f;
  gp.geo = p.geo, gp.dims = p.dims;
  gp.q = gp.k = gp.v = f;
  gp.q_strides = gp.k_strides = gp.v_strides = p.q_strides;
  gp.indices = reinterpret_cast<const int32_t*>(f);
  gp.q_sel = gp.k_sel = gp.v_sel = f + 100000;
  gp.q_sel_strides = gp.k_sel_strides = gp.v_sel_strides = lighthouse::contiguous_bhsd(1, p.geo.kept, 8);
  EXPECT_THROW(lighthouse::cuda::gather(gp, nullptr), lighthouse::Error);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace gputest
