// A brute-force restatement of the Lighthouse semantics, written from the
// spec and nothing else: slow, simple loops that the tests compare the
// library's kernels against. It deliberately shares no code with the library
// (no Geometry, no score_key, no access helpers), so a mistake in one is
// unlikely to be repeated in the other.
#pragma once

#include <cstdint>
#include <vector>

namespace spec {

// Level sizes and offsets of the pyramid, the tile split and the kept count.
struct Pyramid {
  int64_t seq_len = 0;
  int levels = 0;
  int pooling = 0;
  int tile_budget = 0;
  int64_t topk = 0;
  int64_t tiles = 0;
  std::vector<int64_t> block;       // c_l at [l - 1]
  std::vector<int64_t> size;        // n_l at [l - 1]
  std::vector<int64_t> offset;      // pyramid offset of level l at [l - 1]; [L] = pyramid length
  std::vector<int64_t> tile_first;  // T + 1 boundaries over the coarsest entries
  int64_t pyramid_len = 0;
  int64_t tail = 0;
  int64_t kept = 0;
};

Pyramid make_pyramid(int64_t seq_len, int levels, int pooling, int tile_budget, int64_t topk);

// Entry `local` of level `level` (1-based).
struct Entry {
  int level = 1;
  int64_t local = 0;
};

Entry entry_of(const Pyramid& pyr, int64_t pyramid_index);
int64_t pyramid_index(const Pyramid& pyr, Entry e);

// The causal key in base positions, exact as a long double for every
// sequence this suite uses (keys need L + log2(N) < 64 bits).
long double causal_key(const Pyramid& pyr, Entry e, bool selected);

// Base positions [first, last] that the scatter of entry e writes to.
void scatter_window(const Pyramid& pyr, Entry e, int64_t* first, int64_t* last);

// True when score a of candidate ia ranks above score b of candidate ib:
// larger score first (NaNs by their bits above +inf / below -inf, -0 == +0),
// equal scores ordered by the lower index.
bool ranks_before(float a, int64_t ia, float b, int64_t ib);

// The selection of one (batch, KV head).
struct Selection {
  std::vector<int32_t> indices;  // S pyramid indices in causal order
  std::vector<int32_t> slots;    // pyramid_len entries: position in indices, or -1
  std::vector<char> selected;    // per kept entry: a coarse entry whose children were expanded
};

// The selection rules (docs/semantics.md): the paper's per-tile top-k on
// each entry's own score, the same top-k on the score of the entry one
// coarsest block earlier, and the causal streaming rule on the score of the
// entry just before.
enum class Rule { kPaper, kLagged, kCausal };

// Throws std::logic_error if the keys of the kept entries are not unique.
Selection select(const Pyramid& pyr, const float* scores_qk, const float* scores_kq, Rule rule = Rule::kPaper);

// A float tensor addressed as (batch, seq, head, d), whatever the logical
// name of its dimensions ([B, N, H, D] inputs or [B, H, S, D] selections).
struct Tensor {
  int64_t batch = 0, seq = 0, heads = 0, dim = 0;
  std::vector<float> data;
  Tensor() = default;
  Tensor(int64_t b, int64_t s, int64_t h, int64_t d) : batch(b), seq(s), heads(h), dim(d), data(b * s * h * d, 0.0f) {}
  float& at(int64_t b, int64_t s, int64_t h, int64_t d) { return data[((b * seq + s) * heads + h) * dim + d]; }
  float at(int64_t b, int64_t s, int64_t h, int64_t d) const { return data[((b * seq + s) * heads + h) * dim + d]; }
};

// Pyramid scores of one (batch, KV head) for the norm scorer: the base score
// is ||q|| maxed over the KV head's `group` query heads, and ||k||; coarser
// levels take the max over their block.
void norm_scores(const Pyramid& pyr, const Tensor& q, const Tensor& k, int64_t batch, int64_t kv_head,
                 std::vector<float>* scores_qk, std::vector<float>* scores_kq);

// Pyramid scores from base scores: level 1 copies them, level l >= 2 takes
// the max over each block.
std::vector<float> pool_max(const Pyramid& pyr, const std::vector<float>& base);

// Selections are indexed [batch * kv_heads + kv_head]; tensors whose head
// count is group * kv_heads (query side) use head / group's selection.

// Mean of the base vectors of every kept entry: [B, S, heads, D].
Tensor gather(const Pyramid& pyr, const Tensor& x, const std::vector<Selection>& sel, int64_t group);

// Sum over levels 1..L of the output of the kept entry whose window covers
// each position: [B, N, heads, D].
Tensor scatter(const Pyramid& pyr, const Tensor& o_sel, const std::vector<Selection>& sel, int64_t group);

// Sum of grad_out over each kept entry's window: [B, S, heads, D].
Tensor scatter_backward(const Pyramid& pyr, const Tensor& grad_out, const std::vector<Selection>& sel, int64_t group);

// Each position sums grad_sel / c_l of the kept entries covering it, levels
// 1..L in that order: [B, N, heads, D].
Tensor gather_backward(const Pyramid& pyr, const Tensor& grad_sel, const std::vector<Selection>& sel, int64_t group);

// Rotary tables (spec section 10) as the tests lay them out: row (b, pos) of
// cos and sin starts at b * batch_stride + pos * dim; batch_stride 0 shares
// one [N, D] table between the batch rows. Pairs are (j, j + D/2), or
// (2j, 2j + 1) when interleaved.
struct Rope {
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t batch_stride = 0;
  int64_t dim = 0;
  bool interleaved = false;
};

// gather of q or k with rotary tables: each kept entry's mean, passed
// through `round` (the storage dtype's round trip), rotated at the last base
// position the entry covers, (i + 1) * c_l - 1: [B, S, heads, D].
Tensor gather_rotated(const Pyramid& pyr, const Tensor& x, const std::vector<Selection>& sel, int64_t group,
                      const Rope& rope, float (*round)(float));

// gather_backward of q or k with rotary tables: each kept entry's gradient
// row rotated back (the transpose of gather_rotated's rotation) at the same
// position, then spread as gather_backward does: [B, N, heads, D].
Tensor gather_backward_rotated(const Pyramid& pyr, const Tensor& grad_sel, const std::vector<Selection>& sel,
                               int64_t group, const Rope& rope);

}  // namespace spec
