// lighthouse bench-cpu: the CPU layer's forward and backward on seeded
// random inputs, per-stage median wall times and a checksum.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/layer.h"
#include "lighthouse/threading.h"

namespace lighthouse::cli {
namespace {

// Standard normal values stored as dtype (float32 / bfloat16 / float16).
std::vector<uint8_t> random_tensor(int64_t n, DType dtype, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<uint8_t> bytes(static_cast<size_t>(n * element_size(dtype)));
  detail::dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    for (int64_t i = 0; i < n; ++i) detail::store<T>(bytes.data(), i, normal(rng));
  });
  return bytes;
}

double checksum(const std::vector<uint8_t>& bytes, DType dtype) {
  double sum = 0;
  detail::dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    const int64_t n = static_cast<int64_t>(bytes.size()) / element_size(dtype);
    for (int64_t i = 0; i < n; ++i) sum += detail::load<T>(bytes.data(), i);
  });
  return sum;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

}  // namespace

int bench_cpu(const Args& args) {
  std::set<std::string> known = config_options();
  known.insert({"--seq-len", "--batch", "--heads", "--kv-heads", "--head-dim", "--dtype", "--threads", "--seed",
                "--repeats"});
  args.allow_only(known);

  // Default: a 16K-token layer with 4 heads of 64 that keeps 3,072 entries and
  // runs forward and backward in about a second on two cores.
  Config config;
  config.levels = 3;
  config.pooling = 4;
  config.topk = 256;
  apply_config_options(args, config);
  Dims dims;
  dims.seq_len = args.integer("--seq-len", 16384);
  dims.batch = args.integer("--batch", 1);
  dims.heads = args.integer("--heads", 4);
  dims.kv_heads = args.integer("--kv-heads", dims.heads);
  dims.head_dim = args.integer("--head-dim", 64);
  const DType dtype = parse_dtype("--dtype", args.text("--dtype", "float32"));
  const int64_t threads = args.integer("--threads", 0), repeats = args.integer("--repeats", 3);
  const int64_t seed = args.integer("--seed", 0);
  if (threads < 0) fail("--threads", "a count >= 0 (0: all cores)", threads);
  if (repeats < 1) fail("--repeats", "at least 1", repeats);
  try {
    validate(config, dims);
  } catch (const Error& e) {
    rethrow_as_option(e, {{"seq_len", "--seq-len"},
                          {"batch", "--batch"},
                          {"heads", "--heads"},
                          {"kv_heads", "--kv-heads"},
                          {"heads % kv_heads", "--heads % --kv-heads"},
                          {"head_dim", "--head-dim"}});
  }
  set_num_threads(static_cast<int>(threads));

  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  const int64_t nq = dims.batch * dims.seq_len * dims.heads * dims.head_dim;
  const int64_t nkv = dims.batch * dims.seq_len * dims.kv_heads * dims.head_dim;
  const std::vector<uint8_t> q = random_tensor(nq, dtype, rng), k = random_tensor(nkv, dtype, rng);
  const std::vector<uint8_t> v = random_tensor(nkv, dtype, rng), grad_out = random_tensor(nq, dtype, rng);
  std::vector<uint8_t> out(q.size()), grad_q(q.size()), grad_k(k.size()), grad_v(v.size());
  const Strides q_st = contiguous_bnhd(dims.seq_len, dims.heads, dims.head_dim);
  const Strides kv_st = contiguous_bnhd(dims.seq_len, dims.kv_heads, dims.head_dim);

  LayerInputs in;
  in.dims = dims;
  in.dtype = dtype;
  in.q = q.data();
  in.q_strides = q_st;
  in.k = k.data();
  in.k_strides = kv_st;
  in.v = v.data();
  in.v_strides = kv_st;
  Layer layer(config, in);

  const char* names[] = {"pool_score",       "select",             "gather",         "attention",
                         "scatter",          "scatter_backward",   "attention_backward", "gather_backward"};
  std::vector<std::vector<double>> stage(8);
  std::vector<double> forward_total, backward_total, layer_total, outside;
  for (int64_t r = 0; r < repeats; ++r) {
    layer.forward(out.data(), q_st);
    layer.backward(grad_out.data(), q_st, grad_q.data(), q_st, grad_k.data(), kv_st, grad_v.data(), kv_st);
    const StageTimes& t = layer.times();
    const double x[] = {t.pool_score,       t.select,           t.gather,         t.attention,
                        t.scatter,          t.scatter_backward, t.attention_backward, t.gather_backward};
    for (int i = 0; i < 8; ++i) stage[i].push_back(x[i] * 1e3);
    const double fwd = x[0] + x[1] + x[2] + x[3] + x[4], bwd = x[5] + x[6] + x[7];
    forward_total.push_back(fwd * 1e3);
    backward_total.push_back(bwd * 1e3);
    layer_total.push_back((fwd + bwd) * 1e3);
    outside.push_back(100.0 * (fwd + bwd - x[3] - x[6]) / (fwd + bwd));
  }

  const Geometry& g = layer.geometry();
  std::printf("lighthouse bench-cpu: batch %lld, heads %lld, kv_heads %lld, head_dim %lld, dtype %s, scorer %s, selection %s\n",
              static_cast<long long>(dims.batch), static_cast<long long>(dims.heads),
              static_cast<long long>(dims.kv_heads), static_cast<long long>(dims.head_dim), dtype_name(dtype).c_str(),
              scorer_name(config.scorer), selection_name(config.selection));
  std::printf("levels %d, pooling %d, topk %lld, tile_budget %d, threads %d, repeats %lld, seed %lld\n",
              config.levels, config.pooling, static_cast<long long>(config.topk), config.tile_budget, num_threads(),
              static_cast<long long>(repeats), static_cast<long long>(seed));
  std::printf("N    %lld\nS    %lld\nS/N  %.4f\n", static_cast<long long>(g.seq_len), static_cast<long long>(g.kept),
              static_cast<double>(g.kept) / static_cast<double>(g.seq_len));
  std::printf("%-22s %12s\n", "stage", "median ms");
  for (int i = 0; i < 8; ++i) std::printf("%-22s %12.3f\n", names[i], median(stage[i]));
  std::printf("%-22s %12.3f\n%-22s %12.3f\n%-22s %12.3f\n", "forward", median(forward_total), "backward",
              median(backward_total), "layer", median(layer_total));
  std::printf("outside dense attention  %.1f %% of the layer (median)\n", median(outside));
  std::printf("checksum out %.9e grad_q %.9e grad_k %.9e grad_v %.9e\n", checksum(out, dtype), checksum(grad_q, dtype),
              checksum(grad_k, dtype), checksum(grad_v, dtype));
  return 0;
}

}  // namespace lighthouse::cli
