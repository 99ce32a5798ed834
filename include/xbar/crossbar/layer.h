// xbar/crossbar/layer.h — one conv/linear layer mapped onto crossbars, and its bit-accurate MVM.
//
// Mapping (SPEC §1, §3): the weight, in crossbar orientation K × N (rows = inputs, columns =
// outputs), is quantised to b_w-bit integers q (scale s_w), optionally compacted (masked mapping:
// all-zero columns dropped, then per group of logical columns the all-zero rows), and cut into
// tiles. A scheme encodes each q into cell levels 0..L (L = 2^c - 1) over S slices and one or two
// components; each tile is one physical crossbar (two for two-crossbar) of R rows and C columns.
//
// MVM: integer inputs are applied bit-serially (v-bit DAC planes; a negative input's sign bit is a
// separate plane with weight -2^(b_in - 1), ISAAC's shift-and-subtract). For every plane, tile and
// read (a slice of a component, a pair difference, or the offset scheme's unit column) the column
// sums over an ADC group (the tile, or a FORMS fragment) are converted by a b_adc-bit ADC and
// recombined digitally (shift-and-add, sign, bias). With a lossless ADC, no faults and an ideal
// device the result equals the integer GEMM Reference() exactly.
//
// The engine schedules; the effects are stages (stage.h): weight-side ones at Program (stuck-at,
// variation, drift), read-side ones on every MVM (DAC, IR drop, read noise, ADC). The sums run as
// fixed-order float sums or bit-packed (kernels.h); the packed kernel and the exact fast path only while every
// stage keeps the column sums integer. The exact reference is a separate engine (reference.h).
//
//   CrossbarLayer layer("conv1", w2d, 0.0, map, dev);   // w2d: [N, K] float weights
//   layer.Program(faults, &injector);                    // weight-side: faults, variation, drift
//   torch::Tensor y = layer.Forward(xq, signed_inputs);  // [M, N] float64, units of s_w·s_x
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/spec.h"
#include "xbar/crossbar/stage.h"
#include "xbar/crossbar/tile.h"

namespace xbar {

class FaultInjector;

// Input cycles a fragment row needs per quantised input value, as uint8: the planes up to its
// highest non-zero bit (ceil(bit length / DAC bits)), or all `P` for a negative (two's-complement)
// input. `xq` is [B, C, H, W] (conv: the result is zero-padded by `pad` on each side) or [B, K].
// One pass, no float temporaries; zero-skipping counts (CountReads, NetworkWork) use it.
torch::Tensor PlanesNeeded(const torch::Tensor& xq, int dac_bits, int64_t P, int64_t pad);

// How Forward computes the column sums of a crossbar: float sums of digit planes (FloatSums), or AND + popcount
// over bit-packed input and cell planes (integer-valued cells only: no variation, drift or read
// noise). Both are exact; kAuto times both on the first positions of each crossbar and keeps the
// faster.
// kTensor: the whole engine as batched tensor ops on the input's device (CPU, or CUDA with a CUDA
// LibTorch): column sums by bmm, then the read stages, the ADC and shift-and-add as tensor ops.
// On integer cells the same bits as the CPU kernels (exact float32 sums); on float conductances
// within float rounding (bmm's summation order).
enum class SumKernel { kAuto, kFloat, kPacked, kTensor };

struct ReadStats {
  int64_t adc_conversions = 0;     // column reads converted
  int64_t input_cycles = 0;        // bit-serial cycles applied (planes x rows of inputs x fragments)
  int64_t input_cycles_needed = 0; // cycles left when all-zero leading planes of a fragment are skipped
};

class CrossbarLayer {
 public:
  // w2d: [N, K] float weights (a PyTorch conv/linear weight viewed as [out, -1]).
  // weight_scale: quantisation step s_w; 0 = max|w| / (2^(b_w-1) - 1).
  CrossbarLayer(std::string name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map,
                const DeviceSpec& device);

  // ... (see Forward) as batched tensor ops on xq's device: SumKernel::kTensor.
  torch::Tensor ForwardTensor(const torch::Tensor& xq, bool signed_inputs, uint64_t noise_seed, ReadStats* stats,
                              int64_t first_mvm);

  // Weight-side non-idealities, applied once: stuck-at faults (from `faults`, may be null),
  // lognormal variation and drift (device), then what the read side fixes at programming (IR drop,
  // read-noise variances, worst-case ADC ranges). Cells are numbered for fault maps starting at
  // `first_crossbar` (see docs/USER_GUIDE.md). Resets any earlier programming. With
  // `input_moments` (E[x_k²] per GEMM row k), every tile with stuck cells is first placed on them
  // (fault-map-aware placement, placement.h).
  void Program(FaultInjector* faults, uint64_t seed, int64_t first_crossbar,
               const std::vector<double>* input_moments = nullptr);

  // Exact integer GEMM of integer-valued inputs xq [M, K] with the quantised weights: [M, N] float64
  // (the reference engine, reference.h).
  torch::Tensor Reference(const torch::Tensor& xq) const;
  // The crossbar MVM of integer-valued inputs xq [M, K]. Read noise (if any) is a pure function of
  // (noise_seed, crossbar, fragment, input plane, MVM index, column), where row m of xq is MVM
  // first_mvm + m (image x positions + position): the same draws whatever the batch size, chunking
  // or thread count.
  torch::Tensor Forward(const torch::Tensor& xq, bool signed_inputs, uint64_t noise_seed, ReadStats* stats,
                        int64_t first_mvm = 0);
  // Adds the ADC conversions and zero-skipping cycles Forward(xq) makes, without computing it.
  void CountReads(const torch::Tensor& xq, bool signed_inputs, ReadStats* stats) const;
  // The same for M input vectors, with the zero-skipping cycles of a tile's rows (GEMM row indices,
  // in fragment order) from `needed`, summed over the M vectors: e.g. NeededCycles on the layer's
  // unlowered input (workload.h), which the fast path uses instead of lowering.
  void CountReads(int64_t M, bool signed_inputs,
                  const std::function<int64_t(const std::vector<int64_t>& rows)>& needed, ReadStats* stats) const;
  // Calibrated ADC ranges: Forward calls between the two record every read's |partial sums|; the
  // ranges then become their mapping.adc_percentile (the largest at 100). Program() resets them to
  // the worst case, so calibrate after programming (NetworkSimulator::Program does).
  void StartCalibration();
  void FinishCalibration();

  void SetSumKernel(SumKernel k);
  // Crossbars whose sums currently run bit-packed (after kAuto has decided, on the first Forward).
  int64_t packed_tiles() const;
  // The work of one Forward over `positions` inputs on the bit-packed crossbars (the roofline in
  // bench/crossbar_bench): AND + popcount word operations (one 64-bit input word against one
  // column's cell word) and ADC conversions. Counts the crossbars packed so far.
  struct KernelWork {
    double popcount_words = 0, conversions = 0;
  };
  KernelWork PackedWork(int64_t positions, bool signed_inputs) const;

  // The quantised weights [N, K] (float tensor holding integers).
  const torch::Tensor& quantized() const { return q_; }
  int weight_bits() const { return map_.weight_bits; }
  const std::string& name() const { return name_; }
  double weight_scale() const { return scale_; }
  int64_t rows() const { return K_; }
  int64_t cols() const { return N_; }
  int64_t tiles() const { return static_cast<int64_t>(tiles_.size()); }
  int64_t crossbars() const;       // physical arrays (two per tile for two-crossbar)
  int64_t cells() const;           // physical cells holding weights (allocated rows x used columns)
  int64_t used_rows() const;       // word lines driven per MVM, summed over the physical arrays
  int64_t used_columns() const;    // bit lines holding weights, summed over the physical arrays
  double level_sum() const;        // sum of the programmed cell levels (0..L), over every used cell
  int adc_bits() const;            // bits of the widest ADC read (configured, or lossless need)
  int64_t stuck_cells() const { return sa0_ + sa1_; }
  int64_t sa0_cells() const { return sa0_; }
  int64_t sa1_cells() const { return sa1_; }
  // Array current with every word line driven, with IR drop over without (1 when it is off): the
  // factor IR drop applies to the crossbars' read current and so to their read energy.
  double read_current_ratio() const { return current_nominal_ > 0 ? current_effective_ / current_nominal_ : 1.0; }
  // The two currents (siemens x 1 V, summed over the arrays; 0 when IR drop is off).
  double read_current_nominal() const { return current_nominal_; }
  double read_current_effective() const { return current_effective_; }
  // The read-side stages in order, e.g. "dac > ir-drop > adc".
  std::string read_stages() const { return chain_.Names(); }
  // True when Forward provably equals Reference (lossless ADC, no faults, ideal device).
  bool lossless() const;
  // What the programmed crossbars compute as one integer matrix [N, K] (float64): every cell's
  // level (stuck-at faults included) times its read column's digital weight, summed per weight.
  // Defined only while Forward is exactly x · Wᵀ: integer cell levels (no variation or drift), no
  // read-side stage that changes sums (read noise, IR drop) and lossless ADCs; undefined otherwise.
  // A faulty chip then runs at fast-path speed (issue 11, fast samples).
  torch::Tensor FoldedWeights() const;
  // The last programming's placement: per tile (empty: the mapping's order) with the tile's GEMM
  // rows and columns, and over the layer the seconds it took (summed over the tiles, which are
  // programmed in parallel: more than the wall time on several threads) and the harm before and
  // after.
  const TilePlacement& placement(int64_t tile) const { return tiles_[static_cast<size_t>(tile)].placement; }
  const std::vector<int64_t>& tile_rows(int64_t tile) const { return tiles_[static_cast<size_t>(tile)].rows; }
  const std::vector<int64_t>& tile_cols(int64_t tile) const { return tiles_[static_cast<size_t>(tile)].cols; }
  double placement_seconds() const { return placement_seconds_; }
  double placement_harm_before() const { return harm_before_; }
  double placement_harm_after() const { return harm_after_; }

 private:
  // Bit lines a tile's weights (and unit column) take, over its arrays.
  int64_t TileColumns(const CrossbarTile& t) const;
  StageContext Context(FaultInjector* faults = nullptr, uint64_t seed = 0,
                       const std::vector<double>* input_moments = nullptr) const {
    return StageContext{name_, map_, device_, reads_, faults, seed, input_moments};
  }

  std::string name_;
  MappingSpec map_;
  DeviceSpec device_;
  int64_t K_ = 0, N_ = 0;
  double scale_ = 0.0;
  double placement_seconds_ = 0, harm_before_ = 0, harm_after_ = 0;
  torch::Tensor q_;  // [N, K] quantised weights (float holding integers)
  LevelTable levels_;  // the scheme's cell level of every integer weight
  std::vector<ReadSpec> reads_;
  std::vector<CrossbarTile> tiles_;
  std::vector<std::unique_ptr<WeightStage>> weight_stages_;
  ReadChain chain_;
  int64_t sa0_ = 0, sa1_ = 0;
  double current_nominal_ = 0, current_effective_ = 0;
  bool calibrating_ = false, changed_ = false;
  SumKernel kernel_ = SumKernel::kAuto;
};

}  // namespace xbar
