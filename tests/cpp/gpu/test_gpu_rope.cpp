// Rotary positions on the GPU: CUDA gather (re-pooled and with the pooled
// level-L fusion) and gather_backward with rope tables against the CPU
// reference, bit for bit (every byte of every output buffer, poisoned before
// each of three runs). Shapes cover both pair conventions, [N, D] and
// [B, N, D] tables, per-element (D values a row) and per-pair (D/2) tables,
// all dtypes, ragged N, GQA, pyramid depths, strided
// layouts, the 16-byte paths and the scalar ones (head_dim even but off the
// vector width, rotate-half halves off the vector width, tables not 16-byte
// aligned), gather's v rows in a launch of their own (many kept entries),
// both ways gather_backward rotates (inside the tiled kernel's loop, or in a
// first pass where there are at least 4 positions per kept entry), and the
// plain gather_backward kernel (too many KV heads for the tiled one's slot
// table).
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "stage_runner.h"

namespace gputest {
namespace {

struct RopeShape {
  Shape shape;
  bool interleaved = false;
  bool batched_tables = false;  // [B, N, R] (rows padded by table_pad floats), else [N, R]
  int64_t table_pad = 0;
  int64_t table_offset = 0;     // floats the tables start past a 16-byte boundary
  bool per_pair = false;        // R = D/2 values a row, one per rotation pair (else R = D)
};

std::ostream& operator<<(std::ostream& os, const RopeShape& s) { return os << s.shape.name; }

// Host tables (random values; NaN in padding) and their device copy.
struct Tables {
  std::vector<float> cos, sin;
  std::unique_ptr<DeviceBytes> device_cos, device_sin;
  lighthouse::RopeTables host, device;
};

Tables make_tables(const RopeShape& rs, std::mt19937_64& rng) {
  const Shape& s = rs.shape;
  Tables t;
  const int64_t rows = s.seq_len * (rs.per_pair ? s.head_dim / 2 : s.head_dim);
  const int64_t stride = rs.batched_tables ? rows + rs.table_pad : 0;
  const int64_t total = rs.table_offset + (rs.batched_tables ? s.batch * stride : rows);
  t.cos.assign(static_cast<size_t>(total), std::numeric_limits<float>::quiet_NaN());
  t.sin = t.cos;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t b = 0; b < (rs.batched_tables ? s.batch : 1); ++b)
    for (int64_t i = 0; i < rows; ++i) {
      t.cos[rs.table_offset + b * stride + i] = normal(rng);
      t.sin[rs.table_offset + b * stride + i] = normal(rng);
    }
  t.device_cos = std::make_unique<DeviceBytes>(t.cos.size() * sizeof(float));
  t.device_sin = std::make_unique<DeviceBytes>(t.sin.size() * sizeof(float));
  t.device_cos->upload(t.cos.data());
  t.device_sin->upload(t.sin.data());
  t.host.cos = t.cos.data() + rs.table_offset;
  t.host.sin = t.sin.data() + rs.table_offset;
  t.device.cos = static_cast<const float*>(t.device_cos->get()) + rs.table_offset;
  t.device.sin = static_cast<const float*>(t.device_sin->get()) + rs.table_offset;
  t.host.batch_stride = t.device.batch_stride = stride;
  t.host.interleaved = t.device.interleaved = rs.interleaved;
  t.host.per_pair = t.device.per_pair = rs.per_pair;
  return t;
}

void check_rope(const RopeShape& rs, uint64_t seed) {
  const Shape& shape = rs.shape;
  std::mt19937_64 rng(seed);
  const lighthouse::Dims d = dims_of(shape);
  const lighthouse::Geometry g = lighthouse::Geometry::make(config_of(shape), shape.seq_len);
  const int64_t B = d.batch, N = d.seq_len, H = d.heads, Hkv = d.kv_heads, D = d.head_dim, S = g.kept;
  const int64_t nL = g.coarsest();
  const DType t = shape.dtype;
  Tensor q(t, B, N, H, D, shape.in_layout, rng), k(t, B, N, Hkv, D, shape.in_layout, rng),
      v(t, B, N, Hkv, D, shape.in_layout, rng);
  for (Tensor* x : {&q, &k, &v}) {
    x->fill_normal(rng);
    x->upload();
  }
  const Tables tables = make_tables(rs, rng);

  // Scores, pooled level-L tensors and the selection on the CPU.
  Array<float> qk(B * Hkv * g.pyramid_len), kq(B * Hkv * g.pyramid_len);
  Tensor pq(t, B, nL, H, D, shape.sel_layout, rng), pk(t, B, nL, Hkv, D, shape.sel_layout, rng),
      pv(t, B, nL, Hkv, D, shape.sel_layout, rng);
  lighthouse::PoolScoreParams pp;
  pp.dims = d;
  pp.geo = g;
  pp.dtype = t;
  pp.q = q.host(), pp.q_strides = q.strides();
  pp.k = k.host(), pp.k_strides = k.strides();
  pp.v = v.host(), pp.v_strides = v.strides();
  pp.scores_qk = qk.host(), pp.scores_kq = kq.host();
  pp.pooled_q = pq.host(), pp.pooled_q_strides = pq.strides();
  pp.pooled_k = pk.host(), pp.pooled_k_strides = pk.strides();
  pp.pooled_v = pv.host(), pp.pooled_v_strides = pv.strides();
  lighthouse::cpu::pool_score(pp);
  for (Tensor* x : {&pq, &pk, &pv}) x->upload();
  Array<int32_t> indices(B * Hkv * S), slots(B * Hkv * g.pyramid_len);
  cpu_select(d, g, qk, kq, indices, slots);
  indices.upload();
  slots.upload();

  // gather: CPU re-pooling; GPU re-pooling, then GPU copying level L.
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
  gp.rope = tables.host;
  lighthouse::cpu::gather(gp);
  gp.q = q.device_ptr(), gp.k = k.device_ptr(), gp.v = v.device_ptr();
  gp.indices = indices.device();
  gp.q_sel = q_sel.device_ptr(), gp.k_sel = k_sel.device_ptr(), gp.v_sel = v_sel.device_ptr();
  gp.rope = tables.device;
  {
    SCOPED_TRACE("gather");
    expect_same_tensors({{&q_sel, "q_sel"}, {&k_sel, "k_sel"}, {&v_sel, "v_sel"}},
                        [&] { lighthouse::cuda::gather(gp, nullptr); });
  }
  gp.pooled_q = pq.device_ptr(), gp.pooled_q_strides = pq.strides();
  gp.pooled_k = pk.device_ptr(), gp.pooled_k_strides = pk.strides();
  gp.pooled_v = pv.device_ptr(), gp.pooled_v_strides = pv.strides();
  {
    SCOPED_TRACE("gather with pooled level L");
    expect_same_tensors({{&q_sel, "q_sel"}, {&k_sel, "k_sel"}, {&v_sel, "v_sel"}},
                        [&] { lighthouse::cuda::gather(gp, nullptr); });
  }

  // gather_backward of random gradients of the gathered tensors.
  Tensor gq_sel(t, B, S, H, D, shape.sel_layout, rng), gk_sel(t, B, S, Hkv, D, shape.sel_layout, rng),
      gv_sel(t, B, S, Hkv, D, shape.sel_layout, rng);
  for (Tensor* x : {&gq_sel, &gk_sel, &gv_sel}) {
    x->fill_normal(rng);
    x->upload();
  }
  check_gather_backward(d, g, t, gq_sel, gk_sel, gv_sel, slots, shape.in_layout, rng, tables.host, tables.device);
}

constexpr DType kF32 = DType::kFloat32, kBF16 = DType::kBFloat16, kF16 = DType::kFloat16;
constexpr Layout kSeq = Layout::kSeqMajor, kHead = Layout::kHeadMajor, kAligned = Layout::kAligned,
                 kScrambled = Layout::kScrambled;

// convention: 'h' rotate-half, 'i' interleaved; tables: "N" ([N, D]) or "B+pad" ([B, N, D]).
RopeShape make(const char* name, int64_t batch, int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
               int pooling, int levels, int64_t topk, DType dtype, char convention, bool batched,
               Layout in = kSeq, Layout sel = kHead, int64_t table_pad = 0, int64_t table_offset = 0,
               int tile_budget = 128) {
  RopeShape r;
  r.shape.name = name;
  r.shape.batch = batch;
  r.shape.seq_len = seq_len;
  r.shape.heads = heads;
  r.shape.kv_heads = kv_heads;
  r.shape.head_dim = head_dim;
  r.shape.pooling = pooling;
  r.shape.levels = levels;
  r.shape.topk = topk;
  r.shape.tile_budget = tile_budget;
  r.shape.dtype = dtype;
  r.shape.in_layout = in;
  r.shape.sel_layout = sel;
  r.interleaved = convention == 'i';
  r.batched_tables = batched;
  r.table_pad = table_pad;
  r.table_offset = table_offset;
  return r;
}

std::vector<RopeShape> shapes() {
  return {
      // regular N, both conventions, both table layouts, every dtype (16-byte paths)
      make("half_bf16", 1, 4096, 4, 4, 64, 4, 3, 256, kBF16, 'h', false),
      make("interleaved_bf16_batched", 2, 4096, 4, 4, 64, 4, 3, 256, kBF16, 'i', true, kSeq, kHead, 4),
      make("half_f32_batched", 2, 4096, 2, 2, 32, 4, 3, 256, kF32, 'h', true),
      make("interleaved_f32", 1, 4096, 2, 2, 32, 4, 3, 256, kF32, 'i', false),
      make("half_f16", 1, 4096, 2, 2, 64, 4, 3, 256, kF16, 'h', false),
      make("interleaved_f16_batched", 2, 4096, 2, 1, 64, 4, 3, 256, kF16, 'i', true, kSeq, kHead, 12),
      // rotate-half on the 16-byte path at the benchmark's head_dim (rows of 8 pair items; a query group of 3
      // whose rows leave warps part-filled), at 256 in f32, and at 16 (one pair item per row)
      make("half_bf16_d128", 1, 4096, 8, 8, 128, 4, 3, 256, kBF16, 'h', false),
      make("half_group3_bf16_d128", 1, 4096 + 64, 3, 1, 128, 4, 3, 256, kBF16, 'h', true),
      make("half_f32_d256", 1, 4096 + 17, 2, 2, 256, 4, 3, 256, kF32, 'h', false),
      make("half_bf16_d16_ragged", 1, 4096 + 5, 4, 2, 16, 4, 3, 256, kBF16, 'h', false),
      // ragged N and GQA
      make("ragged_gqa2_bf16", 1, 5119, 4, 2, 64, 4, 3, 256, kBF16, 'h', true),
      make("ragged_gqa8_f32", 2, 4096 + 1000, 8, 1, 16, 4, 3, 256, kF32, 'i', false),
      make("gqa4_f16", 1, 4133, 8, 2, 32, 4, 3, 256, kF16, 'h', true, kSeq, kHead, 8),
      // pyramid depths and pooling factors
      make("p2_l2_bf16", 1, 1000, 2, 1, 32, 2, 2, 256, kBF16, 'i', false),
      make("p4_l4_f16", 1, 9000, 2, 2, 32, 4, 4, 128, kF16, 'h', false),
      make("p8_l3_f32", 1, 8192 + 77, 2, 1, 32, 8, 3, 128, kF32, 'h', true),
      // scalar paths: head_dim even but off the vector width; rotate-half halves off it (24 / 2 = 12, not a
      // multiple of 8 for 16-bit types, while interleaved pairs still take the 16-byte path)
      make("head_dim_6_f32_half", 1, 4096, 2, 1, 6, 4, 3, 256, kF32, 'h', false),
      make("head_dim_6_f32_interleaved", 1, 4096, 2, 1, 6, 4, 3, 256, kF32, 'i', true),
      make("head_dim_10_f16_half", 1, 4096 + 3, 2, 2, 10, 4, 3, 256, kF16, 'h', true),
      make("head_dim_24_bf16_half", 1, 4096, 4, 2, 24, 4, 3, 256, kBF16, 'h', false),
      make("head_dim_24_bf16_interleaved", 1, 4096, 4, 2, 24, 4, 3, 256, kBF16, 'i', false),
      make("head_dim_2_bf16_interleaved", 1, 4096, 2, 2, 2, 4, 3, 256, kBF16, 'i', true),
      // tables one float past a 16-byte boundary: the scalar path
      make("unaligned_tables_bf16", 1, 4096, 4, 2, 64, 4, 3, 256, kBF16, 'h', false, kSeq, kHead, 0, 1),
      make("unaligned_tables_f32_batched", 2, 4096, 2, 2, 32, 4, 3, 256, kF32, 'i', true, kSeq, kHead, 1, 1),
      // strided layouts: 16-byte aligned and not
      make("aligned_strides_f32", 2, 4096 + 9, 4, 2, 32, 4, 3, 256, kF32, 'h', true, kAligned, kAligned),
      make("aligned_strides_bf16", 1, 4096, 4, 4, 64, 4, 3, 256, kBF16, 'i', false, kAligned, kAligned),
      make("scrambled_bf16", 2, 4096 + 3, 4, 2, 24, 4, 3, 256, kBF16, 'h', true, kScrambled, kScrambled),
      make("scrambled_f16", 1, 4096, 2, 1, 16, 4, 3, 256, kF16, 'i', false, kScrambled, kSeq),
      // at least 4 positions per kept entry: gather_backward rotates in a first pass (the shapes above: in the
      // tiled kernel's loop), on the 16-byte paths, GQA, ragged N, the scalar paths, strided, other pyramids
      make("first_pass_half_bf16_d128", 1, 16384, 8, 8, 128, 4, 3, 256, kBF16, 'h', false),
      make("first_pass_interleaved_f32_gqa_ragged", 2, 16384 + 37, 4, 2, 32, 4, 3, 256, kF32, 'i', true),
      make("first_pass_half_f16_d10", 1, 16384 + 3, 2, 2, 10, 4, 3, 256, kF16, 'h', true),
      make("first_pass_unaligned_tables_bf16", 1, 16384, 4, 2, 64, 4, 3, 256, kBF16, 'h', false, kSeq, kHead, 0, 1),
      make("first_pass_scrambled_bf16", 1, 16384 + 3, 4, 2, 24, 4, 3, 256, kBF16, 'h', true, kScrambled, kScrambled),
      make("first_pass_p8_l3_f32", 1, 32768, 2, 1, 32, 8, 3, 128, kF32, 'i', false),
      make("first_pass_p4_l4_f16", 1, 32768 + 100, 2, 2, 32, 4, 4, 128, kF16, 'h', false),
      // at least 131,072 kept entries (batch x KV heads x S): gather's v rows in a launch of their own, the
      // table-free kernel, also beside the rope kernel's scalar path (unaligned tables) and with GQA
      make("split_v_half_bf16_d128", 1, 32768, 8, 8, 128, 4, 3, 2048, kBF16, 'h', false),
      make("split_v_interleaved_f32_gqa_ragged", 2, 32768 + 5, 8, 4, 32, 4, 3, 2048, kF32, 'i', true),
      make("split_v_unaligned_tables_bf16", 1, 32768, 8, 8, 64, 4, 3, 2048, kBF16, 'h', false, kSeq, kHead, 0, 1),
      // (levels + 1) x kv_heads > 4096: no tiled slot table fits, gather_backward takes the plain kernel
      make("plain_backward_half_bf16", 1, 40, 2050, 2050, 8, 2, 2, 2, kBF16, 'h', false, kSeq, kHead, 0, 0, 2),
      make("plain_backward_interleaved_f32", 1, 41, 2050, 2050, 6, 2, 2, 2, kF32, 'i', true, kSeq, kHead, 0, 0, 2),
      make("plain_backward_half_bf16_d16", 1, 40, 2050, 2050, 16, 2, 2, 2, kBF16, 'h', false, kSeq, kHead, 0, 0, 2),
  };
}

// The shape with per-pair tables (D/2 values a row), named pair_<name>.
RopeShape per_pair(RopeShape r) {
  r.shape.name = "pair_" + r.shape.name;
  r.per_pair = true;
  return r;
}

// Per-pair tables on every path the per-element ones take: the 16-byte paths (rotate-half chunks of pair values,
// interleaved chunks of half as many values: W / 2 floats, two for f32), the scalar ones, rows of D/2 floats off
// the 4-float rule (f32 interleaved D = 12: 6 values a row, the scalar path although the data allow 16 bytes),
// unaligned tables, both ways gather_backward rotates, and the plain gather_backward kernel.
std::vector<RopeShape> per_pair_shapes() {
  std::vector<RopeShape> out;
  for (const RopeShape& r : shapes()) {
    const std::string& n = r.shape.name;
    for (const char* pick : {"half_bf16", "interleaved_bf16_batched", "half_f32_batched", "interleaved_f32",
                             "half_f16", "half_bf16_d128", "half_group3_bf16_d128", "ragged_gqa8_f32", "p4_l4_f16",
                             "head_dim_6_f32_half", "head_dim_6_f32_interleaved", "head_dim_24_bf16_half",
                             "head_dim_24_bf16_interleaved", "head_dim_2_bf16_interleaved", "unaligned_tables_bf16",
                             "scrambled_bf16", "first_pass_half_bf16_d128", "first_pass_interleaved_f32_gqa_ragged",
                             "first_pass_half_f16_d10", "first_pass_p4_l4_f16", "split_v_half_bf16_d128",
                             "plain_backward_half_bf16", "plain_backward_interleaved_f32"})
      if (n == pick) out.push_back(per_pair(r));
  }
  out.push_back(per_pair(make("interleaved_f32_d12", 1, 4096 + 7, 2, 2, 12, 4, 3, 256, kF32, 'i', true)));
  out.push_back(per_pair(
      make("first_pass_interleaved_bf16_d64", 2, 16384, 4, 2, 64, 4, 3, 256, kBF16, 'i', true, kSeq, kHead, 4)));
  return out;
}

std::vector<RopeShape> all_shapes() {
  std::vector<RopeShape> out = shapes();
  for (const RopeShape& r : per_pair_shapes()) out.push_back(r);
  return out;
}

class GpuRope : public ::testing::TestWithParam<RopeShape> {};

TEST_P(GpuRope, BitwiseEqualToCpu) {
  check_rope(GetParam(), 0x40be0000u + std::hash<std::string>{}(GetParam().shape.name));
}

// Small problems for the memory and race checkers (compute-sanitizer runs
// GpuSmall.*): both table conventions, the 16-byte and the scalar paths, and
// both ways gather_backward rotates (the first pass with its workspace).
TEST(GpuSmall, Rope) {
  check_rope(make("small_half_bf16_in_loop", 1, 2048 + 21, 4, 2, 16, 2, 3, 256, kBF16, 'h', false), 11);
  check_rope(make("small_half_bf16_first_pass", 1, 8192 + 21, 4, 2, 16, 4, 3, 128, kBF16, 'h', false), 12);
  check_rope(make("small_interleaved_f32_scalar_first_pass", 1, 8192 + 3, 2, 1, 6, 4, 3, 128, kF32, 'i', true), 13);
  check_rope(per_pair(make("small_half_bf16_first_pass", 1, 8192 + 21, 4, 2, 16, 4, 3, 128, kBF16, 'h', false)), 14);
  check_rope(per_pair(make("small_interleaved_f32_in_loop", 1, 2048 + 5, 2, 2, 8, 2, 3, 256, kF32, 'i', true)), 15);
}

INSTANTIATE_TEST_SUITE_P(Families, GpuRope, ::testing::ValuesIn(all_shapes()),
                         [](const ::testing::TestParamInfo<RopeShape>& info) { return info.param.shape.name; });

}  // namespace
}  // namespace gputest
