// xbar/crossbar/spec.h — the hardware description every stage reads: what a layer is mapped onto
// (tiles, bits, signed-weight scheme, periphery), the device and the fault model (SPEC §1, §3, §4).
// Plain structs with units, Torch-free. FromConfig reads the mapping, device and faults sections of
// a resolved config, in which `arch.preset` has already supplied every key the user did not set
// (config.h), so `simulate`, `faults`, `compress` and `estimate` all see the same crossbars.
//
//   MappingSpec map = MappingSpec::FromConfig(cfg);     // 128x128 tiles, 8-bit weights, 2-bit cells ...
//   DeviceSpec dev = DeviceSpec::FromConfig(cfg);        // on/off ratio, variation, read noise, drift
//   FaultSpec faults = FaultSpec::FromConfig(cfg);       // stuck-at rates or a measured fault map
//   map.scheme->Name();                                  // "two-column" (scheme.h)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/config/config.h"
#include "xbar/crossbar/scheme.h"

namespace xbar {

struct MappingSpec {
  int64_t rows = 128, cols = 128;  // R, C: cells per crossbar
  const Scheme* scheme = &FindScheme("two-column", "MappingSpec");
  int weight_bits = 8;  // b_w including sign
  int cell_bits = 2;    // c: levels 0 .. 2^c - 1 per cell
  int input_bits = 8;   // b_in (a sign bit included when a layer's inputs can be negative)
  int dac_bits = 1;     // v: input bits applied per cycle
  int adc_bits = 0;     // b_adc per column read; 0 = lossless for every read
  bool adc_calibrated = false;   // full scale from calibration images instead of the worst case
  double adc_percentile = 100;   // calibrated full scale: this percentile of |partial sums| per read column
  bool analog_subtract = false;  // pair schemes: subtract currents before one ADC conversion
  // ISAAC's flipped encoding (unit-column schemes): a column whose levels sum to more than half of
  // rows x L stores L - level instead, and its read is subtracted digitally from L x the unit
  // column's read (the input sum). Every read then stays within half the unflipped worst case:
  // one ADC bit less (8 bits for 128 rows of 2-bit cells and 1-bit DACs).
  bool flip_columns = false;
  int64_t fragment_rows = 8;     // polarized: m rows per fragment (one ADC conversion each); zero-skipping groups
  int64_t column_budget = 0;     // TinyADC: non-zeros per column segment the ADC is sized for; 0 = rows
  bool compact = true;           // masked mapping: unallocate empty rows, columns and tiles
  int64_t calibration_images = 400;  // training images that calibrate input (and ADC) ranges

  Encoding encoding() const { return Encoding{weight_bits, cell_bits}; }
  // flip_columns where the scheme has the unit column it needs (a scheme swapped in after the
  // config was read, as faults.schemes does, keeps its own encoding).
  bool Flipped() const { return flip_columns && scheme->UnitColumn(encoding()); }
  int64_t levels() const { return (int64_t{1} << cell_bits) - 1; }  // L: top cell level
  int slices() const { return scheme->Slices(encoding()); }           // S
  // Weights side by side on one array: its usable columns over the columns each weight takes.
  int64_t LogicalColumns() const;
  // Rows converted by one ADC read: a FORMS fragment, else every row of the tile (`tile_rows`).
  int64_t GroupRows(int64_t tile_rows) const;
  // Worst-case column current of a read over `rows` rows, in level x input-digit units: every cell
  // at the top level and the largest input digit, or only the column budget's cells where a zero
  // weight is an empty cell; half of it (rounded down) for weight columns with flip_columns. It sets
  // the lossless ADC range.
  double ReadFullScale(int64_t rows) const;
  // Bits a read over `rows` rows needs to be lossless (plus the sign of an analog difference).
  int LosslessAdcBits(int64_t rows) const;
  // The ADC of such a read: the lossless need when mapping.adc_bits is 0, else mapping.adc_bits,
  // or with a column budget at most the lossless need (TinyADC: bounded reads, smaller converters).
  int AdcBits(int64_t rows) const;
  // Bit-serial input cycles of one MVM: ceil(b_in / v), or for signed inputs the low bits in
  // ceil((b_in - 1) / v) cycles plus one for the two's-complement sign bit.
  int64_t InputCycles(bool signed_inputs) const;

  static MappingSpec FromConfig(const Config& cfg);
  // Throws ConfigError naming `where` when an array cannot hold one weight (FromConfig also checks
  // the DAC against the inputs, fragments against the rows and analog subtraction against pairs).
  void Validate(const std::string& where) const;
};

// The exact IR-drop model's size limit (ir_drop.h: a banded solve of 2 R C nodes, O(R C^3)).
constexpr int64_t kIrDropExactMaxCells = 16384;

struct DeviceSpec {
  double on_off_ratio = 10.0;      // G_max / G_min (e.g. 1 MOhm / 10 MOhm)
  double variation_sigma = 0.0;    // lognormal device-to-device variation: G' = G exp(N(0, s^2))
  double read_noise_sigma = 0.0;   // Gaussian read noise per read, relative to each cell's G
  double drift_nu = 0.0;           // G(t) = G0 (t/t0)^-nu
  double drift_time = 1.0;         // t / t0 at inference
  double r_on_ohm = 1e6;           // R_on = 1 / G_max (ISLPED'19: 1 MOhm on, 10 MOhm off)
  double wire_resistance_ohm = 0;  // word/bit-line wire per cell segment (IR drop, ir_drop.h); 0 = off
  bool ir_drop_exact = false;      // exact nodal solve instead of the fast model (small arrays only)
  static DeviceSpec FromConfig(const Config& cfg);
  bool ideal() const {
    return variation_sigma == 0 && read_noise_sigma == 0 && drift_nu == 0 && wire_resistance_ohm == 0;
  }
  // G_min in units of the level span G_max - G_min: 1 / (on/off - 1).
  double g_min_levels() const { return 1.0 / (on_off_ratio - 1.0); }
};

struct FaultSpec {
  double sa0_rate = 0.0;  // stuck-off (G_min) probability per physical cell
  double sa1_rate = 0.0;  // stuck-on (G_max) probability per physical cell
  std::string map_file;   // measured fault map (CSV: crossbar,row,col,type); replaces the rates
  bool placement = false; // fault-map-aware placement of every tile on its stuck cells (placement.h)
  uint64_t seed = 0;
  static FaultSpec FromConfig(const Config& cfg);
  bool any() const { return sa0_rate > 0 || sa1_rate > 0 || !map_file.empty(); }
};

// ceil(log2(x + 1)): bits to represent 0..x.
int BitsFor(double x);

}  // namespace xbar
