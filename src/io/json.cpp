#include "io/json.h"

#include <limits>
#include <set>
#include <vector>

#include "lighthouse/error.h"

namespace lighthouse::io::json {

Value parse(const std::string& text, const std::string& what) {
  // The keys seen so far in each object being parsed, innermost last.
  std::vector<std::set<std::string>> open_objects;
  const Value::parser_callback_t unique_keys = [&](int, Value::parse_event_t event, Value& parsed) {
    if (event == Value::parse_event_t::object_start) open_objects.emplace_back();
    if (event == Value::parse_event_t::object_end) open_objects.pop_back();
    if (event == Value::parse_event_t::key && !open_objects.back().insert(parsed.get<std::string>()).second)
      fail(what, "unique keys in every JSON object", "the key \"" + parsed.get<std::string>() + "\" twice");
    return true;
  };
  try {
    return Value::parse(text, unique_keys);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.N] <description>".
    const std::string message = e.what();
    const size_t end_of_id = message.find("] ");
    const std::string description = end_of_id == std::string::npos ? message : message.substr(end_of_id + 2);
    fail(what, "valid JSON", "a parse error at byte " + std::to_string(e.byte) + ": " + description);
  }
}

int64_t to_index(const Value& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    const uint64_t x = v.get<uint64_t>();
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(what, "an integer below 2^63", x);
    return static_cast<int64_t>(x);
  }
  if (v.is_number_integer()) fail(what, "a non-negative integer", v.get<int64_t>());
  fail(what, "a non-negative integer", v.dump());
}

}  // namespace lighthouse::io::json
