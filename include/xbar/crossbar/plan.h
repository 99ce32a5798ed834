// xbar/crossbar/plan.h — how a layer's weights land on crossbars, without building them.
//
// CrossbarLayer (layer.h) builds every tile's cell levels, read matrices and ADC tables so that it
// can simulate the MVM. The hardware estimate only needs to count: crossbars, driven rows, read
// columns, ADC conversions and the programmed levels. PlanLayer counts them from the quantised
// weights with the same tiling (LayoutTiles, which CrossbarLayer also uses) and the same checks
// (CheckTile), in a few loops over the weights; tests check it against CrossbarLayer.
//
//   const double s = WeightScale(w2d, map.weight_bits, stored);      // as the simulator picks it
//   LayerPlan p = PlanLayer("conv1", w2d, s, map);                     // p.crossbars, p.level_sum ...
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/crossbar/spec.h"

namespace xbar {

// One crossbar (a pair for two-crossbar) of a layer: the GEMM rows (inputs) and columns (outputs)
// it holds.
struct TileLayout {
  std::vector<int64_t> rows, cols;
};

// The cell level every integer weight -qmax..qmax takes on each (component, slice) under the
// map's scheme (Scheme::Level, tabulated once per layer); the engine encodes tiles by lookup and
// the planner sums levels from it.
class LevelTable {
 public:
  LevelTable() = default;
  explicit LevelTable(const MappingSpec& map);
  int64_t qmax = 0;  // 2^(b_w - 1) - 1
  // [2 qmax + 1] float levels of component a, slice s, indexed by q + qmax.
  torch::Tensor Of(int component, int slice) const { return table_[component][slice]; }
  // The levels of q summed over its slices and components (the read current it draws).
  double Sum(int64_t q) const { return sum_[static_cast<size_t>(q + qmax)]; }

 private:
  torch::Tensor table_;  // [A, S, 2 qmax + 1]
  std::vector<double> sum_;
};

// ISAAC's flipped encoding (mapping.flip_columns, MappingSpec::Flipped): a column of `rows` cells
// whose levels sum to more than half of rows x `levels` stores levels - level in each cell. The one
// rule EncodeTile (what the engine programs) and PlanLayer (what the cost model counts) share.
inline bool FlipsColumn(double level_sum, int64_t rows, int64_t levels) {
  return 2.0 * level_sum > static_cast<double>(rows * levels);
}

// The quantisation step of a layer's weights [N, K]: `stored` (e.g. from compression) when
// positive and the levels fit the weight bits, else max|w| / (2^(b_w-1) - 1).
double WeightScale(const torch::Tensor& w2d, int weight_bits, double stored);
// Integer weights round(w / scale) clamped to ±(2^(b_w-1) - 1), as float [N, K].
torch::Tensor QuantizeWeights(const torch::Tensor& w2d, double scale, int weight_bits);

// Masked mapping of quantised weights q [N, K]: with map.compact, the live (non-zero) columns in
// groups of map.LogicalColumns(), each group's live rows cut into crossbars of map.rows rows
// (schemes with a sign per fragment keep every row, so fragments stay aligned with the rows
// compression polarised); without it, every column and row. The groups are either the live
// columns in order (packed) or the live columns of each block of map.LogicalColumns() original
// columns (aligned: where compression pruned row segments per column block), whichever needs
// fewer crossbars; packed on a tie.
std::vector<TileLayout> LayoutTiles(const torch::Tensor& q, const MappingSpec& map);
// Throws InputError naming the layer when a tile breaks map.column_budget (where a zero weight is
// an empty cell) or, for a scheme with a sign per fragment, holds a fragment with both signs.
void CheckTile(const std::string& layer, const torch::Tensor& q, const TileLayout& t, const MappingSpec& map);

// What a layer costs in crossbar terms (the same figures CrossbarLayer reports); weight_scale as
// for CrossbarLayer (0: max|w| / (2^(b_w-1) - 1)).
struct LayerPlan {
  int64_t tiles = 0, crossbars = 0, cells = 0;
  int64_t used_rows = 0, used_columns = 0;  // summed over the physical arrays
  double level_sum = 0;                     // programmed levels over every used cell
  int adc_bits = 0;                         // MappingSpec::AdcBits of the widest read
  int64_t conversions_per_plane = 0;        // ADC conversions per input plane of one MVM
};
// With `tile_rows`, each tile's GEMM rows are appended to it (zero-skipping statistics).
LayerPlan PlanLayer(const std::string& name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map,
                    std::vector<std::vector<int64_t>>* tile_rows = nullptr);

}  // namespace xbar
