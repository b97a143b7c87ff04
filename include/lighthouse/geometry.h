// Pyramid geometry in one place: level sizes and offsets, the selection tiles,
// the number of kept entries S for any N, and the exact causal sort key.
//
// Levels are numbered l = 1..L; level l pools blocks of c_l = p^(l-1) base
// tokens and has n_l = floor(N / c_l) entries. The pyramid concatenates
// level 1 || level 2 || ... ; entry i of level l has pyramid index
// level_offset(l) + i. The struct is plain data so kernels take it by value.
#pragma once

#include <cstdint>

#include "lighthouse/config.h"
#include "lighthouse/dtype.h"

namespace lighthouse {

struct Geometry {
  int64_t seq_len = 0;                   // N
  int levels = 0;                        // L
  int pooling = 0;                       // p
  int log2_pooling = 0;                  // log2(p)
  int tile_budget = 0;                   // m
  int64_t topk = 0;                      // k_total
  int64_t tiles = 0;                     // T = topk / m
  int64_t sizes[kMaxLevels] = {};        // n_l at [l - 1]
  int64_t offsets[kMaxLevels + 1] = {};  // pyramid offset of level l at [l - 1]; [L] = pyramid_len
  int64_t pyramid_len = 0;               // sum of n_l
  int64_t tail = 0;                      // base tokens past the last whole coarsest block
  int64_t kept = 0;                      // S = n_L + (L - 1) * p * topk + tail

  // Validates config for seq_len (see validate(Config, Dims)) and derives the geometry.
  static Geometry make(const Config& config, int64_t seq_len);

  LH_HD int64_t block(int level) const { return int64_t{1} << ((level - 1) * log2_pooling); }
  LH_HD int64_t size(int level) const { return sizes[level - 1]; }
  LH_HD int64_t offset(int level) const { return offsets[level - 1]; }
  LH_HD int64_t coarsest() const { return sizes[levels - 1]; }

  // Level (1-based) of a pyramid index.
  LH_HD int level_of(int64_t pyramid_index) const {
    int l = 1;
    while (l < levels && pyramid_index >= offsets[l]) ++l;
    return l;
  }

  // Tiles split the n_L coarsest entries as evenly as possible; the first
  // n_L mod T tiles get one more. Tile t covers coarsest entries
  // [tile_begin(t), tile_begin(t + 1)).
  LH_HD int64_t tile_begin(int64_t t) const {
    const int64_t base = coarsest() / tiles, extra = coarsest() % tiles;
    return t * base + (t < extra ? t : extra);
  }
  // Entries tile t keeps: all its coarsest entries plus m*p per finer level.
  LH_HD int64_t tile_kept(int64_t t) const {
    return tile_begin(t + 1) - tile_begin(t) + (levels - 1) * int64_t{tile_budget} * pooling;
  }
  // Position of tile t's first kept entry in the causally ordered selection.
  LH_HD int64_t tile_kept_offset(int64_t t) const {
    return tile_begin(t) + t * (levels - 1) * int64_t{tile_budget} * pooling;
  }
  // First base position of the tail (kept as level-1 entries after all tiles).
  LH_HD int64_t tail_begin() const { return seq_len - tail; }

  // Exact integer causal key, in units of 2^-L base positions. Base tokens and
  // rejected-kept coarse entries sort at their first position; a selected
  // coarse entry of level l sorts at c_l * (i + 1) - 2^(1-l), after all of its
  // descendants and before the next position.
  LH_HD int64_t causal_key(int level, int64_t local, bool selected) const {
    const int64_t c = block(level);
    if (selected && level >= 2) return ((c * (local + 1)) << levels) - (int64_t{1} << (levels + 1 - level));
    return (c * local) << levels;
  }

  // The scatter window of an entry: base positions [first, last] it feeds
  // (a shift of c_l - 1, clipped to N). Level-1 entries feed their own position.
  LH_HD int64_t window_first(int level, int64_t local) const { return local * block(level) + block(level) - 1; }
  LH_HD int64_t window_last(int level, int64_t local) const {
    const int64_t last = local * block(level) + 2 * block(level) - 2;
    return last < seq_len ? last : seq_len - 1;
  }
};

}  // namespace lighthouse
