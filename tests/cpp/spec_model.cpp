#include "spec_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

namespace spec {

Pyramid make_pyramid(int64_t seq_len, int levels, int pooling, int tile_budget, int64_t topk) {
  Pyramid pyr;
  pyr.seq_len = seq_len;
  pyr.levels = levels;
  pyr.pooling = pooling;
  pyr.tile_budget = tile_budget;
  pyr.topk = topk;
  pyr.tiles = topk / tile_budget;
  int64_t c = 1;
  int64_t offset = 0;
  for (int l = 1; l <= levels; ++l) {
    pyr.block.push_back(c);
    pyr.size.push_back(seq_len / c);
    pyr.offset.push_back(offset);
    offset += seq_len / c;
    c *= pooling;
  }
  pyr.offset.push_back(offset);
  pyr.pyramid_len = offset;
  const int64_t coarsest = pyr.size.back();
  pyr.tail = seq_len - coarsest * pyr.block.back();
  // Tiles as even as possible, the first (coarsest mod T) one entry longer.
  int64_t first = 0;
  pyr.tile_first.push_back(0);
  for (int64_t t = 0; t < pyr.tiles; ++t) {
    first += coarsest / pyr.tiles + (t < coarsest % pyr.tiles ? 1 : 0);
    pyr.tile_first.push_back(first);
  }
  pyr.kept = coarsest + (levels - 1) * pooling * topk + pyr.tail;
  return pyr;
}

Entry entry_of(const Pyramid& pyr, int64_t pyramid_index) {
  for (int l = pyr.levels; l >= 1; --l)
    if (pyramid_index >= pyr.offset[l - 1]) return {l, pyramid_index - pyr.offset[l - 1]};
  throw std::logic_error("negative pyramid index");
}

int64_t pyramid_index(const Pyramid& pyr, Entry e) { return pyr.offset[e.level - 1] + e.local; }

long double causal_key(const Pyramid& pyr, Entry e, bool selected) {
  const long double c = static_cast<long double>(pyr.block[e.level - 1]);
  if (selected && e.level >= 2) return c * static_cast<long double>(e.local + 1) - std::ldexp(1.0L, 1 - e.level);
  return c * static_cast<long double>(e.local);
}

void scatter_window(const Pyramid& pyr, Entry e, int64_t* first, int64_t* last) {
  const int64_t c = pyr.block[e.level - 1];
  *first = e.local * c + (c - 1);
  *last = std::min(e.local * c + 2 * c - 2, pyr.seq_len - 1);
}

namespace {

// Position of a float on the line of the total order: magnitudes of positive
// numbers ascend with their bits, negative numbers mirror them, zeros meet.
int64_t order_value(float x) {
  if (x == 0.0f) return 0;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const int64_t magnitude = u & 0x7fffffffu;
  return (u >> 31) ? -magnitude : magnitude;
}

struct Kept {
  Entry entry;
  bool selected;
  long double key;
};

}  // namespace

bool ranks_before(float a, int64_t ia, float b, int64_t ib) {
  const int64_t va = order_value(a), vb = order_value(b);
  if (va != vb) return va > vb;
  return ia < ib;
}

namespace {

// The lowest value of the total order (a negative NaN with every bit set):
// the score of an entry that has no entry `lag` before it.
float lowest_score() {
  const uint32_t bits = 0xffffffffu;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The scores that rank the entries of level l under the rule: the entry's
// own (paper), the one c_L / c_l entries before it (lagged), the one just
// before it (causal).
std::vector<float> ranking_scores(const Pyramid& pyr, const float* scores, int l, Rule rule) {
  int64_t lag = 0;
  if (rule == Rule::kLagged) lag = pyr.block[pyr.levels - 1] / pyr.block[l - 1];
  if (rule == Rule::kCausal) lag = 1;
  std::vector<float> out(pyr.size[l - 1]);
  for (int64_t i = 0; i < pyr.size[l - 1]; ++i) out[i] = i >= lag ? scores[pyr.offset[l - 1] + i - lag] : lowest_score();
  return out;
}

// Paper and lagged rules: the `half` best by the query side, then the `half`
// best of the rest by the key side.
std::vector<int64_t> top_choice(const std::vector<int64_t>& candidates, int64_t half, const std::vector<float>& qk,
                                const std::vector<float>& kq) {
  std::vector<int64_t> by_qk = candidates;
  std::sort(by_qk.begin(), by_qk.end(), [&](int64_t a, int64_t b) { return ranks_before(qk[a], a, qk[b], b); });
  std::vector<int64_t> chosen(by_qk.begin(), by_qk.begin() + half);
  std::vector<int64_t> rest(by_qk.begin() + half, by_qk.end());
  std::sort(rest.begin(), rest.end(), [&](int64_t a, int64_t b) { return ranks_before(kq[a], a, kq[b], b); });
  chosen.insert(chosen.end(), rest.begin(), rest.begin() + half);
  return chosen;
}

// Causal rule, one candidate at a time in position order: wanted when its
// query-side or key-side score ranks before each of the (window - 1)
// candidates just before it, window = 2 * ceil(n / budget); taken when
// wanted and budget is left, or when the candidates left are no more than
// the budget left.
std::vector<int64_t> causal_choice(const std::vector<int64_t>& candidates, int64_t budget,
                                   const std::vector<float>& qk, const std::vector<float>& kq) {
  const int64_t n = static_cast<int64_t>(candidates.size());
  const int64_t window = 2 * ((n + budget - 1) / budget);
  std::vector<int64_t> chosen;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t x = candidates[j];
    bool first_by_qk = true, first_by_kq = true;
    for (int64_t i = std::max<int64_t>(0, j - (window - 1)); i < j; ++i) {
      const int64_t y = candidates[i];
      if (!ranks_before(qk[x], x, qk[y], y)) first_by_qk = false;
      if (!ranks_before(kq[x], x, kq[y], y)) first_by_kq = false;
    }
    const int64_t left = budget - static_cast<int64_t>(chosen.size());
    if (left > 0 && (first_by_qk || first_by_kq || n - j <= left)) chosen.push_back(x);
  }
  return chosen;
}

}  // namespace

Selection select(const Pyramid& pyr, const float* scores_qk, const float* scores_kq, Rule rule) {
  const int64_t half = pyr.tile_budget / 2;
  std::vector<Kept> kept;
  for (int64_t t = 0; t < pyr.tiles; ++t) {
    std::vector<int64_t> candidates;
    for (int64_t i = pyr.tile_first[t]; i < pyr.tile_first[t + 1]; ++i) candidates.push_back(i);
    for (int l = pyr.levels; l >= 2; --l) {
      const std::vector<float> qk = ranking_scores(pyr, scores_qk, l, rule);
      const std::vector<float> kq = ranking_scores(pyr, scores_kq, l, rule);
      const std::vector<int64_t> chosen = rule == Rule::kCausal ? causal_choice(candidates, 2 * half, qk, kq)
                                                                : top_choice(candidates, half, qk, kq);
      std::vector<int64_t> children;
      for (int64_t i : candidates) {
        const bool is_chosen = std::find(chosen.begin(), chosen.end(), i) != chosen.end();
        kept.push_back({{l, i}, is_chosen, causal_key(pyr, {l, i}, is_chosen)});
        if (is_chosen)
          for (int64_t c = 0; c < pyr.pooling; ++c) children.push_back(i * pyr.pooling + c);
      }
      candidates = children;
    }
    for (int64_t i : candidates) kept.push_back({{1, i}, false, causal_key(pyr, {1, i}, false)});
  }
  for (int64_t pos = pyr.seq_len - pyr.tail; pos < pyr.seq_len; ++pos)
    kept.push_back({{1, pos}, false, causal_key(pyr, {1, pos}, false)});

  std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return a.key < b.key; });
  for (size_t s = 1; s < kept.size(); ++s)
    if (!(kept[s - 1].key < kept[s].key)) throw std::logic_error("spec model: duplicate causal key");

  Selection sel;
  sel.slots.assign(pyr.pyramid_len, -1);
  for (size_t s = 0; s < kept.size(); ++s) {
    const int64_t index = pyramid_index(pyr, kept[s].entry);
    sel.indices.push_back(static_cast<int32_t>(index));
    sel.selected.push_back(kept[s].selected ? 1 : 0);
    sel.slots[index] = static_cast<int32_t>(s);
  }
  return sel;
}

std::vector<float> pool_max(const Pyramid& pyr, const std::vector<float>& base) {
  std::vector<float> out(pyr.pyramid_len);
  for (int l = 1; l <= pyr.levels; ++l) {
    const int64_t c = pyr.block[l - 1];
    for (int64_t i = 0; i < pyr.size[l - 1]; ++i) {
      float best = base[i * c];
      for (int64_t pos = i * c + 1; pos < (i + 1) * c; ++pos)
        if (base[pos] > best) best = base[pos];
      out[pyr.offset[l - 1] + i] = best;
    }
  }
  return out;
}

namespace {

float norm(const Tensor& x, int64_t b, int64_t pos, int64_t h) {
  float sum = 0.0f;
  for (int64_t d = 0; d < x.dim; ++d) {
    const float v = x.at(b, pos, h, d);
    const float square = v * v;
    sum = sum + square;
  }
  return std::sqrt(sum);
}

const Selection& selection_of(const std::vector<Selection>& sel, int64_t batch, int64_t head, int64_t group,
                              int64_t heads) {
  const int64_t kv_heads = heads / group;
  return sel.at(batch * kv_heads + head / group);
}

}  // namespace

void norm_scores(const Pyramid& pyr, const Tensor& q, const Tensor& k, int64_t batch, int64_t kv_head,
                 std::vector<float>* scores_qk, std::vector<float>* scores_kq) {
  const int64_t group = q.heads / k.heads;
  std::vector<float> base_qk(pyr.seq_len), base_kq(pyr.seq_len);
  for (int64_t pos = 0; pos < pyr.seq_len; ++pos) {
    float best = norm(q, batch, pos, kv_head * group);
    for (int64_t h = kv_head * group + 1; h < (kv_head + 1) * group; ++h) best = std::max(best, norm(q, batch, pos, h));
    base_qk[pos] = best;
    base_kq[pos] = norm(k, batch, pos, kv_head);
  }
  *scores_qk = pool_max(pyr, base_qk);
  *scores_kq = pool_max(pyr, base_kq);
}

Tensor gather(const Pyramid& pyr, const Tensor& x, const std::vector<Selection>& sel, int64_t group) {
  Tensor out(x.batch, pyr.kept, x.heads, x.dim);
  for (int64_t b = 0; b < x.batch; ++b)
    for (int64_t h = 0; h < x.heads; ++h) {
      const Selection& s = selection_of(sel, b, h, group, x.heads);
      for (int64_t slot = 0; slot < pyr.kept; ++slot) {
        const Entry e = entry_of(pyr, s.indices[slot]);
        const int64_t c = pyr.block[e.level - 1];
        for (int64_t d = 0; d < x.dim; ++d) {
          float sum = 0.0f;
          for (int64_t pos = e.local * c; pos < (e.local + 1) * c; ++pos) sum = sum + x.at(b, pos, h, d);
          out.at(b, slot, h, d) = sum / static_cast<float>(c);
        }
      }
    }
  return out;
}

namespace {

// Per-level contributions to each position, each written at most once.
struct LevelSums {
  int levels;
  int64_t seq_len, dim;
  std::vector<float> value;
  std::vector<char> present;
  LevelSums(int l, int64_t n, int64_t d) : levels(l), seq_len(n), dim(d), value(l * n * d), present(l * n, 0) {}

  void put(int level, int64_t pos, const float* v) {
    const int64_t cell = (level - 1) * seq_len + pos;
    if (present[cell]) throw std::logic_error("spec model: two contributions of one level at one position");
    present[cell] = 1;
    std::copy(v, v + dim, value.begin() + cell * dim);
  }

  // Levels 1..L in ascending order, starting from zero.
  void sum_into(Tensor* out, int64_t b, int64_t h) const {
    for (int64_t pos = 0; pos < seq_len; ++pos)
      for (int64_t d = 0; d < dim; ++d) {
        float sum = 0.0f;
        for (int l = 1; l <= levels; ++l) {
          const int64_t cell = (l - 1) * seq_len + pos;
          if (present[cell]) sum = sum + value[cell * dim + d];
        }
        out->at(b, pos, h, d) = sum;
      }
  }
};

}  // namespace

Tensor scatter(const Pyramid& pyr, const Tensor& o_sel, const std::vector<Selection>& sel, int64_t group) {
  Tensor out(o_sel.batch, pyr.seq_len, o_sel.heads, o_sel.dim);
  std::vector<float> row(o_sel.dim);
  for (int64_t b = 0; b < o_sel.batch; ++b)
    for (int64_t h = 0; h < o_sel.heads; ++h) {
      const Selection& s = selection_of(sel, b, h, group, o_sel.heads);
      LevelSums sums(pyr.levels, pyr.seq_len, o_sel.dim);
      for (int64_t slot = 0; slot < pyr.kept; ++slot) {
        const Entry e = entry_of(pyr, s.indices[slot]);
        int64_t first, last;
        scatter_window(pyr, e, &first, &last);
        for (int64_t d = 0; d < o_sel.dim; ++d) row[d] = o_sel.at(b, slot, h, d);
        for (int64_t pos = first; pos <= last; ++pos) sums.put(e.level, pos, row.data());
      }
      sums.sum_into(&out, b, h);
    }
  return out;
}

Tensor scatter_backward(const Pyramid& pyr, const Tensor& grad_out, const std::vector<Selection>& sel, int64_t group) {
  Tensor out(grad_out.batch, pyr.kept, grad_out.heads, grad_out.dim);
  for (int64_t b = 0; b < grad_out.batch; ++b)
    for (int64_t h = 0; h < grad_out.heads; ++h) {
      const Selection& s = selection_of(sel, b, h, group, grad_out.heads);
      for (int64_t slot = 0; slot < pyr.kept; ++slot) {
        int64_t first, last;
        scatter_window(pyr, entry_of(pyr, s.indices[slot]), &first, &last);
        for (int64_t d = 0; d < grad_out.dim; ++d) {
          float sum = 0.0f;
          for (int64_t pos = first; pos <= last; ++pos) sum = sum + grad_out.at(b, pos, h, d);
          out.at(b, slot, h, d) = sum;
        }
      }
    }
  return out;
}

Tensor gather_backward(const Pyramid& pyr, const Tensor& grad_sel, const std::vector<Selection>& sel, int64_t group) {
  Tensor out(grad_sel.batch, pyr.seq_len, grad_sel.heads, grad_sel.dim);
  std::vector<float> row(grad_sel.dim);
  for (int64_t b = 0; b < grad_sel.batch; ++b)
    for (int64_t h = 0; h < grad_sel.heads; ++h) {
      const Selection& s = selection_of(sel, b, h, group, grad_sel.heads);
      LevelSums sums(pyr.levels, pyr.seq_len, grad_sel.dim);
      for (int64_t slot = 0; slot < pyr.kept; ++slot) {
        const Entry e = entry_of(pyr, s.indices[slot]);
        const int64_t c = pyr.block[e.level - 1];
        for (int64_t d = 0; d < grad_sel.dim; ++d) row[d] = grad_sel.at(b, slot, h, d) / static_cast<float>(c);
        for (int64_t pos = e.local * c; pos < (e.local + 1) * c; ++pos) sums.put(e.level, pos, row.data());
      }
      sums.sum_into(&out, b, h);
    }
  return out;
}

namespace {

// The pairs of one row of `dim` values: (first, second) element indices.
std::vector<std::pair<int64_t, int64_t>> rope_pairs(int64_t dim, bool interleaved) {
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t j = 0; j < dim / 2; ++j)
    pairs.push_back(interleaved ? std::make_pair(2 * j, 2 * j + 1) : std::make_pair(j, j + dim / 2));
  return pairs;
}

// Forward: y_i = a_i cos_i - a_j sin_i and y_j = a_j cos_j + a_i sin_j for
// each pair (i, j); backward (the transpose): u_i = g_i cos_i + g_j sin_j and
// u_j = g_j cos_j - g_i sin_i. Every product and sum rounded on its own.
void rotate(const float* a, const float* cos, const float* sin, int64_t dim, bool interleaved, bool backward,
            float* y) {
  for (const auto& [i, j] : rope_pairs(dim, interleaved)) {
    if (!backward) {
      const float ai_cos = a[i] * cos[i], aj_sin = a[j] * sin[i];
      const float aj_cos = a[j] * cos[j], ai_sin = a[i] * sin[j];
      y[i] = ai_cos - aj_sin;
      y[j] = aj_cos + ai_sin;
    } else {
      const float gi_cos = a[i] * cos[i], gj_sin = a[j] * sin[j];
      const float gj_cos = a[j] * cos[j], gi_sin = a[i] * sin[i];
      y[i] = gi_cos + gj_sin;
      y[j] = gj_cos - gi_sin;
    }
  }
}

// Every kept row of rows [B, S, heads, D], rotated (or rotated back) at its
// entry's last covered position.
Tensor rotate_entries(const Pyramid& pyr, const Tensor& rows, const std::vector<Selection>& sel, int64_t group,
                      const Rope& rope, bool backward) {
  if (rope.dim != rows.dim || rows.dim % 2 != 0) throw std::logic_error("spec model: rope tables of another head_dim");
  Tensor out(rows.batch, rows.seq, rows.heads, rows.dim);
  std::vector<float> a(rows.dim), y(rows.dim);
  for (int64_t b = 0; b < rows.batch; ++b)
    for (int64_t h = 0; h < rows.heads; ++h) {
      const Selection& s = selection_of(sel, b, h, group, rows.heads);
      for (int64_t slot = 0; slot < pyr.kept; ++slot) {
        const Entry e = entry_of(pyr, s.indices[slot]);
        const int64_t last = (e.local + 1) * pyr.block[e.level - 1] - 1;
        const int64_t row = b * rope.batch_stride + last * rope.dim;
        for (int64_t d = 0; d < rows.dim; ++d) a[d] = rows.at(b, slot, h, d);
        rotate(a.data(), rope.cos + row, rope.sin + row, rows.dim, rope.interleaved, backward, y.data());
        for (int64_t d = 0; d < rows.dim; ++d) out.at(b, slot, h, d) = y[d];
      }
    }
  return out;
}

}  // namespace

Tensor gather_rotated(const Pyramid& pyr, const Tensor& x, const std::vector<Selection>& sel, int64_t group,
                      const Rope& rope, float (*round)(float)) {
  Tensor means = gather(pyr, x, sel, group);
  for (float& m : means.data) m = round(m);
  return rotate_entries(pyr, means, sel, group, rope, false);
}

Tensor gather_backward_rotated(const Pyramid& pyr, const Tensor& grad_sel, const std::vector<Selection>& sel,
                               int64_t group, const Rope& rope) {
  return gather_backward(pyr, rotate_entries(pyr, grad_sel, sel, group, rope, true), sel, group);
}

}  // namespace spec
