// Kept rows further apart than 32-bit element offsets reach. The tiled
// scatter and gather_backward form a kept row's offset (slot x sequence
// stride) in 32 bits, so their launch takes the plain kernels where kept
// entries x the largest stride of the kept rows passes 2^31 - 1. Here
// scatter's o_sel and gather_backward's grad_k_sel have rows 2^32 / S
// elements apart (8 GiB of bf16 each): the upper half of the slots lies past
// 2^31 - 1, and only the 64-bit offsets of the plain kernels reach it.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "stage_runner.h"

namespace gputest {
namespace {

TEST(GpuWideStrides, KeptRowsPastInt32Offsets) {
  Shape shape;
  shape.name = "wide_rows";
  shape.seq_len = 3000;
  shape.heads = shape.kv_heads = 1;
  shape.head_dim = 16;
  shape.topk = 64;
  shape.tile_budget = 16;
  std::mt19937_64 rng(0x51de5u);
  const lighthouse::Dims d = dims_of(shape);
  const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(shape), shape.seq_len);
  const int64_t B = d.batch, N = d.seq_len, H = d.heads, Hkv = d.kv_heads, D = d.head_dim, S = g.kept;
  const DType t = shape.dtype;

  // The slots map of a selection on random q and k (the CPU's: only the two stages below run on the GPU).
  Array<int32_t> slots(B * Hkv * g.pyramid_len);
  {
    Tensor q(t, B, N, H, D, Layout::kSeqMajor, rng), k(t, B, N, Hkv, D, Layout::kSeqMajor, rng);
    q.fill_normal(rng);
    k.fill_normal(rng);
    Array<float> qk(B * Hkv * g.pyramid_len), kq(B * Hkv * g.pyramid_len);
    Array<int32_t> indices(B * Hkv * S);
    lighthouse::PoolScoreParams ps;
    ps.dims = d;
    ps.geo = g;
    ps.dtype = t;
    ps.q = q.host(), ps.q_strides = q.strides();
    ps.k = k.host(), ps.k_strides = k.strides();
    ps.scores_qk = qk.host(), ps.scores_kq = kq.host();
    lighthouse::cpu::pool_score(ps);
    cpu_select(d, g, qk, kq, indices, slots);
  }
  slots.upload();

  {
    Tensor o_sel(t, B, S, H, D, Layout::kWideRows, rng);
    ASSERT_GT((S - 1) * o_sel.strides().seq, int64_t{0x7fffffff}) << "the last kept row must lie past 2^31 - 1";
    o_sel.fill_normal(rng);
    o_sel.upload();
    check_scatter(d, g, t, o_sel, slots, Layout::kSeqMajor, rng);
  }
  {
    Tensor gq_sel(t, B, S, H, D, Layout::kHeadMajor, rng), gk_sel(t, B, S, Hkv, D, Layout::kWideRows, rng),
        gv_sel(t, B, S, Hkv, D, Layout::kHeadMajor, rng);
    for (Tensor* x : {&gq_sel, &gk_sel, &gv_sel}) {
      x->fill_normal(rng);
      x->upload();
    }
    check_gather_backward(d, g, t, gq_sel, gk_sel, gv_sel, slots, Layout::kSeqMajor, rng);
  }
}

}  // namespace
}  // namespace gputest
