#include "args.h"

#include <cerrno>
#include <cstdlib>

#include "lighthouse/error.h"

namespace lighthouse::cli {

Args::Args(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) fail("argument " + std::to_string(i), "an option --name", arg);
    std::string name = arg, value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc) fail(name, "a value after the option", "the end of the command line");
      value = argv[++i];
    }
    if (values_.count(name)) fail(name, "the option at most once", "a repeat");
    values_[name] = value;
  }
}

bool Args::has(const std::string& name) const { return values_.count(name) != 0; }

std::optional<std::string> Args::text(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::text(const std::string& name, const std::string& fallback) const {
  return text(name).value_or(fallback);
}

std::optional<int64_t> Args::integer(const std::string& name) const {
  const std::optional<std::string> s = text(name);
  if (!s) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s->c_str(), &end, 10);
  if (s->empty() || end != s->c_str() + s->size() || errno == ERANGE) fail(name, "an integer", *s);
  return static_cast<int64_t>(v);
}

int64_t Args::integer(const std::string& name, int64_t fallback) const { return integer(name).value_or(fallback); }

void Args::allow_only(const std::set<std::string>& known) const {
  for (const auto& kv : values_)
    if (!known.count(kv.first)) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail(kv.first, "one of the options " + list, "an unknown option");
    }
}

}  // namespace lighthouse::cli
