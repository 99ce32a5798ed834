// xbar/crossbar/faults.h — stuck-at faults of physical cells (SPEC §4).
//
// Faults are drawn per physical crossbar, i.i.d. per cell with the stuck-off (SA0, cell at G_min)
// and stuck-on (SA1, cell at G_max) rates, from a stream seeded by (seed, crossbar index): the same
// seed gives the same fault map whatever else changes. Or they come from a measured map, a CSV
// file with lines `crossbar,row,col,type` (type SA0 or SA1; a header line is allowed), crossbars
// numbered in mapping order as listed in simulate.json.
//
//   FaultInjector inj(spec);
//   torch::Tensor state = inj.Draw(/*crossbar=*/3, 128, 128);   // int8: 0 ok, 1 SA0, 2 SA1
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "xbar/crossbar/spec.h"

namespace xbar {

class FaultInjector {
 public:
  explicit FaultInjector(const FaultSpec& spec);
  // Fault state of every cell of physical crossbar `crossbar` ([rows, cols] int8: 0 ok, 1 SA0, 2 SA1).
  torch::Tensor Draw(int64_t crossbar, int64_t rows, int64_t cols) const;
  bool active() const { return spec_.any(); }

 private:
  FaultSpec spec_;
  std::map<int64_t, std::vector<std::tuple<int64_t, int64_t, int8_t>>> map_;  // crossbar -> (row, col, state)
};

}  // namespace xbar
