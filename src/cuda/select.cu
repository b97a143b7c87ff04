// CUDA select: one block per (batch, KV head, tile). Paper and lagged rules:
// each level's top h by the query-side score, then the top h of the rest by
// the key-side score, is an exact radix select on 64-bit keys
// (score key << 32 | ~index), so ties go to the lower index as on the CPU.
// Causal rule: each thread decides whether its candidate is wanted (its key
// beats the window before it), then one thread walks the block's chunk of
// candidates in order to spend the budget, as the CPU's single pass does. No sort is needed for the causal order:
// a kept entry's rank equals the number of kept entries in the subtrees
// before it (a selected entry follows its descendants), so the subtree sizes
// are summed bottom-up and the ranks handed down level by level.
//
// The tile workspace (candidates, ranks and subtree sizes of the finer
// levels) lives in shared memory when it fits, else in a global buffer.
// Level-L candidates are read straight from the scores, so the tile's
// coarsest-entry count C has no size limit.
#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"
#include "lighthouse/detail/selection_rule.h"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
using lighthouse::detail::lagged_key;

struct SelectArgs {
  Geometry geo;
  Selection rule;
  const float* scores_qk;
  const float* scores_kq;
  int32_t* indices;
  int32_t* slots;
  int* workspace;        // global tile workspaces, or nullptr: dynamic shared memory
  int64_t workspace_ints;  // ints per tile
};

// Larger key = ranks first; equal score keys order by the lower index.
__device__ __forceinline__ uint64_t rank_key(uint32_t score_key, int64_t index) {
  return (static_cast<uint64_t>(score_key) << 32) | (0xffffffffu - static_cast<uint32_t>(index));
}

struct CausalShared {
  unsigned char take[hz::kSelectThreads];
  int64_t taken;
};

// The causal rule over one level's n candidates (local indices local_of(j),
// ascending in j): emit(j, r) for every candidate, r its rank among the
// taken ones or -1. Chunks of blockDim.x candidates: every thread decides
// whether its candidate is wanted, thread 0 spends the budget in order,
// then a block scan ranks the taken ones. Every thread of the block calls it.
template <typename LocalOf, typename KeyQk, typename KeyKq, typename Emit>
__device__ void causal_level(int64_t n, int budget, LocalOf local_of, KeyQk key_qk, KeyKq key_kq, Emit emit,
                             CausalShared& cs, int64_t* scan_scratch) {
  const int64_t window = lighthouse::detail::causal_window(n, budget);
  int64_t done = 0, total = 0;
  if (threadIdx.x == 0) cs.taken = 0;
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    bool wanted = false;
    if (j < n) {
      const int64_t x = local_of(j);
      const uint32_t qj = key_qk(x), kj = key_kq(x);
      bool beats_qk = true, beats_kq = true;
      for (int64_t i = j - window + 1 > 0 ? j - window + 1 : 0; i < j && (beats_qk || beats_kq); ++i) {
        const int64_t y = local_of(i);
        beats_qk = beats_qk && key_qk(y) < qj;
        beats_kq = beats_kq && key_kq(y) < kj;
      }
      wanted = beats_qk || beats_kq;
    }
    cs.take[threadIdx.x] = wanted ? 1 : 0;
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t taken = cs.taken;
      const int64_t count = n - j0 < blockDim.x ? n - j0 : blockDim.x;
      for (int64_t i = 0; i < count; ++i) {
        const bool take = lighthouse::detail::causal_take(cs.take[i] != 0, j0 + i, n, taken, budget);
        cs.take[i] = take ? 1 : 0;
        taken += take ? 1 : 0;
      }
      cs.taken = taken;
    }
    __syncthreads();
    const bool take = j < n && cs.take[threadIdx.x] != 0;
    const int64_t incl = detail::block_inclusive_scan(take ? 1 : 0, scan_scratch, &total);
    if (j < n) emit(j, take ? done + incl - 1 : -1);
    done += total;
  }
}

// True when value is among the n ascending values of sorted.
__device__ __forceinline__ bool in_sorted(const int* sorted, int n, int64_t value) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && sorted[lo] == value;
}

struct RadixShared {
  unsigned hist[256];
  unsigned digit, above, count;
};

// The threshold K such that exactly `need` of the n candidates have a valid
// key >= K (keys are unique, need <= number of valid keys). key_of(j, &key)
// returns false for excluded candidates. Every thread of the block calls it.
template <typename KeyOf>
__device__ uint64_t radix_threshold(int64_t n, unsigned need, KeyOf key_of, RadixShared& rs) {
  uint64_t prefix = 0, mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) rs.hist[i] = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      uint64_t key;
      if (key_of(j, &key) && (key & mask) == prefix) atomicAdd(&rs.hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane i owns bins 255 - 8i down to 248 - 8i; find the bin where the
      // count from the top reaches `need`.
      const int lane = threadIdx.x;
      unsigned sum = 0;
      for (int i = 0; i < 8; ++i) sum += rs.hist[255 - 8 * lane - i];
      unsigned incl = sum;
      for (int d = 1; d < 32; d <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += y;
      }
      unsigned above = incl - sum;
      if (above < need && need <= incl) {
        for (int i = 0; i < 8; ++i) {
          const unsigned bin = 255 - 8 * lane - i;
          if (above + rs.hist[bin] >= need) {
            rs.digit = bin;
            rs.above = above;
            rs.count = rs.hist[bin];
            break;
          }
          above += rs.hist[bin];
        }
      }
    }
    __syncthreads();
    need -= rs.above;
    prefix |= static_cast<uint64_t>(rs.digit) << shift;
    mask |= uint64_t{255} << shift;
    const bool done = rs.count == need;
    __syncthreads();
    if (done) break;
  }
  return prefix;
}

// Workspace of one tile, in ints. Levels 1..L-1 each hold MP = m * p
// candidates (children of the level above's m selected entries, ascending),
// the rank of each among the level's selected entries (-1: not selected) and
// its subtree size.
struct TileSpace {
  int* base;
  int64_t mp;
  int m;
  __device__ int* cand(int l) const { return base + (l - 1) * 3 * mp; }
  __device__ int* rank(int l) const { return base + (l - 1) * 3 * mp + mp; }
  __device__ int* sub(int l) const { return base + (l - 1) * 3 * mp + 2 * mp; }
  __device__ int* tail(int levels, int which) const { return base + (levels - 1) * 3 * mp + which * m; }
};

int64_t tile_space_ints(const Geometry& g) {
  const int64_t mp = int64_t{g.tile_budget} * g.pooling;
  return (g.levels - 1) * 3 * mp + 5 * int64_t{g.tile_budget};
}

__global__ void __launch_bounds__(hz::kSelectThreads) select_kernel(SelectArgs a) {
  extern __shared__ int dynamic_space[];
  __shared__ RadixShared rs;
  __shared__ CausalShared cs;
  __shared__ int64_t scan_scratch[33];
  const Geometry& g = a.geo;
  const int64_t item = blockIdx.x;
  const int64_t bg = item / g.tiles, tile = item % g.tiles;
  const int L = g.levels, p = g.pooling, m = g.tile_budget;
  const unsigned h = static_cast<unsigned>(m / 2);
  const int64_t mp = int64_t{m} * p;
  const TileSpace ws{a.workspace != nullptr ? a.workspace + item * a.workspace_ints : dynamic_space, mp, m};
  int* sel_l = ws.tail(L, 0);    // level-L selected entries (local indices, ascending)
  int* sub_l = ws.tail(L, 1);    // their subtree sizes
  int* pref_a = ws.tail(L, 2);   // first rank of each selected entry's subtree (ping)
  int* pref_b = ws.tail(L, 3);   // (pong)
  int* sel_tmp = ws.tail(L, 4);  // selected entries of the current finer level

  const float* qk = a.scores_qk + bg * g.pyramid_len;
  const float* kq = a.scores_kq + bg * g.pyramid_len;
  const int64_t tb = g.tile_begin(tile), count_l = g.tile_begin(tile + 1) - tb;
  const int64_t off_l = g.offset(L);
  const bool causal = a.rule == Selection::kCausal;
  // Rank keys of a level's entries by local index, under the rule's lag.
  auto keys_of = [&](int l) {
    const int64_t off = g.offset(l), lag = lighthouse::detail::score_lag(a.rule, g, l);
    const float* level_qk = qk + off;
    const float* level_kq = kq + off;
    return [=](int which, int64_t local) { return lagged_key(which == 0 ? level_qk : level_kq, local, lag); };
  };

  // Level L: candidates are the tile's coarsest entries tb + j.
  const auto key_l = keys_of(L);
  uint64_t thr_qk_l = 0, thr_kq_l = 0;
  if (causal) {
    causal_level(
        count_l, m, [&](int64_t j) { return tb + j; }, [&](int64_t x) { return key_l(0, x); },
        [&](int64_t x) { return key_l(1, x); },
        [&](int64_t j, int64_t r) {
          if (r >= 0) sel_l[r] = static_cast<int>(tb + j);
        },
        cs, scan_scratch);
  } else {
    thr_qk_l = radix_threshold(
        count_l, h, [&](int64_t j, uint64_t* key) { *key = rank_key(key_l(0, tb + j), tb + j); return true; }, rs);
    thr_kq_l = radix_threshold(
        count_l, h,
        [&](int64_t j, uint64_t* key) {
          if (rank_key(key_l(0, tb + j), tb + j) >= thr_qk_l) return false;
          *key = rank_key(key_l(1, tb + j), tb + j);
          return true;
        },
        rs);
  }
  auto selected_l = [&](int64_t j) {
    const int64_t i = tb + j;
    if (causal) return in_sorted(sel_l, m, i);
    return rank_key(key_l(0, i), i) >= thr_qk_l || rank_key(key_l(1, i), i) >= thr_kq_l;
  };
  if (!causal) {
    int64_t done = 0, total = 0;
    for (int64_t j0 = 0; j0 < count_l; j0 += blockDim.x) {
      const int64_t j = j0 + threadIdx.x;
      const bool flag = j < count_l && selected_l(j);
      const int64_t incl = detail::block_inclusive_scan(flag ? 1 : 0, scan_scratch, &total);
      if (flag) sel_l[done + incl - 1] = static_cast<int>(tb + j);
      done += total;
    }
  }
  __syncthreads();

  // Levels L-1 .. 1: candidates are the children of the level above's
  // selected entries; levels >= 2 select again.
  const int* parents = sel_l;
  for (int l = L - 1; l >= 1; --l) {
    int* cand = ws.cand(l);
    for (int64_t k = threadIdx.x; k < mp; k += blockDim.x) cand[k] = parents[k / p] * p + static_cast<int>(k % p);
    __syncthreads();
    if (l == 1) break;
    const auto key = keys_of(l);
    int* rank = ws.rank(l);
    if (causal) {
      causal_level(
          mp, m, [&](int64_t k) { return int64_t{cand[k]}; }, [&](int64_t x) { return key(0, x); },
          [&](int64_t x) { return key(1, x); },
          [&](int64_t k, int64_t r) {
            rank[k] = static_cast<int>(r);
            if (r >= 0) sel_tmp[r] = cand[k];
          },
          cs, scan_scratch);
      __syncthreads();
      parents = sel_tmp;
      continue;
    }
    const uint64_t thr_qk = radix_threshold(
        mp, h, [&](int64_t k, uint64_t* k64) { *k64 = rank_key(key(0, cand[k]), cand[k]); return true; }, rs);
    const uint64_t thr_kq = radix_threshold(
        mp, h,
        [&](int64_t k, uint64_t* k64) {
          if (rank_key(key(0, cand[k]), cand[k]) >= thr_qk) return false;
          *k64 = rank_key(key(1, cand[k]), cand[k]);
          return true;
        },
        rs);
    int64_t done = 0, total = 0;
    for (int64_t k0 = 0; k0 < mp; k0 += blockDim.x) {
      const int64_t k = k0 + threadIdx.x;
      const bool flag = k < mp && (rank_key(key(0, cand[k]), cand[k]) >= thr_qk ||
                                   rank_key(key(1, cand[k]), cand[k]) >= thr_kq);
      const int64_t incl = detail::block_inclusive_scan(flag ? 1 : 0, scan_scratch, &total);
      if (k < mp) {
        rank[k] = flag ? static_cast<int>(done + incl - 1) : -1;
        if (flag) sel_tmp[done + incl - 1] = cand[k];
      }
      done += total;
    }
    __syncthreads();
    parents = sel_tmp;
  }

  // Subtree sizes, bottom-up: 1 for an entry kept alone, 1 + its children's
  // for a selected one.
  for (int64_t k = threadIdx.x; k < mp; k += blockDim.x) ws.sub(1)[k] = 1;
  __syncthreads();
  for (int l = 2; l <= L; ++l) {
    const int64_t n = l < L ? mp : m;
    const int* child_sub = ws.sub(l - 1);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const int r = l < L ? ws.rank(l)[k] : static_cast<int>(k);
      int size = 1;
      if (r >= 0)
        for (int c = 0; c < p; ++c) size += child_sub[int64_t{r} * p + c];
      (l < L ? ws.sub(l) : sub_l)[k] = size;
    }
    __syncthreads();
  }

  // Ranks, top-down. An entry's subtree starts after every subtree before it;
  // a selected entry sits at the end of its own subtree.
  const int64_t tile_off = g.tile_kept_offset(tile);
  int32_t* out = a.indices + bg * g.kept + tile_off;
  int32_t* slots = a.slots + bg * g.pyramid_len;
  {
    int64_t ranks_done = 0, prefix_done = 0, total = 0;
    for (int64_t j0 = 0; j0 < count_l; j0 += blockDim.x) {
      const int64_t j = j0 + threadIdx.x;
      const bool valid = j < count_l;
      const bool flag = valid && selected_l(j);
      const int64_t r = ranks_done + detail::block_inclusive_scan(flag ? 1 : 0, scan_scratch, &total) - 1;
      ranks_done += total;
      const int64_t size = valid ? (flag ? sub_l[r] : 1) : 0;
      const int64_t first = prefix_done + detail::block_inclusive_scan(size, scan_scratch, &total) - size;
      prefix_done += total;
      if (valid) {
        const int64_t pos = first + size - 1;
        out[pos] = static_cast<int32_t>(off_l + tb + j);
        slots[off_l + tb + j] = static_cast<int32_t>(tile_off + pos);
        if (flag) pref_a[r] = static_cast<int>(first);
      }
    }
  }
  __syncthreads();
  int* parent_first = pref_a;
  int* child_first = pref_b;
  for (int l = L - 1; l >= 1; --l) {
    const int* cand = ws.cand(l);
    const int* sub = ws.sub(l);
    const int64_t off = g.offset(l);
    for (int64_t k = threadIdx.x; k < mp; k += blockDim.x) {
      const int64_t r = k / p;
      int64_t first = parent_first[r];
      for (int64_t c = r * p; c < k; ++c) first += sub[c];
      const int rank = l >= 2 ? ws.rank(l)[k] : -1;
      const int64_t pos = first + sub[k] - 1;
      out[pos] = static_cast<int32_t>(off + cand[k]);
      slots[off + cand[k]] = static_cast<int32_t>(tile_off + pos);
      if (rank >= 0) child_first[rank] = static_cast<int>(first);
    }
    __syncthreads();
    int* swap = parent_first;
    parent_first = child_first;
    child_first = swap;
  }

  // Tail tokens past the last whole coarsest block, as level-1 entries.
  if (tile == g.tiles - 1) {
    const int64_t first = g.kept - g.tail, t0 = g.tail_begin();
    for (int64_t t = t0 + threadIdx.x; t < g.seq_len; t += blockDim.x) {
      a.indices[bg * g.kept + first + (t - t0)] = static_cast<int32_t>(t);
      slots[t] = static_cast<int32_t>(first + (t - t0));
    }
  }
}

}  // namespace

void select(const SelectParams& params, void* stream_ptr) {
  check(params);
  const cudaStream_t stream = detail::as_stream(stream_ptr);
  const Geometry& g = params.geo;
  const int64_t heads = params.dims.batch * params.dims.kv_heads;
  const int64_t blocks = heads * g.tiles;
  if (blocks > 0x7fffffff) fail("select blocks (batch * kv_heads * tiles)", "at most 2^31 - 1", blocks);

  SelectArgs a{g, params.selection, params.scores_qk, params.scores_kq, params.indices, params.slots, nullptr, tile_space_ints(g)};
  detail::check_cuda(cudaMemsetAsync(params.slots, 0xff, sizeof(int32_t) * heads * g.pyramid_len, stream),
                     "cudaMemsetAsync(slots)");

  const int64_t space_bytes = a.workspace_ints * int64_t{sizeof(int)};
  if (space_bytes <= hz::kSelectMaxSharedBytes &&
      detail::reserve_dynamic_shared(select_kernel, space_bytes, "select_kernel")) {
    select_kernel<<<static_cast<unsigned>(blocks), hz::kSelectThreads, static_cast<size_t>(space_bytes), stream>>>(a);
    detail::check_launch("select_kernel");
    return;
  }
  void* space = nullptr;
  detail::check_cuda(cudaMallocAsync(&space, static_cast<size_t>(space_bytes * blocks), stream),
                     "cudaMallocAsync(select workspace)");
  a.workspace = static_cast<int*>(space);
  select_kernel<<<static_cast<unsigned>(blocks), hz::kSelectThreads, 0, stream>>>(a);
  const cudaError_t launch = cudaGetLastError();
  detail::check_cuda(cudaFreeAsync(space, stream), "cudaFreeAsync(select workspace)");
  detail::check_cuda(launch, "select_kernel");
}

}  // namespace lighthouse::cuda
