#include <limits>

#include "commands.h"
#include "lighthouse/error.h"

namespace lighthouse::cli {
namespace {

int to_int(const std::string& option, int64_t v) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(option, "an integer that fits in 32 bits", v);
  return static_cast<int>(v);
}

}  // namespace

const std::set<std::string>& config_options() {
  static const std::set<std::string> names = {"--levels", "--pooling", "--topk", "--tile-budget", "--scorer", "--dilation",
                                              "--selection"};
  return names;
}

void apply_config_options(const Args& args, Config& c) {
  if (auto v = args.integer("--levels")) c.levels = to_int("--levels", *v);
  if (auto v = args.integer("--pooling")) c.pooling = to_int("--pooling", *v);
  if (auto v = args.integer("--topk")) c.topk = *v;
  if (auto v = args.integer("--tile-budget")) c.tile_budget = to_int("--tile-budget", *v);
  if (auto v = args.text("--scorer")) c.scorer = parse_scorer("--scorer", *v);
  if (auto v = args.integer("--dilation")) c.dilation = to_int("--dilation", *v);
  try {
    if (auto v = args.text("--selection")) c.selection = parse_selection(*v);
    validate(c);
  } catch (const Error& e) {
    rethrow_as_option(e, {{"levels", "--levels"},
                          {"pooling", "--pooling"},
                          {"topk", "--topk"},
                          {"tile_budget", "--tile-budget"},
                          {"dilation", "--dilation"},
                          {"selection", "--selection"}});
  }
}

void rethrow_as_option(const Error& e, const std::vector<std::pair<std::string, std::string>>& names) {
  const std::string what = e.what(), prefix = "lighthouse: ";
  for (const auto& n : names) {
    const std::string head = prefix + n.first + ":";
    if (what.rfind(head, 0) == 0) throw Error(prefix + n.second + what.substr(prefix.size() + n.first.size()));
  }
  throw e;
}

Scorer parse_scorer(const std::string& option, const std::string& value) {
  if (value == "norm") return Scorer::kNorm;
  if (value == "dilated") return Scorer::kDilated;
  fail(option, "norm or dilated", value);
}

const char* scorer_name(Scorer s) { return s == Scorer::kDilated ? "dilated" : "norm"; }

DType parse_dtype(const std::string& option, const std::string& value) {
  if (value == "float32") return DType::kFloat32;
  if (value == "bfloat16") return DType::kBFloat16;
  if (value == "float16") return DType::kFloat16;
  fail(option, "float32, bfloat16 or float16", value);
}

}  // namespace lighthouse::cli
