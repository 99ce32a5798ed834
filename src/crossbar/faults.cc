#include "xbar/crossbar/faults.h"

#include <cmath>
#include <sstream>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/rng.h"

namespace xbar {

FaultInjector::FaultInjector(const FaultSpec& spec) : spec_(spec) {
  if (!spec.map_file.empty()) map_ = ParseFaultMap(ReadFile(spec.map_file), spec.map_file);
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
    for (const FaultMapEntry& e : it->second) {
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
