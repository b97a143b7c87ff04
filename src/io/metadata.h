// Typed access to safetensors metadata. Values are strings; writers that
// JSON-encode them store strings with their quotes ("\"dilated\"") and
// numbers as their text ("4096"), so both spellings are accepted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "io/safetensors.h"

namespace lighthouse::io {

// The value of key with one level of JSON string quoting removed; nullopt
// when the key is absent or its value is JSON null.
std::optional<std::string> metadata_string(const SafeTensors& file, const std::string& key);

// The value of key as an integer; nullopt when absent or null; throws
// lighthouse::Error naming the key when it is not an integer.
std::optional<int64_t> metadata_int(const SafeTensors& file, const std::string& key);

}  // namespace lighthouse::io
