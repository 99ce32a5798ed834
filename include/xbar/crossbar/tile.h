// xbar/crossbar/tile.h — one programmed crossbar of a layer, as the engine and the stages see it.
//
// A tile holds the GEMM rows (inputs) and columns (outputs) it was given by the tiling (plan.h),
// the scheme's cell levels, and what programming made of them: the read matrices (column sums per
// read, [groups, group rows, reads x columns]), the read-noise variances and the ADC tables. The
// engine (layer.h) fills the geometry and schedules the work; the stages (stage.h) fill the rest.
//
//   std::vector<ReadSpec> reads = ReadsOf(map);   // per slice (and component), unit column last
//   torch::Tensor m = AssembleReads(tile, reads, cells.levels, cells.unit, map.slices());  // [G, g, NR]
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "xbar/crossbar/placement.h"
#include "xbar/crossbar/spec.h"

namespace xbar {

// Zero entries after the ADC tables (adc_inv, adc_lo, adc_hi) and the packed reads of a crossbar:
// the conversion kernel reads whole blocks of 64 columns, and a column past the last has zero
// tables, so a zero code whatever it counts.
inline constexpr int64_t kConvertPad = 64;

// One read of a tile: the column sums an ADC converts and the digital side recombines.
struct ReadSpec {
  int component = 0;        // component array; analog pair reads use 0 minus 1
  int slice = 0;            // -1: the offset scheme's unit column
  bool difference = false;  // analog subtraction of the pair
  double coef = 1.0;        // digital weight of the read: ±2^(c·slice), or -bias for the unit column
  // Read columns it spans on a tile of `cols` outputs.
  int64_t Width(int64_t cols) const { return slice < 0 ? 1 : cols; }
};

// The reads of every tile under `map`: one per slice (and component), pair differences when
// subtracting in the analog domain, and the offset scheme's unit column last.
std::vector<ReadSpec> ReadsOf(const MappingSpec& map);

struct CrossbarTile {
  std::vector<int64_t> rows, cols;   // GEMM rows (inputs) and columns (outputs) on this crossbar
  bool rows_contiguous = false;      // rows are one ascending run (RowsContiguous, set with them)
  torch::Tensor ideal;               // [A, R_t, C_t * S] the scheme's cell levels (float)
  torch::Tensor unit;                // [R_t] offset scheme's unit column (levels), else undefined
  torch::Tensor sign;                // polarized: [groups, C_t] fragment signs (+1/-1/0)
  int64_t groups = 1, group_rows = 0;  // ADC groups (FORMS fragments, else the whole column)
  // mapping.flip_columns (ISAAC's flipped encoding): per read column, 1 where the column stores
  // L - level (its read counts negatively), and per output j the factor on the unit column's
  // contribution (-bias x input sum), 1 - L Σ_flipped slices 2^(c s) / bias, so that it also adds
  // L x input sum x each flipped slice's weight. Both empty when nothing is flipped.
  std::vector<uint8_t> flipped;
  std::vector<double> unit_gain;
  // ---- set by programming ----------------------------------------------------------------------
  torch::Tensor reads;               // [groups, g, NR] effective read matrix (level x input units)
  torch::Tensor noise_var;           // [groups, g, NR] squared read-noise scale per cell, or undefined
  // ADC (stages/adc.cc): LSB (level units) and top code per read column, the worst-case full
  // scale, calibration state, and the tables the engine's conversion loop reads: 1/LSB, code
  // range, digital weight of a code per group [G * NR].
  torch::Tensor step, top, worst_fs, calib;
  std::vector<int64_t> calib_hist;
  std::vector<float> adc_inv, adc_lo, adc_hi;  // NR entries, then kConvertPad zeros
  float adc_code_max = 0;            // the largest |code| of adc_lo and adc_hi (set with them)
  std::vector<double> adc_scale;
  // ---- the packed kernel (kernels.h) -------------------------------------------------------------
  // Bit-packed reads (empty when a cell is not integer-valued): plane p holds bit plane_shift[p]
  // of the positive (or, plane_negative[p], negative) part of every read, as words of 64 rows:
  // packed[((group * planes + p) * words + w) * NR + column].
  std::vector<uint64_t> packed;  // then kConvertPad zero words
  std::vector<int> plane_shift, plane_negative;
  int64_t words = -1;  // -1: not packed yet (PackReads runs on the first Forward that can use it)
  // Fault-map-aware placement of the last programming (empty: the mapping's own order).
  TilePlacement placement;
  int kernel = 0;      // 0: undecided (auto), 1: float, 2: packed

  int64_t num_rows() const { return static_cast<int64_t>(rows.size()); }
  int64_t num_cols() const { return static_cast<int64_t>(cols.size()); }
  int64_t read_columns() const { return reads.size(2); }
};

// A tile's GEMM rows or columns as an int64 index tensor (for index_select).
torch::Tensor IndexTensor(const std::vector<int64_t>& v);

// The read matrix [G, g, NR] of per-component cell values `levels` [A, R, C*S] (and the unit
// column [R], if any): each read's columns side by side, rows padded to whole groups.
torch::Tensor AssembleReads(const CrossbarTile& t, const std::vector<ReadSpec>& reads, const torch::Tensor& levels,
                            const torch::Tensor& unit, int slices);

// The tile's physical arrays, [R, bit lines] each, in bit-line order: a pair in one array
// interleaves its cells (column 2 (j S + s) + a), two-crossbar has one array per component, the
// offset scheme's unit column comes last. FromPhysical writes such arrays back.
std::vector<torch::Tensor> ToPhysical(const torch::Tensor& levels, const torch::Tensor& unit, const Scheme& scheme);
void FromPhysical(const std::vector<torch::Tensor>& arrays, const Scheme& scheme, torch::Tensor& levels,
                  torch::Tensor& unit);

}  // namespace xbar
