// Helper for the lighthouse program's ctest entries:
//   cli_check golden LIGHTHOUSE GOLDEN.safetensors WORKDIR
//       converts a golden case to the program's input layout, runs
//       `LIGHTHOUSE run`, and compares indices (exact), out and the input
//       gradients (1e-5 relative) with the golden tensors;
//   cli_check prepare GOLDEN.safetensors OUT.safetensors
//       writes the converted input only;
//   cli_check bad-rank OUT.safetensors
//       writes an input whose q has rank 3;
//   cli_check expect zero|nonzero REGEX COMMAND...
//       runs COMMAND and requires that exit status and REGEX in its output.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include <sys/wait.h>

#include "io/metadata.h"
#include "io/safetensors.h"
#include "lighthouse/error.h"

namespace {

namespace io = lighthouse::io;

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command with stdout and stderr captured; returns its exit
// status, or -1 when it did not exit normally.
int run(const std::string& command, std::string& output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  output.clear();
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// [B, H, N, D] -> [B, N, H, D]
std::vector<float> bhnd_to_bnhd(const std::vector<float>& x, int64_t B, int64_t H, int64_t N, int64_t D) {
  std::vector<float> y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) y[((b * N + n) * H + h) * D + d] = x[((b * H + h) * N + n) * D + d];
  return y;
}

double rel_error(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

io::SafeTensors prepare(const io::SafeTensors& golden) {
  io::SafeTensors in;
  const io::Tensor& q = golden.tensors.at("q");
  const int64_t B = q.shape[0], N = q.shape[1], H = q.shape[2], D = q.shape[3];
  for (const char* name : {"q", "k", "v"}) in.tensors[name] = golden.tensors.at(name);
  in.tensors["grad_out"] = io::from_float32(bhnd_to_bnhd(io::to_float32(golden.tensors.at("grad_out")), B, H, N, D), q.shape);
  for (const char* key : {"levels", "pooling_factor", "topk", "scorer", "dilation"})
    if (const auto v = io::metadata_string(golden, key)) in.metadata[key] = *v;
  return in;
}

int golden(const std::string& exe, const std::string& golden_path, const std::string& workdir) {
  const io::SafeTensors g = io::read_safetensors(golden_path);
  const std::string stem = golden_path.substr(golden_path.find_last_of('/') + 1);
  const std::string input = workdir + "/in_" + stem, output = workdir + "/out_" + stem;
  io::write_safetensors(input, prepare(g));
  std::remove(output.c_str());
  std::string log;
  const int status = run(quoted(exe) + " run --input " + quoted(input) + " --output " + quoted(output), log);
  std::cout << log;
  if (status != 0) {
    std::cerr << "lighthouse run exited with " << status << "\n";
    return 1;
  }
  const io::SafeTensors r = io::read_safetensors(output);
  const io::Tensor& q = g.tensors.at("q");
  const int64_t B = q.shape[0], N = q.shape[1], H = q.shape[2], D = q.shape[3];
  int failures = 0;
  if (io::to_int32(r.tensors.at("indices")) != io::to_int32(g.tensors.at("indices"))) {
    std::cerr << "indices differ from the golden selection\n";
    ++failures;
  }
  const struct {
    const char* name;
    std::vector<float> ref;
  } checks[] = {{"out", bhnd_to_bnhd(io::to_float32(g.tensors.at("out")), B, H, N, D)},
                {"grad_q", io::to_float32(g.tensors.at("grad_q"))},
                {"grad_k", io::to_float32(g.tensors.at("grad_k"))},
                {"grad_v", io::to_float32(g.tensors.at("grad_v"))}};
  for (const auto& c : checks) {
    const double err = rel_error(io::to_float32(r.tensors.at(c.name)), c.ref);
    std::cout << c.name << " relative error " << err << "\n";
    if (!(err < 1e-5)) {
      std::cerr << c.name << ": relative error " << err << " is not below 1e-5\n";
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

int expect(bool want_zero, const std::string& pattern, int argc, char** argv, int first) {
  std::string command;
  for (int i = first; i < argc; ++i) command += (command.empty() ? "" : " ") + quoted(argv[i]);
  std::string log;
  const int status = run(command, log);
  std::cout << log;
  if (status < 0) {
    std::cerr << "the command did not exit normally\n";
    return 1;
  }
  if (want_zero != (status == 0)) {
    std::cerr << "exit status " << status << ", expected " << (want_zero ? "zero" : "non-zero") << "\n";
    return 1;
  }
  if (!std::regex_search(log, std::regex(pattern))) {
    std::cerr << "output does not match /" << pattern << "/\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "golden" && argc == 5) return golden(argv[2], argv[3], argv[4]);
    if (mode == "prepare" && argc == 4) {
      io::write_safetensors(argv[3], prepare(io::read_safetensors(argv[2])));
      return 0;
    }
    if (mode == "bad-rank" && argc == 3) {
      io::SafeTensors f;
      f.tensors["q"] = io::from_float32(std::vector<float>(4096 * 16), {1, 4096, 16});
      f.tensors["k"] = io::from_float32(std::vector<float>(4096 * 16), {1, 4096, 1, 16});
      f.tensors["v"] = f.tensors["k"];
      io::write_safetensors(argv[2], f);
      return 0;
    }
    if (mode == "expect" && argc >= 5) return expect(std::string(argv[2]) == "zero", argv[3], argc, argv, 4);
    std::cerr << "usage: cli_check golden|prepare|bad-rank|expect ... (see the source)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
