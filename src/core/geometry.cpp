#include "lighthouse/geometry.h"

#include "lighthouse/error.h"

namespace lighthouse {

Geometry Geometry::make(const Config& config, int64_t seq_len) {
  Dims dims;
  dims.batch = dims.heads = dims.kv_heads = dims.head_dim = 1;
  dims.seq_len = seq_len;
  validate(config, dims);

  Geometry g;
  g.seq_len = seq_len;
  g.levels = config.levels;
  g.pooling = config.pooling;
  while ((1 << g.log2_pooling) < config.pooling) ++g.log2_pooling;
  g.tile_budget = config.tile_budget;
  g.topk = config.topk;
  g.tiles = config.topk / config.tile_budget;
  g.offsets[0] = 0;
  for (int l = 1; l <= g.levels; ++l) {
    g.sizes[l - 1] = seq_len / g.block(l);
    g.offsets[l] = g.offsets[l - 1] + g.sizes[l - 1];
  }
  g.pyramid_len = g.offsets[g.levels];
  g.tail = seq_len - g.coarsest() * g.block(g.levels);
  g.kept = g.coarsest() + int64_t{g.levels - 1} * g.pooling * g.topk + g.tail;
  return g;
}

}  // namespace lighthouse
