// lighthouse run: the CPU layer on tensors from a safetensors file, with the
// selection, output and (given grad_out) input gradients written to another.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "io/metadata.h"
#include "io/safetensors.h"
#include "lighthouse/detail/access.h"
#include "lighthouse/layer.h"

namespace lighthouse::cli {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const io::Tensor* find(const io::SafeTensors& f, const std::string& name) {
  const auto it = f.tensors.find(name);
  return it == f.tensors.end() ? nullptr : &it->second;
}

// Checks a tensor's dtype and shape; -1 in `expected` accepts any size.
void expect_tensor(const io::Tensor& t, const std::string& name, const std::string& dtype,
                   const std::vector<int64_t>& expected, const std::string& layout) {
  if (t.dtype != dtype) fail(name, "dtype " + dtype, t.dtype);
  bool ok = t.shape.size() == expected.size();
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || expected[i] == t.shape[i];
  if (!ok) {
    bool all_known = true;
    for (int64_t x : expected) all_known = all_known && x >= 0;
    fail(name, "a rank-" + std::to_string(expected.size()) + " tensor of shape " + layout +
                   (all_known ? " = " + shape_text(expected) : std::string()),
         shape_text(t.shape));
  }
}

// e's message under the option's name ("lighthouse: --input: <path>: ...").
Error nested(const std::string& option, const Error& e) {
  const std::string what = e.what(), prefix = "lighthouse: ";
  return Error(prefix + option + ": " + (what.rfind(prefix, 0) == 0 ? what.substr(prefix.size()) : what));
}

DType dtype_of(const std::string& name, const std::string& st) {
  if (st == "F32") return DType::kFloat32;
  if (st == "BF16") return DType::kBFloat16;
  if (st == "F16") return DType::kFloat16;
  fail(name, "dtype F32, BF16 or F16", st);
}

std::vector<float> as_float32(const std::vector<uint8_t>& bytes, DType dtype) {
  const int64_t n = static_cast<int64_t>(bytes.size()) / element_size(dtype);
  std::vector<float> out(static_cast<size_t>(n));
  detail::dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = detail::load<T>(bytes.data(), i);
  });
  return out;
}

// The config: flags first, then the file's metadata, else an error naming
// the flag.
Config config_from(const Args& args, const io::SafeTensors& file) {
  Config c;
  const struct {
    const char* flag;
    const char* key;
  } required[] = {{"--levels", "levels"}, {"--pooling", "pooling_factor"}, {"--topk", "topk"}};
  for (const auto& r : required) {
    if (args.has(r.flag)) continue;
    const std::optional<int64_t> v = io::metadata_int(file, r.key);
    if (!v) fail(r.flag, std::string("the option or metadata key '") + r.key + "' in --input", "neither");
    if (std::string(r.key) == "levels") c.levels = static_cast<int>(*v);
    if (std::string(r.key) == "pooling_factor") c.pooling = static_cast<int>(*v);
    if (std::string(r.key) == "topk") c.topk = *v;
  }
  if (const auto s = io::metadata_string(file, "scorer")) c.scorer = parse_scorer("metadata 'scorer'", *s);
  if (const auto d = io::metadata_int(file, "dilation")) c.dilation = static_cast<int>(*d);
  if (const auto s = io::metadata_string(file, "selection")) c.selection = parse_selection(*s);
  apply_config_options(args, c);
  return c;
}

}  // namespace

int run_file(const Args& args) {
  std::set<std::string> known = config_options();
  known.insert({"--input", "--output"});
  args.allow_only(known);
  const std::optional<std::string> input = args.text("--input"), output = args.text("--output");
  if (!input) fail("--input", "a safetensors file with q, k, v", "nothing");
  if (!output) fail("--output", "a path for the results", "nothing");

  io::SafeTensors file;
  try {
    file = io::read_safetensors(*input);
  } catch (const Error& e) {
    throw nested("--input", e);
  }
  const io::Tensor* q = find(file, "q");
  const io::Tensor* k = find(file, "k");
  const io::Tensor* v = find(file, "v");
  for (const auto& [t, name] : {std::pair{q, "q"}, std::pair{k, "k"}, std::pair{v, "v"}})
    if (t == nullptr) fail(std::string("--input: tensor ") + name, "present", "missing");
  const DType dtype = dtype_of("q", q->dtype);
  expect_tensor(*q, "q", q->dtype, {-1, -1, -1, -1}, "[B, N, H, D]");
  Dims dims;
  dims.batch = q->shape[0];
  dims.seq_len = q->shape[1];
  dims.heads = q->shape[2];
  dims.head_dim = q->shape[3];
  expect_tensor(*k, "k", q->dtype, {dims.batch, dims.seq_len, -1, dims.head_dim}, "[B, N, Hkv, D] (B, N, D of q)");
  dims.kv_heads = k->shape[2];
  expect_tensor(*v, "v", q->dtype, k->shape, "[B, N, Hkv, D] like k");

  const Config config = config_from(args, file);
  try {
    validate(config, dims);
  } catch (const Error& e) {
    rethrow_as_option(e, {{"seq_len", "q (N = shape[1])"},
                          {"heads % kv_heads", "q and k (H % Hkv)"},
                          {"heads", "q (H = shape[2])"},
                          {"kv_heads", "k (Hkv = shape[2])"},
                          {"head_dim", "q (D = shape[3])"},
                          {"batch", "q (B = shape[0])"}});
  }
  const Geometry geo = Geometry::make(config, dims.seq_len);

  LayerInputs in;
  in.dims = dims;
  in.dtype = dtype;
  in.q = q->data.data();
  in.k = k->data.data();
  in.v = v->data.data();
  const Strides q_st = contiguous_bnhd(dims.seq_len, dims.heads, dims.head_dim);
  const Strides kv_st = contiguous_bnhd(dims.seq_len, dims.kv_heads, dims.head_dim);
  in.q_strides = q_st;
  in.k_strides = in.v_strides = kv_st;
  const io::Tensor* sqk = find(file, "scores_qk");
  const io::Tensor* skq = find(file, "scores_kq");
  if ((sqk == nullptr) != (skq == nullptr))
    fail("--input: scores_qk / scores_kq", "both or neither", sqk ? "only scores_qk" : "only scores_kq");
  std::vector<float> given_qk, given_kq;
  if (sqk != nullptr) {
    const std::vector<int64_t> shape = {dims.batch, dims.kv_heads, geo.pyramid_len};
    expect_tensor(*sqk, "scores_qk", "F32", shape, "[B, Hkv, pyramid_len]");
    expect_tensor(*skq, "scores_kq", "F32", shape, "[B, Hkv, pyramid_len]");
    given_qk = io::to_float32(*sqk);
    given_kq = io::to_float32(*skq);
    in.scores_qk = given_qk.data();
    in.scores_kq = given_kq.data();
  }
  const io::Tensor* grad_out = find(file, "grad_out");
  if (grad_out != nullptr) expect_tensor(*grad_out, "grad_out", q->dtype, q->shape, "[B, N, H, D] like q");

  Layer layer(config, in);
  std::vector<uint8_t> out(q->data.size());
  layer.forward(out.data(), q_st);

  io::SafeTensors result;
  result.metadata = {{"levels", std::to_string(config.levels)},
                     {"pooling_factor", std::to_string(config.pooling)},
                     {"topk", std::to_string(config.topk)},
                     {"tile_budget", std::to_string(config.tile_budget)},
                     {"scorer", scorer_name(config.scorer)},
                     {"selection", selection_name(config.selection)},
                     {"S", std::to_string(geo.kept)},
                     {"pyramid_len", std::to_string(geo.pyramid_len)}};
  result.tensors["indices"] = io::from_int32(layer.indices(), {dims.batch, dims.kv_heads, geo.kept});
  result.tensors["out"] = io::from_float32(as_float32(out, dtype), q->shape);
  if (grad_out != nullptr) {
    std::vector<uint8_t> gq(q->data.size()), gk(k->data.size()), gv(v->data.size());
    layer.backward(grad_out->data.data(), q_st, gq.data(), q_st, gk.data(), kv_st, gv.data(), kv_st);
    result.tensors["grad_q"] = io::from_float32(as_float32(gq, dtype), q->shape);
    result.tensors["grad_k"] = io::from_float32(as_float32(gk, dtype), k->shape);
    result.tensors["grad_v"] = io::from_float32(as_float32(gv, dtype), v->shape);
  }
  try {
    io::write_safetensors(*output, result);
  } catch (const Error& e) {
    throw nested("--output", e);
  }
  std::printf("lighthouse run: N %lld, S %lld, wrote %s\n", static_cast<long long>(dims.seq_len),
              static_cast<long long>(geo.kept), output->c_str());
  return 0;
}

}  // namespace lighthouse::cli
