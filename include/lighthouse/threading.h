// The CPU thread pool. Work is split into fixed chunks that never depend on
// the thread count, so results are identical for any number of threads.
#pragma once

#include <cstdint>
#include <functional>

namespace lighthouse {

// Threads used by CPU kernels: set_num_threads(n) if called with n > 0, else
// the LIGHTHOUSE_NUM_THREADS environment variable, else the hardware count.
int num_threads();
void set_num_threads(int n);

// Calls fn(i) for every i in [0, n), spread over the pool. fn must only write
// memory owned by item i. Exceptions thrown by fn are rethrown here.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace lighthouse
