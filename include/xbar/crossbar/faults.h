// xbar/crossbar/faults.h — stuck-at faults of physical cells (SPEC §4).
//
// Faults are drawn per physical crossbar, i.i.d. per cell with the stuck-off (SA0, cell at G_min)
// and stuck-on (SA1, cell at G_max) rates, from a stream seeded by (seed, crossbar index): the same
// seed gives the same fault map whatever else changes. Or they come from a measured map, a CSV
// file with lines `crossbar,row,col,type` (type SA0 or SA1; a header line is allowed): crossbars
// numbered in mapping order (simulate.json's first_crossbar per layer; a two-crossbar tile is two
// crossbars, positive then negative), rows the crossbar's allocated word lines in order (after
// masked mapping, so row 0 is the first live input row), columns its physical bit lines (pair
// schemes interleave the two cells of each slice: column 2 (j S + s) + a; the offset scheme's unit
// column comes last). An entry outside the allocated cells is an error, not ignored.
//
//   FaultInjector inj(spec);
//   torch::Tensor state = inj.Draw(/*crossbar=*/3, 128, 128);   // int8: 0 ok, 1 SA0, 2 SA1
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <vector>

#include "xbar/crossbar/fault_map.h"
#include "xbar/crossbar/spec.h"

namespace xbar {

class FaultInjector {
 public:
  explicit FaultInjector(const FaultSpec& spec);
  // Fault state of every cell of physical crossbar `crossbar` ([rows, cols] int8: 0 ok, 1 SA0, 2 SA1).
  // A measured map's entry outside the crossbar's rows x cols is an InputError naming its line.
  torch::Tensor Draw(int64_t crossbar, int64_t rows, int64_t cols) const;
  // InputError naming the line of a measured map's entry for a crossbar index >= `crossbars`.
  void CheckAllUsed(int64_t crossbars) const;
  // False when no cell can be stuck (zero rates, or a measured map with no entries).
  bool active() const { return spec_.sa0_rate > 0 || spec_.sa1_rate > 0 || !map_.empty(); }

 private:
  FaultSpec spec_;
  FaultMap map_;  // a measured map: crossbar -> its entries
};

}  // namespace xbar
