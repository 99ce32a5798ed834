#include "xbar/crossbar/faults.h"

#include <cmath>
#include <sstream>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/rng.h"

namespace xbar {

FaultInjector::FaultInjector(const FaultSpec& spec) : spec_(spec) {
  if (spec.map_file.empty()) return;
  std::istringstream in(ReadFile(spec.map_file));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) f.push_back(cell);
    if (line_no == 1 && !f.empty() && f[0] == "crossbar") continue;  // header
    auto bad = [&](const std::string& why) {
      return InputError(StrCat(spec.map_file, ":", line_no, ": ", why, "; expected crossbar,row,col,SA0|SA1"));
    };
    if (f.size() != 4) throw bad(StrCat(f.size(), " fields"));
    int64_t v[3];
    for (int i = 0; i < 3; ++i) {
      try {
        size_t used = 0;
        v[i] = std::stoll(f[static_cast<size_t>(i)], &used);
        if (used != f[static_cast<size_t>(i)].size() || v[i] < 0) throw std::invalid_argument("x");
      } catch (const std::exception&) {
        throw bad(StrCat("'", f[static_cast<size_t>(i)], "' is not a non-negative integer"));
      }
    }
    int8_t state = 0;
    if (f[3] == "SA0") {
      state = 1;
    } else if (f[3] == "SA1") {
      state = 2;
    } else {
      throw bad(StrCat("unknown fault type '", f[3], "'"));
    }
    map_[v[0]].push_back({v[1], v[2], state, line_no});
  }
}

void FaultInjector::CheckAllUsed(int64_t crossbars) const {
  if (map_.empty()) return;
  const auto last = map_.rbegin();
  if (last->first >= crossbars) {
    throw InputError(StrCat(spec_.map_file, ":", last->second.front().line, ": crossbar ", last->first,
                            " does not exist: the mapping allocates ", crossbars, " crossbars (0..", crossbars - 1, ")"));
  }
}

torch::Tensor FaultInjector::Draw(int64_t crossbar, int64_t rows, int64_t cols) const {
  torch::Tensor state = torch::zeros({rows, cols}, torch::kInt8);
  auto* s = state.data_ptr<int8_t>();
  if (!spec_.map_file.empty()) {
    auto it = map_.find(crossbar);
    if (it == map_.end()) return state;
    for (const Entry& e : it->second) {
      if (e.row >= rows || e.col >= cols) {
        throw InputError(StrCat(spec_.map_file, ":", e.line, ": cell (", e.row, ", ", e.col, ") of crossbar ", crossbar,
                                " is outside its ", rows, " x ", cols, " allocated cells (rows x physical columns; "
                                "see simulate.json and docs/USER_GUIDE.md for the addressing)"));
      }
      s[e.row * cols + e.col] = e.state;
    }
    return state;
  }
  const double p = spec_.sa0_rate + spec_.sa1_rate;
  if (p <= 0) return state;
  Rng rng(DeriveSeed(spec_.seed, "faults", static_cast<uint64_t>(crossbar)));
  const int64_t n = rows * cols;
  if (p >= 1) {
    for (int64_t i = 0; i < n; ++i) s[i] = rng.Uniform01() * p < spec_.sa0_rate ? 1 : 2;
    return state;
  }
  // Geometric skips between faulty cells: O(number of faults), same law as a draw per cell.
  const double log_q = std::log1p(-p);
  int64_t i = -1;
  for (;;) {
    double u = rng.Uniform01();
    while (u <= 0) u = rng.Uniform01();
    const double skip = std::floor(std::log(u) / log_q);
    if (skip >= static_cast<double>(n - i)) break;
    i += 1 + static_cast<int64_t>(skip);
    if (i >= n) break;
    s[i] = rng.Uniform01() * p < spec_.sa0_rate ? 1 : 2;
  }
  return state;
}

}  // namespace xbar
