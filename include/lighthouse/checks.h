// Argument checks of each stage's params, shared by every backend. Each throws
// lighthouse::Error naming the offending field.
#pragma once

#include "lighthouse/params.h"

namespace lighthouse {

void check(const PoolScoreParams& p);
void check(const SelectParams& p);
void check(const GatherParams& p);
void check(const ScatterParams& p);
void check(const ScatterBackwardParams& p);
void check(const GatherBackwardParams& p);

}  // namespace lighthouse
