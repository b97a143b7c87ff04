// A small JSON reader and string quoting, enough for safetensors headers:
// objects, arrays, strings (with escapes), numbers, true/false/null.
// Numbers keep their source text so integers are read exactly as int64.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lighthouse::io::json {

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // kString: the decoded string; kNumber: the number as written
  std::vector<Value> items;                             // kArray
  std::vector<std::pair<std::string, Value>> members;   // kObject, in source order

  // The member named key, or nullptr (kObject only).
  const Value* find(const std::string& key) const;
};

// Parses a complete JSON document; throws lighthouse::Error naming `what`
// and the byte offset of the first problem.
Value parse(const std::string& text, const std::string& what);

// The number as a non-negative int64; throws lighthouse::Error naming `what`
// when it is not a number, has a fraction or exponent, or does not fit.
int64_t to_index(const Value& v, const std::string& what);

// A JSON string literal for s, quotes included.
std::string quote(const std::string& s);

}  // namespace lighthouse::io::json
