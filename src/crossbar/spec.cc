#include "xbar/crossbar/spec.h"

#include <cmath>

#include "xbar/core/error.h"

namespace xbar {

const std::vector<std::string>& SchemeNames() {
  static const std::vector<std::string> names = {"two-column", "two-crossbar", "offset", "polarized", "complementary"};
  return names;
}

const char* SchemeName(Scheme s) { return SchemeNames()[static_cast<size_t>(s)].c_str(); }

Scheme ParseScheme(const std::string& name, const std::string& where) {
  const auto& names = SchemeNames();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<Scheme>(i);
  }
  std::string valid;
  for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
  throw ConfigError(StrCat(where, ": mapping.scheme: unknown scheme '", name, "'; expected one of ", valid));
}

int BitsFor(double x) { return x <= 0 ? 0 : static_cast<int>(std::ceil(std::log2(x + 1.0) - 1e-12)); }

MappingSpec MappingSpec::FromConfig(const Config& cfg) {
  MappingSpec m;
  m.rows = cfg.Int("mapping.crossbar_rows");
  m.cols = cfg.Int("mapping.crossbar_cols");
  m.scheme = ParseScheme(cfg.Str("mapping.scheme"), cfg.Where("mapping.scheme"));
  m.weight_bits = static_cast<int>(cfg.Int("mapping.weight_bits"));
  m.cell_bits = static_cast<int>(cfg.Int("mapping.cell_bits"));
  m.input_bits = static_cast<int>(cfg.Int("mapping.input_bits"));
  m.dac_bits = static_cast<int>(cfg.Int("mapping.dac_bits"));
  m.adc_bits = static_cast<int>(cfg.Int("mapping.adc_bits"));
  m.adc_calibrated = cfg.Str("mapping.adc_range") == "calibrated";
  m.analog_subtract = cfg.Str("mapping.subtract") == "analog";
  m.fragment_rows = cfg.Int("mapping.fragment_rows");
  m.column_budget = cfg.Int("mapping.column_budget");
  m.compact = cfg.Bool("mapping.compact");
  m.calibration_batches = cfg.Int("mapping.calibration_batches");
  if (m.dac_bits > m.input_bits) {
    throw ConfigError(StrCat(cfg.Where("mapping.dac_bits"), ": mapping.dac_bits: ", m.dac_bits,
                             " exceeds mapping.input_bits (", m.input_bits, ")"));
  }
  if (m.fragment_rows > m.rows) {
    throw ConfigError(StrCat(cfg.Where("mapping.fragment_rows"), ": mapping.fragment_rows: ", m.fragment_rows,
                             " rows do not fit a crossbar of ", m.rows, " rows"));
  }
  const bool pairs = m.scheme == Scheme::kTwoColumn || m.scheme == Scheme::kComplementary;
  if (m.analog_subtract && !pairs) {
    throw ConfigError(StrCat(cfg.Where("mapping.subtract"), ": mapping.subtract: analog subtraction needs a column-pair "
                             "scheme (two-column or complementary), not ", SchemeName(m.scheme)));
  }
  // One weight needs S cells (slices) per component; a crossbar must hold at least one weight.
  const int magnitude_bits = m.scheme == Scheme::kOffset ? m.weight_bits : m.weight_bits - 1;
  const int64_t slices = (magnitude_bits + m.cell_bits - 1) / m.cell_bits;
  const int64_t per_weight = slices * (pairs ? 2 : 1);
  const int64_t usable = m.cols - (m.scheme == Scheme::kOffset ? 1 : 0);
  if (usable < per_weight) {
    throw ConfigError(StrCat(cfg.Where("mapping.crossbar_cols"), ": mapping.crossbar_cols: ", m.cols,
                             " columns cannot hold one ", m.weight_bits, "-bit weight of the ", SchemeName(m.scheme),
                             " scheme (", per_weight, " columns", m.scheme == Scheme::kOffset ? " plus the unit column" : "",
                             " on ", m.cell_bits, "-bit cells)"));
  }
  return m;
}

DeviceSpec DeviceSpec::FromConfig(const Config& cfg) {
  DeviceSpec d;
  d.on_off_ratio = cfg.Float("device.on_off_ratio");
  d.variation_sigma = cfg.Float("device.variation_sigma");
  d.read_noise_sigma = cfg.Float("device.read_noise_sigma");
  d.drift_nu = cfg.Float("device.drift_nu");
  d.drift_time = cfg.Float("device.drift_time");
  return d;
}

FaultSpec FaultSpec::FromConfig(const Config& cfg) {
  FaultSpec f;
  const std::vector<double>& ratio = cfg.FloatList("faults.sa0_to_sa1");
  if (ratio.size() != 2 || ratio[0] + ratio[1] <= 0) {
    throw ConfigError(StrCat(cfg.Where("faults.sa0_to_sa1"), ": faults.sa0_to_sa1: expected two non-negative "
                             "numbers, not both 0, e.g. [1, 5.2]"));
  }
  const bool split = cfg.IsSet("faults.sa0_rate") || cfg.IsSet("faults.sa1_rate");
  if (split && cfg.IsSet("faults.rate")) {
    throw ConfigError(StrCat(cfg.Where("faults.rate"), ": faults.rate: give either faults.rate (with "
                             "faults.sa0_to_sa1) or faults.sa0_rate / faults.sa1_rate, not both"));
  }
  if (split) {
    f.sa0_rate = cfg.Float("faults.sa0_rate");
    f.sa1_rate = cfg.Float("faults.sa1_rate");
  } else {
    const double rate = cfg.Float("faults.rate");
    f.sa0_rate = rate * ratio[0] / (ratio[0] + ratio[1]);
    f.sa1_rate = rate * ratio[1] / (ratio[0] + ratio[1]);
  }
  if (f.sa0_rate + f.sa1_rate > 1.0) {
    throw ConfigError(StrCat(cfg.Where("faults.sa1_rate"), ": faults: stuck-off + stuck-on rates exceed 1"));
  }
  f.map_file = cfg.Str("faults.map");
  if (!f.map_file.empty() && (f.sa0_rate > 0 || f.sa1_rate > 0)) {
    throw ConfigError(StrCat(cfg.Where("faults.map"), ": faults.map: a measured fault map replaces the random "
                             "rates; set faults.rate to 0"));
  }
  f.seed = static_cast<uint64_t>(cfg.Int("seed"));
  return f;
}

}  // namespace xbar
