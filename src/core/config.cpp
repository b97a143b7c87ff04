#include "lighthouse/config.h"

#include <cmath>
#include <limits>
#include <string>

#include "lighthouse/error.h"

namespace lighthouse {
namespace {

bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

// p^(levels-1), or -1 when it would not fit comfortably in 62 bits.
int64_t coarsest_block(const Config& c) {
  int64_t block = 1;
  for (int l = 1; l < c.levels; ++l) {
    if (block > (int64_t{1} << 40) / c.pooling) return -1;
    block *= c.pooling;
  }
  return block;
}

}  // namespace

void validate(const Config& c) {
  if (c.levels < 2 || c.levels > kMaxLevels)
    fail("levels", "an integer in [2, " + std::to_string(kMaxLevels) + "]", c.levels);
  if (c.pooling < 2 || !is_power_of_two(c.pooling)) fail("pooling", "a power of two >= 2", c.pooling);
  if (coarsest_block(c) < 0) fail("pooling^(levels-1)", "at most 2^40", "a larger value");
  if (c.tile_budget < 2 || c.tile_budget % 2 != 0) fail("tile_budget", "an even integer >= 2", c.tile_budget);
  if (c.topk <= 0 || c.topk % c.tile_budget != 0)
    fail("topk", "a positive multiple of tile_budget (" + std::to_string(c.tile_budget) + ")", c.topk);
  if (c.scorer != Scorer::kNorm && c.scorer != Scorer::kDilated)
    fail("scorer", "norm (0) or dilated (1)", static_cast<int>(c.scorer));
  if (c.selection != Selection::kPaper && c.selection != Selection::kLagged && c.selection != Selection::kCausal)
    fail("selection", "paper (0), lagged (1) or causal (2)", static_cast<int>(c.selection));
  if (c.scorer == Scorer::kDilated && c.dilation < 1) fail("dilation", "an integer >= 1", c.dilation);
  if (!(c.scale >= 0.0f) || std::isinf(c.scale)) fail("scale", "a finite value >= 0 (0: 1/sqrt(head_dim))", c.scale);
}

int64_t min_seq_len(const Config& c) {
  validate(c);
  return c.topk * coarsest_block(c);
}

void validate(const Config& c, const Dims& d) {
  validate(c);
  if (d.batch < 1) fail("batch", "at least 1", d.batch);
  if (d.heads < 1) fail("heads", "at least 1", d.heads);
  if (d.kv_heads < 1) fail("kv_heads", "at least 1", d.kv_heads);
  if (d.heads % d.kv_heads != 0)
    fail("heads % kv_heads", "0 (heads = " + std::to_string(d.heads) + ", kv_heads = " +
                                 std::to_string(d.kv_heads) + ")",
         d.heads % d.kv_heads);
  if (d.head_dim < 1) fail("head_dim", "at least 1", d.head_dim);
  const int64_t min_n = min_seq_len(c);
  if (d.seq_len < min_n)
    fail("seq_len", "at least topk * pooling^(levels-1) = " + std::to_string(min_n) +
                        " (each selection tile needs tile_budget coarsest entries)",
         d.seq_len);
  // Pyramid indices and slots are int32.
  const int64_t pyramid_bound = d.seq_len + d.seq_len / (c.pooling - 1);
  if (pyramid_bound >= std::numeric_limits<int32_t>::max())
    fail("seq_len", "a pyramid of fewer than 2^31 entries (int32 indices)", d.seq_len);
}

bool shrinks(const Config& c, int64_t seq_len) {
  validate(c);
  if (seq_len < min_seq_len(c)) return false;
  const int64_t block = coarsest_block(c);
  const int64_t kept = seq_len / block + int64_t{c.levels - 1} * c.pooling * c.topk + seq_len % block;
  return kept < seq_len;
}

Selection parse_selection(const std::string& name) {
  for (Selection rule : {Selection::kPaper, Selection::kLagged, Selection::kCausal})
    if (name == selection_name(rule)) return rule;
  fail("selection", "one of \"paper\", \"lagged\", \"causal\"", "\"" + name + "\"");
}

const char* selection_name(Selection rule) {
  switch (rule) {
    case Selection::kPaper: return "paper";
    case Selection::kLagged: return "lagged";
    case Selection::kCausal: return "causal";
  }
  return "unknown";
}

float softmax_scale(const Config& c, int64_t head_dim) {
  return c.scale > 0.0f ? c.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

}  // namespace lighthouse
