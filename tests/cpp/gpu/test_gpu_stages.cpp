// Every CUDA stage against the CPU reference, bit for bit, over named
// families of shapes: regular, ragged N, GQA group sizes, pooling factors,
// pyramid depths, dtypes, strided layouts, head dims off the vector width,
// pyramids coarser than one pool_score chunk, S > 65,535, and too many KV
// heads for the tiled kernels' shared slot table.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "stage_runner.h"

namespace gputest {
namespace {

Shape make(const char* name, int64_t batch, int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
           int pooling, int levels, int64_t topk, DType dtype) {
  Shape s;
  s.name = name;
  s.batch = batch;
  s.seq_len = seq_len;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.pooling = pooling;
  s.levels = levels;
  s.topk = topk;
  s.dtype = dtype;
  return s;
}

Shape with_layouts(Shape s, Layout in, Layout sel) {
  s.in_layout = in;
  s.sel_layout = sel;
  return s;
}

Shape with_budget(Shape s, int tile_budget) {
  s.tile_budget = tile_budget;
  return s;
}

Shape with_selection(Shape s, lighthouse::Selection selection) {
  s.selection = selection;
  return s;
}

constexpr DType kF32 = DType::kFloat32, kBF16 = DType::kBFloat16, kF16 = DType::kFloat16;

std::vector<Shape> shapes() {
  return {
      // regular: N a multiple of c_L * T
      make("regular_bf16", 1, 4096, 4, 4, 64, 4, 3, 256, kBF16),
      make("regular_f32_b2", 2, 4096, 2, 2, 32, 4, 3, 256, kF32),
      make("regular_f16", 1, 4096, 2, 2, 64, 4, 3, 256, kF16),
      // ragged N: uneven tiles and a tail past the last coarsest block
      make("ragged_bf16", 1, 5119, 4, 2, 64, 4, 3, 256, kBF16),
      make("ragged_f32", 2, 4096 + 1000, 2, 1, 16, 4, 3, 256, kF32),
      make("min_seq_len", 1, 4096, 2, 2, 16, 4, 3, 256, kBF16),
      // GQA group sizes 1, 2, 4, 8
      make("gqa_1", 1, 4096, 2, 2, 32, 4, 3, 256, kBF16),
      make("gqa_2", 1, 4133, 4, 2, 32, 4, 3, 256, kBF16),
      make("gqa_4", 1, 4096, 8, 2, 32, 4, 3, 256, kF16),
      make("gqa_8", 2, 4100, 8, 1, 32, 4, 3, 256, kF32),
      // pooling factors and pyramid depths
      make("p2_l2", 1, 1000, 2, 1, 32, 2, 2, 256, kBF16),
      make("p2_l5", 1, 3000, 2, 2, 32, 2, 5, 128, kBF16),
      make("p8_l3", 1, 8192 + 77, 2, 1, 32, 8, 3, 128, kF32),
      make("p4_l4", 1, 9000, 2, 2, 32, 4, 4, 128, kF16),
      make("p4_l5", 1, 32768 + 5, 2, 1, 16, 4, 5, 128, kBF16),
      make("p8_l4", 1, 65536 + 100, 1, 1, 8, 8, 4, 128, kBF16),
      // coarsest block (2048) larger than a pool_score chunk
      make("p2_l12_coarse", 1, 262144 + 5, 1, 1, 8, 2, 12, 128, kF32),
      // S > 65,535 (the grid limit of a y dimension)
      make("kept_over_65535", 1, 131072 + 3, 2, 1, 8, 4, 3, 8192, kBF16),
      // head dims off the 16-byte vector width, and a chunk remainder
      make("head_dim_20_bf16", 1, 4096, 2, 2, 20, 4, 3, 256, kBF16),
      make("head_dim_3_f32", 1, 4096, 2, 1, 3, 4, 3, 256, kF32),
      make("head_dim_136_f16", 1, 4096, 2, 2, 136, 4, 3, 256, kF16),
      // strided layouts: permuted and padded, 16-byte aligned or not
      with_layouts(make("aligned_strides_f32", 2, 4096 + 9, 4, 2, 32, 4, 3, 256, kF32), Layout::kAligned,
                   Layout::kAligned),
      with_layouts(make("aligned_strides_bf16", 1, 4096, 4, 4, 64, 4, 3, 256, kBF16), Layout::kAligned,
                   Layout::kAligned),
      with_layouts(make("scrambled_bf16", 2, 4096 + 3, 4, 2, 24, 4, 3, 256, kBF16), Layout::kScrambled,
                   Layout::kScrambled),
      with_layouts(make("scrambled_f16", 1, 4096, 2, 1, 16, 4, 3, 256, kF16), Layout::kScrambled,
                   Layout::kSeqMajor),
      // (levels + 1) x kv_heads > 4096: no tiled slot table fits, scatter and gather_backward take their plain
      // kernels
      with_budget(make("plain_position_kernels_bf16", 1, 40, 2050, 2050, 8, 2, 2, 2, kBF16), 2),
      with_budget(make("plain_position_kernels_f32", 1, 41, 1366, 1366, 3, 2, 2, 2, kF32), 2),
      // the smallest tile budget (one entry per side and level)
      with_budget(make("tile_budget_2", 1, 100, 1, 1, 8, 4, 3, 4, kBF16), 2),
      // the lagged and causal selection rules
      with_selection(make("lagged_ragged_gqa", 2, 5119, 4, 2, 64, 4, 3, 256, kBF16), lighthouse::Selection::kLagged),
      with_selection(make("causal_ragged_gqa", 2, 5119, 4, 2, 64, 4, 3, 256, kBF16), lighthouse::Selection::kCausal),
      with_selection(make("causal_p2_l5", 1, 3000, 2, 2, 32, 2, 5, 128, kF32), lighthouse::Selection::kCausal),
      with_selection(with_budget(make("causal_tile_budget_2", 1, 100, 1, 1, 8, 4, 3, 4, kBF16), 2),
                     lighthouse::Selection::kCausal),
  };
}

class GpuStages : public ::testing::TestWithParam<Shape> {};

TEST_P(GpuStages, BitwiseEqualToCpu) { check_all_stages(GetParam(), 0x5eed0000u + std::hash<std::string>{}(GetParam().name)); }

INSTANTIATE_TEST_SUITE_P(Families, GpuStages, ::testing::ValuesIn(shapes()),
                         [](const ::testing::TestParamInfo<Shape>& info) { return info.param.name; });

// A small problem for the memory and race checkers (compute-sanitizer).
TEST(GpuSmall, AllStages) {
  check_all_stages(make("small_ragged_gqa", 1, 2048 + 21, 4, 2, 16, 2, 3, 256, kBF16), 7);
  check_all_stages(with_selection(make("small_causal", 1, 2048 + 21, 4, 2, 16, 2, 3, 256, kBF16),
                                  lighthouse::Selection::kCausal),
                   9);
  check_all_stages(with_layouts(make("small_scrambled", 1, 512 + 3, 2, 1, 5, 2, 2, 256, kF32), Layout::kScrambled,
                                Layout::kScrambled),
                   8);
}

}  // namespace
}  // namespace gputest
