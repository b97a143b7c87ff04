// Selection families: lighthouse::cpu::select against the spec model on
// fresh random scores over regular and ragged N, pooling factors, depths,
// tile counts, tile budgets, tied and special scores and sequences over a
// million positions; plus the invariants every selection must satisfy.
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
#include "lighthouse/geometry.h"
#include "spec_model.h"
#include "stage_calls.h"

namespace {

struct SelectCase {
  int64_t seq_len = 0;
  int levels = 2, pooling = 2, tile_budget = 2;
  int64_t topk = 2;
  int64_t batch = 1, kv_heads = 1;
  lighthouse::Selection rule = lighthouse::Selection::kPaper;

  std::string describe() const {
    std::ostringstream os;
    os << "N=" << seq_len << " L=" << levels << " p=" << pooling << " m=" << tile_budget << " topk=" << topk
       << " B=" << batch << " Hkv=" << kv_heads << " rule=" << static_cast<int>(rule);
    return os.str();
  }
};

constexpr lighthouse::Selection kRules[] = {lighthouse::Selection::kPaper, lighthouse::Selection::kLagged,
                                            lighthouse::Selection::kCausal};

spec::Rule spec_rule(lighthouse::Selection rule) {
  switch (rule) {
    case lighthouse::Selection::kPaper: return spec::Rule::kPaper;
    case lighthouse::Selection::kLagged: return spec::Rule::kLagged;
    case lighthouse::Selection::kCausal: return spec::Rule::kCausal;
  }
  return spec::Rule::kPaper;
}

lighthouse::Config config_of(const SelectCase& c) {
  lighthouse::Config config;
  config.levels = c.levels;
  config.pooling = c.pooling;
  config.tile_budget = c.tile_budget;
  config.topk = c.topk;
  return config;
}

enum class Scores { kUniform, kFewValues, kSpecial };

const char* scores_name(Scores s) {
  switch (s) {
    case Scores::kUniform: return "uniform";
    case Scores::kFewValues: return "few-values";
    case Scores::kSpecial: return "special";
  }
  return "?";
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void fill_scores(std::vector<float>& s, Scores kind, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int values = std::uniform_int_distribution<int>(1, 5)(rng);
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            from_bits(0x7fc00000u),
                            from_bits(0x7f800001u),
                            from_bits(0xffc00000u),
                            from_bits(0xff800001u),
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(),
                            -1.5f,
                            1.5f};
  for (float& x : s) {
    switch (kind) {
      case Scores::kUniform: x = uniform(rng); break;
      // Many equal scores: the lower index must win every tie.
      case Scores::kFewValues: x = static_cast<float>(static_cast<int>(uniform(rng) * values)) / values; break;
      case Scores::kSpecial:
        x = uniform(rng) < 0.5f ? specials[std::uniform_int_distribution<int>(0, 11)(rng)] : uniform(rng) - 0.5f;
        break;
    }
  }
}

// Properties any selection must have, whatever the scores: indices in range
// and unique, slots their inverse, causal keys strictly increasing, every
// coarsest entry kept, topk selected entries per coarse level, and the kept
// entries that were not expanded tiling [0, N) exactly once.
::testing::AssertionResult satisfies_invariants(const spec::Pyramid& pyr, const int32_t* indices,
                                                const int32_t* slots) {
  for (int64_t s = 0; s < pyr.kept; ++s) {
    if (indices[s] < 0 || indices[s] >= pyr.pyramid_len)
      return ::testing::AssertionFailure() << "indices[" << s << "] = " << indices[s] << " out of range";
    if (slots[indices[s]] != s)
      return ::testing::AssertionFailure() << "slots[indices[" << s << "]] = " << slots[indices[s]];
  }
  int64_t in_slots = 0;
  for (int64_t i = 0; i < pyr.pyramid_len; ++i) {
    if (slots[i] >= 0) ++in_slots;
    else if (slots[i] != -1) return ::testing::AssertionFailure() << "slots[" << i << "] = " << slots[i];
  }
  if (in_slots != pyr.kept)
    return ::testing::AssertionFailure() << in_slots << " slots set for " << pyr.kept << " kept entries";

  auto expanded = [&](spec::Entry e) {
    return e.level >= 2 && slots[spec::pyramid_index(pyr, {e.level - 1, e.local * pyr.pooling})] >= 0;
  };
  std::vector<int64_t> selected_per_level(pyr.levels + 1, 0);
  std::vector<char> covered(pyr.seq_len, 0);
  long double previous = -1.0L;
  for (int64_t s = 0; s < pyr.kept; ++s) {
    const spec::Entry e = spec::entry_of(pyr, indices[s]);
    const bool selected = expanded(e);
    const long double key = spec::causal_key(pyr, e, selected);
    if (!(key > previous))
      return ::testing::AssertionFailure() << "causal key of position " << s << " does not increase";
    previous = key;
    if (selected) {
      ++selected_per_level[e.level];
      continue;
    }
    const int64_t c = pyr.block[e.level - 1];
    for (int64_t pos = e.local * c; pos < (e.local + 1) * c; ++pos) {
      if (covered[pos]) return ::testing::AssertionFailure() << "position " << pos << " covered twice";
      covered[pos] = 1;
    }
  }
  for (int64_t pos = 0; pos < pyr.seq_len; ++pos)
    if (!covered[pos]) return ::testing::AssertionFailure() << "position " << pos << " not covered";
  for (int l = 2; l <= pyr.levels; ++l)
    if (selected_per_level[l] != pyr.topk)
      return ::testing::AssertionFailure() << selected_per_level[l] << " selected entries at level " << l;
  for (int64_t i = 0; i < pyr.size.back(); ++i)
    if (slots[pyr.offset[pyr.levels - 1] + i] < 0)
      return ::testing::AssertionFailure() << "coarsest entry " << i << " not kept";
  return ::testing::AssertionSuccess();
}

// Runs one configuration; returns false (after recording the failure with
// the seed) on any mismatch.
bool check_selection(const SelectCase& c, Scores kind, uint64_t seed) {
  SCOPED_TRACE(c.describe() + " scores=" + scores_name(kind) + " seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const auto geo = lighthouse::Geometry::make(config_of(c), c.seq_len);
  const spec::Pyramid pyr = spec::make_pyramid(c.seq_len, c.levels, c.pooling, c.tile_budget, c.topk);
  const int64_t heads = c.batch * c.kv_heads;
  std::vector<float> qk(heads * pyr.pyramid_len), kq(heads * pyr.pyramid_len);
  fill_scores(qk, kind, rng);
  fill_scores(kq, kind, rng);
  auto indices = lhtest::poisoned<int32_t>(heads * pyr.kept);
  auto slots = lhtest::poisoned<int32_t>(heads * pyr.pyramid_len);
  lhtest::run_select(lhtest::make_dims(c.batch, c.seq_len, c.kv_heads, c.kv_heads, 1), geo, qk.data(), kq.data(),
                     indices.data(), slots.data(), c.rule);
  for (int64_t bg = 0; bg < heads; ++bg) {
    SCOPED_TRACE("batch*kv_heads item " + std::to_string(bg));
    const spec::Selection want =
        spec::select(pyr, qk.data() + bg * pyr.pyramid_len, kq.data() + bg * pyr.pyramid_len, spec_rule(c.rule));
    const int32_t* got = indices.data() + bg * pyr.kept;
    const int32_t* got_slots = slots.data() + bg * pyr.pyramid_len;
    for (int64_t s = 0; s < pyr.kept; ++s)
      if (got[s] != want.indices[s]) {
        ADD_FAILURE() << "indices[" << s << "] = " << got[s] << ", spec model " << want.indices[s];
        return false;
      }
    for (int64_t i = 0; i < pyr.pyramid_len; ++i)
      if (got_slots[i] != want.slots[i]) {
        ADD_FAILURE() << "slots[" << i << "] = " << got_slots[i] << ", spec model " << want.slots[i];
        return false;
      }
    const auto invariants = satisfies_invariants(pyr, got, got_slots);
    if (!invariants) {
      ADD_FAILURE() << invariants.message();
      return false;
    }
  }
  return true;
}

// Shortest N of a configuration.
int64_t min_len(const SelectCase& c) {
  int64_t n = c.topk;
  for (int l = 1; l < c.levels; ++l) n *= c.pooling;
  return n;
}

// Largest shortest-N a random configuration may have, to keep the brute
// force fast.
constexpr int64_t kMaxMinLen = 16384;

// A random configuration; fixed fields (non-zero arguments) are kept.
SelectCase random_case(std::mt19937_64& rng, int pooling, int levels, int tile_budget, int64_t tiles, bool regular) {
  for (;;) {
    SelectCase c;
    c.pooling = pooling ? pooling : 1 << std::uniform_int_distribution<int>(1, 3)(rng);
    c.levels = levels ? levels : std::uniform_int_distribution<int>(2, 5)(rng);
    c.tile_budget = tile_budget ? tile_budget : 1 << std::uniform_int_distribution<int>(1, 4)(rng);
    const int64_t t = tiles ? tiles : std::uniform_int_distribution<int64_t>(1, 8)(rng);
    c.topk = c.tile_budget * t;
    c.batch = std::uniform_int_distribution<int64_t>(1, 2)(rng);
    c.kv_heads = std::uniform_int_distribution<int64_t>(1, 2)(rng);
    const int64_t min_n = min_len(c);
    if (min_n > kMaxMinLen) continue;
    if (regular) {
      // A multiple of c_L * T: every tile has the same number of coarsest entries.
      const int64_t unit = min_n / c.tile_budget;
      c.seq_len = unit * std::uniform_int_distribution<int64_t>(c.tile_budget, 3 * c.tile_budget)(rng);
    } else {
      c.seq_len = min_n + std::uniform_int_distribution<int64_t>(0, 2 * min_n)(rng);
    }
    return c;
  }
}

// Runs `count` random configurations of a family, seeded from base_seed,
// under each selection rule in turn.
int run_family(const char* family, int count, uint64_t base_seed, Scores kind,
               SelectCase (*make)(std::mt19937_64&, int)) {
  int done = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base_seed + static_cast<uint64_t>(i);
    std::mt19937_64 rng(seed);
    SelectCase c = make(rng, i);
    c.rule = kRules[i % 3];
    if (!check_selection(c, kind, seed)) break;
    ++done;
  }
  std::printf("%s: %d random configurations\n", family, done);
  return done;
}

TEST(SelectProperties, RegularSequences) {
  const int done = run_family("regular", 150, 1000, Scores::kUniform,
                              [](std::mt19937_64& rng, int) { return random_case(rng, 0, 0, 0, 0, true); });
  EXPECT_EQ(done, 150);
}

TEST(SelectProperties, RaggedSequences) {
  const int done = run_family("ragged", 150, 2000, Scores::kUniform,
                              [](std::mt19937_64& rng, int) { return random_case(rng, 0, 0, 0, 0, false); });
  EXPECT_EQ(done, 150);
}

TEST(SelectProperties, PoolingFactorsAndLevels) {
  // Every p in {2, 4, 8} with every L in {2..5}, ten configurations each.
  const int done = run_family("pooling x levels", 120, 3000, Scores::kUniform, [](std::mt19937_64& rng, int i) {
    const int cell = i % 12;
    const int pooling = 2 << (cell / 4), levels = 2 + cell % 4;
    return random_case(rng, pooling, levels, 0, 0, i % 2 == 0);
  });
  EXPECT_EQ(done, 120);
}

TEST(SelectProperties, TileCounts) {
  // T = 1..8 with ragged N, so most tile splits are uneven.
  const int done = run_family("tiles", 120, 4000, Scores::kUniform, [](std::mt19937_64& rng, int i) {
    return random_case(rng, 0, 0, 0, 1 + i % 8, false);
  });
  EXPECT_EQ(done, 120);
}

TEST(SelectProperties, TileBudgets) {
  const int done = run_family("tile budgets", 120, 5000, Scores::kUniform, [](std::mt19937_64& rng, int i) {
    return random_case(rng, 0, 0, 2 << (i % 4), 0, i % 3 == 0);
  });
  EXPECT_EQ(done, 120);
}

TEST(SelectProperties, TiedScoresPreferLowerIndex) {
  const int done = run_family("ties", 150, 6000, Scores::kFewValues,
                              [](std::mt19937_64& rng, int i) { return random_case(rng, 0, 0, 0, 0, i % 2 == 0); });
  EXPECT_EQ(done, 150);
}

TEST(SelectProperties, SpecialScoresFollowTotalOrder) {
  // Signed zeros, infinities, NaNs of both signs and subnormals.
  const int done = run_family("special scores", 100, 7000, Scores::kSpecial,
                              [](std::mt19937_64& rng, int i) { return random_case(rng, 0, 0, 0, 0, i % 2 == 0); });
  EXPECT_EQ(done, 100);
}

TEST(SelectProperties, AllScoresEqualKeepsTheFirstEntries) {
  // With equal scores the query side takes the first h candidates of each
  // tile and the key side the next h.
  SelectCase c;
  c.seq_len = 64;
  c.levels = 2;
  c.pooling = 2;
  c.tile_budget = 4;
  c.topk = 4;
  const auto geo = lighthouse::Geometry::make(config_of(c), c.seq_len);
  std::vector<float> scores(geo.pyramid_len, 1.0f);
  auto indices = lhtest::poisoned<int32_t>(geo.kept);
  auto slots = lhtest::poisoned<int32_t>(geo.pyramid_len);
  lhtest::run_select(lhtest::make_dims(1, 64, 1, 1, 1), geo, scores.data(), scores.data(), indices.data(),
                     slots.data());
  // Level 2 entries 0..3 are expanded into base tokens 0..7; entries 4..31 stay coarse.
  std::vector<int32_t> want;
  for (int32_t t = 0; t < 8; ++t) {
    want.push_back(t);
    if (t % 2 == 1) want.push_back(64 + t / 2);
  }
  for (int32_t i = 4; i < 32; ++i) want.push_back(64 + i);
  ASSERT_EQ(static_cast<int64_t>(want.size()), geo.kept);
  EXPECT_EQ(std::vector<int32_t>(indices.begin(), indices.end()), want);
}

TEST(SelectProperties, LargeSequences) {
  // Over a million positions, where float causal keys would collide.
  SelectCase a;
  a.seq_len = (1 << 20) + 77;
  a.levels = 3;
  a.pooling = 4;
  a.tile_budget = 4;
  a.topk = 16;
  SelectCase b;
  b.seq_len = (1 << 21) + 5;
  b.levels = 2;
  b.pooling = 2;
  b.tile_budget = 8;
  b.topk = 24;
  EXPECT_TRUE(check_selection(a, Scores::kUniform, 8001));
  EXPECT_TRUE(check_selection(b, Scores::kFewValues, 8002));
  a.rule = lighthouse::Selection::kCausal;
  b.rule = lighthouse::Selection::kLagged;
  EXPECT_TRUE(check_selection(a, Scores::kUniform, 8003));
  EXPECT_TRUE(check_selection(b, Scores::kFewValues, 8004));
  std::printf("large sequences: 4 configurations\n");
}

}  // namespace
