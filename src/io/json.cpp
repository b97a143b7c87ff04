#include "io/json.h"

#include <limits>

#include "lighthouse/error.h"

namespace lighthouse::io::json {
namespace {

// Safetensors headers nest three levels deep; the cap keeps hostile input
// from exhausting the stack.
constexpr int kMaxDepth = 64;

class Parser {
 public:
  Parser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != s_.size()) error("the end of the JSON text");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& expected) {
    std::string got = pos_ < s_.size() ? "'" + std::string(1, s_[pos_]) + "'" : std::string("the end of the text");
    fail(what_, expected + " at byte " + std::to_string(pos_) + " of the JSON header", got);
  }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!consume(c)) error(std::string("'") + c + "'");
  }

  void literal(const char* word) {
    for (const char* p = word; *p != '\0'; ++p, ++pos_)
      if (pos_ >= s_.size() || s_[pos_] != *p) error(std::string("the literal ") + word);
  }

  Value value(int depth) {
    if (depth > kMaxDepth) error("at most " + std::to_string(kMaxDepth) + " levels of nesting");
    skip_space();
    if (pos_ >= s_.size()) error("a JSON value");
    Value v;
    const char c = s_[pos_];
    if (c == '{') {
      v.kind = Value::Kind::kObject;
      ++pos_;
      if (consume('}')) return v;
      do {
        skip_space();
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
      } while (consume(','));
      expect('}');
    } else if (c == '[') {
      v.kind = Value::Kind::kArray;
      ++pos_;
      if (consume(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (consume(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Value::Kind::kString;
      v.text = string();
    } else if (c == 't') {
      literal("true");
      v.kind = Value::Kind::kBool;
      v.boolean = true;
    } else if (c == 'f') {
      literal("false");
      v.kind = Value::Kind::kBool;
    } else if (c == 'n') {
      literal("null");
    } else {
      v.kind = Value::Kind::kNumber;
      v.text = number();
    }
    return v;
  }

  std::string number() {
    const size_t begin = pos_;
    auto digits = [&] {
      const size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == start) error("a digit");
    };
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    digits();
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    return s_.substr(begin, pos_ - begin);
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      if (pos_ >= s_.size()) error("four hex digits after \\u");
      const char h = s_[pos_];
      u <<= 4;
      if (h >= '0' && h <= '9') u |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') u |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') u |= static_cast<unsigned>(h - 'A' + 10);
      else error("four hex digits after \\u");
    }
    return u;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  std::string string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') error("a string");
    ++pos_;
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) error("a closing '\"'");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        error("no raw control character inside a string");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) error("an escape character");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {  // a surrogate pair encodes one code point
            if (pos_ + 1 >= s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') error("a low surrogate");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xdc00 || low >= 0xe000) error("a low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          error("a valid escape character");
      }
    }
  }

  const std::string& s_;
  const std::string& what_;
  size_t pos_ = 0;
};

}  // namespace

const Value* Value::find(const std::string& key) const {
  for (const auto& m : members)
    if (m.first == key) return &m.second;
  return nullptr;
}

Value parse(const std::string& text, const std::string& what) { return Parser(text, what).document(); }

int64_t to_index(const Value& v, const std::string& what) {
  if (v.kind != Value::Kind::kNumber) fail(what, "a non-negative integer", "a non-number JSON value");
  int64_t x = 0;
  for (char c : v.text) {
    if (c < '0' || c > '9') fail(what, "a non-negative integer", v.text);
    const int d = c - '0';
    if (x > (std::numeric_limits<int64_t>::max() - d) / 10) fail(what, "an integer below 2^63", v.text);
    x = x * 10 + d;
  }
  return x;
}

std::string quote(const std::string& s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (u < 0x20) {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else out += c;
  }
  return out + "\"";
}

}  // namespace lighthouse::io::json
