// CUDA pool_score: one pass over the base q and k. A block covers a chunk of
// positions of one (batch, KV head) (pool_chunk: fewer positions when the
// sequence is short, so the grid still fills the GPU); each warp stages 32 rows
// of one head through shared memory by asynchronous 16-byte copies, the next
// chunks' in flight while each lane sums its row's squares in ascending d (no
// FMA, as the CPU does). The
// levels whose blocks fit in the chunk are max-reduced in shared memory, the
// coarser ones by one small launch per level, each from the level below, in
// the CPU's order (first child, then max_keep over the rest). On request the
// same pass also reads v and writes the pooled level-L q, k, v from the staged
// rows (a separate launch does it when rows are unaligned, or when a
// coarsest block is longer than a chunk or its running sums do not fit in
// shared memory).
#include <string>

#include "block_mean.cuh"
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
constexpr int kTileBytes = 32 * kStagePitch;            // one staged tile: a warp's 32 rows of one chunk
static_assert(hz::kPoolChunkBytes % 16 == 0, "chunks are whole 16-byte vectors");
static_assert((hz::kPoolPositions & (hz::kPoolPositions - 1)) == 0, "chunk must be a power of two");
static_assert((hz::kPoolMinPositions & (hz::kPoolMinPositions - 1)) == 0 && hz::kPoolMinPositions <= hz::kPoolPositions,
              "the smallest chunk is a power of two, at most the largest");

// Elements e and e + 1 (e even) of a staged row, with one shared load when
// T is 2 bytes wide.
template <typename T>
__device__ __forceinline__ void load_pair(const unsigned char* row, int e, float (&x)[2]) {
  if constexpr (sizeof(T) == 2) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(row + e * sizeof(T));
    x[0] = to_float(T{static_cast<uint16_t>(w & 0xffffu)});
    x[1] = to_float(T{static_cast<uint16_t>(w >> 16)});
  } else {
    x[0] = lighthouse::detail::load<T>(row, e);
    x[1] = lighthouse::detail::load<T>(row, e + 1);
  }
}

// The scalar path (rows unaligned or head_dim not a multiple of W): the
// calling lane's row norm (sqrt of the sum of squares in ascending d, no FMA,
// as the CPU does) over rows [t0, t0 + rows) of `head` (rows <= 32), read
// straight from global memory.
template <typename T>
__device__ float lane_norm(const void* base, const Strides& st, int64_t b, int64_t t0, int rows, int64_t head,
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
  int64_t chunk;     // positions per block: a power of two, at most kPoolPositions
  int fused_levels;  // levels 2..fused_levels are reduced in the block
  // 32-row batches per coarsest block when the pass pools blocks longer than
  // 32 rows (c_L / 32), else 1: a warp then takes each block's batches in a
  // row and carries the running sums from one to the next in shared memory.
  int batches_per_block;
};

// One stream of rows a warp stages on the vector path: one head of q, k or
// v in one batch row, from position 0, and where its pooled means go.
template <typename T>
struct Stream {
  const T* rows;       // element (b, 0, head, 0)
  int64_t seq;         // sequence stride of rows
  T* pooled;           // element (b, 0, head, 0) of the pooled tensor; nullptr: not pooled in this pass
  int64_t pooled_seq;  // its sequence stride
  bool norm;           // the lanes take these rows' norms
  bool is_q;
};

// A warp's streams, in the order it stages them for each 32-row batch: the
// q heads of its KV head's group (when their norms or pooled means are
// wanted), then k (likewise), then v (pooled means only).
struct StreamSet {
  int q_heads, k, v;
  __device__ int count() const { return q_heads + k + v; }
};

__device__ __forceinline__ StreamSet streams_of(const PoolArgs& a) {
  const bool pool = a.pooled_q != nullptr;
  return {a.base_qk == nullptr || pool ? static_cast<int>(a.group) : 0, a.base_kq == nullptr || pool ? 1 : 0,
          pool ? 1 : 0};
}

template <typename T>
__device__ __forceinline__ Stream<T> stream_at(const PoolArgs& a, int s, int64_t b, int64_t kvh) {
  namespace ld = lighthouse::detail;
  const StreamSet set = streams_of(a);
  const int which = s < set.q_heads ? 0 : (s < set.q_heads + set.k ? 1 : 2);
  const int64_t head = which == 0 ? kvh * a.group + s : kvh;
  const void* base = which == 0 ? a.q : (which == 1 ? a.k : a.v);
  const Strides& st = which == 0 ? a.qs : (which == 1 ? a.ks : a.vs);
  void* pooled = which == 0 ? a.pooled_q : (which == 1 ? a.pooled_k : a.pooled_v);
  const Strides& ps = which == 0 ? a.pqs : (which == 1 ? a.pks : a.pvs);
  Stream<T> r;
  r.rows = static_cast<const T*>(base) + ld::at(st, b, 0, head);
  r.seq = st.seq;
  r.pooled = pooled != nullptr ? static_cast<T*>(pooled) + ld::at(ps, b, 0, head) : nullptr;
  r.pooled_seq = ps.seq;
  r.norm = which == 0 ? a.base_qk == nullptr : (which == 1 ? a.base_kq == nullptr : false);
  r.is_q = which == 0;
  return r;
}

// Issues the asynchronous copies of one staged tile: `rows` rows (<= 32) of
// per_row 16-byte vectors from src (row r at src + r * seq) into a warp's
// stage buffer (row r at r * kStagePitch bytes).
template <typename T, int W>
__device__ __forceinline__ void stage_tile(unsigned char* dst, const T* src, int64_t seq, int rows, int per_row) {
  constexpr int kRowVectors = hz::kPoolChunkBytes / 16;
  static_assert(32 % kRowVectors == 0, "a warp covers whole rows of a full chunk");
  const int lane = threadIdx.x & 31;
  if (per_row == kRowVectors) {
    // A full chunk: each lane copies one column of every (32 / kRowVectors)-th row.
    const int c = lane % kRowVectors;
    for (int r = lane / kRowVectors; r < rows; r += 32 / kRowVectors)
      detail::copy_async16(dst + r * kStagePitch + c * 16, src + r * seq + c * W);
  } else {
    for (int q = lane; q < rows * per_row; q += 32) {
      const int r = q / per_row, c = q % per_row;
      detail::copy_async16(dst + r * kStagePitch + c * 16, src + r * seq + c * W);
    }
  }
}

// The vector path of the base pass (16-byte loads; dim % W == 0 and aligned
// rows). Each warp walks 32-row batches of its block's positions; per batch
// it stages every stream's rows in chunks of kPoolChunkBytes (a tile)
// through kPoolStages shared buffers, with the copies of the next tiles in
// flight while the lanes read the current one: each lane sums its own row's
// squares in ascending d (no FMA, as the CPU does), and, when the pooled
// level-L tensors are made here, the warp writes the mean of each whole
// block of c_L rows (fp32 sums in ascending positions times the exact
// reciprocal, as gather computes them): of the blocks inside a batch, or,
// for blocks of several batches (batches_per_block > 1), at the block's last
// batch, from sums carried in `carry` ([streams][dim] floats, the warp's
// own) since its first; `Carry` instantiates that walk (without it the
// pass compiles as if batches_per_block were 1). Writes the batch's level-1
// scores to out_* and buf_*.
template <typename T, int W, bool Carry>
__device__ void vector_base_pass(const PoolArgs& a, int64_t b, int64_t kvh, int64_t bg, int64_t p0, int64_t p1,
                                 unsigned char* stage, float* carry, float* buf_qk, float* buf_kq, float* out_qk,
                                 float* out_kq) {
  constexpr int kChunk = hz::kPoolChunkBytes / static_cast<int>(sizeof(T));
  constexpr int kStages = hz::kPoolStages;
  const Geometry& g = a.geo;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int streams = streams_of(a).count();
  const int chunks = static_cast<int>((a.dim + kChunk - 1) / kChunk);
  // Positions relative to p0 (a block covers at most kPoolPositions): 32-bit.
  const int span = static_cast<int>(p1 - p0);
  const int64_t whole = g.coarsest() * g.block(g.levels);  // positions in whole coarsest blocks
  const int whole_rel = static_cast<int>(whole - p0 < 0 ? 0 : (whole - p0 < span ? whole - p0 : span));
  // The warps take turns by groups of m consecutive 32-row batches (one coarsest block each when m > 1, else one
  // batch): after the batch at r0, part `part` of its group, the warp's next one starts at next_start(r0, part).
  const int m = Carry ? a.batches_per_block : 1;
  const auto next_start = [&](int r0, int part) { return part + 1 < m ? r0 + 32 : r0 + 32 + (kWarps - 1) * 32 * m; };
  const auto next_part = [&](int part) { return part + 1 < m ? part + 1 : 0; };

  // The next tile to issue: (batch start and part, stream, chunk), `streams * chunks` tiles per batch.
  int next_r0 = streams > 0 ? warp * 32 * m : span, next_batch_part = 0;
  int next_stream = 0, next_chunk = 0, next_buffer = 0;
  const auto issue = [&] {
    if (next_r0 < span) {
      const Stream<T> st = stream_at<T>(a, next_stream, b, kvh);
      const int d0 = next_chunk * kChunk;
      const int per_row = static_cast<int>(a.dim - d0 < kChunk ? a.dim - d0 : kChunk) / W;
      const int rows = span - next_r0 < 32 ? span - next_r0 : 32;
      stage_tile<T, W>(stage + next_buffer * kTileBytes, st.rows + (p0 + next_r0) * st.seq + d0, st.seq,
                       rows, per_row);
      if (++next_chunk == chunks) {
        next_chunk = 0;
        if (++next_stream == streams) {
          next_stream = 0;
          next_r0 = next_start(next_r0, next_batch_part);
          next_batch_part = next_part(next_batch_part);
        }
      }
    }
    detail::copy_async_commit();  // an empty group when nothing is left: the waits below count groups
    next_buffer = next_buffer + 1 == kStages ? 0 : next_buffer + 1;
  };
  for (int i = 0; i + 1 < kStages; ++i) issue();

  int buffer = 0;
  for (int r0 = warp * 32 * m, part = 0; r0 < span; r0 = next_start(r0, part), part = next_part(part)) {
    const int rows = span - r0 < 32 ? span - r0 : 32;
    const int pool_rows = whole_rel - r0 < 0 ? 0 : (whole_rel - r0 < rows ? whole_rel - r0 : rows);
    // With m > 1: whether the batch's block is whole (its means are written).
    const bool whole_block = r0 - part * 32 + 32 * m <= whole_rel;
    const int64_t t0 = p0 + r0, t = t0 + lane;
    float qk = 0.0f, kq = 0.0f;
    for (int s = 0; s < streams; ++s) {
      const Stream<T> st = stream_at<T>(a, s, b, kvh);
      float acc = 0.0f;
      for (int ch = 0; ch < chunks; ++ch) {
        issue();
        detail::copy_async_wait<kStages - 1>();  // this tile's group is complete
        __syncwarp();                            // and every lane's copies are visible
        const unsigned char* tile = stage + buffer * kTileBytes;
        const int d0 = ch * kChunk;
        const int elems = static_cast<int>(a.dim - d0 < kChunk ? a.dim - d0 : kChunk);
        const int per_row = elems / W;
        if (st.norm && lane < rows) {
          for (int c = 0; c < per_row; ++c) {
            float x[W];
            detail::load_row<T, W>(tile + lane * kStagePitch, c * W, x);
#pragma unroll
            for (int j = 0; j < W; ++j) acc = __fadd_rn(acc, __fmul_rn(x[j], x[j]));
          }
        }
        if (Carry && st.pooled != nullptr) {
          // One block of 32 * m rows, this batch its rows 32 * part..: each lane's element pairs continue the
          // block's ascending sums (block_mean's arithmetic, block_mean.cuh) from the previous batch's carry.
          if (whole_block) {
            const float inv = detail::block_reciprocal(g, g.levels);
            for (int e = 2 * lane; e < elems; e += 64) {
              float* sums = carry + s * a.dim + d0 + e;
              float sum[2] = {part == 0 ? 0.0f : sums[0], part == 0 ? 0.0f : sums[1]};
              for (int r = 0; r < 32; ++r) {
                float x[2];
                load_pair<T>(tile + r * kStagePitch, e, x);
                sum[0] = __fadd_rn(sum[0], x[0]);
                sum[1] = __fadd_rn(sum[1], x[1]);
              }
              if (part + 1 < m) {
                sums[0] = sum[0];
                sums[1] = sum[1];
              } else {
                const int64_t o = ((p0 + r0 - part * 32) / (32 * m)) * st.pooled_seq + d0 + e;
                detail::store_pair<T>(st.pooled, o, __fmul_rn(sum[0], inv), __fmul_rn(sum[1], inv));
              }
            }
          }
        } else if (st.pooled != nullptr) {
          // block_mean's arithmetic (block_mean.cuh) over the staged rows, with
          // 32-bit indices: this loop sits in the hot base pass. An item is two
          // adjacent elements (elems is a multiple of W, so even), read by one
          // shared load and written by one store: half the loads and index
          // arithmetic of one element each.
          const int pairs = elems / 2;
          const int c_l = static_cast<int>(g.block(g.levels));
          const float inv = detail::block_reciprocal(g, g.levels);
          for (int q = lane; q < (pool_rows / c_l) * pairs; q += 32) {
            const int blk = q / pairs, e = 2 * (q % pairs);
            float sum[2] = {0.0f, 0.0f};
            for (int r = blk * c_l; r < (blk + 1) * c_l; ++r) {
              float x[2];
              load_pair<T>(tile + r * kStagePitch, e, x);
              sum[0] = __fadd_rn(sum[0], x[0]);
              sum[1] = __fadd_rn(sum[1], x[1]);
            }
            const int64_t o = (t0 / c_l + blk) * st.pooled_seq + d0 + e;
            detail::store_pair<T>(st.pooled, o, __fmul_rn(sum[0], inv), __fmul_rn(sum[1], inv));
          }
        }
        __syncwarp();  // the lanes are done with this buffer before a later issue refills it
        buffer = buffer + 1 == kStages ? 0 : buffer + 1;
      }
      if (st.norm) {
        const float n = sqrtf(acc);
        if (st.is_q) {
          qk = s == 0 ? n : lighthouse::detail::max_keep(qk, n);  // the q heads are streams 0..group-1
        } else {
          kq = n;
        }
      }
    }
    if (a.base_qk != nullptr) qk = lane < rows ? a.base_qk[bg * g.seq_len + t] : 0.0f;
    if (a.base_kq != nullptr) kq = lane < rows ? a.base_kq[bg * g.seq_len + t] : 0.0f;
    if (lane < rows) {
      buf_qk[r0 + lane] = qk;
      buf_kq[r0 + lane] = kq;
      out_qk[t] = qk;
      out_kq[t] = kq;
    }
  }
}

// The scalar path of the base pass: as vector_base_pass, without staging and
// without pooled tensors (the launch makes them separately).
template <typename T>
__device__ void scalar_base_pass(const PoolArgs& a, int64_t b, int64_t kvh, int64_t bg, int64_t p0, int64_t p1,
                                 float* buf_qk, float* buf_kq, float* out_qk, float* out_kq) {
  const Geometry& g = a.geo;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t t0 = p0 + warp * 32; t0 < p1; t0 += kWarps * 32) {
    const int rows = static_cast<int>(p1 - t0 < 32 ? p1 - t0 : 32);
    const int64_t t = t0 + lane;
    float qk = 0.0f, kq = 0.0f;
    if (a.base_qk == nullptr) {
      for (int64_t h = 0; h < a.group; ++h) {
        const float n = lane_norm<T>(a.q, a.qs, b, t0, rows, kvh * a.group + h, a.dim);
        qk = h == 0 ? n : lighthouse::detail::max_keep(qk, n);
      }
    } else {
      qk = lane < rows ? a.base_qk[bg * g.seq_len + t] : 0.0f;
    }
    kq = a.base_kq == nullptr ? lane_norm<T>(a.k, a.ks, b, t0, rows, kvh, a.dim)
                              : (lane < rows ? a.base_kq[bg * g.seq_len + t] : 0.0f);
    if (lane < rows) {
      buf_qk[t - p0] = qk;
      buf_kq[t - p0] = kq;
      out_qk[t] = qk;
      out_kq[t] = kq;
    }
  }
}

// Dynamic shared memory of pool_base_kernel: every warp's stage buffers on
// the vector path, none on the scalar one; then, when the pass pools blocks
// longer than 32 rows, every warp's carried sums (pool_carry_floats each).
template <int W>
constexpr size_t pool_stage_bytes() {
  return W > 1 ? size_t{kWarps} * hz::kPoolStages * kTileBytes : 0;
}
__host__ __device__ inline int64_t pool_carry_floats(const PoolArgs& a) { return (a.group + 2) * a.dim; }

template <typename T, int W, bool Carry>
__global__ void __launch_bounds__(hz::kPoolThreads) pool_base_kernel(PoolArgs a) {
  constexpr int64_t Q = hz::kPoolPositions;  // the largest chunk
  extern __shared__ __align__(16) unsigned char stage[];  // [kWarps][kPoolStages][kTileBytes], [kWarps][carry]
  __shared__ float buf_qk[2][Q], buf_kq[2][Q];
  const Geometry& g = a.geo;
  // Chunk-major order: the (batch, KV head) pairs of one chunk are adjacent blocks, so the blocks
  // resident together read whole position rows (every head's bytes) rather than one head's slice.
  const int64_t pairs = a.batch * a.kv_heads;
  const int64_t bg = blockIdx.x % pairs, chunk_index = blockIdx.x / pairs;
  const int64_t b = bg / a.kv_heads, kvh = bg % a.kv_heads;
  const int64_t p0 = chunk_index * a.chunk;
  const int64_t p1 = p0 + a.chunk < g.seq_len ? p0 + a.chunk : g.seq_len;
  float* out_qk = a.scores_qk + bg * g.pyramid_len;
  float* out_kq = a.scores_kq + bg * g.pyramid_len;
  if constexpr (W > 1) {
    const int warp = threadIdx.x >> 5;
    float* carry = reinterpret_cast<float*>(stage + pool_stage_bytes<W>()) + (Carry ? warp * pool_carry_floats(a) : 0);
    vector_base_pass<T, W, Carry>(a, b, kvh, bg, p0, p1, stage + warp * (hz::kPoolStages * kTileBytes), carry,
                                  buf_qk[0], buf_kq[0], out_qk, out_kq);
  } else {
    scalar_base_pass<T>(a, b, kvh, bg, p0, p1, buf_qk[0], buf_kq[0], out_qk, out_kq);
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
// rows, coarsest blocks longer than its chunk, or their running sums too
// large for its shared memory): one thread owns W
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
        float mean[1][W];
        detail::block_mean<T, W, 1>(row, ss.seq, c, 0, mean);
        detail::store_row<T, W>(dst, lighthouse::detail::at(ds, b, i, head) + col, mean[0]);
      }
    }
  }
}

// pool_base_kernel blocks for chunks of this many positions: one per chunk of
// every (batch, KV head).
inline int64_t pool_blocks(const Dims& d, int64_t chunk) {
  return d.batch * d.kv_heads * ((d.seq_len + chunk - 1) / chunk);
}

// Positions per pool_base_kernel block: kPoolPositions, halved while the grid
// would have fewer than kPoolMinBlocksPerSm blocks per SM, down to
// kPoolMinPositions (one 32-row batch per warp). A short sequence with few KV
// heads (64K tokens, 2 KV heads: 128 blocks of 1,024 positions on 132 SMs)
// otherwise leaves most of the GPU idle. Levels whose blocks exceed the chunk
// move to pool_level_kernel; the scores are the same bits either way.
inline int64_t pool_chunk(const Dims& d) {
  const int64_t target = int64_t{detail::sm_count()} * hz::kPoolMinBlocksPerSm;
  int64_t chunk = hz::kPoolPositions;
  while (chunk > hz::kPoolMinPositions && pool_blocks(d, chunk) < target) chunk /= 2;
  return chunk;
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
  // The vector path stages rows in dynamic shared memory; a device that cannot give a block that much takes the
  // scalar path.
  vec = vec &&
        detail::reserve_dynamic_shared(pool_base_kernel<T, W, false>, pool_stage_bytes<W>(), "pool_base_kernel");
  const bool out_vec = pooled && vec && detail::aligned16(params.pooled_q) && detail::aligned16(params.pooled_k) &&
                       detail::aligned16(params.pooled_v) && detail::strides_multiple(params.pooled_q_strides, W) &&
                       detail::strides_multiple(params.pooled_k_strides, W) &&
                       detail::strides_multiple(params.pooled_v_strides, W);
  const int64_t chunk = pool_chunk(d), c_l = g.block(g.levels);
  PoolArgs a{g, d.batch, d.kv_heads, d.heads / d.kv_heads, d.head_dim, params.q, params.q_strides, params.k,
             params.k_strides, params.v, params.v_strides, params.base_qk, params.base_kq, params.scores_qk,
             params.scores_kq, params.pooled_q, params.pooled_k, params.pooled_v, params.pooled_q_strides,
             params.pooled_k_strides, params.pooled_v_strides, chunk, 1, 1};
  while (a.fused_levels < g.levels && g.block(a.fused_levels + 1) <= chunk) ++a.fused_levels;
  // The base pass makes the pooled tensors when they take vector stores (it writes each element pair with one 4- or
  // 8-byte store) and a coarsest block fits in its warps' 32-row batches, or else in its chunk with the running sums
  // of its warps in shared memory.
  const int64_t carry_bytes = c_l > 32 ? int64_t{kWarps} * pool_carry_floats(a) * int64_t{sizeof(float)} : 0;
  const bool fused_pool =
      out_vec && (c_l <= 32 || (c_l <= chunk && detail::reserve_dynamic_shared(pool_base_kernel<T, W, true>,
                                                                               pool_stage_bytes<W>() + carry_bytes,
                                                                               "pool_base_kernel")));
  if (fused_pool) {
    a.batches_per_block = c_l > 32 ? static_cast<int>(c_l / 32) : 1;
  } else {
    a.pooled_q = a.pooled_k = a.pooled_v = nullptr;
  }

  const int64_t blocks = pool_blocks(d, chunk);
  if (blocks > 0x7fffffff) fail("pool_score blocks", "at most 2^31 - 1", blocks);
  if (vec && a.batches_per_block > 1) {
    pool_base_kernel<T, W, true>
        <<<static_cast<unsigned>(blocks), hz::kPoolThreads, pool_stage_bytes<W>() + carry_bytes, stream>>>(a);
  } else if (vec) {
    pool_base_kernel<T, W, false>
        <<<static_cast<unsigned>(blocks), hz::kPoolThreads, pool_stage_bytes<W>(), stream>>>(a);
  } else {
    pool_base_kernel<T, 1, false><<<static_cast<unsigned>(blocks), hz::kPoolThreads, 0, stream>>>(a);
  }
  detail::check_launch("pool_base_kernel");
  for (int l = a.fused_levels + 1; l <= g.levels; ++l) {
    const int64_t items = d.batch * d.kv_heads * g.size(l);
    pool_level_kernel<<<detail::grid_for(items, hz::kLevelThreads, hz::kStreamBlocksPerSm), hz::kLevelThreads, 0,
                        stream>>>(g, l, d.batch * d.kv_heads, params.scores_qk, params.scores_kq);
    check_launch("pool_level_kernel");
  }
  if (pooled && !fused_pool) {
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
