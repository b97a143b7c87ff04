// Loads a golden case (made by the paper authors' kernels): the repo keeps them
// xz-compressed in tests/data/golden, and cmake/GoldenVectors.cmake writes them
// decompressed to the build-tree folder it passes as LIGHTHOUSE_GOLDEN_DIR.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/json.h"
#include "io/safetensors.h"
#include "lighthouse/config.h"
#include "lighthouse/error.h"

namespace lhtest {

// Tile budget of the authors' kernel, which made every golden case.
constexpr int kGoldenTileBudget = 128;

inline std::string golden_dir() { return LIGHTHOUSE_GOLDEN_DIR; }

// Every case listed in manifest.json, in file order; with `scorer` set, only
// the cases made with that scorer.
inline std::vector<std::string> golden_case_names(const std::string& scorer = "") {
  std::ifstream in(golden_dir() + "/manifest.json");
  if (!in) lighthouse::fail("manifest.json", "a readable file in " + golden_dir(), "a missing file");
  std::stringstream text;
  text << in.rdbuf();
  const auto manifest = lighthouse::io::json::parse(text.str(), "manifest.json");
  std::vector<std::string> names;
  for (const auto& item : manifest) {
    if (!item.contains("name")) lighthouse::fail("manifest.json", "a \"name\" in every case", "a case without one");
    if (scorer.empty() || item.value("scorer", "") == scorer) names.push_back(item.at("name").get<std::string>());
  }
  return names;
}

struct GoldenCase {
  std::string name;
  int64_t batch = 0, heads = 0, head_dim = 0, seq_len = 0, kept = 0, pyramid_len = 0;
  lighthouse::Config config;
  lighthouse::io::SafeTensors file;

  std::vector<float> floats(const std::string& tensor) const {
    return lighthouse::io::to_float32(file.tensors.at(tensor));
  }
  std::vector<int32_t> ints(const std::string& tensor) const {
    return lighthouse::io::to_int32(file.tensors.at(tensor));
  }
};

// Metadata values are JSON texts: numbers as written, strings quoted.
inline int64_t golden_int(const lighthouse::io::SafeTensors& f, const std::string& key) {
  return lighthouse::io::json::to_index(lighthouse::io::json::parse(f.metadata.at(key), key), key);
}

inline GoldenCase load_golden(const std::string& name) {
  GoldenCase c;
  c.name = name;
  c.file = lighthouse::io::read_safetensors(golden_dir() + "/" + name + ".safetensors");
  c.batch = golden_int(c.file, "B");
  c.heads = golden_int(c.file, "H");
  c.head_dim = golden_int(c.file, "D");
  c.seq_len = golden_int(c.file, "N");
  c.kept = golden_int(c.file, "S");
  c.pyramid_len = golden_int(c.file, "pyramid_len");
  c.config.levels = static_cast<int>(golden_int(c.file, "levels"));
  c.config.pooling = static_cast<int>(golden_int(c.file, "pooling_factor"));
  c.config.topk = golden_int(c.file, "topk");
  c.config.tile_budget = kGoldenTileBudget;
  const std::string scorer = lighthouse::io::json::parse(c.file.metadata.at("scorer"), "scorer").get<std::string>();
  c.config.scorer = scorer == "dilated" ? lighthouse::Scorer::kDilated : lighthouse::Scorer::kNorm;
  if (scorer == "dilated") c.config.dilation = static_cast<int>(golden_int(c.file, "dilation"));
  return c;
}

}  // namespace lhtest
