// CPU kernels of every stage: the reference implementation, multithreaded,
// with results independent of the thread count. Each call validates its
// params and throws lighthouse::Error on bad input.
#pragma once

#include "lighthouse/params.h"

namespace lighthouse::cpu {

void pool_score(const PoolScoreParams& params);
void select(const SelectParams& params);
void gather(const GatherParams& params);
void scatter(const ScatterParams& params);
void scatter_backward(const ScatterBackwardParams& params);
void gather_backward(const GatherBackwardParams& params);

}  // namespace lighthouse::cpu
