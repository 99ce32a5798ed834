// Stuck-at faults (SPEC §4): a stuck-off (SA0) cell sits at G_min (level 0), a stuck-on (SA1) cell
// at G_max (level L), whatever was programmed. Faults are drawn per physical array by the
// FaultInjector (faults.h), or read from a measured map, in bit-line order (tile.h, ToPhysical).
// With fault-map-aware placement on (StageContext::input_moments), the tile's inputs, outputs and
// pair encodings are first placed on the known stuck cells (placement.h).
#include <chrono>

#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/placement.h"
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
    // Every physical cell's state (0 ok, 1 SA0, 2 SA1), then seen from the cells' logical positions.
    std::vector<torch::Tensor> arrays = ToPhysical(cells.levels, cells.unit, scheme);
    int64_t sa0 = 0, sa1 = 0;
    for (size_t a = 0; a < arrays.size(); ++a) {
      torch::Tensor st = ctx.faults->Draw(cells.first_crossbar + static_cast<int64_t>(a), arrays[a].size(0), arrays[a].size(1));
      sa0 += st.eq(1).sum().item<int64_t>();
      sa1 += st.eq(2).sum().item<int64_t>();
      arrays[a] = st.to(torch::kFloat32);
    }
    if (sa0 + sa1 == 0) return;
    torch::Tensor state = torch::zeros_like(cells.levels);
    torch::Tensor unit_state = cells.unit.defined() ? torch::zeros_like(cells.unit) : torch::Tensor();
    FromPhysical(arrays, scheme, state, unit_state);
    if (ctx.input_moments != nullptr) {
      const auto start = std::chrono::steady_clock::now();
      const CrossbarTile& t = *cells.source;
      PlacementProblem p;
      p.scheme = &scheme;
      p.encoding = ctx.map.encoding();
      p.levels = cells.levels;
      p.unit = cells.unit;
      p.states = state.to(torch::kInt8);
      p.unit_states = unit_state.defined() ? unit_state.to(torch::kInt8) : torch::Tensor();
      for (int64_t k : t.rows) p.moments.push_back((*ctx.input_moments)[static_cast<size_t>(k)]);
      p.fragment_rows = t.groups > 1 ? t.group_rows : 0;
      if (scheme.SignPerFragment() && t.sign.defined()) p.fragment_sign = t.sign;
      if (!t.flipped.empty()) {
        // Flipped encoding: flipped columns count negatively, the unit column per output.
        const int64_t C = t.num_cols(), S = ctx.map.slices();
        p.column_sign.assign(static_cast<size_t>(C * S), 1.0);
        p.unit_coef.assign(static_cast<size_t>(C), 0.0);
        const double bias = static_cast<double>(scheme.Bias(ctx.map.encoding()));
        for (int64_t j = 0; j < C; ++j) {
          for (int64_t s = 0; s < S; ++s) {
            if (t.flipped[static_cast<size_t>(s * C + j)] != 0) p.column_sign[static_cast<size_t>(j * S + s)] = -1.0;
          }
          p.unit_coef[static_cast<size_t>(j)] = -bias * t.unit_gain[static_cast<size_t>(j)];
        }
      }
      cells.placement = PlaceTile(p);
      ApplyFlips(cells.placement, L, cells.levels);
      state = PlacedStates(cells.placement, ctx.map.slices(), state);
      unit_state = PlacedUnitStates(cells.placement, unit_state);
      cells.placement_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    auto stick = [&](const torch::Tensor& v, const torch::Tensor& s) {
      return torch::where(s.eq(1), torch::zeros_like(v), torch::where(s.eq(2), torch::full_like(v, L), v));
    };
    cells.levels = stick(cells.levels, state);
    if (cells.unit.defined()) cells.unit = stick(cells.unit, unit_state);
    cells.sa0 += sa0;
    cells.sa1 += sa1;
    cells.changed = true;
  }
};

}  // namespace

std::unique_ptr<WeightStage> MakeStuckAtStage() { return std::make_unique<StuckAt>(); }

}  // namespace xbar
