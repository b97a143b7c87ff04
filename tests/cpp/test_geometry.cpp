// Geometry family: level sizes, offsets, tiles, S (with the ragged tail),
// causal keys and scatter windows of lighthouse::Geometry against the spec
// model, over random configurations and the spec's worked example.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>

#include "lighthouse/config.h"
#include "lighthouse/error.h"
#include "lighthouse/geometry.h"
#include "spec_model.h"

namespace {

lighthouse::Config config_of(int levels, int pooling, int tile_budget, int64_t topk) {
  lighthouse::Config c;
  c.levels = levels;
  c.pooling = pooling;
  c.tile_budget = tile_budget;
  c.topk = topk;
  return c;
}

std::string describe(int64_t n, int levels, int pooling, int tile_budget, int64_t topk) {
  std::ostringstream os;
  os << "N=" << n << " L=" << levels << " p=" << pooling << " m=" << tile_budget << " topk=" << topk;
  return os.str();
}

// Every derived quantity of the geometry, checked against the spec model.
void expect_geometry_matches(int64_t n, int levels, int pooling, int tile_budget, int64_t topk) {
  SCOPED_TRACE(describe(n, levels, pooling, tile_budget, topk));
  const auto g = lighthouse::Geometry::make(config_of(levels, pooling, tile_budget, topk), n);
  const spec::Pyramid s = spec::make_pyramid(n, levels, pooling, tile_budget, topk);
  ASSERT_EQ(g.seq_len, n);
  ASSERT_EQ(g.levels, levels);
  ASSERT_EQ(g.tiles, s.tiles);
  ASSERT_EQ(g.pyramid_len, s.pyramid_len);
  ASSERT_EQ(g.tail, s.tail);
  ASSERT_EQ(g.kept, s.kept);
  ASSERT_EQ(g.tail_begin(), n - s.tail);
  for (int l = 1; l <= levels; ++l) {
    ASSERT_EQ(g.block(l), s.block[l - 1]) << "level " << l;
    ASSERT_EQ(g.size(l), s.size[l - 1]) << "level " << l;
    ASSERT_EQ(g.offset(l), s.offset[l - 1]) << "level " << l;
  }
  ASSERT_EQ(g.offsets[levels], s.pyramid_len);
  ASSERT_EQ(g.coarsest(), s.size.back());

  // Tiles: boundaries, kept counts, and kept offsets that add up to S - tail.
  int64_t kept_offset = 0;
  for (int64_t t = 0; t < s.tiles; ++t) {
    ASSERT_EQ(g.tile_begin(t), s.tile_first[t]) << "tile " << t;
    const int64_t tile_kept = s.tile_first[t + 1] - s.tile_first[t] + (levels - 1) * int64_t{tile_budget} * pooling;
    ASSERT_GE(s.tile_first[t + 1] - s.tile_first[t], tile_budget) << "tile " << t << " is short";
    ASSERT_EQ(g.tile_kept(t), tile_kept) << "tile " << t;
    ASSERT_EQ(g.tile_kept_offset(t), kept_offset) << "tile " << t;
    kept_offset += tile_kept;
  }
  ASSERT_EQ(g.tile_begin(s.tiles), s.size.back());
  ASSERT_EQ(kept_offset + s.tail, s.kept);

  // level_of, keys and windows at both ends and a sample of each level.
  const int64_t unit = int64_t{1} << levels;
  for (int l = 1; l <= levels; ++l) {
    const int64_t count = s.size[l - 1];
    for (int64_t i : {int64_t{0}, int64_t{1}, count / 3, count / 2, count - 2, count - 1}) {
      if (i < 0 || i >= count) continue;
      const spec::Entry e{l, i};
      ASSERT_EQ(g.level_of(spec::pyramid_index(s, e)), l) << "index " << spec::pyramid_index(s, e);
      for (bool selected : {false, true}) {
        const long double want = spec::causal_key(s, e, selected) * static_cast<long double>(unit);
        ASSERT_EQ(static_cast<long double>(g.causal_key(l, i, selected)), want)
            << "level " << l << " entry " << i << " selected " << selected;
      }
      int64_t first, last;
      spec::scatter_window(s, e, &first, &last);
      ASSERT_EQ(g.window_first(l, i), first) << "level " << l << " entry " << i;
      ASSERT_EQ(g.window_last(l, i), last) << "level " << l << " entry " << i;
    }
  }
}

TEST(Geometry, SpecWorkedExample) {
  // N = 512K, p = 4, L = 3, k = 2048 (m = 128) keeps S = 49,152 entries.
  const auto g = lighthouse::Geometry::make(config_of(3, 4, 128, 2048), 512 * 1024);
  EXPECT_EQ(g.kept, 49152);
  EXPECT_EQ(g.tiles, 16);
  EXPECT_EQ(g.tail, 0);
  expect_geometry_matches(512 * 1024, 3, 4, 128, 2048);
}

TEST(Geometry, GoldenShapes) {
  // (N, p, L, topk) -> S and pyramid length of the golden cases (m = 128).
  struct Case {
    int64_t n;
    int pooling, levels;
    int64_t topk, kept, pyramid_len;
  } cases[] = {{1024, 2, 3, 128, 768, 1792},    {4096, 4, 3, 256, 2304, 5376}, {2048, 2, 2, 256, 1536, 3072},
               {8192, 8, 3, 128, 2176, 9344},   {4096, 2, 4, 256, 2048, 7680}};
  for (const Case& c : cases) {
    const auto g = lighthouse::Geometry::make(config_of(c.levels, c.pooling, 128, c.topk), c.n);
    EXPECT_EQ(g.kept, c.kept) << describe(c.n, c.levels, c.pooling, 128, c.topk);
    EXPECT_EQ(g.pyramid_len, c.pyramid_len) << describe(c.n, c.levels, c.pooling, 128, c.topk);
  }
}

TEST(Geometry, RaggedTailIsKeptAsBaseTokens) {
  // N = 1000, p = 2, L = 3, m = 2, topk = 4: n_3 = 250 coarsest blocks of 4
  // cover 1000 positions exactly; N = 1003 leaves a tail of 3.
  const auto even = lighthouse::Geometry::make(config_of(3, 2, 2, 4), 1000);
  const auto ragged = lighthouse::Geometry::make(config_of(3, 2, 2, 4), 1003);
  EXPECT_EQ(even.tail, 0);
  EXPECT_EQ(ragged.tail, 3);
  EXPECT_EQ(ragged.kept, 250 + 2 * 2 * 4 + 3);
  EXPECT_EQ(ragged.tail_begin(), 1000);
  // Tiles split 250 entries as 125 / 125; 251 entries (N = 1004..1007) as 126 / 125.
  const auto odd = lighthouse::Geometry::make(config_of(3, 2, 2, 4), 1004);
  EXPECT_EQ(odd.tile_begin(1), 126);
  EXPECT_EQ(odd.tile_begin(2), 251);
}

TEST(Geometry, RandomConfigurationsMatchSpecModel) {
  const uint64_t seed = 0x9e0e7a1;
  std::mt19937_64 rng(seed);
  int configs = 0;
  while (configs < 400) {
    const int pooling = 1 << std::uniform_int_distribution<int>(1, 3)(rng);
    const int levels = std::uniform_int_distribution<int>(2, 6)(rng);
    const int tile_budget = 2 * std::uniform_int_distribution<int>(1, 16)(rng);
    const int64_t topk = tile_budget * std::uniform_int_distribution<int64_t>(1, 9)(rng);
    const int64_t min_n = lighthouse::min_seq_len(config_of(levels, pooling, tile_budget, topk));
    if (min_n > (int64_t{1} << 26)) continue;
    const int64_t n = min_n + std::uniform_int_distribution<int64_t>(0, 3 * min_n)(rng);
    SCOPED_TRACE("seed " + std::to_string(seed) + ", configuration " + std::to_string(configs));
    expect_geometry_matches(n, levels, pooling, tile_budget, topk);
    if (HasFatalFailure()) return;
    ++configs;
  }
  std::printf("geometry: %d random configurations\n", configs);
}

TEST(Geometry, LargeSequences) {
  // Over a million positions, and beyond 2^24 where float keys would collide.
  expect_geometry_matches(1 << 20, 4, 4, 8, 64);
  expect_geometry_matches((1 << 20) + 12345, 5, 2, 16, 128);
  expect_geometry_matches((int64_t{1} << 27) + 7, 5, 8, 128, 4096);
}

TEST(Geometry, MinSeqLenAndShrinks) {
  const auto c = config_of(3, 4, 128, 2048);
  EXPECT_EQ(lighthouse::min_seq_len(c), 2048 * 16);
  EXPECT_NO_THROW(lighthouse::Geometry::make(c, 2048 * 16));
  EXPECT_THROW(lighthouse::Geometry::make(c, 2048 * 16 - 1), lighthouse::Error);
  // At N = min_seq_len, S = 2048 + 2 * 4 * 2048 = 18,432 < 32,768: it shrinks.
  EXPECT_TRUE(lighthouse::shrinks(c, 2048 * 16));
  EXPECT_FALSE(lighthouse::shrinks(c, 2048 * 16 - 1));
  // p = 2, L = 2, m = topk = 128: S = N / 2 + 256 + N % 2, below N only past N = 512.
  const auto wide = config_of(2, 2, 128, 128);
  EXPECT_FALSE(lighthouse::shrinks(wide, 256));
  EXPECT_FALSE(lighthouse::shrinks(wide, 512));
  EXPECT_FALSE(lighthouse::shrinks(wide, 513));
  EXPECT_TRUE(lighthouse::shrinks(wide, 514));
}

TEST(Geometry, SoftmaxScale) {
  lighthouse::Config c;
  EXPECT_EQ(lighthouse::softmax_scale(c, 64), 0.125f);
  EXPECT_EQ(lighthouse::softmax_scale(c, 128), static_cast<float>(1.0 / std::sqrt(128.0)));
  c.scale = 0.5f;
  EXPECT_EQ(lighthouse::softmax_scale(c, 128), 0.5f);
}

}  // namespace
