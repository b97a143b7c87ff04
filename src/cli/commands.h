// The lighthouse program's subcommands and the options they share. Each
// command returns the process exit code and throws lighthouse::Error for bad
// arguments or inputs.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "lighthouse/config.h"
#include "lighthouse/dtype.h"
#include "lighthouse/error.h"

namespace lighthouse::cli {

int bench_cpu(const Args& args);
int run_file(const Args& args);

// Layer options accepted by every command.
const std::set<std::string>& config_options();

// Overrides fields of config with --levels, --pooling, --topk, --tile-budget,
// --scorer and --dilation where given.
void apply_config_options(const Args& args, Config& config);

// Rethrows e with its leading field name replaced by the command-line
// option it comes from (names: field -> option), or unchanged.
[[noreturn]] void rethrow_as_option(const Error& e, const std::vector<std::pair<std::string, std::string>>& names);

Scorer parse_scorer(const std::string& option, const std::string& value);
const char* scorer_name(Scorer s);
DType parse_dtype(const std::string& option, const std::string& value);

}  // namespace lighthouse::cli
