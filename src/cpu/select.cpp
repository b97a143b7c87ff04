// CPU select: per (batch, KV head) and tile, the coarse-to-fine stratified
// top-k, then the tile's kept entries sorted by their exact causal key.
#include <algorithm>
#include <utility>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

struct Kept {
  int64_t key;
  int32_t pyramid_index;
};

// Moves the `count` best candidates by `scores` (score_key descending, lower
// index first on ties) to the front of [first, last).
void take_best(std::vector<int64_t>::iterator first, std::vector<int64_t>::iterator last, int64_t count,
               const float* scores) {
  if (count <= 0) return;
  auto better = [scores](int64_t a, int64_t b) {
    const uint32_t ka = detail::score_key(scores[a]), kb = detail::score_key(scores[b]);
    return ka != kb ? ka > kb : a < b;
  };
  if (count < last - first) std::nth_element(first, first + count, last, better);
}

void select_tile(const Geometry& g, const float* qk, const float* kq, int64_t tile, int32_t* out) {
  const int64_t h = g.tile_budget / 2;
  std::vector<int64_t> cand, next;
  std::vector<Kept> kept;
  kept.reserve(g.tile_kept(tile));
  for (int64_t i = g.tile_begin(tile); i < g.tile_begin(tile + 1); ++i) cand.push_back(i);
  for (int l = g.levels; l >= 2; --l) {
    const int64_t off = g.offset(l);
    // Query side first, then the key side among the rest.
    take_best(cand.begin(), cand.end(), h, qk + off);
    take_best(cand.begin() + h, cand.end(), h, kq + off);
    const int64_t chosen = std::min<int64_t>(2 * h, static_cast<int64_t>(cand.size()));
    next.clear();
    for (int64_t j = 0; j < static_cast<int64_t>(cand.size()); ++j) {
      const bool selected = j < chosen;
      kept.push_back({g.causal_key(l, cand[j], selected), static_cast<int32_t>(off + cand[j])});
      if (selected)
        for (int r = 0; r < g.pooling; ++r) next.push_back(cand[j] * g.pooling + r);
    }
    std::swap(cand, next);
  }
  for (int64_t i : cand) kept.push_back({g.causal_key(1, i, false), static_cast<int32_t>(i)});
  std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return a.key < b.key; });
  for (size_t s = 0; s < kept.size(); ++s) out[s] = kept[s].pyramid_index;
}

}  // namespace

void select(const SelectParams& p) {
  check(p);
  const Geometry& g = p.geo;
  const int64_t heads = p.dims.batch * p.dims.kv_heads;
  parallel_for(heads * g.tiles, [&](int64_t item) {
    const int64_t bg = item / g.tiles, tile = item % g.tiles;
    select_tile(g, p.scores_qk + bg * g.pyramid_len, p.scores_kq + bg * g.pyramid_len, tile,
                p.indices + bg * g.kept + g.tile_kept_offset(tile));
  });
  parallel_for(heads, [&](int64_t bg) {
    int32_t* indices = p.indices + bg * g.kept;
    // Tail tokens past the last whole coarsest block, as level-1 entries.
    for (int64_t t = g.tail_begin(); t < g.seq_len; ++t) indices[g.kept - g.tail + (t - g.tail_begin())] = static_cast<int32_t>(t);
    int32_t* slots = p.slots + bg * g.pyramid_len;
    std::fill(slots, slots + g.pyramid_len, -1);
    for (int64_t s = 0; s < g.kept; ++s) slots[indices[s]] = static_cast<int32_t>(s);
  });
}

}  // namespace lighthouse::cpu
