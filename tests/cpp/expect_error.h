// The invalid-input assertion of every suite: a call must throw
// lighthouse::Error whose message names the offending argument in the
// library's format, "lighthouse: <argument>: expected ..., got ...". A bare
// EXPECT_THROW would also pass when another check fires first.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>

#include "lighthouse/error.h"

namespace lhtest {

inline ::testing::AssertionResult throws_naming(const std::function<void()>& fn, const std::string& argument) {
  try {
    fn();
  } catch (const lighthouse::Error& e) {
    const std::string message = e.what();
    const std::string prefix = "lighthouse: " + argument + ": expected ";
    if (message.compare(0, prefix.size(), prefix) == 0 && message.find(", got ", prefix.size()) != std::string::npos)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message \"" << message << "\" does not name " << argument;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "nothing thrown (expected an error naming " << argument << ")";
}

}  // namespace lhtest
