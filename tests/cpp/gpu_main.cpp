// Main of the GPU suite. Without a usable CUDA device (a CPU-only machine, no
// driver) every test is skipped and the reason printed instead of failing, so
// plain `ctest` passes there and reports the suite as skipped
// (tests/cpp/CMakeLists.txt matches kSkipped; `ctest -V` shows the reason).
// LIGHTHOUSE_REQUIRE_GPU=1 turns the missing device into a failure, for runs
// that must not pass without testing anything.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace {

constexpr const char* kSkipped = "lighthouse GPU suite skipped: ";

// Empty when a device is usable, else why not.
std::string missing_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return std::string("no usable CUDA device (") + cudaGetErrorString(status) + ")";
  if (count == 0) return "no CUDA device";
  return "";
}

class CudaDevice : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string reason = missing_device();
    if (reason.empty()) return;
    const char* require = std::getenv("LIGHTHOUSE_REQUIRE_GPU");
    if (require != nullptr && std::string(require) == "1") FAIL() << reason << " and LIGHTHOUSE_REQUIRE_GPU=1";
    GTEST_SKIP() << kSkipped << reason;
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new CudaDevice);
  return RUN_ALL_TESTS();
}
