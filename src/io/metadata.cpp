#include "io/metadata.h"

#include <cerrno>
#include <cstdlib>

#include "io/json.h"
#include "lighthouse/error.h"

namespace lighthouse::io {

std::optional<std::string> metadata_string(const SafeTensors& file, const std::string& key) {
  const auto it = file.metadata.find(key);
  if (it == file.metadata.end()) return std::nullopt;
  const std::string& text = it->second;
  if (text == "null") return std::nullopt;
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    const json::Value v = json::parse(text, "metadata '" + key + "'");
    if (!v.is_string()) fail("metadata '" + key + "'", "a JSON string or plain text", text);
    return v.get<std::string>();
  }
  return text;
}

std::optional<int64_t> metadata_int(const SafeTensors& file, const std::string& key) {
  const std::optional<std::string> text = metadata_string(file, key);
  if (!text) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text->c_str(), &end, 10);
  if (text->empty() || end != text->c_str() + text->size() || errno == ERANGE)
    fail("metadata '" + key + "'", "an integer", *text);
  return static_cast<int64_t>(value);
}

}  // namespace lighthouse::io
