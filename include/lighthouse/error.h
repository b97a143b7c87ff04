// Errors raised by Lighthouse for invalid arguments. Every message names the
// argument, the value that was expected and the value that was given.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lighthouse {

class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

// Builds "lighthouse: <argument>: expected <expected>, got <actual>".
template <typename T>
[[noreturn]] void fail(const std::string& argument, const std::string& expected, const T& actual) {
  std::ostringstream os;
  os << "lighthouse: " << argument << ": expected " << expected << ", got " << actual;
  throw Error(os.str());
}

}  // namespace lighthouse
