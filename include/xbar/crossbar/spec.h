// xbar/crossbar/spec.h — what a layer is mapped onto: tiles, bits, signed-weight scheme, periphery,
// device and fault models (SPEC §1, §3, §4). Plain structs with units; FromConfig reads and
// validates the mapping, device and faults sections.
//
//   MappingSpec map = MappingSpec::FromConfig(cfg);     // 128x128 tiles, 8-bit weights, 2-bit cells ...
//   DeviceSpec dev = DeviceSpec::FromConfig(cfg);        // on/off ratio, variation, read noise, drift
//   FaultSpec faults = FaultSpec::FromConfig(cfg);       // stuck-at rates or a measured fault map
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/config/config.h"

namespace xbar {

enum class Scheme {
  kTwoColumn,     // differential pair of columns: (w, 0) / (0, |w|)
  kTwoCrossbar,   // positive and negative arrays (PRIME-like): same cells, digital subtraction
  kOffset,        // ISAAC: w + bias in one column, unit column, digital bias subtraction
  kPolarized,     // FORMS: |w| in one column, one sign per fragment of m rows
  kComplementary, // ISQED'21: (L, L - |w|) / (L - |w|, L), zero at (L, L)
};
const std::vector<std::string>& SchemeNames();
const char* SchemeName(Scheme s);
// Throws ConfigError listing the valid names.
Scheme ParseScheme(const std::string& name, const std::string& where);

struct MappingSpec {
  int64_t rows = 128, cols = 128;  // R, C: cells per crossbar
  Scheme scheme = Scheme::kTwoColumn;
  int weight_bits = 8;  // b_w including sign
  int cell_bits = 2;    // c: levels 0 .. 2^c - 1 per cell
  int input_bits = 8;   // b_in (a sign bit included when a layer's inputs can be negative)
  int dac_bits = 1;     // v: input bits applied per cycle
  int adc_bits = 0;     // b_adc per column read; 0 = lossless for every read
  bool adc_calibrated = false;   // full scale from calibration batches instead of the worst case
  bool analog_subtract = false;  // pair schemes: subtract currents before one ADC conversion
  int64_t fragment_rows = 8;     // polarized: m rows per fragment (one ADC conversion each)
  int64_t column_budget = 0;     // TinyADC: non-zeros per column segment the ADC is sized for; 0 = rows
  bool compact = true;           // masked mapping: unallocate empty rows, columns and tiles
  int64_t calibration_batches = 2;

  int64_t levels() const { return (int64_t{1} << cell_bits) - 1; }  // L: top cell level
  static MappingSpec FromConfig(const Config& cfg);
};

struct DeviceSpec {
  double on_off_ratio = 10.0;      // G_max / G_min (e.g. 1 MOhm / 10 MOhm)
  double variation_sigma = 0.0;    // lognormal device-to-device variation: G' = G exp(N(0, s^2))
  double read_noise_sigma = 0.0;   // Gaussian read noise per read, relative to each cell's G
  double drift_nu = 0.0;           // G(t) = G0 (t/t0)^-nu
  double drift_time = 1.0;         // t / t0 at inference
  static DeviceSpec FromConfig(const Config& cfg);
  bool ideal() const { return variation_sigma == 0 && read_noise_sigma == 0 && drift_nu == 0; }
};

struct FaultSpec {
  double sa0_rate = 0.0;  // stuck-off (G_min) probability per physical cell
  double sa1_rate = 0.0;  // stuck-on (G_max) probability per physical cell
  std::string map_file;   // measured fault map (CSV: crossbar,row,col,type); replaces the rates
  uint64_t seed = 0;
  static FaultSpec FromConfig(const Config& cfg);
  bool any() const { return sa0_rate > 0 || sa1_rate > 0 || !map_file.empty(); }
};

// ceil(log2(x + 1)): bits to represent 0..x.
int BitsFor(double x);

}  // namespace xbar
