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

}  // namespace lighthouse::cuda
