// CUDA pool_score: one pass over the base q and k. A block covers
// kPoolPositions positions of one (batch, KV head). Rows of 16-byte vectors
// take pool_fast_kernel (warps stage tiles of 32 rows through shared memory,
// loading the next tile while summing the current one); others the scalar
// pool_base_kernel (a lane per row). Each lane sums its row's squares in
// ascending d (no FMA, as the CPU does). The levels whose blocks fit in the
// chunk are max-reduced in shared memory, the coarser ones by one small launch
// per level, each from the level below, in the CPU's order (first child, then
// max_keep over the rest). On request the fast pass also reads v and writes
// the pooled level-L q, k, v from the staged rows (a separate launch does it
// when rows are unaligned or a coarsest block is longer than a warp's rows).
#include <string>

#include "common.cuh"
#include "heuristics.h"
#include "lighthouse/checks.h"
#include "lighthouse/cuda.h"

namespace lighthouse::cuda {
namespace {

namespace hz = heuristics;
using detail::check_launch;

constexpr int kWarps = hz::kPoolThreads / 32;
constexpr int kStagePitch = hz::kPoolChunkBytes + 16;  // +16 bytes: conflict-free 16-byte row reads
static_assert(hz::kPoolChunkBytes % 16 == 0, "chunks are whole 16-byte vectors");
static_assert((hz::kPoolPositions & (hz::kPoolPositions - 1)) == 0, "chunk must be a power of two");

// The calling lane's row norm (sqrt of the sum of squares in ascending d, no
// FMA, as the CPU does) over row t0 + lane of `head` (0 when lane >= rows).
template <typename T>
__device__ float lane_row_norm(const void* base, const Strides& st, int64_t b, int64_t t0, int rows, int64_t head,
                               int64_t dim) {
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  if (lane < rows) {
    const int64_t o = lighthouse::detail::at(st, b, t0 + lane, head);
    for (int64_t d = 0; d < dim; ++d) {
      const float x = lighthouse::detail::load<T>(base, o + d);
      acc = __fadd_rn(acc, __fmul_rn(x, x));
    }
  }
  return sqrtf(acc);
}

struct PoolArgs {
  Geometry geo;
  int64_t batch, kv_heads, group, dim;
  const void* q;
  Strides qs;
  const void* k;
  Strides ks;
  const void* v;
  Strides vs;
  const float* base_qk;
  const float* base_kq;
  float* scores_qk;
  float* scores_kq;
  void* pooled_q;  // nullptr unless the pooled level-L tensors are made in this pass
  void* pooled_k;
  void* pooled_v;
  Strides pqs, pks, pvs;
  int64_t chunks;    // chunks per (batch, KV head)
  int fused_levels;  // levels 2..fused_levels are reduced in the block
};

// The scalar base pass (rows not of 16-byte vectors): each warp takes 32
// positions at a time, a lane per row. It never makes the pooled tensors.
template <typename T>
__global__ void __launch_bounds__(hz::kPoolThreads) pool_base_kernel(PoolArgs a) {
  constexpr int64_t Q = hz::kPoolPositions;
  __shared__ float buf_qk[2][Q], buf_kq[2][Q];
  const Geometry& g = a.geo;
  const int64_t bg = blockIdx.x / a.chunks, chunk = blockIdx.x % a.chunks;
  const int64_t b = bg / a.kv_heads, kvh = bg % a.kv_heads;
  const int64_t p0 = chunk * Q;
  const int64_t p1 = p0 + Q < g.seq_len ? p0 + Q : g.seq_len;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* out_qk = a.scores_qk + bg * g.pyramid_len;
  float* out_kq = a.scores_kq + bg * g.pyramid_len;

  for (int64_t t0 = p0 + warp * 32; t0 < p1; t0 += kWarps * 32) {
    const int rows = static_cast<int>(p1 - t0 < 32 ? p1 - t0 : 32);
    const int64_t t = t0 + lane;
    float qk = 0.0f, kq = 0.0f;
    if (a.base_qk == nullptr) {
      for (int64_t h = 0; h < a.group; ++h) {
        const float n = lane_row_norm<T>(a.q, a.qs, b, t0, rows, kvh * a.group + h, a.dim);
        qk = h == 0 ? n : lighthouse::detail::max_keep(qk, n);
      }
    } else {
      qk = lane < rows ? a.base_qk[bg * g.seq_len + t] : 0.0f;
    }
    if (a.base_kq == nullptr) {
      kq = lane_row_norm<T>(a.k, a.ks, b, t0, rows, kvh, a.dim);
    } else {
      kq = lane < rows ? a.base_kq[bg * g.seq_len + t] : 0.0f;
    }
    if (lane < rows) {
      buf_qk[0][t - p0] = qk;
      buf_kq[0][t - p0] = kq;
      out_qk[t] = qk;
      out_kq[t] = kq;
    }
  }
  __syncthreads();

  const int p = g.pooling;
  for (int l = 2; l <= a.fused_levels; ++l) {
    const int src = l & 1, dst = src ^ 1;  // level 1 sits in buffer 0
    const int64_t c = g.block(l);
    const int64_t first = p0 / c, count = p1 / c - first;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      float mq = buf_qk[src][e * p], mk = buf_kq[src][e * p];
      for (int r = 1; r < p; ++r) {
        mq = lighthouse::detail::max_keep(mq, buf_qk[src][e * p + r]);
        mk = lighthouse::detail::max_keep(mk, buf_kq[src][e * p + r]);
      }
      buf_qk[dst][e] = mq;
      buf_kq[dst][e] = mk;
      out_qk[g.offset(l) + first + e] = mq;
      out_kq[g.offset(l) + first + e] = mk;
    }
    __syncthreads();
  }
}

// The fast path of the base pass (16-byte rows): warp w of a block owns the
// kFastRows contiguous positions p0 + w * kFastRows onwards, in kFastBatches
// batches of 32 rows. It walks tiles (stream, chunk, batch), a stream being
// one q head of the group, then k, then v, a chunk kPoolChunkBytes of each
// row: the 32 rows x chunk of a tile are loaded into registers (up to
// kPoolChunkBytes / 16 16-byte loads per lane) while the previous tile is
// summed from shared memory, so a warp always has a tile in flight. Each
// lane owns one row's sum of squares (ascending d, no FMA); the head maximum
// of the q norms is kept in buf_qk in ascending head order. Pooled means of
// coarsest blocks up to 32 rows come from one batch; longer ones (up to
// kFastRows) carry the per-element fp32 sum across a chunk's batches, which
// walk the rows in ascending order.
constexpr int kFastRows = static_cast<int>(hz::kPoolPositions / kWarps);
constexpr int kFastBatches = kFastRows / 32;
constexpr int kVecs = hz::kPoolChunkBytes / 16;  // 16-byte loads per lane per tile
static_assert(kFastRows % 32 == 0 && kFastBatches >= 1, "warp spans are whole 32-row batches");

template <typename T, int W>
__global__ void __launch_bounds__(hz::kPoolThreads, hz::kPoolMinBlocksPerSm) pool_fast_kernel(PoolArgs a) {
  constexpr int64_t Q = hz::kPoolPositions;
  constexpr int kChunk = hz::kPoolChunkBytes / static_cast<int>(sizeof(T));  // elements of a tile's row
  constexpr int kPer = (kChunk + 31) / 32;                                     // pooled elements per lane
  __shared__ __align__(16) unsigned char stage[kWarps][32 * kStagePitch];
  // Odd levels at [0, Q), even ones (at most Q / 2 entries) at [Q, Q + Q / 2): 48 KB of shared memory in all.
  __shared__ float buf_qk[Q + Q / 2], buf_kq[Q + Q / 2];
  const Geometry& g = a.geo;
  // Consecutive blocks take the (batch, KV head) pairs of one chunk, so the
  // blocks resident together read whole position rows of all heads.
  const int64_t pairs = a.batch * a.kv_heads;
  const int64_t chunk = blockIdx.x / pairs, bg = blockIdx.x % pairs;
  const int64_t b = bg / a.kv_heads, kvh = bg % a.kv_heads;
  const int64_t p0 = chunk * Q;
  const int64_t p1 = p0 + Q < g.seq_len ? p0 + Q : g.seq_len;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* out_qk = a.scores_qk + bg * g.pyramid_len;
  float* out_kq = a.scores_kq + bg * g.pyramid_len;
  unsigned char* st = stage[warp];

  const bool pool = a.pooled_q != nullptr;
  const int64_t c_l = pool ? g.block(g.levels) : 1;
  const float inv = pool ? 1.0f / static_cast<float>(c_l) : 0.0f;  // exact: a power of two
  const int64_t whole = g.coarsest() * g.block(g.levels);           // positions in whole coarsest blocks
  const int64_t w0 = p0 + int64_t{warp} * kFastRows;               // the warp's first row
  const bool do_q = a.base_qk == nullptr || pool, do_k = a.base_kq == nullptr || pool;
  const int group = static_cast<int>(a.group);
  // Streams: [0, group) the q heads (when do_q), then k (when do_k), then v (when pooling).
  const int n_q = do_q ? group : 0;
  const int streams = n_q + (do_k ? 1 : 0) + (pool ? 1 : 0);
  const int chunks = static_cast<int>((a.dim + kChunk - 1) / kChunk);

  auto stream_of = [&](int s, const void*& base, Strides& ss, int64_t& head, void*& pout, Strides& ps, bool& norm,
                       int& kind) {
    if (s < n_q) {
      base = a.q, ss = a.qs, head = kvh * a.group + s, pout = a.pooled_q, ps = a.pqs, norm = a.base_qk == nullptr;
      kind = 0;
    } else if (s == n_q && do_k) {
      base = a.k, ss = a.ks, head = kvh, pout = a.pooled_k, ps = a.pks, norm = a.base_kq == nullptr, kind = 1;
    } else {
      base = a.v, ss = a.vs, head = kvh, pout = a.pooled_v, ps = a.pvs, norm = false, kind = 2;
    }
  };
  auto rows_of = [&](int i) {
    const int64_t t0 = w0 + 32 * i;
    return static_cast<int>(p1 - t0 <= 0 ? 0 : (p1 - t0 < 32 ? p1 - t0 : 32));
  };
  // Loads tile (s, c, i) into reg (lane's share: vector q = lane + 32 j is row q / per_row, column q % per_row).
  uint4 reg[kVecs];
  auto load_tile = [&](int s, int c, int i) {
    const void* base;
    Strides ss;
    int64_t head;
    void* pout;
    Strides ps;
    bool norm;
    int kind;
    stream_of(s, base, ss, head, pout, ps, norm, kind);
    const int rows = rows_of(i);
    const int64_t d0 = int64_t{c} * kChunk;
    const int per_row = static_cast<int>(a.dim - d0 < kChunk ? a.dim - d0 : kChunk) / W;
    const T* row0 = static_cast<const T*>(base) + lighthouse::detail::at(ss, b, w0 + 32 * i, head) + d0;
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      const int q = lane + 32 * j;
      if (q < rows * per_row) {
        const int r = q / per_row, cc = q % per_row;
        reg[j] = *reinterpret_cast<const uint4*>(row0 + r * ss.seq + cc * W);
      }
    }
  };
  auto store_tile = [&](int c, int i) {
    const int rows = rows_of(i);
    const int64_t d0 = int64_t{c} * kChunk;
    const int per_row = static_cast<int>(a.dim - d0 < kChunk ? a.dim - d0 : kChunk) / W;
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      const int q = lane + 32 * j;
      if (q < rows * per_row) {
        const int r = q / per_row, cc = q % per_row;
        *reinterpret_cast<uint4*>(st + r * kStagePitch + cc * 16) = reg[j];
      }
    }
  };

  if (streams > 0) load_tile(0, 0, 0);
  for (int s = 0; s < streams; ++s) {
    const void* base;
    Strides ss;
    int64_t head;
    void* pout;
    Strides ps;
    bool norm;
    int kind;
    stream_of(s, base, ss, head, pout, ps, norm, kind);
    float acc[kFastBatches];
#pragma unroll
    for (int i = 0; i < kFastBatches; ++i) acc[i] = 0.0f;
    for (int c = 0; c < chunks; ++c) {
      const int64_t d0 = int64_t{c} * kChunk;
      const int elems = static_cast<int>(a.dim - d0 < kChunk ? a.dim - d0 : kChunk);
      float psum[kPer];
#pragma unroll
      for (int j = 0; j < kPer; ++j) psum[j] = 0.0f;
#pragma unroll
      for (int i = 0; i < kFastBatches; ++i) {
        __syncwarp();
        store_tile(c, i);
        __syncwarp();
        // Prefetch the next tile while this one is summed.
        if (i + 1 < kFastBatches) {
          load_tile(s, c, i + 1);
        } else if (c + 1 < chunks) {
          load_tile(s, c + 1, 0);
        } else if (s + 1 < streams) {
          load_tile(s + 1, 0, 0);
        }
        const int rows = rows_of(i);
        const int64_t t0 = w0 + 32 * i;
        if (norm && lane < rows) {
          for (int cc = 0; cc < elems / W; ++cc) {
            float x[W];
            detail::load_row<T, W>(st + lane * kStagePitch, cc * W, x);
#pragma unroll
            for (int j = 0; j < W; ++j) acc[i] = __fadd_rn(acc[i], __fmul_rn(x[j], x[j]));
          }
        }
        if (pool) {
          const int pool_rows = static_cast<int>(whole - t0 <= 0 ? 0 : (whole - t0 < rows ? whole - t0 : rows));
          if (c_l <= 32) {
            const int block = static_cast<int>(c_l);
            for (int q = lane; q < (pool_rows / block) * elems; q += 32) {
              const int blk = q / elems, e = q % elems;
              float sum = 0.0f;
              for (int r = blk * block; r < (blk + 1) * block; ++r)
                sum = __fadd_rn(sum, lighthouse::detail::load<T>(st + r * kStagePitch, e));
              lighthouse::detail::store<T>(pout, lighthouse::detail::at(ps, b, t0 / block + blk, head) + d0 + e,
                                           __fmul_rn(sum, inv));
            }
          } else if (pool_rows == 32) {  // c_l a multiple of 32: the batch lies inside one coarsest block
            const bool last = (t0 + 32) % c_l == 0;
#pragma unroll
            for (int j = 0; j < kPer; ++j) {
              const int e = lane + 32 * j;
              if (e < elems) {
                if (t0 % c_l == 0) psum[j] = 0.0f;
                for (int r = 0; r < 32; ++r)
                  psum[j] = __fadd_rn(psum[j], lighthouse::detail::load<T>(st + r * kStagePitch, e));
                if (last)
                  lighthouse::detail::store<T>(pout, lighthouse::detail::at(ps, b, t0 / c_l, head) + d0 + e,
                                               __fmul_rn(psum[j], inv));
              }
            }
          }
        }
        if (c + 1 == chunks && norm && lane < rows) {
          const int64_t e = t0 + lane - p0;
          const float n = sqrtf(acc[i]);
          if (kind == 0) {
            buf_qk[e] = s == 0 ? n : lighthouse::detail::max_keep(buf_qk[e], n);
          } else {
            buf_kq[e] = n;
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kFastBatches; ++i) {
    const int64_t t = w0 + 32 * i + lane;
    if (lane < rows_of(i)) {
      const float qk = a.base_qk != nullptr ? a.base_qk[bg * g.seq_len + t] : buf_qk[t - p0];
      const float kq = a.base_kq != nullptr ? a.base_kq[bg * g.seq_len + t] : buf_kq[t - p0];
      buf_qk[t - p0] = qk;
      buf_kq[t - p0] = kq;
      out_qk[t] = qk;
      out_kq[t] = kq;
    }
  }
  __syncthreads();

  const int p = g.pooling;
  for (int l = 2; l <= a.fused_levels; ++l) {
    const int64_t src = (l & 1) ? Q : 0, dst = (l & 1) ? 0 : Q;
    const int64_t c = g.block(l);
    const int64_t first = p0 / c, count = p1 / c - first;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      float mq = buf_qk[src + e * p], mk = buf_kq[src + e * p];
      for (int r = 1; r < p; ++r) {
        mq = lighthouse::detail::max_keep(mq, buf_qk[src + e * p + r]);
        mk = lighthouse::detail::max_keep(mk, buf_kq[src + e * p + r]);
      }
      buf_qk[dst + e] = mq;
      buf_kq[dst + e] = mk;
      out_qk[g.offset(l) + first + e] = mq;
      out_kq[g.offset(l) + first + e] = mk;
    }
    __syncthreads();
  }
}

// Level l from level l - 1 in global memory, for levels coarser than a chunk.
__global__ void __launch_bounds__(hz::kLevelThreads) pool_level_kernel(Geometry g, int l, int64_t heads,
                                                                         float* scores_qk, float* scores_kq) {
  const int64_t n = g.size(l), items = heads * n;
  const int p = g.pooling;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < items; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t bg = i / n, e = i % n;
    float* const sides[2] = {scores_qk, scores_kq};
    for (float* s : sides) {
      const float* child = s + bg * g.pyramid_len + g.offset(l - 1) + e * p;
      float m = child[0];
      for (int r = 1; r < p; ++r) m = lighthouse::detail::max_keep(m, child[r]);
      s[bg * g.pyramid_len + g.offset(l) + e] = m;
    }
  }
}

// The pooled level-L tensors when the base pass cannot make them (unaligned
// rows, or coarsest blocks longer than a warp's 32 rows): one thread owns W
// elements of one pooled row; the x-threads of a block cover the H + 2 Hkv
// rows of one coarsest entry. Grid: y over batch, x over entries.
template <typename T, int W>
__global__ void __launch_bounds__(hz::kStreamThreads) pool_coarse_kernel(PoolScoreParams p, int64_t group, int vecs) {
  const Geometry& g = p.geo;
  const int64_t H = p.dims.heads, kvn = p.dims.kv_heads, c = g.block(g.levels);
  const int row_len = static_cast<int>(H + 2 * kvn) * vecs;
  for (int inner = threadIdx.x; inner < row_len; inner += blockDim.x) {
    const int64_t r = inner / vecs, col = int64_t{inner % vecs} * W;
    const int which = r < H ? 0 : (r < H + kvn ? 1 : 2);
    const int64_t head = which == 0 ? r : (which == 1 ? r - H : r - H - kvn);
    const void* src = which == 0 ? p.q : (which == 1 ? p.k : p.v);
    const Strides ss = which == 0 ? p.q_strides : (which == 1 ? p.k_strides : p.v_strides);
    void* dst = which == 0 ? p.pooled_q : (which == 1 ? p.pooled_k : p.pooled_v);
    const Strides ds = which == 0 ? p.pooled_q_strides : (which == 1 ? p.pooled_k_strides : p.pooled_v_strides);
    for (int64_t b = blockIdx.y; b < p.dims.batch; b += gridDim.y) {
      for (int64_t i = blockIdx.x * int64_t{blockDim.y} + threadIdx.y; i < g.coarsest();
           i += int64_t{gridDim.x} * blockDim.y) {
        const T* row = static_cast<const T*>(src) + lighthouse::detail::at(ss, b, i * c, head) + col;
        float acc[W];
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = 0.0f;
#pragma unroll 4
        for (int64_t t = 0; t < c; ++t) {
          float x[W];
          detail::load_row<T, W>(row, t * ss.seq, x);
#pragma unroll
          for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], x[j]);
        }
        const float inv = 1.0f / static_cast<float>(c);  // exact: c is a power of two
#pragma unroll
        for (int j = 0; j < W; ++j) acc[j] = __fmul_rn(acc[j], inv);
        detail::store_row<T, W>(dst, lighthouse::detail::at(ds, b, i, head) + col, acc);
      }
    }
  }
}

template <typename T>
void launch(const PoolScoreParams& params, cudaStream_t stream) {
  const Dims& d = params.dims;
  const Geometry& g = params.geo;
  const bool pooled = params.pooled_q != nullptr;
  constexpr int W = detail::vec_width<T>();
  bool vec = d.head_dim % W == 0;
  if (params.base_qk == nullptr || pooled)
    vec = vec && detail::aligned16(params.q) && detail::strides_multiple(params.q_strides, W);
  if (params.base_kq == nullptr || pooled)
    vec = vec && detail::aligned16(params.k) && detail::strides_multiple(params.k_strides, W);
  if (pooled) vec = vec && detail::aligned16(params.v) && detail::strides_multiple(params.v_strides, W);
  // The base pass makes the pooled tensors when its warps' 32-row batches hold whole coarsest blocks.
  const bool fused_pool = pooled && vec && g.block(g.levels) <= kFastRows;

  PoolArgs a{g, d.batch, d.kv_heads, d.heads / d.kv_heads, d.head_dim, params.q, params.q_strides, params.k,
             params.k_strides, params.v, params.v_strides, params.base_qk, params.base_kq, params.scores_qk,
             params.scores_kq, fused_pool ? params.pooled_q : nullptr, fused_pool ? params.pooled_k : nullptr,
             fused_pool ? params.pooled_v : nullptr, params.pooled_q_strides, params.pooled_k_strides,
             params.pooled_v_strides, (d.seq_len + hz::kPoolPositions - 1) / hz::kPoolPositions, 1};
  while (a.fused_levels < g.levels && g.block(a.fused_levels + 1) <= hz::kPoolPositions) ++a.fused_levels;

  const int64_t blocks = d.batch * d.kv_heads * a.chunks;
  if (blocks > 0x7fffffff) fail("pool_score blocks", "at most 2^31 - 1", blocks);
  if (vec) {
    pool_fast_kernel<T, W><<<static_cast<unsigned>(blocks), hz::kPoolThreads, 0, stream>>>(a);
  } else {
    pool_base_kernel<T><<<static_cast<unsigned>(blocks), hz::kPoolThreads, 0, stream>>>(a);
  }
  detail::check_launch(vec ? "pool_fast_kernel" : "pool_base_kernel");
  for (int l = a.fused_levels + 1; l <= g.levels; ++l) {
    const int64_t items = d.batch * d.kv_heads * g.size(l);
    pool_level_kernel<<<detail::grid_for(items, hz::kLevelThreads, hz::kStreamBlocksPerSm), hz::kLevelThreads, 0,
                        stream>>>(g, l, d.batch * d.kv_heads, params.scores_qk, params.scores_kq);
    check_launch("pool_level_kernel");
  }
  if (pooled && !fused_pool) {
    const bool out_vec = vec && detail::aligned16(params.pooled_q) && detail::aligned16(params.pooled_k) &&
                         detail::aligned16(params.pooled_v) && detail::strides_multiple(params.pooled_q_strides, W) &&
                         detail::strides_multiple(params.pooled_k_strides, W) &&
                         detail::strides_multiple(params.pooled_v_strides, W);
    const int64_t vecs = out_vec ? d.head_dim / W : d.head_dim;
    const int64_t row_len = (d.heads + 2 * d.kv_heads) * vecs;
    if (row_len > 0x7fffffff) fail("(heads + 2 * kv_heads) * head_dim", "below 2^31", row_len);
    const detail::StreamShape sh =
        detail::stream_shape(row_len, d.batch, g.coarsest(), hz::kStreamThreads, hz::kStreamBlocksPerSm);
    if (out_vec) {
      pool_coarse_kernel<T, W><<<sh.grid, sh.block, 0, stream>>>(params, d.heads / d.kv_heads, static_cast<int>(vecs));
    } else {
      pool_coarse_kernel<T, 1><<<sh.grid, sh.block, 0, stream>>>(params, d.heads / d.kv_heads, static_cast<int>(vecs));
    }
    check_launch("pool_coarse_kernel");
  }
}

}  // namespace

void pool_score(const PoolScoreParams& params, void* stream) {
  check(params);
  lighthouse::detail::dispatch(params.dtype, [&](auto t) { launch<decltype(t)>(params, detail::as_stream(stream)); });
}

}  // namespace lighthouse::cuda
