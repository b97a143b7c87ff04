// Launch heuristics of every CUDA stage in one place: block sizes, tile
// shapes and per-thread work. Tuned for Hopper (H100/H200); correctness does
// not depend on any of these values.
#pragma once

#include <cstdint>

namespace lighthouse::cuda::heuristics {

// pool_score: threads per block; each warp stages 32 rows of one head
// through shared memory in chunks of kPoolChunkBytes per row, into
// kPoolStages buffers: the copies of kPoolStages - 1 chunks are in flight
// while the lanes read one. 128-byte chunks against 64: pool_score 10-33%
// faster on the H200 at 64K to 512K, with and without the pooled tensors.
// Blocks of 4 warps (4 of 53 KB per SM) against 8 (2 of 90 KB; the same 16
// warps): pool_score+pooled 3.5-6% faster at 64K-512K, 1% at 1M (a
// block's warps wait for its slowest at the level reduction; that fewer
// wait is a reading, not measured). 3 stages of 4 warps (3 blocks) were
// 2-22% slower than 2 stages of 8, and 2 warps per block (7 blocks) slower
// than 4 at every size (bench/NOTES.md).
constexpr int kPoolThreads = 128;
constexpr int kPoolChunkBytes = 128;
constexpr int kPoolStages = 2;
// Base positions one pool_score block covers (a power of two). Levels whose
// blocks fit are max-reduced in shared memory; coarser ones in a follow-up
// launch per level. Shorter sequences take smaller blocks, down to
// kPoolMinPositions (a 32-row batch per warp), until the grid has
// kPoolMinBlocksPerSm blocks per SM (16 waves of the 4 blocks an SM holds).
// With 4-warp blocks, 64 against 32 (chunks of 256 positions instead of 512
// at 512K with 8 KV heads, 512 instead of 1,024 at 1M): on the H200 the
// pooled path 1.2 points slower at 512K and 2.9 faster at 1M, pool_score
// alone 2.6 and 1.8 points faster, the same at 64K-128K (bench/NOTES.md).
constexpr int64_t kPoolPositions = 1024;
constexpr int64_t kPoolMinPositions = 32 * (kPoolThreads / 32);
constexpr int kPoolMinBlocksPerSm = 64;
// Threads of the follow-up level kernels.
constexpr int kLevelThreads = 256;

// gather: __launch_bounds__ minimum resident blocks of kStreamThreads threads
// (the register cap is 65536 / (256 * blocks)) with rotate-half rope tables
// and without tables. On the H200 at 512K, 3 (80 registers) and 4 (64) made
// gather with and without tables 17% and 15% faster than ptxas's own choice
// (84 and 73 registers: 2 and 3 blocks), bench/NOTES.md. Interleaved tables
// take no minimum (64-74 registers as ptxas chooses; not measured). Per-pair
// rotate-half tables neither: ptxas's own choice is 80 registers without
// spills (3 blocks), 2-2.5% faster at 128K-1M than the same 3 blocks forced
// by the minimum, which spills 12 bytes (bench/NOTES.md).
constexpr int kGatherPairMinBlocksPerSm = 3;
constexpr int kGatherMinBlocksPerSm = 4;
// gather with rope tables: from this many kept entries per launch (batch x
// KV heads x S), the v rows take the table-free kernel in a second launch.
// Always split, the rope gather on the H200 was 3.5% faster at 512K, 5% at
// 1M and 1.3% at 128K with H = Hkv = 8 (196,608 entries at 128K), and 13-14%
// slower at 64K and 128K with H = 4, Hkv = 2 (40,960 and 49,152 entries),
// where the second launch costs more than it saves (bench/NOTES.md).
constexpr int64_t kGatherSplitMinEntries = 131072;

// select: threads of the per-tile block, and the dynamic shared memory the
// tile workspace may take before it moves to global memory.
constexpr int kSelectThreads = 512;
constexpr int64_t kSelectMaxSharedBytes = 160 * 1024;

// Element-wise stages (gather, scatter, scatter_backward, gather_backward):
// threads per block, and blocks per multiprocessor of the grid-stride loop.
constexpr int kStreamThreads = 256;
constexpr int kStreamBlocksPerSm = 8;
// scatter and gather_backward: pyramid levels whose loads one thread issues
// together (registers: kScatterLevelGroup rows of 16 bytes).
constexpr int kScatterLevelGroup = 4;
// scatter and gather_backward, tiled fast path: a block covers a tile of
// kTiledPositions positions, or of one coarsest block where that is longer
// (so that one block, not several, loads a coarsest entry's row), fewer when
// the tile's shared table, (levels + 1) x kv_heads x positions 32-bit words
// of slots and present-level masks, would pass kTiledMaxSharedBytes (no tile
// at all falls back to the plain kernel). Block x-threads: one position's
// row items rounded up to a warp, at most kTiledMaxThreads; a longer row
// takes passes of the power-of-two width that leaves the fewest threads idle
// (384 items: 3 x 128, not 256 + 128; gather_backward 2-6% faster on the
// H200 at H = Hkv = 8). y-threads fill the block to kTiledThreads. The grid
// has one block per tile (the kernels' tile loop strides only past the
// grid's x limit). On the H200 (bench/NOTES.md), against tiles of 64 in a
// grid of at most 16 blocks per SM (whose blocks took several tiles each,
// 3-4 at 512K, in 2.7 waves of the 6 resident): scatter 9%, gather_backward
// 6% (with RoPE 5%) faster at 512K, 11% / 11% (10%) at 1M (c_L = 64, tiles
// of 64); at the 64K training shape scatter 8% and gather_backward without
// tables 9% (with RoPE it takes the in-loop kernel below, unchanged);
// scatter +1% at 128K with H = 4. One block per tile alone gave 3.5-6% at
// 512K, and tiles of 32 at 1M were 1-14 points slower than tiles of one
// coarsest block.
constexpr int kTiledPositions = 32;
constexpr int kTiledThreads = 256;
constexpr int kTiledMaxThreads = 256;
constexpr int64_t kTiledMaxSharedBytes = 16 * 1024;
// gather_backward's tiled kernel: __launch_bounds__ minimum resident blocks
// of kTiledMaxThreads threads. 6 (40 registers, 16 / 40 bytes of spills)
// since it walks only the levels present at a position; on the H200 5-9%
// faster at 128K and 512K than at its own 61 registers (4 blocks), and 2-6%
// faster than 5 blocks (48 registers, no spills) (bench/NOTES.md).
constexpr int kGatherBackwardMinBlocksPerSm = 6;
// gather_backward with rope tables: a first pass rotates every kept q and k
// row back once, into fp32 workspace, for the table-free kernels to add, when
// the sequence has at least kGatherBackwardRotateFirstMinPositions positions
// per kept entry (or the tiled kernels' table does not fit); below, the tiled
// kernel of gather_backward_rope_inline.cuh rotates inside its position loop.
// The first pass costs a write and a read of the workspace, twice the kept
// rows' bf16 bytes, and saves the in-loop kernel's low occupancy, which
// matters more where the kept entries are few against the positions. On the
// H200 (bench/NOTES.md) at N / S = 10.7 (512K) the first pass was 9% faster,
// at 5.3 (128K) 2-10%, at 3.2 (64K, H = 4, Hkv = 2) 20% slower, at 16 (1M,
// L = 4) 27% faster. The workspace, B (H + Hkv) S D 4 bytes, adds to the
// backward's peak memory (0.375 GiB at 512K with H = Hkv = 8).
constexpr int64_t kGatherBackwardRotateFirstMinPositions = 4;
// The in-loop kernel's __launch_bounds__ minimum resident blocks of
// kTiledMaxThreads threads: 256 x 2 beat 512 x 2 by 2%; any lower cap spills
// (bench/NOTES.md). And the coarsest levels whose rotated-back contribution a
// thread keeps in registers across the positions one entry covers (2 * W
// floats each for rotate-half pairs: one level is what fits under the
// 128-register cap without spills).
constexpr int kGatherBackwardInlineMinBlocksPerSm = 2;
constexpr int kGatherBackwardCachedLevels = 1;
// The in-loop kernel's tiles are at least kGatherBackwardInlinePositions long
// (or one coarsest block): a y-thread keeps the coarsest level's rotated row
// across its run of positions, and tiles of 32 (runs of 8 at the 64K
// training shape, half a coarsest block) made it 7% slower there.
constexpr int kGatherBackwardInlinePositions = 64;
// The tiled scatter's own minimum: 6 caps it at 40 registers without spills
// (ptxas, sm_90; 46 uncapped = 5 blocks), so 6 blocks of 256 threads fit:
// against 5, scatter 5% faster at 128K and 512K with H = 8 on the H200, 3%
// at 128K with H = 4, and 2% slower at 64K with H = 4 (bench/NOTES.md).
constexpr int kScatterTiledMinBlocksPerSm = 6;
// The tiled kernels' slot staging: levels whose slots one thread loads
// together for a position. Scatter: 3 against 2 made it 1.2-1.5% faster at
// 64K-512K (L = 3) on the H200, within the spread at 1M (L = 4); ptxas keeps
// bf16 and fp32 within its 40-register cap without spills at 2 to 4.
constexpr int kScatterStageLevels = 3;
constexpr int kGatherBackwardStageLevels = 4;

}  // namespace lighthouse::cuda::heuristics
