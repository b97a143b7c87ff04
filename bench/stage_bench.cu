// lighthouse_stage_bench: times each CUDA stage with events (warm-up, then
// the median of many runs) on random bf16 inputs at several sequence lengths,
// after measuring the device-to-device copy bandwidth and 1 GiB read-only and
// write-only streams. Reports per stage the median time, the bytes the stage
// must move (and how many of them it writes), the achieved GB/s, its share of
// the copy bandwidth and of its floor (its reads at the read-only rate, its
// writes at the write-only rate), plus the forward
// (pool_score + select + gather + scatter, with pool_score making the pooled
// level-L q, k, v that gather copies) and backward sums; the unfused
// pool_score and gather, and gather (from pooled) and gather_backward with
// RoPE fused (rotate-half fp32 tables [N, D]), are timed too, outside the sums.
//
//   lighthouse_stage_bench [--sizes 32768,131072,524288,1048576] [--reps 30]
//       [--warmup 5] [--heads 8] [--kv-heads 8] [--head-dim 128]
//       [--json PATH] [--markdown PATH] [--commit SHA]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "lighthouse/config.h"
#include "lighthouse/cuda.h"
#include "lighthouse/detail/rope.h"
#include "lighthouse/dtype.h"
#include "lighthouse/geometry.h"
#include "lighthouse/params.h"
#include "report.h"

namespace {

void cuda_ok(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Device allocation released at scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { cuda_ok(cudaMalloc(&ptr_, bytes), "cudaMalloc"); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

// Uniform values in [-2, 2) from a hash of (seed, index), stored as T:
// random, never all zeros, and cheap to make at 2 GiB per tensor.
template <typename T>
__global__ void fill_random(T* out, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
    out[i] = lighthouse::from_float<T>(4.0f * u - 2.0f);
  }
}

template <typename T = lighthouse::bf16_t>
void randomize(const DeviceBuffer& b, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(b.bytes() / sizeof(T));
  fill_random<<<2048, 256>>>(b.as<T>(), n, seed);
  cuda_ok(cudaGetLastError(), "fill_random");
}

// Median time in ms of `fn` over `reps` event-timed runs after `warmup` runs.
double median_ms(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cuda_ok(cudaDeviceSynchronize(), "warm-up");
  std::vector<cudaEvent_t> start(reps), stop(reps);
  for (int i = 0; i < reps; ++i) {
    cuda_ok(cudaEventCreate(&start[i]), "cudaEventCreate");
    cuda_ok(cudaEventCreate(&stop[i]), "cudaEventCreate");
  }
  for (int i = 0; i < reps; ++i) {
    cuda_ok(cudaEventRecord(start[i]), "cudaEventRecord");
    fn();
    cuda_ok(cudaEventRecord(stop[i]), "cudaEventRecord");
  }
  cuda_ok(cudaDeviceSynchronize(), "timed runs");
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float t = 0.0f;
    cuda_ok(cudaEventElapsedTime(&t, start[i], stop[i]), "cudaEventElapsedTime");
    ms[i] = t;
    cudaEventDestroy(start[i]);
    cudaEventDestroy(stop[i]);
  }
  std::sort(ms.begin(), ms.end());
  return reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
}

// Device-to-device copy bandwidth (bytes read + written per second / 1e9).
double copy_gbps(int warmup, int reps) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer a(bytes), b(bytes);
  randomize(a, 1);
  const double ms = median_ms([&] { cuda_ok(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "copy"); },
                              warmup, reps);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

// Read-only and write-only streams over 1 GiB, 16-byte vectors, four per
// thread issued together. A stage that mostly writes (scatter,
// gather_backward) or mostly reads (scatter_backward) is bounded by these,
// not by the copy's even mix. The read kernel folds what it loads into one
// word per thread, stored only when it equals `never`, so the loads stay.
constexpr int kStreamVectors = 4;

__global__ void read_stream(const uint4* in, int64_t n, uint32_t never, uint32_t* sink) {
  const int64_t threads = int64_t{gridDim.x} * blockDim.x, first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  uint4 v[kStreamVectors];
#pragma unroll
  for (int j = 0; j < kStreamVectors; ++j) v[j] = first + j * threads < n ? in[first + j * threads] : uint4{};
  uint32_t acc = 0;
#pragma unroll
  for (int j = 0; j < kStreamVectors; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  if (acc == never) sink[first] = acc;
}

__global__ void write_stream(uint4* out, int64_t n) {
  const int64_t threads = int64_t{gridDim.x} * blockDim.x, first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const uint32_t x = static_cast<uint32_t>(first) * 0x9e3779b9u;
#pragma unroll
  for (int j = 0; j < kStreamVectors; ++j)
    if (first + j * threads < n) out[first + j * threads] = make_uint4(x, x + 1, x + 2, x + j);
}

struct StreamRates {
  double read_gbps = 0.0, write_gbps = 0.0, memset_gbps = 0.0;
};

StreamRates stream_rates(int warmup, int reps) {
  const size_t bytes = size_t{1} << 30;
  const int64_t n = static_cast<int64_t>(bytes / 16);
  const int threads = 256;
  const int64_t per_block = int64_t{threads} * kStreamVectors;
  const unsigned blocks = static_cast<unsigned>((n + per_block - 1) / per_block);
  DeviceBuffer a(bytes), sink(size_t(blocks) * threads * 4);
  randomize(a, 2);
  StreamRates r;
  const double read_ms = median_ms(
      [&] {
        read_stream<<<blocks, threads>>>(a.as<uint4>(), n, 0x5bd1e995u, sink.as<uint32_t>());
        cuda_ok(cudaGetLastError(), "read_stream");
      },
      warmup, reps);
  const double write_ms = median_ms(
      [&] {
        write_stream<<<blocks, threads>>>(a.as<uint4>(), n);
        cuda_ok(cudaGetLastError(), "write_stream");
      },
      warmup, reps);
  const double memset_ms = median_ms([&] { cuda_ok(cudaMemsetAsync(a.get(), 0x5a, bytes), "memset"); }, warmup, reps);
  r.read_gbps = bytes / (read_ms * 1e-3) / 1e9;
  r.write_gbps = bytes / (write_ms * 1e-3) / 1e9;
  r.memset_gbps = bytes / (memset_ms * 1e-3) / 1e9;
  return r;
}

struct Options {
  std::vector<long long> sizes{32768, 131072, 524288, 1048576};
  int reps = 30, warmup = 5;
  long long heads = 8, kv_heads = 8, head_dim = 128;
  std::string json, markdown, commit;
};

Options parse(int argc, char** argv) {
  Options o;
  if (const char* env = std::getenv("LIGHTHOUSE_COMMIT")) o.commit = env;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--sizes") {
      o.sizes.clear();
      std::stringstream ss(value());
      for (std::string item; std::getline(ss, item, ',');) o.sizes.push_back(std::stoll(item));
    } else if (a == "--reps") {
      o.reps = std::stoi(value());
    } else if (a == "--warmup") {
      o.warmup = std::stoi(value());
    } else if (a == "--heads") {
      o.heads = std::stoll(value());
    } else if (a == "--kv-heads") {
      o.kv_heads = std::stoll(value());
    } else if (a == "--head-dim") {
      o.head_dim = std::stoll(value());
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--markdown") {
      o.markdown = value();
    } else if (a == "--commit") {
      o.commit = value();
    } else {
      throw std::runtime_error("unknown argument " + a);
    }
  }
  if (o.reps < 20) throw std::runtime_error("--reps must be at least 20");
  if (o.commit.empty()) o.commit = "unknown";
  return o;
}

// One sequence length: L = 3, k = 2048 up to 512K; L = 4, k = 4096 from 1M.
bench::SizeResult run_size(long long n, const Options& o) {
  lighthouse::Config config;
  config.pooling = 4;
  config.levels = n >= 1048576 ? 4 : 3;
  config.topk = n >= 1048576 ? 4096 : 2048;
  const lighthouse::Geometry g = lighthouse::Geometry::make(config, n);
  lighthouse::Dims d;
  d.batch = 1;
  d.seq_len = n;
  d.heads = o.heads;
  d.kv_heads = o.kv_heads;
  d.head_dim = o.head_dim;
  const int64_t B = 1, H = o.heads, Hkv = o.kv_heads, D = o.head_dim, S = g.kept, es = 2;
  const lighthouse::DType t = lighthouse::DType::kBFloat16;
  const lighthouse::Strides q_st = lighthouse::contiguous_bnhd(n, H, D), kv_st = lighthouse::contiguous_bnhd(n, Hkv, D);
  const lighthouse::Strides qs_st = lighthouse::contiguous_bhsd(H, S, D), kvs_st = lighthouse::contiguous_bhsd(Hkv, S, D);
  const size_t q_bytes = size_t(B * n * H * D * es), kv_bytes = size_t(B * n * Hkv * D * es);
  const size_t qs_bytes = size_t(B * S * H * D * es), kvs_bytes = size_t(B * S * Hkv * D * es);
  const size_t score_bytes = size_t(B * Hkv * g.pyramid_len * 4);

  DeviceBuffer q(q_bytes), k(kv_bytes), v(kv_bytes), qk(score_bytes), kq(score_bytes);
  DeviceBuffer indices(size_t(B * Hkv * S * 4)), slots(size_t(B * Hkv * g.pyramid_len * 4));
  DeviceBuffer q_sel(qs_bytes), k_sel(kvs_bytes), v_sel(kvs_bytes), o_sel(qs_bytes), out(q_bytes);
  DeviceBuffer grad_out(q_bytes), grad_o_sel(qs_bytes), gq_sel(qs_bytes), gk_sel(kvs_bytes), gv_sel(kvs_bytes);
  DeviceBuffer gq(q_bytes), gk(kv_bytes), gv(kv_bytes);
  const int64_t nL = g.coarsest();
  const size_t pq_bytes = size_t(B * nL * H * D * es), pkv_bytes = size_t(B * nL * Hkv * D * es);
  DeviceBuffer pooled_q(pq_bytes), pooled_k(pkv_bytes), pooled_v(pkv_bytes);
  const lighthouse::Strides pq_st = lighthouse::contiguous_bnhd(nL, H, D), pkv_st = lighthouse::contiguous_bnhd(nL, Hkv, D);
  // RoPE tables: one fp32 [N, D] cos and sin for every batch row (batch_stride 0), rotate-half pairs; and
  // per-pair tables [N, D/2] (one value per pair).
  const size_t table_bytes = size_t(n * D * 4);
  DeviceBuffer rope_cos(table_bytes), rope_sin(table_bytes), pair_cos(table_bytes / 2), pair_sin(table_bytes / 2);
  uint64_t seed = 100;
  for (const DeviceBuffer* b : {&q, &k, &v, &o_sel, &grad_out, &gq_sel, &gk_sel, &gv_sel}) randomize(*b, seed++);
  for (const DeviceBuffer* b : {&rope_cos, &rope_sin, &pair_cos, &pair_sin}) randomize<float>(*b, seed++);
  lighthouse::RopeTables rope;
  rope.cos = rope_cos.as<float>(), rope.sin = rope_sin.as<float>();
  lighthouse::RopeTables pair_rope;
  pair_rope.cos = pair_cos.as<float>(), pair_rope.sin = pair_sin.as<float>(), pair_rope.per_pair = true;

  lighthouse::PoolScoreParams ps;
  ps.dims = d, ps.geo = g, ps.dtype = t;
  ps.q = q.get(), ps.q_strides = q_st, ps.k = k.get(), ps.k_strides = kv_st;
  ps.scores_qk = qk.as<float>(), ps.scores_kq = kq.as<float>();
  // The fused variant: pool_score also writes the pooled level-L q, k, v, and gather copies them.
  lighthouse::PoolScoreParams psf = ps;
  psf.v = v.get(), psf.v_strides = kv_st;
  psf.pooled_q = pooled_q.get(), psf.pooled_q_strides = pq_st;
  psf.pooled_k = pooled_k.get(), psf.pooled_k_strides = pkv_st;
  psf.pooled_v = pooled_v.get(), psf.pooled_v_strides = pkv_st;
  lighthouse::SelectParams sp;
  sp.dims = d, sp.geo = g;
  sp.scores_qk = qk.as<float>(), sp.scores_kq = kq.as<float>();
  sp.indices = indices.as<int32_t>(), sp.slots = slots.as<int32_t>();
  lighthouse::GatherParams gp;
  gp.dims = d, gp.geo = g, gp.dtype = t;
  gp.q = q.get(), gp.q_strides = q_st, gp.k = k.get(), gp.k_strides = kv_st, gp.v = v.get(), gp.v_strides = kv_st;
  gp.indices = indices.as<int32_t>();
  gp.q_sel = q_sel.get(), gp.q_sel_strides = qs_st, gp.k_sel = k_sel.get(), gp.k_sel_strides = kvs_st;
  gp.v_sel = v_sel.get(), gp.v_sel_strides = kvs_st;
  lighthouse::GatherParams gpf = gp;
  gpf.pooled_q = pooled_q.get(), gpf.pooled_q_strides = pq_st;
  gpf.pooled_k = pooled_k.get(), gpf.pooled_k_strides = pkv_st;
  gpf.pooled_v = pooled_v.get(), gpf.pooled_v_strides = pkv_st;
  lighthouse::ScatterParams cp;
  cp.dims = d, cp.geo = g, cp.dtype = t;
  cp.o_sel = o_sel.get(), cp.o_sel_strides = qs_st, cp.slots = slots.as<int32_t>();
  cp.out = out.get(), cp.out_strides = q_st;
  lighthouse::ScatterBackwardParams bp;
  bp.dims = d, bp.geo = g, bp.dtype = t;
  bp.grad_out = grad_out.get(), bp.grad_out_strides = q_st, bp.indices = indices.as<int32_t>();
  bp.grad_o_sel = grad_o_sel.get(), bp.grad_o_sel_strides = qs_st;
  lighthouse::GatherBackwardParams gb;
  gb.dims = d, gb.geo = g, gb.dtype = t;
  gb.grad_q_sel = gq_sel.get(), gb.grad_q_sel_strides = qs_st, gb.grad_k_sel = gk_sel.get();
  gb.grad_k_sel_strides = kvs_st, gb.grad_v_sel = gv_sel.get(), gb.grad_v_sel_strides = kvs_st;
  gb.slots = slots.as<int32_t>();
  gb.grad_q = gq.get(), gb.grad_q_strides = q_st, gb.grad_k = gk.get(), gb.grad_k_strides = kv_st;
  gb.grad_v = gv.get(), gb.grad_v_strides = kv_st;
  lighthouse::GatherParams gpf_rope = gpf;
  gpf_rope.rope = rope;
  lighthouse::GatherBackwardParams gb_rope = gb;
  gb_rope.rope = rope;
  lighthouse::GatherParams gpf_pairs = gpf;
  gpf_pairs.rope = pair_rope;
  lighthouse::GatherBackwardParams gb_pairs = gb;
  gb_pairs.rope = pair_rope;

  // A real selection for the later stages, and the rows they touch.
  lighthouse::cuda::pool_score(psf, nullptr);
  lighthouse::cuda::select(sp, nullptr);
  cuda_ok(cudaDeviceSynchronize(), "selection");
  std::vector<int32_t> idx(size_t(B * Hkv * S));
  cuda_ok(cudaMemcpy(idx.data(), indices.get(), idx.size() * 4, cudaMemcpyDeviceToHost), "indices");
  // Base rows the kept entries pool (all levels, or only the finer ones when
  // level L comes pooled), and rows of the scatter windows; per (batch, KV head).
  // Also the table rows RoPE reads: those of the positions kept entries rotate at.
  double block_rows = 0.0, fine_rows = 0.0, coarse_entries = 0.0, window_rows = 0.0;
  std::vector<bool> rotated_at(size_t(n), false);
  for (size_t i = 0; i < idx.size(); ++i) {
    const int level = g.level_of(idx[i]);
    const int64_t local = idx[i] - g.offset(level);
    rotated_at[size_t(lighthouse::detail::rope_position(g, level, local))] = true;
    block_rows += double(g.block(level));
    if (level < g.levels) fine_rows += double(g.block(level));
    else coarse_entries += 1.0;
    const int64_t first = g.window_first(level, local), last = g.window_last(level, local);
    window_rows += last >= first ? double(last - first + 1) : 0.0;
  }
  const double row = double(D * es), group = double(H / Hkv);
  // RoPE: the cos and sin rows (D fp32 each) at each distinct position a kept
  // entry rotates at, read once: every head and KV head shares the tables
  // (batch_stride 0, B = 1), and gather_backward's repeats of an entry's row
  // over the positions it covers are cache hits, as the per-head data reads are.
  const double rope_bytes =
      double(std::count(rotated_at.begin(), rotated_at.end(), true)) * 2.0 * double(D) * 4.0;
  const double pyr_ints = double(B * Hkv * g.pyramid_len) * 4;

  bench::SizeResult r;
  r.seq_len = n, r.kept = S, r.levels = g.levels, r.topk = g.topk;
  // bytes: read and written; written: the part written (the rest is read).
  auto stage = [&](const char* name, double bytes, double written, const std::function<void()>& fn) {
    bench::StageResult s;
    s.stage = name;
    s.bytes = bytes;
    s.written = written;
    s.median_ms = median_ms(fn, o.warmup, o.reps);
    r.stages.push_back(s);
    return s.median_ms;
  };
  // Candidate scores read (coarsest entries plus m * p children per finer
  // level and tile), indices written, slots filled and written.
  const double select_bytes =
      double(B * Hkv) * 8.0 * double(g.coarsest() + (g.levels - 1) * g.pooling * g.topk) + double(B * Hkv * S) * 4 + pyr_ints;
  const double sel_out = double(qs_bytes + 2 * kvs_bytes), pooled_bytes = double(pq_bytes + 2 * pkv_bytes);
  // Forward: the fused variant (pool_score makes the pooled level-L q, k, v; gather copies them).
  const double score_out = 2.0 * double(score_bytes);
  r.forward_ms += stage("pool_score+pooled", double(q_bytes + 2 * kv_bytes) + score_out + pooled_bytes,
                        score_out + pooled_bytes, [&] { lighthouse::cuda::pool_score(psf, nullptr); });
  r.forward_ms += stage("select", select_bytes, double(B * Hkv * S) * 4 + pyr_ints,
                        [&] { lighthouse::cuda::select(sp, nullptr); });
  const double gather_pooled_bytes = (fine_rows + coarse_entries) * row * (group + 2) + sel_out;
  r.forward_ms += stage("gather<-pooled", gather_pooled_bytes, sel_out, [&] { lighthouse::cuda::gather(gpf, nullptr); });
  r.forward_ms += stage("scatter", double(qs_bytes + q_bytes) + pyr_ints, double(q_bytes),
                        [&] { lighthouse::cuda::scatter(cp, nullptr); });
  r.backward_ms += stage("scatter_backward", window_rows * row * group + double(qs_bytes), double(qs_bytes),
                         [&] { lighthouse::cuda::scatter_backward(bp, nullptr); });
  const double grads_out = double(q_bytes + 2 * kv_bytes);
  const double gather_backward_bytes = double(qs_bytes + 2 * kvs_bytes) + grads_out + pyr_ints;
  r.backward_ms += stage("gather_backward", gather_backward_bytes, grads_out,
                         [&] { lighthouse::cuda::gather_backward(gb, nullptr); });
  // The unfused variants, for comparison (not in the sums).
  stage("pool_score", double(q_bytes + kv_bytes) + score_out, score_out,
        [&] { lighthouse::cuda::pool_score(ps, nullptr); });
  stage("gather", block_rows * row * (group + 2) + sel_out, sel_out, [&] { lighthouse::cuda::gather(gp, nullptr); });
  // With RoPE fused (not in the sums): the rows above plus the table rows read.
  stage("gather<-pooled (rope)", gather_pooled_bytes + rope_bytes, sel_out,
        [&] { lighthouse::cuda::gather(gpf_rope, nullptr); });
  stage("gather_backward (rope)", gather_backward_bytes + rope_bytes, grads_out,
        [&] { lighthouse::cuda::gather_backward(gb_rope, nullptr); });
  // The same with per-pair tables: half the table rows' bytes.
  stage("gather<-pooled (rope pairs)", gather_pooled_bytes + rope_bytes / 2, sel_out,
        [&] { lighthouse::cuda::gather(gpf_pairs, nullptr); });
  stage("gather_backward (rope pairs)", gather_backward_bytes + rope_bytes / 2, grads_out,
        [&] { lighthouse::cuda::gather_backward(gb_pairs, nullptr); });
  cuda_ok(cudaDeviceSynchronize(), "stages");
  return r;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    bench::Report report;
    for (int i = 0; i < argc; ++i) report.command_line += (i ? " " : "") + std::string(argv[i]);
    report.commit = o.commit;
    int device = 0;
    cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    report.gpu = prop.name;
    report.date = utc_now();
    report.dtype = "bfloat16";
    report.batch = 1, report.heads = o.heads, report.kv_heads = o.kv_heads, report.head_dim = o.head_dim;
    report.pooling = 4, report.reps = o.reps;
    report.copy_gbps = copy_gbps(o.warmup, o.reps);
    const StreamRates rates = stream_rates(o.warmup, o.reps);
    report.read_gbps = rates.read_gbps, report.write_gbps = rates.write_gbps, report.memset_gbps = rates.memset_gbps;
    std::printf("device-to-device copy: %.1f GB/s; read-only %.1f GB/s, write-only %.1f GB/s (cudaMemset %.1f GB/s)\n",
                report.copy_gbps, report.read_gbps, report.write_gbps, report.memset_gbps);
    for (long long n : o.sizes) {
      report.sizes.push_back(run_size(n, o));
      const bench::SizeResult& z = report.sizes.back();
      for (const auto& s : z.stages)
        std::printf("N=%-8lld %-28s %8.3f ms %9.1f MB %7.1f GB/s %5.1f%% of copy %5.1f%% of floor\n", n,
                    s.stage.c_str(), s.median_ms, s.bytes / 1e6, s.bytes / (s.median_ms * 1e-3) / 1e9,
                    100.0 * s.bytes / (s.median_ms * 1e-3) / 1e9 / report.copy_gbps,
                    bench::pct_of_floor(report, s));
      std::printf("N=%-8lld forward %.3f ms, backward %.3f ms\n", n, z.forward_ms, z.backward_ms);
    }
    if (!o.json.empty()) bench::write_file(o.json, bench::to_json(report));
    if (!o.markdown.empty()) bench::write_file(o.markdown, bench::to_markdown(report));
    std::cout << bench::to_markdown(report);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lighthouse_stage_bench: %s\n", e.what());
    return 1;
  }
}
