// Results of the stage benchmark and their JSON and markdown renderings.
#pragma once

#include <string>
#include <vector>

namespace bench {

struct StageResult {
  std::string stage;
  double median_ms = 0.0;
  double bytes = 0.0;    // bytes the stage must move: each input read once per use, each output written once
  double written = 0.0;  // the part of bytes written (the rest is read)
};

struct SizeResult {
  long long seq_len = 0, kept = 0;
  int levels = 0;
  long long topk = 0;
  std::vector<StageResult> stages;
  double forward_ms = 0.0, backward_ms = 0.0;
};

struct Report {
  std::string command_line, commit, gpu, date, dtype;
  long long batch = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int pooling = 0, reps = 0;
  double copy_gbps = 0.0;  // measured device-to-device copy, bytes read + written per second / 1e9
  // Measured 1 GiB streams that only read, only write (a kernel) and cudaMemset, bytes per second / 1e9.
  double read_gbps = 0.0, write_gbps = 0.0, memset_gbps = 0.0;
  std::vector<SizeResult> sizes;
};

// The stage's time if its reads ran at the read-only rate and its writes at
// the faster of the two write-only rates (0 when the rates are unknown).
double floor_ms(const Report& r, const StageResult& s);
// floor_ms as a percentage of the stage's measured time.
double pct_of_floor(const Report& r, const StageResult& s);

std::string to_json(const Report& r);
std::string to_markdown(const Report& r);
// Writes text to path; throws std::runtime_error when it cannot.
void write_file(const std::string& path, const std::string& text);

}  // namespace bench
