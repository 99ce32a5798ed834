// xbar/crossbar/stage.h — non-idealities as ordered, separately testable stages (SPEC §4).
//
// Weight-side stages run once, when a tile is programmed, on its cells' conductances: the scheme's
// levels (level quantisation), stuck-at faults, device variation, drift. Read-side stages act on
// every MVM in the order DAC -> array -> noise -> ADC: the DAC cuts inputs into bit-planes, the
// array sums currents (IR drop on its wires changes what a read sees), read noise perturbs the
// sums, the ADC converts them.
// BuildWeightStages / BuildReadStages make the ordered lists from the hardware description, with
// only the stages the description switches on. CrossbarLayer (layer.h) schedules them and owns the
// sum kernels; it runs its exact integer kernels only while every stage keeps the sums integer.
//
//   for (const auto& s : BuildWeightStages(map, dev)) s->Apply(cells, ctx);   // at programming
//   ReadChain chain = BuildReadStages(map, dev);                               // dac, ..., adc
//
// Adding an effect: one file in src/crossbar/stages/ with a WeightStage or ReadStage subclass and
// a Make function, and one line in the list builders (src/crossbar/stages.cc).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/spec.h"
#include "xbar/crossbar/tile.h"

namespace xbar {

class FaultInjector;

// The cells of one tile while it is programmed, in level units: a conductance G is
// (level + g0) (G_max - G_min) with g0 = DeviceSpec::g_min_levels(), so level 0 is G_min and L is
// G_max.
struct TileCells {
  const CrossbarTile* source = nullptr;  // the tile being programmed (its scheme levels: tile.ideal)
  torch::Tensor levels;  // [A, R, C*S] per component (column j*S + s), float
  torch::Tensor unit;    // [R] the offset scheme's unit column, or undefined
  // What a read sees when it differs from the programmed conductance (IR drop); undefined = the same.
  torch::Tensor read_levels, read_unit;
  int64_t tile = 0;            // tile index within the layer
  int64_t first_crossbar = 0;  // physical crossbar number of the tile (fault maps)
  int64_t sa0 = 0, sa1 = 0;    // stuck cells placed
  TilePlacement placement;     // fault-map-aware placement chosen by the stuck-at stage (or empty)
  double placement_seconds = 0;
  bool changed = false;        // some cell left its ideal level
  // Array current with every word line driven at the same voltage, summed over the tile's physical
  // arrays (siemens): nominal, and as IR drop leaves it (ir-drop stage; 0 when it is off).
  double current_nominal = 0, current_effective = 0;
};

// What every stage may read: the layer and its hardware description.
struct StageContext {
  const std::string& layer;
  const MappingSpec& map;
  const DeviceSpec& device;
  const std::vector<ReadSpec>& reads;
  FaultInjector* faults = nullptr;  // programming only; may be null
  uint64_t seed = 0;                // programming seed (variation draws)
  // Fault-map-aware placement (placement.h) when set: E[x_k²] of every GEMM row k of the layer.
  const std::vector<double>* input_moments = nullptr;
};

// One batch of column sums: which MVMs they belong to (read-noise keys).
struct ReadBatch {
  uint64_t noise_seed = 0;
  int64_t tile = 0;       // tile index within the layer
  int64_t planes = 0;     // P: input bit-planes per MVM
  int64_t positions = 0;  // M: MVMs in the batch
  int64_t first_mvm = 0;  // MVM index of the batch's first position
};

class WeightStage {
 public:
  virtual ~WeightStage() = default;
  virtual const char* Name() const = 0;
  // Changes the programmed cells (and counts what it did in `cells`).
  virtual void Apply(TileCells& cells, const StageContext& ctx) const = 0;
};

class ReadStage {
 public:
  virtual ~ReadStage() = default;
  virtual const char* Name() const = 0;
  // At programming, before the reads are assembled: what a read sees (cells.read_levels).
  virtual void Program(TileCells& cells, const StageContext& ctx) const {}
  // At programming, after the reads are assembled: the stage's tables on the tile.
  virtual void Prepare(CrossbarTile& tile, const TileCells& cells, const StageContext& ctx) const {}
  // Per batch: column sums [G, P*M, NR] of input digits xg [G, P*M, g], changed in place.
  virtual void Apply(const CrossbarTile& tile, const torch::Tensor& xg, torch::Tensor& sums, const StageContext& ctx,
                     const ReadBatch& batch) const {}
  // False when the sums it leaves are not the exact integer column sums (read noise, IR drop): the
  // engine then runs neither its packed kernel nor the exact fast path.
  virtual bool Exact() const { return true; }
  // True when Apply changes the sums of each read (read noise). Otherwise a column sum depends only
  // on the input digits at its group's rows, and the engine may look it up by their pattern
  // (PatternSums, kernels.h) instead of computing it.
  virtual bool PerRead() const { return false; }
};

// ---- the two read stages the engine talks to directly ------------------------------------------

// Bit-serial inputs through v-bit DACs: plane p holds bits shift[p] .. shift[p] + v - 1 of the
// two's-complement code u (u = x + 2^b for a negative x), weighted 2^shift[p]; a signed input's
// sign bit is its own plane weighted -2^(b - 1) (ISAAC's shift-and-subtract).
class DacStage : public ReadStage {
 public:
  explicit DacStage(const MappingSpec& map) : map_(map) {}
  const char* Name() const override { return "dac"; }
  struct Planes {
    std::vector<int> shift;
    std::vector<int64_t> mask;
    std::vector<double> weight;
    int64_t size() const { return static_cast<int64_t>(shift.size()); }
  };
  Planes PlanesOf(bool signed_inputs) const;
  // Digits [P, M, K] (float) of integer inputs xq [M, K] (float32), on xq's device: a CPU loop, or
  // SplitOps on another device.
  torch::Tensor Split(const torch::Tensor& xq, bool signed_inputs, const Planes& planes) const;
  // The same digits as tensor ops (integer shift and mask), on any device.
  torch::Tensor SplitOps(const torch::Tensor& xq, bool signed_inputs, const Planes& planes) const;

 private:
  MappingSpec map_;
};

// Per-read linear ADC: top code at the read's full scale (worst case, or calibrated on the
// programmed crossbars), LSB = full scale / top code, at least one level; a difference read spends
// one bit on its sign. Fills the tile's conversion tables (CrossbarTile::adc_*).
class AdcStage : public ReadStage {
 public:
  const char* Name() const override { return "adc"; }
  void Prepare(CrossbarTile& tile, const TileCells& cells, const StageContext& ctx) const override;
  // Calibration: ranges from the column sums Record sees between Start and Finish.
  void StartCalibration(CrossbarTile& tile, const StageContext& ctx) const;
  void Record(CrossbarTile& tile, const torch::Tensor& sums, const StageContext& ctx) const;
  // The same as Record on sums where entry (group, pattern) of a PatternSums table (kernels.h;
  // sums + (group * patterns + pattern) * stride) occurs counts[group * patterns + pattern] times.
  void RecordPatterns(CrossbarTile& tile, const float* sums, int64_t stride, int64_t patterns,
                      const std::vector<int64_t>& counts, const StageContext& ctx) const;
  void FinishCalibration(CrossbarTile& tile, const StageContext& ctx) const;
  // True when every read of the tile converts integer sums exactly (LSB of one level).
  bool Lossless(const CrossbarTile& tile) const;
  static constexpr int64_t kCalibrationBins = 4096;

 private:
  void SetRanges(CrossbarTile& tile, const torch::Tensor& full_scale, const StageContext& ctx) const;
};

// The ordered read-side list: dac first, adc last, the analog stages between them.
struct ReadChain {
  std::vector<std::unique_ptr<ReadStage>> stages;
  const DacStage* dac = nullptr;
  const AdcStage* adc = nullptr;
  // True when no analog stage changes the integer sums.
  bool exact() const;
  // True when no stage changes the sums of each read (ReadStage::PerRead).
  bool per_pattern() const;
  // Stage names in order, e.g. "dac > ir-drop > read-noise > adc".
  std::string Names() const;
};

std::vector<std::unique_ptr<WeightStage>> BuildWeightStages(const MappingSpec& map, const DeviceSpec& device);
ReadChain BuildReadStages(const MappingSpec& map, const DeviceSpec& device);

// The stages (one file each in src/crossbar/stages/); a Make function returns null when the
// hardware description switches the effect off.
std::unique_ptr<WeightStage> MakeLevelsStage();
std::unique_ptr<WeightStage> MakeStuckAtStage();
std::unique_ptr<WeightStage> MakeVariationStage(const DeviceSpec& device);
std::unique_ptr<WeightStage> MakeDriftStage(const DeviceSpec& device);
std::unique_ptr<ReadStage> MakeIrDropStage(const DeviceSpec& device);
std::unique_ptr<ReadStage> MakeReadNoiseStage(const DeviceSpec& device);

// The scheme's cell levels of a tile (stages/levels.cc), once when the layer is mapped: fills
// tile.ideal, tile.unit, the ADC groups and, for a sign per fragment, tile.sign, from the layer's
// integer weights q [N, K]. The levels stage then writes tile.ideal into the cells at every Program.
void EncodeTile(CrossbarTile& tile, const torch::Tensor& q, const LevelTable& levels, const MappingSpec& map);

}  // namespace xbar
