// Helpers shared by the CUDA stages: error reporting, launch sizing, 16-byte
// vector access to rows of any supported dtype, and a block-wide scan.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "heuristics.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/dtype.h"
#include "lighthouse/params.h"

namespace lighthouse::cuda::detail {

// Throws std::runtime_error naming the failed call and CUDA's message.
inline void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("lighthouse cuda: ") + call + ": " + cudaGetErrorString(status));
}

// Checks that the preceding kernel launch was accepted.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Multiprocessors of the current device (the launch heuristics size grids by it).
inline int sm_count() {
  int device = 0, sms = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return sms;
}

// Prepares `kernel` to take `bytes` of dynamic shared memory per block on the
// current device: false when they exceed what the device allows a block (its
// opt-in limit less the kernel's static shared memory); else true, after
// opting the kernel in when bytes pass the default limit (48 KB less the
// static shared memory). `name` names the kernel in errors.
template <typename Kernel>
bool reserve_dynamic_shared(Kernel kernel, int64_t bytes, const char* name) {
  int device = 0, optin = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  cudaFuncAttributes attrs{};
  check_cuda(cudaFuncGetAttributes(&attrs, kernel), (std::string("cudaFuncGetAttributes(") + name + ")").c_str());
  if (bytes > optin - static_cast<int64_t>(attrs.sharedSizeBytes)) return false;
  if (bytes > attrs.maxDynamicSharedSizeBytes)
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
               (std::string("cudaFuncSetAttribute(") + name + ")").c_str());
  return true;
}

// Blocks for a grid-stride loop over `items`: enough to fill the device,
// never more than the items need (at least one).
inline unsigned grid_for(int64_t items, int threads, int blocks_per_sm) {
  const int sms = sm_count();
  const int64_t cap = int64_t{sms} * blocks_per_sm;
  const int64_t need = (items + threads - 1) / threads;
  const int64_t blocks = need < cap ? need : cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// Launch shape of the streaming stages: a block row of x-threads covers the
// `row_len` work items of one outer item (rows of D / W vectors), blockDim.y
// outer items share a block; the grid strides over outer_x in x and over
// outer_y in y (at most 65,535 blocks in y, looped beyond). Index math per
// item is then a few adds: the divisions happen once per thread.
struct StreamShape {
  dim3 grid, block;
};

inline StreamShape stream_shape(int64_t row_len, int64_t outer_y, int64_t outer_x, int threads, int blocks_per_sm) {
  const int sms = sm_count();
  const int64_t bx = row_len < threads ? row_len : threads;
  const int64_t by = threads / bx > 0 ? threads / bx : 1;
  const int64_t gy = outer_y < 65535 ? outer_y : 65535;
  int64_t cap = int64_t{sms} * blocks_per_sm / gy;
  if (cap < 1) cap = 1;
  int64_t gx = (outer_x + by - 1) / by;
  if (gx > cap) gx = cap;
  if (gx < 1) gx = 1;
  StreamShape s;
  s.block = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by), 1);
  s.grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy < 1 ? 1 : gy), 1);
  return s;
}

// Launch shape of the tiled scatter / gather_backward kernels (see
// heuristics.h): x-threads over one position's `row_len` items, y-threads
// over a tile's positions, a 1-D grid of one block per (batch row, tile), and a
// shared slot table of tiled_table_rows x tile int32s (stage_tile_slots).
// tile == 0: the table does not fit, use the plain kernel.
struct TiledShape {
  dim3 grid, block;
  int tile = 0;
  size_t shared_bytes = 0;
};

// Rows of a tile's shared table: the slots of every level and KV head, then
// one row of present-level masks per KV head.
inline int64_t tiled_table_rows(const Dims& d, const Geometry& g) { return int64_t{g.levels + 1} * d.kv_heads; }

// The longest tile whose table fits in kTiledMaxSharedBytes (0: none).
inline int64_t tiled_max_tile(const Dims& d, const Geometry& g) {
  const int64_t rows = tiled_table_rows(d, g);
  return heuristics::kTiledMaxSharedBytes / (4 * (rows > 0 ? rows : 1));
}

// A tile of `min_positions` positions, or of one coarsest block where that is
// longer, shortened to what the table allows.
inline TiledShape tiled_shape(int64_t row_len, const Dims& d, const Geometry& g, int64_t min_positions) {
  namespace hz = heuristics;
  TiledShape s;
  const int64_t max_tile = tiled_max_tile(d, g);
  if (max_tile < 1) return s;
  // x-threads: the row rounded up to a warp. A row longer than kTiledMaxThreads takes several passes, of the
  // power-of-two warp multiple (up to kTiledMaxThreads) that leaves the fewest threads idle, the widest
  // among equals: 384 items (24 rows of 16 vectors) take 3 passes of 128 x-threads, not 256 + 128 with
  // half the block idle in the second.
  const int64_t rounded = (row_len + 31) / 32 * 32;
  int64_t bx = rounded < hz::kTiledMaxThreads ? rounded : hz::kTiledMaxThreads;
  if (rounded > hz::kTiledMaxThreads) {
    const auto idle = [row_len](int64_t w) { return (row_len + w - 1) / w * w - row_len; };
    for (int64_t w = bx / 2; w >= 32; w /= 2)
      if (idle(w) < idle(bx)) bx = w;
  }
  const int64_t coarsest = g.block(g.levels);
  const int64_t positions = min_positions > coarsest ? min_positions : coarsest;
  const int64_t tile = max_tile < positions ? max_tile : positions;
  int64_t by = hz::kTiledThreads / bx;
  if (by < 1) by = 1;
  if (by > tile) by = tile;
  const int64_t items = d.batch * ((d.seq_len + tile - 1) / tile);
  const int64_t grid = items < 0x7fffffff ? items : 0x7fffffff;  // one block per tile, up to the x limit
  s.grid = dim3(static_cast<unsigned>(grid < 1 ? 1 : grid), 1, 1);
  s.block = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by), 1);
  s.tile = static_cast<int>(tile);
  s.shared_bytes = static_cast<size_t>(4 * tiled_table_rows(d, g) * tile);
  return s;
}

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// Calls f(std::integral_constant<int, W>{}) on the 16-byte path (vec), else
// f(std::integral_constant<int, 1>{}): a launch instantiates its kernel for
// both widths and picks one at run time.
template <int W, typename F>
void with_width(bool vec, F&& f) {
  if (vec) f(std::integral_constant<int, W>{});
  else f(std::integral_constant<int, 1>{});
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline bool strides_multiple(const Strides& s, int64_t w) {
  return s.batch % w == 0 && s.seq % w == 0 && s.head % w == 0;
}

// Loads W consecutive elements starting at element i of base as floats. W is
// 1 (scalar) or vec_width<T>() (one 16-byte load; i must be aligned).
template <typename T, int W>
__device__ __forceinline__ void load_row(const void* base, int64_t i, float (&x)[W]) {
  if constexpr (W == 1) {
    x[0] = lighthouse::detail::load<T>(base, i);
  } else {
    static_assert(W * sizeof(T) == 16, "vector access is 16 bytes");
    const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const T*>(base) + i);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = bits_float(words[j]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        x[2 * j] = to_float(T{static_cast<uint16_t>(words[j] & 0xffffu)});
        x[2 * j + 1] = to_float(T{static_cast<uint16_t>(words[j] >> 16)});
      }
    }
  }
}

// W consecutive floats at p through the read-only cache (rope tables, the
// rotated rows of gather_backward); W is 1, 2 with p 8-byte aligned, or a
// multiple of 4 with p 16-byte aligned.
template <int W>
__device__ __forceinline__ void load_floats(const float* p, float (&x)[W]) {
  if constexpr (W == 1) {
    x[0] = __ldg(p);
  } else if constexpr (W == 2) {
    const float2 v = __ldg(reinterpret_cast<const float2*>(p));
    x[0] = v.x;
    x[1] = v.y;
  } else {
#pragma unroll
    for (int j = 0; j < W; j += 4) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p + j));
      x[j] = v.x;
      x[j + 1] = v.y;
      x[j + 2] = v.z;
      x[j + 3] = v.w;
    }
  }
}

// Asks for the line holding p to be brought into L1 without a register
// waiting for it: a later load of the line then hits L1.
__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

// Stores W floats at p (the counterpart of load_floats, same alignment).
template <int W>
__device__ __forceinline__ void store_floats(float* p, const float (&x)[W]) {
  if constexpr (W == 1) {
    p[0] = x[0];
  } else {
#pragma unroll
    for (int j = 0; j < W; j += 4) *reinterpret_cast<float4*>(p + j) = make_float4(x[j], x[j + 1], x[j + 2], x[j + 3]);
  }
}

// Two floats as two 16-bit T in one word (lo in the low half) by from_float:
// the reference rounding, about a dozen integer instructions per value.
template <typename T>
__device__ __forceinline__ uint32_t pack2_reference(float lo, float hi) {
  return static_cast<uint32_t>(from_float<T>(lo).bits) | (static_cast<uint32_t>(from_float<T>(hi).bits) << 16);
}

// The same bits as pack2_reference for every non-NaN float, from sm_80 with
// one cvt instruction per pair: the hardware rounds as from_float does (ties
// to even, subnormals kept, overflow to infinity), and the reference's
// integer instructions bound the store-heavy stages. NaNs are not routed
// here: the hardware writes its own NaN bits, while the reference keeps the
// payload (store_row sends them to pack2_reference).
template <typename T>
__device__ __forceinline__ uint32_t pack2_rn(float lo, float hi) {
  static_assert(sizeof(T) == 2, "16-bit types only");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t d;
  if constexpr (std::is_same_v<T, bf16_t>) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
#else
  return pack2_reference<T>(lo, hi);
#endif
}

// One 16-byte store of words to global memory at p (16-byte aligned), spelled
// out in PTX: stored through a uint4 lvalue, the compiler split it into four
// 4-byte stores in several kernels (gather, scatter_backward, pool_score's
// coarse levels, the plain scatter and gather_backward), four store
// instructions where one does. With the streaming hint (.cs: the line is
// likely accessed once, evicted first): scatter 1.8-6.5% and gather_backward
// 0.3-1.8% faster on the H200 (bench/NOTES.md; why is not measured).
__device__ __forceinline__ void store16(void* p, const uint32_t (&words)[4]) {
  asm volatile("st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(words[0]), "r"(words[1]), "r"(words[2]),
               "r"(words[3])
               : "memory");
}

// The W floats of one 16-byte vector as T, packed into four words. 16-bit T
// rounds by pack2_rn, a vector holding a NaN by pack2_reference: from_float's
// bits either way (checked for every float).
template <typename T, int W>
__device__ __forceinline__ void pack_row(const float (&x)[W], uint32_t (&words)[4]) {
  static_assert(W * sizeof(T) == 16, "one 16-byte vector");
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int j = 0; j < 4; ++j) words[j] = float_bits(x[j]);
  } else {
    bool nan = false;
#pragma unroll
    for (int j = 0; j < W; ++j) nan |= x[j] != x[j];
    if (!nan) {
#pragma unroll
      for (int j = 0; j < 4; ++j) words[j] = pack2_rn<T>(x[2 * j], x[2 * j + 1]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) words[j] = pack2_reference<T>(x[2 * j], x[2 * j + 1]);
    }
  }
}

// Stores W floats as T at element i of base (the counterpart of load_row),
// rounded as pack_row does.
template <typename T, int W>
__device__ __forceinline__ void store_row(void* base, int64_t i, const float (&x)[W]) {
  if constexpr (W == 1) {
    lighthouse::detail::store<T>(base, i, x[0]);
  } else {
    uint32_t words[4];
    pack_row<T, W>(x, words);
    store16(static_cast<T*>(base) + i, words);
  }
}

// x rounded to T and read back in place: the values a store_row and a
// load_row of x would give.
template <typename T, int W>
__device__ __forceinline__ void round_row(float (&x)[W]) {
  if constexpr (W == 1) {
    x[0] = to_float(from_float<T>(x[0]));
  } else if constexpr (sizeof(T) == 2) {
    uint32_t words[4];
    pack_row<T, W>(x, words);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      x[2 * j] = to_float(T{static_cast<uint16_t>(words[j] & 0xffffu)});
      x[2 * j + 1] = to_float(T{static_cast<uint16_t>(words[j] >> 16)});
    }
  }
}

// Stores two floats as T at elements i and i + 1 of base (i even, base
// 16-byte aligned) with one 4- or 8-byte store, rounding as store_row does.
template <typename T>
__device__ __forceinline__ void store_pair(void* base, int64_t i, float lo, float hi) {
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float2*>(static_cast<T*>(base) + i) = make_float2(lo, hi);
  } else {
    const bool nan = lo != lo || hi != hi;
    *reinterpret_cast<uint32_t*>(static_cast<T*>(base) + i) = nan ? pack2_reference<T>(lo, hi) : pack2_rn<T>(lo, hi);
  }
}

// 2^-e exactly (0 <= e <= 126: a normal float), from the exponent bits: the
// mean's 1 / c for a block of c = 2^e positions. In the stages' per-position
// loops the int64 -> float conversion and division cost ~15 instructions.
__device__ __forceinline__ float pow2_reciprocal(int e) { return __int_as_float((127 - e) << 23); }

// 1 / c_l of level l exactly (c_l = Geometry::block(level), a power of two).
__device__ __forceinline__ float block_reciprocal(const Geometry& g, int level) {
  return pow2_reciprocal((level - 1) * g.log2_pooling);
}

// Asynchronous 16-byte copy from global to shared memory (both 16-byte
// aligned), bypassing L1: the copy needs no registers while in flight, so a
// warp can stage its next rows while it reads the current ones. Before sm_80
// it is a plain load and store. Copies issued since the last commit form a
// group; copy_async_wait<N> returns once at most N of the calling thread's
// groups are pending (its own copies only: a barrier makes them visible to
// the other threads).
__device__ __forceinline__ void copy_async16(void* shared, const void* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global) : "memory");
#else
  *static_cast<uint4*>(shared) = *static_cast<const uint4*>(global);
#endif
}

__device__ __forceinline__ void copy_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void copy_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Inclusive prefix sum of v over the block (blockDim.x a multiple of 32, at
// most 1024); *total receives the block's sum. `scratch` holds 33 int64s in
// shared memory. Every thread of the block must call it.
__device__ __forceinline__ int64_t block_inclusive_scan(int64_t v, int64_t* scratch, int64_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int64_t x = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int64_t y = __shfl_up_sync(0xffffffffu, x, d);
    if (lane >= d) x += y;
  }
  if (lane == 31) scratch[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int64_t w = lane < warps ? scratch[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, w, d);
      if (lane >= d) w += y;
    }
    if (lane < warps) scratch[lane] = w;
    if (lane == 31) scratch[32] = w;
  }
  __syncthreads();
  const int64_t result = x + (warp > 0 ? scratch[warp - 1] : 0);
  *total = scratch[32];
  __syncthreads();  // scratch may be reused by the next call
  return result;
}

}  // namespace lighthouse::cuda::detail
