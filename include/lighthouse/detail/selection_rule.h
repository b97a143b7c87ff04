// The selection rules' per-entry arithmetic, shared by the CPU and CUDA
// select so both decide identically (docs/semantics.md, "Selection rules").
#pragma once

#include <cstdint>

#include "lighthouse/config.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/geometry.h"

namespace lighthouse::detail {

// How many entries back, at its own level, the score that ranks an entry
// sits: 0 for the paper rule; one coarsest block (c_L / c_l entries) for the
// lagged rule, so no block's score contains its own tokens; 1 for the causal
// rule, the block just before.
LH_HD int64_t score_lag(Selection rule, const Geometry& g, int level) {
  if (rule == Selection::kLagged) return int64_t{1} << ((g.levels - level) * g.log2_pooling);
  return rule == Selection::kCausal ? 1 : 0;
}

// Rank key of entry `local` of a level whose scores start at level_scores:
// score_key of the score `lag` entries back; 0 (below every score) when
// there is no such entry.
LH_HD uint32_t lagged_key(const float* level_scores, int64_t local, int64_t lag) {
  return local >= lag ? score_key(level_scores[local - lag]) : 0u;
}

// Causal rule: a candidate is wanted when its key beats the keys of the
// window - 1 candidates before it (strictly: an earlier candidate wins a
// tie). With n candidates and a budget of m the window is 2 * ceil(n / m),
// so on either side about one candidate in 2n/m is wanted and the two sides
// together about the budget.
LH_HD int64_t causal_window(int64_t candidates, int budget) { return 2 * ((candidates + budget - 1) / budget); }

// Causal rule: candidate j of n (ascending positions) is taken when budget
// is left and it is wanted, or when only as many candidates as budget
// remain. `taken` counts the candidates before j that were taken; exactly
// `budget` of the n are taken in all.
LH_HD bool causal_take(bool wanted, int64_t j, int64_t n, int64_t taken, int budget) {
  return taken < budget && (wanted || n - j <= budget - taken);
}

}  // namespace lighthouse::detail
