// Stuck-at faults (SPEC §4): a stuck-off (SA0) cell sits at G_min (level 0), a stuck-on (SA1) cell
// at G_max (level L), whatever was programmed. Faults are drawn per physical array by the
// FaultInjector (faults.h), or read from a measured map, in bit-line order (tile.h, ToPhysical).
#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/stage.h"

namespace xbar {
namespace {

class StuckAt : public WeightStage {
 public:
  const char* Name() const override { return "stuck-at"; }
  void Apply(TileCells& cells, const StageContext& ctx) const override {
    if (ctx.faults == nullptr || !ctx.faults->active()) return;
    const Scheme& scheme = *ctx.map.scheme;
    const double L = static_cast<double>(ctx.map.levels());
    std::vector<torch::Tensor> arrays = ToPhysical(cells.levels, cells.unit, scheme);
    for (size_t a = 0; a < arrays.size(); ++a) {
      torch::Tensor& cell = arrays[a];
      torch::Tensor st = ctx.faults->Draw(cells.first_crossbar + static_cast<int64_t>(a), cell.size(0), cell.size(1));
      const int64_t sa0 = st.eq(1).sum().item<int64_t>(), sa1 = st.eq(2).sum().item<int64_t>();
      if (sa0 + sa1 == 0) continue;
      cell = torch::where(st.eq(1), torch::zeros_like(cell), torch::where(st.eq(2), torch::full_like(cell, L), cell));
      cells.sa0 += sa0;
      cells.sa1 += sa1;
      cells.changed = true;
    }
    FromPhysical(arrays, scheme, cells.levels, cells.unit);
  }
};

}  // namespace

std::unique_ptr<WeightStage> MakeStuckAtStage() { return std::make_unique<StuckAt>(); }

}  // namespace xbar
