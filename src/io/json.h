// JSON for safetensors headers and metadata, through nlohmann-json: parsing
// with errors that name what was being read, and exact non-negative
// integers (shapes, offsets).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace lighthouse::io::json {

// Objects keep their members in source order.
using Value = nlohmann::ordered_json;

// Parses a complete JSON document; throws lighthouse::Error naming `what`,
// the byte offset of the first problem, and any object key that appears
// twice in one object (safetensors names must be unique; nlohmann-json alone
// would keep the last one).
Value parse(const std::string& text, const std::string& what);

// The value as a non-negative int64; throws lighthouse::Error naming `what`
// when it is not an integer (fractions and exponents make a JSON number a
// float) or does not fit.
int64_t to_index(const Value& v, const std::string& what);

}  // namespace lighthouse::io::json
