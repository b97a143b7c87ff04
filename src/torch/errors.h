// The op boundary: argument errors found by the core or by the tensor checks
// (lighthouse::Error) leave as c10::ValueError, which Python raises as
// ValueError with the same message. Other exceptions (CUDA failures) keep
// their usual translation to RuntimeError.
#pragma once

#include <c10/util/Exception.h>

#include "lighthouse/error.h"

namespace lighthouse::torch_ops {

template <typename F>
auto translating_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const lighthouse::Error& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

}  // namespace lighthouse::torch_ops
