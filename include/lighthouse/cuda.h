// CUDA kernels of every stage, behind the same params as the CPU reference.
// Pointers are device memory; `stream` is a cudaStream_t (nullptr: the legacy
// default stream). Launches are asynchronous; argument errors throw
// lighthouse::Error before anything is launched, CUDA errors throw
// std::runtime_error.
#pragma once

#include "lighthouse/params.h"

namespace lighthouse::cuda {

void pool_score(const PoolScoreParams& params, void* stream);
void select(const SelectParams& params, void* stream);
void gather(const GatherParams& params, void* stream);
void scatter(const ScatterParams& params, void* stream);
void scatter_backward(const ScatterBackwardParams& params, void* stream);
void gather_backward(const GatherBackwardParams& params, void* stream);

// gather_backward with rope tables may first rotate the kept q and k
// gradient rows back into fp32 device workspace: this many bytes (0 without
// tables, or where its kernels rotate without it).
// The call above allocates it on the stream (cudaMallocAsync); a framework
// with its own allocator passes it instead, 16-byte aligned, ready for use on
// the stream and left alone until the call's work on the stream is done.
int64_t gather_backward_workspace_bytes(const GatherBackwardParams& params);
void gather_backward(const GatherBackwardParams& params, void* stream, void* workspace);

}  // namespace lighthouse::cuda
