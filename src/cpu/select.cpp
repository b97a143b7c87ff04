// CPU select: per (batch, KV head) and tile, the coarse-to-fine stratified
// selection under the configured rule (per-tile top-k, or the causal
// streaming rule), then the tile's kept entries sorted by their exact causal
// key.
#include <algorithm>
#include <utility>
#include <vector>

#include "lighthouse/checks.h"
#include "lighthouse/cpu.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/detail/selection_rule.h"
#include "lighthouse/threading.h"

namespace lighthouse::cpu {
namespace {

struct Kept {
  int64_t key;
  int32_t pyramid_index;
};

// Paper and lagged rules: marks the `half` best candidates by the query-side
// key, then the `half` best of the rest by the key-side key (larger key
// first, lower index on ties).
template <typename KeyQk, typename KeyKq>
void choose_top(const std::vector<int64_t>& cand, int64_t half, KeyQk key_qk, KeyKq key_kq, std::vector<char>& chosen) {
  std::vector<int64_t> order(cand.size());
  for (size_t j = 0; j < cand.size(); ++j) order[j] = static_cast<int64_t>(j);
  auto best_first = [&](auto key) {
    return [&cand, key](int64_t a, int64_t b) {
      const uint32_t ka = key(cand[a]), kb = key(cand[b]);
      return ka != kb ? ka > kb : cand[a] < cand[b];
    };
  };
  std::nth_element(order.begin(), order.begin() + half, order.end(), best_first(key_qk));
  std::nth_element(order.begin() + half, order.begin() + 2 * half, order.end(), best_first(key_kq));
  chosen.assign(cand.size(), 0);
  for (int64_t j = 0; j < 2 * half; ++j) chosen[order[j]] = 1;
}

// Causal rule: one pass in position order; a candidate is wanted when either
// key beats the candidates before it in its window, and taken while budget
// is left (or forced when only as many candidates as budget remain).
template <typename KeyQk, typename KeyKq>
void choose_causal(const std::vector<int64_t>& cand, int budget, KeyQk key_qk, KeyKq key_kq,
                   std::vector<char>& chosen) {
  const int64_t n = static_cast<int64_t>(cand.size()), window = detail::causal_window(n, budget);
  chosen.assign(cand.size(), 0);
  int64_t taken = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t qj = key_qk(cand[j]), kj = key_kq(cand[j]);
    bool beats_qk = true, beats_kq = true;
    for (int64_t i = std::max<int64_t>(0, j - window + 1); i < j && (beats_qk || beats_kq); ++i) {
      beats_qk = beats_qk && key_qk(cand[i]) < qj;
      beats_kq = beats_kq && key_kq(cand[i]) < kj;
    }
    chosen[j] = detail::causal_take(beats_qk || beats_kq, j, n, taken, budget);
    taken += chosen[j];
  }
}

void select_tile(const Geometry& g, Selection rule, const float* qk, const float* kq, int64_t tile, int32_t* out) {
  std::vector<int64_t> cand, next;  // local indices of the level's candidates, ascending
  std::vector<char> chosen;
  std::vector<Kept> kept;
  kept.reserve(g.tile_kept(tile));
  for (int64_t i = g.tile_begin(tile); i < g.tile_begin(tile + 1); ++i) cand.push_back(i);
  for (int l = g.levels; l >= 2; --l) {
    const int64_t off = g.offset(l), lag = detail::score_lag(rule, g, l);
    auto key_qk = [&](int64_t local) { return detail::lagged_key(qk + off, local, lag); };
    auto key_kq = [&](int64_t local) { return detail::lagged_key(kq + off, local, lag); };
    if (rule == Selection::kCausal) {
      choose_causal(cand, g.tile_budget, key_qk, key_kq, chosen);
    } else {
      choose_top(cand, g.tile_budget / 2, key_qk, key_kq, chosen);
    }
    next.clear();
    for (size_t j = 0; j < cand.size(); ++j) {
      kept.push_back({g.causal_key(l, cand[j], chosen[j] != 0), static_cast<int32_t>(off + cand[j])});
      if (chosen[j])
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
    select_tile(g, p.selection, p.scores_qk + bg * g.pyramid_len, p.scores_kq + bg * g.pyramid_len, tile,
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
