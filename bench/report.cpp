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

double floor_ms(const Report& r, const StageResult& s) {
  const double write = r.write_gbps > r.memset_gbps ? r.write_gbps : r.memset_gbps;
  if (r.read_gbps <= 0 || write <= 0) return 0.0;
  return ((s.bytes - s.written) / r.read_gbps + s.written / write) / 1e6;
}

double pct_of_floor(const Report& r, const StageResult& s) {
  return s.median_ms > 0 ? 100.0 * floor_ms(r, s) / s.median_ms : 0.0;
}

std::string to_json(const Report& r) {
  std::ostringstream os;
  os << std::setprecision(6);
  os << "{\n  \"command_line\": " << quoted(r.command_line) << ",\n  \"commit\": " << quoted(r.commit)
     << ",\n  \"gpu\": " << quoted(r.gpu) << ",\n  \"date\": " << quoted(r.date) << ",\n  \"dtype\": " << quoted(r.dtype)
     << ",\n  \"batch\": " << r.batch << ", \"heads\": " << r.heads << ", \"kv_heads\": " << r.kv_heads
     << ", \"head_dim\": " << r.head_dim << ", \"pooling\": " << r.pooling << ", \"reps\": " << r.reps
     << ",\n  \"copy_gbps\": " << r.copy_gbps << ", \"read_gbps\": " << r.read_gbps << ", \"write_gbps\": " << r.write_gbps
     << ", \"memset_gbps\": " << r.memset_gbps << ",\n  \"sizes\": [";
  for (size_t i = 0; i < r.sizes.size(); ++i) {
    const SizeResult& z = r.sizes[i];
    os << (i ? ",\n" : "\n") << "    {\"seq_len\": " << z.seq_len << ", \"levels\": " << z.levels << ", \"topk\": " << z.topk
       << ", \"kept\": " << z.kept << ", \"forward_ms\": " << z.forward_ms << ", \"backward_ms\": " << z.backward_ms
       << ", \"stages\": [";
    for (size_t j = 0; j < z.stages.size(); ++j) {
      const StageResult& s = z.stages[j];
      os << (j ? ", " : "") << "\n      {\"stage\": " << quoted(s.stage) << ", \"median_ms\": " << s.median_ms
         << ", \"bytes\": " << std::fixed << std::setprecision(0) << s.bytes << ", \"written\": " << s.written
         << std::defaultfloat << std::setprecision(6) << ", \"gbps\": " << gbps(s)
         << ", \"pct_of_copy\": " << (r.copy_gbps > 0 ? 100.0 * gbps(s) / r.copy_gbps : 0.0)
         << ", \"floor_ms\": " << floor_ms(r, s) << ", \"pct_of_floor\": " << pct_of_floor(r, s) << "}";
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
     << " GB/s (read + write)\n"
     << "- measured 1 GiB streams: read-only " << r.read_gbps << " GB/s, write-only " << r.write_gbps
     << " GB/s (cudaMemset " << r.memset_gbps << " GB/s)\n"
     << "- floor: the stage's reads at the read-only rate plus its writes at the faster write-only rate\n\n";
  os << "| N | L | k | S | stage | ms | MB moved | MB written | GB/s | % of copy | floor ms | % of floor |\n"
     << "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const SizeResult& z : r.sizes) {
    for (const StageResult& s : z.stages)
      os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | " << s.stage << " | "
         << std::setprecision(3) << s.median_ms << " | " << std::setprecision(1) << s.bytes / 1e6 << " | "
         << s.written / 1e6 << " | " << gbps(s) << " | " << (r.copy_gbps > 0 ? 100.0 * gbps(s) / r.copy_gbps : 0.0)
         << " | " << std::setprecision(3) << floor_ms(r, s) << " | " << std::setprecision(1) << pct_of_floor(r, s)
         << " |\n";
    os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | **forward sum** | "
       << std::setprecision(3) << z.forward_ms << " | | | | | | |\n";
    os << "| " << z.seq_len << " | " << z.levels << " | " << z.topk << " | " << z.kept << " | **backward sum** | "
       << z.backward_ms << " | | | | | | |\n";
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
