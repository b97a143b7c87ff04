// Layer configuration and problem dimensions, with the validation rules that
// every entry point applies before touching memory.
#pragma once

#include <cstdint>
#include <string>

namespace lighthouse {

enum class Scorer : int { kNorm = 0, kDilated = 1 };

// Which rule select applies (docs/semantics.md, "Selection rules"):
//   kPaper  the authors' per-tile top-k on each entry's own score;
//   kLagged the same top-k on lagged scores: an entry is scored by the entry
//           one coarsest block (p^(L-1) base positions) earlier at its level;
//   kCausal a streaming rule on the score of the entry just before: the
//           output at position t never depends on an input after t.
enum class Selection : int { kPaper = 0, kLagged = 1, kCausal = 2 };

// Deepest pyramid accepted (levels); sizes the fixed arrays in Geometry.
constexpr int kMaxLevels = 16;

struct Config {
  int levels = 3;           // L >= 2: pyramid levels
  int pooling = 4;          // p, a power of two >= 2: base tokens per entry grow by p per level
  int64_t topk = 2048;      // k_total: entries selected per level and KV head, a multiple of tile_budget
  int tile_budget = 128;    // m: entries one tile selects per level (half query side, half key side)
  Scorer scorer = Scorer::kNorm;
  Selection selection = Selection::kPaper;
  int dilation = 4;         // delta for the dilated scorer
  float scale = 0.0f;       // softmax scale of the dense attention; 0 means 1/sqrt(head_dim)
};

// Sizes of one layer call: q is [batch, seq_len, heads, head_dim], k and v are
// [batch, seq_len, kv_heads, head_dim].
struct Dims {
  int64_t batch = 0;
  int64_t seq_len = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// Checks the configuration alone; throws lighthouse::Error naming the field.
void validate(const Config& config);

// Checks the configuration against the dimensions, including the shortest
// sequence the selection accepts; throws lighthouse::Error naming the field.
void validate(const Config& config, const Dims& dims);

// Shortest sequence for which every selection tile has at least tile_budget
// coarsest entries: topk * pooling^(levels-1).
int64_t min_seq_len(const Config& config);

// True when the configuration is valid for seq_len and keeps fewer entries
// than seq_len, i.e. Lighthouse shrinks the dense attention.
bool shrinks(const Config& config, int64_t seq_len);

// The rule named "paper", "lagged" or "causal"; throws lighthouse::Error
// naming `selection` for any other name.
Selection parse_selection(const std::string& name);
const char* selection_name(Selection rule);

// The softmax scale actually used for head_dim.
float softmax_scale(const Config& config, int64_t head_dim);

}  // namespace lighthouse
