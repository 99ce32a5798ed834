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
//   CrossbarLayer layer("conv1", w2d, 0.0, map, dev);   // w2d: [N, K] float weights
//   layer.Program(faults, &injector);                    // weight-side: faults, variation, drift
//   torch::Tensor y = layer.Forward(xq, signed_inputs);  // [M, N] float64, units of s_w·s_x
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/spec.h"

namespace xbar {

class FaultInjector;

// How Forward computes the column sums of a crossbar: float GEMM of digit planes, or AND + popcount
// over bit-packed input and cell planes (integer-valued cells only: no variation, drift or read
// noise). Both are exact; kAuto times both on the first positions of each crossbar and keeps the
// faster.
enum class SumKernel { kAuto, kFloat, kPacked };

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

  // Weight-side non-idealities, applied once: stuck-at faults (from `faults`, may be null),
  // lognormal variation and drift (device). Cells are numbered for fault maps starting at
  // `first_crossbar` (see docs/USER_GUIDE.md). Resets any earlier programming.
  void Program(FaultInjector* faults, uint64_t seed, int64_t first_crossbar);

  // Exact integer GEMM of integer-valued inputs xq [M, K] with the quantised weights: [M, N] float64.
  torch::Tensor Reference(const torch::Tensor& xq) const;
  // The crossbar MVM of integer-valued inputs xq [M, K]. Read noise (if any) is a pure function of
  // (noise_seed, crossbar, fragment, input plane, MVM index, column), where row m of xq is MVM
  // first_mvm + m (image x positions + position): the same draws whatever the batch size, chunking
  // or thread count.
  torch::Tensor Forward(const torch::Tensor& xq, bool signed_inputs, uint64_t noise_seed, ReadStats* stats,
                        int64_t first_mvm = 0);
  // Adds the ADC conversions and zero-skipping cycles Forward(xq) makes, without computing it.
  void CountReads(const torch::Tensor& xq, bool signed_inputs, ReadStats* stats) const;
  // Calibrated ADC ranges: Forward calls between the two record every read's |partial sums|; the
  // ranges then become their mapping.adc_percentile (the largest at 100). Program() resets them to
  // the worst case, so calibrate after programming (NetworkSimulator::Program does).
  void StartCalibration();
  void FinishCalibration();

  void SetSumKernel(SumKernel k);
  // Crossbars whose sums currently run bit-packed (after kAuto has decided, on the first Forward).
  int64_t packed_tiles() const;

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
  int64_t stuck_cells() const { return stuck_; }
  int64_t sa0_cells() const { return sa0_; }
  int64_t sa1_cells() const { return sa1_; }
  // True when Forward provably equals Reference (lossless ADC, no faults, ideal device).
  bool lossless() const;

 private:
  struct Read {
    int component = 0;       // component array; analog pair reads use 0 minus 1
    int slice = 0;           // -1: the offset scheme's unit column
    bool difference = false; // analog subtraction of the pair
    double coef = 1.0;       // digital weight of the read: ±2^(c·slice), or -bias for the unit column
  };
  struct Tile {
    std::vector<int64_t> rows, cols;   // GEMM rows (inputs) and columns (outputs) on this crossbar
    torch::Tensor ideal;               // [A, R_t, C_t * S] programmed levels (float)
    torch::Tensor unit;                // [R_t] offset scheme's unit column (levels), else undefined
    torch::Tensor sign;                // polarized: [groups, C_t] fragment signs (+1/-1/0)
    torch::Tensor reads;               // [groups, g, NR] effective read matrix (after programming)
    torch::Tensor noise_var;           // [groups, g, NR] squared read-noise scale per cell, or undefined
    torch::Tensor step, top;           // [NR] ADC LSB (level units) and top code per read column
    torch::Tensor calib;               // [NR] max |partial sum| seen while calibrating
    std::vector<int64_t> calib_hist;   // [reads][kCalibrationBins] |partial sums| (percentile < 100)
    torch::Tensor worst_fs;            // [NR] worst-case full scale per read column (float64)
    int64_t groups = 1, group_rows = 0;
    // Bit-packed reads (empty when a cell is not integer-valued): plane p holds bit plane_shift[p]
    // of the positive (or, plane_negative[p], negative) part of every read, as words of 64 rows:
    // packed[((group * planes + p) * words + w) * NR + column].
    std::vector<uint64_t> packed;
    std::vector<int> plane_shift, plane_negative;
    int64_t words = -1;  // -1: not packed yet (PackReads runs on the first Forward that can use it)
    int kernel = 0;  // 0: undecided (auto), 1: float, 2: packed
    // ADC tables per read column (from SetAdc): 1/LSB, code range; digital weight per group [G, NR].
    std::vector<float> adc_inv, adc_lo, adc_hi;
    std::vector<double> adc_scale;
  };
  void PackReads(Tile& t) const;
  // Column sums of one input row (words [dac_bits][words]) on group `group`: acc[NR].
  void PackedRow(const Tile& t, int64_t group, const uint64_t* x, int64_t* acc) const;
  // Column sums [G, rows, NR] from inputs packed by PackInputs ([G * rows][dac_bits][words]).
  torch::Tensor PackedSums(const Tile& t, const std::vector<uint64_t>& inputs, int64_t rows) const;

  int64_t Planes(bool signed_inputs) const;
  void Encode(Tile& t) const;
  void BuildReads(Tile& t, const torch::Tensor& effective, const torch::Tensor& unit) const;
  void SetAdc(Tile& t, const torch::Tensor& full_scale) const;
  // Adds the column sums [G, rows, NR] of a calibration read to the tile's ranges.
  void Calibrate(Tile& t, const torch::Tensor& sums);
  static constexpr int64_t kCalibrationBins = 4096;

  std::string name_;
  MappingSpec map_;
  DeviceSpec device_;
  int64_t K_ = 0, N_ = 0;
  double scale_ = 0.0;
  torch::Tensor q_;  // [N, K] quantised weights (float holding integers)
  int slices_ = 1, components_ = 1;
  LevelTable levels_;  // the scheme's cell level of every integer weight
  std::vector<Read> reads_;
  std::vector<Tile> tiles_;
  int64_t stuck_ = 0, sa0_ = 0, sa1_ = 0;
  bool calibrating_ = false, faulty_ = false;
  SumKernel kernel_ = SumKernel::kAuto;
};

}  // namespace xbar
