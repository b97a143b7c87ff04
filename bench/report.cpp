#include "report.h"

#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace bench {
namespace {

std::string quoted(const std::string& s) {
  std::ostringstream os;
  os << '"';
  for (char c : s) {
    if (c == '"' || c == '\\') os << '\\' << c;
    else if (static_cast<unsigned char>(c) < 0x20) os << "\\u" << std::hex << std::setw(4) << std::setfill('0') << int(c) << std::dec;
    else os << c;
  }
  os << '"';
  return os.str();
}

double gbps(const StageResult& s) { return s.median_ms > 0 ? s.bytes / (s.median_ms * 1e-3) / 1e9 : 0.0; }

}  // namespace

std::string to_json(const Report& r) {
  std::ostringstream os;
  os << std::setprecision(6);
  os << "{\n  \"command_line\": " << quoted(r.command_line) << ",\n  \"commit\": " << quoted(r.commit)
     << ",\n  \"gpu\": " << quoted(r.gpu) << ",\n  \"date\": " << quoted(r.date) << ",\n  \"dtype\": " << quoted(r.dtype)
     << ",\n  \"batch\": " << r.batch << ", \"heads\": " << r.heads << ", \"kv_heads\": " << r.kv_heads
     << ", \"head_dim\": " << r.head_dim << ", \"pooling\": " << r.pooling << ", \"reps\": " << r.reps
     << ",\n  \"copy_gbps\": " << r.copy_gbps << ",\n  \"sizes\": [";
  for (size_t i = 0; i < r.sizes.size(); ++i) {
    const SizeResult& z = r.sizes[i];
    os << (i ? ",\n" : "\n") << "    {\"seq_len\": " << z.seq_len << ", \"levels\": " << z.levels << ", \"topk\": " << z.topk
       << ", \"kept\": " << z.kept << ", \"forward_ms\": " << z.forward_ms << ", \"backward_ms\": " << z.backward_ms
       << ", \"stages\": [";
    for (size_t j = 0; j < z.stages.size(); ++j) {
      const StageResult& s = z.stages[j];
      os << (j ? ", " : "") << "\n      {\"stage\": " << quoted(s.stage) << ", \"median_ms\": " << s.median_ms
         << ", \"bytes\": " << std::fixed << std::setprecision(0) << s.bytes << std::defaultfloat << std::setprecision(6)
         << ", \"gbps\": " << gbps(s) << ", \"pct_of_copy\": " << (r.copy_gbps > 0 ? 100.0 * gbps(s) / r.copy_gbps : 0.0)
         << "}";
    }
    os << "]}";
  }
  os << "\n  ]\n}\n";
  return os.str();
}

std::string to_markdown(const Report& r) {
  std::ostringstream os;
  os << "# Lighthouse stage benchmark\n\n"
     << "- command: `" << r.command_line << "`\n- commit: " << r.commit << "\n- GPU: " << r.gpu << "\n- date: " << r.date
     << "\n- " << r.dtype << ", B=" << r.batch << ", H=" << r.heads << ", Hkv=" << r.kv_heads << ", D=" << r.head_dim
     << ", p=" << r.pooling << ", median of " << r.reps << " runs\n"
     << "- measured device-to-device copy: " << std::fixed << std::setprecision(1) << r.copy_gbps
     << " GB/s (read + write)\n\n";
  os << "| N | L | k | S | stage | ms | MB moved | GB/s | % of copy |\n|---:|---:|---:|---:|---|---:|---:|---:|---:|\n";
  for (const SizeResult& z : r.sizes) {
    for (const StageResult& s : z.stages)
      os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | " << s.stage << " | "
         << std::setprecision(3) << s.median_ms << " | " << std::setprecision(1) << s.bytes / 1e6 << " | " << gbps(s)
         << " | " << (r.copy_gbps > 0 ? 100.0 * gbps(s) / r.copy_gbps : 0.0) << " |\n";
    os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | **forward sum** | "
       << std::setprecision(3) << z.forward_ms << " | | | |\n";
    os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | **backward sum** | "
       << z.backward_ms << " | | | |\n";
  }
  return os.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << text;
  if (!out) throw std::runtime_error("error writing " + path);
}

}  // namespace bench
