// IR drop on the word and bit lines (ir_drop.h): the array stage between the DAC and read noise.
// The network is linear, so what a read sees is an effective conductance per cell, computed once
// per programmed array (fast first-order model, or the exact nodal solve for small arrays). Each
// physical array is modelled at its full size (mapping.crossbar_rows x crossbar_cols): allocated
// rows from the top (the sense amplifiers sit below the last row), used bit lines from the left
// (the drivers sit left of the first column), every unallocated cell at G_min and every unused word
// line driven at 0 V.
#include <cmath>

#include "xbar/crossbar/ir_drop.h"
#include "xbar/crossbar/stage.h"

namespace xbar {
namespace {

class IrDrop : public ReadStage {
 public:
  IrDrop(double wire_ohm, double r_on_ohm, IrDropModel model) : wire_ohm_(wire_ohm), r_on_ohm_(r_on_ohm), model_(model) {}
  const char* Name() const override { return "ir-drop"; }
  bool Exact() const override { return false; }

  void Program(TileCells& cells, const StageContext& ctx) const override {
    const Scheme& scheme = *ctx.map.scheme;
    const double g0 = ctx.device.g_min_levels();
    // Siemens per level: (G_max - G_min) with G_max = 1 / R_on.
    const double span = (1.0 / r_on_ohm_) * (1.0 - 1.0 / ctx.device.on_off_ratio);
    std::vector<torch::Tensor> arrays = ToPhysical(cells.levels, cells.unit, scheme);
    for (torch::Tensor& a : arrays) {
      const int64_t R = a.size(0), C = a.size(1);
      const int64_t PR = std::max(R, ctx.map.rows), PC = std::max(C, ctx.map.cols);
      torch::Tensor g = torch::full({PR, PC}, g0 * span, torch::kFloat64);
      g.narrow(0, 0, R).narrow(1, 0, C).copy_((a.to(torch::kFloat64) + g0) * span);
      torch::Tensor eff = IrDropEffective(g, wire_ohm_, model_);
      cells.current_nominal += g.sum().item<double>();
      cells.current_effective += eff.sum().item<double>();
      a = (eff.narrow(0, 0, R).narrow(1, 0, C) / span - g0).to(torch::kFloat32);
    }
    cells.read_levels = cells.levels.clone();
    cells.read_unit = cells.unit.defined() ? cells.unit.clone() : torch::Tensor();
    FromPhysical(arrays, scheme, cells.read_levels, cells.read_unit);
  }

 private:
  double wire_ohm_, r_on_ohm_;
  IrDropModel model_;
};

}  // namespace

std::unique_ptr<ReadStage> MakeIrDropStage(const DeviceSpec& device) {
  if (device.wire_resistance_ohm <= 0) return nullptr;
  return std::make_unique<IrDrop>(device.wire_resistance_ohm, device.r_on_ohm,
                                  device.ir_drop_exact ? IrDropModel::kExact : IrDropModel::kFast);
}

}  // namespace xbar
