// The lighthouse program: CPU benchmarks of the layer and the layer run on
// tensors from a safetensors file.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "args.h"
#include "commands.h"
#include "lighthouse/error.h"

namespace {

const char* kHelp = R"(usage: lighthouse <command> [options]

commands:
  bench-cpu   run the CPU layer (forward + backward) on seeded standard-normal
              inputs; print N, S, S/N, per-stage median times, the share of
              the layer spent outside dense attention and a checksum
      --seq-len N       sequence length (default 16384)
      --batch B         batch size (default 1)
      --heads H         query heads (default 4)
      --kv-heads Hkv    key/value heads, dividing H (default H)
      --head-dim D      head dimension (default 64)
      --dtype T         float32 | bfloat16 | float16 (default float32)
      --threads T       CPU threads, 0 = all cores (default 0)
      --seed S          random seed (default 0)
      --repeats R       timed repetitions, medians reported (default 3)
      plus the layer options below (defaults: levels 3, pooling 4, topk 256)

  run         run the CPU layer on tensors from a safetensors file
      --input IN        q [B,N,H,D], k and v [B,N,Hkv,D] (F32, BF16 or F16);
                        optional scores_qk, scores_kq [B,Hkv,pyramid_len] F32
                        (select from them instead of scoring) and grad_out
                        [B,N,H,D] (also compute input gradients)
      --output OUT      writes indices [B,Hkv,S] I32, out [B,N,H,D] F32 and,
                        with grad_out, grad_q, grad_k, grad_v F32
      layer options default to the input's metadata keys levels,
      pooling_factor, topk, scorer and dilation

layer options:
  --levels L          pyramid levels >= 2
  --pooling p         pooling factor, a power of two >= 2
  --topk k            entries selected per level and KV head, a multiple of m
  --tile-budget m     entries one selection tile picks per level (default 128)
  --scorer S          norm | dilated (default norm)
  --dilation d        residue classes of the dilated scorer (default 4)
  --selection R       paper | lagged | causal (default paper; see docs/semantics.md)

  lighthouse --help   this text
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kHelp, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kHelp, stdout);
    return 0;
  }
  try {
    for (int i = 2; i < argc; ++i)
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        std::fputs(kHelp, stdout);
        return 0;
      }
    const lighthouse::cli::Args args(argc, argv, 2);
    if (command == "bench-cpu") return lighthouse::cli::bench_cpu(args);
    if (command == "run") return lighthouse::cli::run_file(args);
    lighthouse::fail("command", "bench-cpu or run (see lighthouse --help)", command);
  } catch (const lighthouse::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lighthouse: error: %s\n", e.what());
    return 1;
  }
}
