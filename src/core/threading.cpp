#include "lighthouse/threading.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace lighthouse {
namespace {

std::atomic<int> g_requested{0};

int env_threads() {
  const char* s = std::getenv("LIGHTHOUSE_NUM_THREADS");
  if (s == nullptr) return 0;
  const int n = std::atoi(s);
  return n > 0 ? n : 0;
}

}  // namespace

int num_threads() {
  const int requested = g_requested.load();
  if (requested > 0) return requested;
  const int env = env_threads();
  if (env > 0) return env;
  return std::max(1u, std::thread::hardware_concurrency());
}

void set_num_threads(int n) { g_requested.store(n > 0 ? n : 0); }

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t workers = std::min<int64_t>(num_threads(), n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // Items are claimed dynamically, but each item's result depends only on
  // the item, so the output does not depend on who ran it.
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(n);
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int64_t t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace lighthouse
