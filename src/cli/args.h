// Command-line options of the form --name value or --name=value, with typed
// getters that name the option in their errors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lighthouse::cli {

class Args {
 public:
  // Parses argv[first..argc); throws lighthouse::Error for a stray value, a
  // repeated option or an option missing its value.
  Args(int argc, char** argv, int first);

  bool has(const std::string& name) const;
  std::optional<std::string> text(const std::string& name) const;
  std::optional<int64_t> integer(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t fallback) const;
  std::string text(const std::string& name, const std::string& fallback) const;

  // Throws naming the first option not in `known`.
  void allow_only(const std::set<std::string>& known) const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace lighthouse::cli
