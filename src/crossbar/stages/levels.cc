// The scheme's cell levels of a tile: level quantisation, the first weight-side stage. EncodeTile
// looks every weight's levels up once, when the layer is mapped; the stage programs them into the
// cells, which the later stages (faults, variation, drift) then change.
#include <cmath>

#include "xbar/crossbar/stage.h"

namespace xbar {

void EncodeTile(CrossbarTile& t, const torch::Tensor& q, const LevelTable& levels, const MappingSpec& map) {
  const int64_t R = t.num_rows(), C = t.num_cols();
  const int A = map.scheme->Components(), S = map.slices();
  // [R, C] integer weights of this crossbar, and their level-table indices.
  torch::Tensor w = q.index_select(0, IndexTensor(t.cols)).index_select(1, IndexTensor(t.rows)).t().contiguous();
  torch::Tensor idx = (w + static_cast<float>(levels.qmax)).to(torch::kInt64).reshape({-1});
  std::vector<torch::Tensor> comps(static_cast<size_t>(A));
  for (int a = 0; a < A; ++a) {
    std::vector<torch::Tensor> per_slice;
    for (int s = 0; s < S; ++s) per_slice.push_back(levels.Of(a, s).index_select(0, idx).view({R, C}));
    comps[static_cast<size_t>(a)] = torch::stack(per_slice, 2).reshape({R, C * S});  // column j*S + s
  }
  t.ideal = torch::stack(comps, 0).to(torch::kFloat32);
  if (map.scheme->UnitColumn(map.encoding())) t.unit = torch::ones({R}, torch::kFloat32);
  t.flipped.clear();
  t.unit_gain.clear();
  if (map.Flipped() && A == 1) {
    // ISAAC's flipped encoding: a column whose levels sum to more than half of R x L stores L - level.
    const int64_t L = map.levels();
    torch::Tensor cells = t.ideal[0];  // [R, C*S], column j*S + s
    const torch::Tensor sums = cells.sum(0).to(torch::kFloat64).contiguous();
    const double* sp = sums.data_ptr<double>();
    const double bias = static_cast<double>(map.scheme->Bias(map.encoding()));
    std::vector<uint8_t> flipped(static_cast<size_t>(C * S + 1), 0);  // read order s*C + j, unit column last
    std::vector<double> gain(static_cast<size_t>(C), 1.0);
    std::vector<int64_t> flip_cols;
    for (int64_t j = 0; j < C; ++j) {
      for (int s = 0; s < S; ++s) {
        if (!FlipsColumn(sp[j * S + s], R, L)) continue;
        flip_cols.push_back(j * S + s);
        flipped[static_cast<size_t>(s * C + j)] = 1;
        gain[static_cast<size_t>(j)] -= static_cast<double>(L) * std::ldexp(1.0, map.cell_bits * s) / bias;
      }
    }
    if (!flip_cols.empty()) {
      const torch::Tensor idx = IndexTensor(flip_cols);
      cells.index_copy_(1, idx, static_cast<float>(L) - cells.index_select(1, idx));
      t.flipped = std::move(flipped);
      t.unit_gain = std::move(gain);
    }
  }
  // ADC groups: FORMS converts every fragment of m rows; the other schemes the whole column.
  const int64_t g = map.GroupRows(R);
  t.group_rows = g;
  t.groups = (R + g - 1) / g;
  if (map.scheme->SignPerFragment()) {
    torch::Tensor padded = torch::zeros({t.groups * g, C}, torch::kFloat32);
    padded.narrow(0, 0, R).copy_(w);
    auto frag = padded.view({t.groups, g, C});
    auto has_pos = frag.gt(0).any(1), has_neg = frag.lt(0).any(1);
    // CheckTile has made sure no fragment holds both signs.
    t.sign = has_pos.to(torch::kFloat32) - has_neg.to(torch::kFloat32);  // [groups, C]
  }
}

namespace {

class Levels : public WeightStage {
 public:
  const char* Name() const override { return "levels"; }
  void Apply(TileCells& cells, const StageContext& /*ctx*/) const override {
    cells.levels = cells.source->ideal.clone();
    cells.unit = cells.source->unit.defined() ? cells.source->unit.clone() : torch::Tensor();
  }
};

}  // namespace

std::unique_ptr<WeightStage> MakeLevelsStage() { return std::make_unique<Levels>(); }

}  // namespace xbar
