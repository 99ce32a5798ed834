#include "xbar/crossbar/spec.h"

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"

namespace xbar {

int BitsFor(double x) { return x <= 0 ? 0 : static_cast<int>(std::ceil(std::log2(x + 1.0) - 1e-12)); }

int64_t MappingSpec::LogicalColumns() const {
  const Encoding e = encoding();
  return scheme->UsableColumns(cols, e) / scheme->ColumnsPerWeight(e);
}

int64_t MappingSpec::GroupRows(int64_t tile_rows) const {
  return scheme->SignPerFragment() ? fragment_rows : tile_rows;
}

double MappingSpec::ReadFullScale(int64_t rows) const {
  const int64_t active = column_budget > 0 && scheme->ZeroIsEmptyCell() ? std::min(rows, column_budget) : rows;
  // A flipped encoding keeps every weight column's level sum at most floor(active L / 2); the unit
  // column (level 1 on every row) reads up to `rows` of them.
  const int64_t level_sum = Flipped() ? std::max(active * levels() / 2, rows) : active * levels();
  return static_cast<double>(level_sum) * (std::ldexp(1.0, dac_bits) - 1.0);
}

int MappingSpec::LosslessAdcBits(int64_t rows) const {
  return BitsFor(ReadFullScale(rows)) + (analog_subtract && scheme->PairInOneArray() ? 1 : 0);
}

int MappingSpec::AdcBits(int64_t rows) const {
  const int need = LosslessAdcBits(rows);
  if (adc_bits == 0) return need;
  // A chip's converters have mapping.adc_bits; only a column budget (TinyADC) sizes a layer's
  // converters down to what its bounded reads need.
  return column_budget > 0 ? std::min(adc_bits, need) : adc_bits;
}

int64_t MappingSpec::InputCycles(bool signed_inputs) const {
  const int low = signed_inputs ? input_bits - 1 : input_bits;
  return (low + dac_bits - 1) / dac_bits + (signed_inputs ? 1 : 0);
}

MappingSpec MappingSpec::FromConfig(const Config& cfg) {
  MappingSpec m;
  m.rows = cfg.Int("mapping.crossbar_rows");
  m.cols = cfg.Int("mapping.crossbar_cols");
  m.scheme = &FindScheme(cfg.Str("mapping.scheme"), StrCat(cfg.Where("mapping.scheme"), ": mapping.scheme"));
  m.weight_bits = static_cast<int>(cfg.Int("mapping.weight_bits"));
  m.cell_bits = static_cast<int>(cfg.Int("mapping.cell_bits"));
  m.input_bits = static_cast<int>(cfg.Int("mapping.input_bits"));
  m.dac_bits = static_cast<int>(cfg.Int("mapping.dac_bits"));
  m.adc_bits = static_cast<int>(cfg.Int("mapping.adc_bits"));
  m.adc_calibrated = cfg.Str("mapping.adc_range") == "calibrated";
  m.adc_percentile = cfg.Float("mapping.adc_percentile");
  m.analog_subtract = cfg.Str("mapping.subtract") == "analog";
  m.fragment_rows = cfg.Int("mapping.fragment_rows");
  m.column_budget = cfg.Int("mapping.column_budget");
  m.flip_columns = cfg.Bool("mapping.flip_columns");
  m.compact = cfg.Bool("mapping.compact");
  m.calibration_images = cfg.Int("mapping.calibration_images");
  if (m.dac_bits > m.input_bits) {
    throw ConfigError(StrCat(cfg.Where("mapping.dac_bits"), ": mapping.dac_bits: ", m.dac_bits,
                             " exceeds mapping.input_bits (", m.input_bits, ")"));
  }
  if (m.fragment_rows > m.rows) {
    throw ConfigError(StrCat(cfg.Where("mapping.fragment_rows"), ": mapping.fragment_rows: ", m.fragment_rows,
                             " rows do not fit a crossbar of ", m.rows, " rows"));
  }
  if (m.analog_subtract && !m.scheme->PairInOneArray()) {
    throw ConfigError(StrCat(cfg.Where("mapping.subtract"), ": mapping.subtract: analog subtraction needs a scheme "
                             "with column pairs in one array (two-column or complementary), not ", m.scheme->Name()));
  }
  if (m.flip_columns && !m.scheme->UnitColumn(m.encoding()) && cfg.FromPreset("mapping.flip_columns")) {
    m.flip_columns = false;  // the preset's encoding of its own scheme (isaac: offset), not of the one chosen
  } else if (m.flip_columns && !m.scheme->UnitColumn(m.encoding())) {
    throw ConfigError(StrCat(cfg.Where("mapping.flip_columns"), ": mapping.flip_columns: the flipped encoding "
                             "subtracts from the unit column's input sum; ", m.scheme->Name(),
                             " has no unit column (use offset, or set it to false)"));
  }
  m.Validate(StrCat(cfg.Where("mapping.crossbar_cols"), ": mapping.crossbar_cols"));
  return m;
}

void MappingSpec::Validate(const std::string& where) const {
  const Encoding e = encoding();
  // A crossbar must hold at least one weight: S cells per component (both cells of an in-array pair).
  if (LogicalColumns() < 1) {
    throw ConfigError(StrCat(where, ": ", cols, " columns cannot hold one ", weight_bits, "-bit weight of the ",
                             scheme->Name(), " scheme (", scheme->ColumnsPerWeight(e), " columns",
                             scheme->UnitColumn(e) ? " plus the unit column" : "", " on ", cell_bits, "-bit cells)"));
  }
}

DeviceSpec DeviceSpec::FromConfig(const Config& cfg) {
  DeviceSpec d;
  d.on_off_ratio = cfg.Float("device.on_off_ratio");
  d.variation_sigma = cfg.Float("device.variation_sigma");
  d.read_noise_sigma = cfg.Float("device.read_noise_sigma");
  d.drift_nu = cfg.Float("device.drift_nu");
  d.drift_time = cfg.Float("device.drift_time");
  d.r_on_ohm = cfg.Float("device.r_on_ohm");
  d.wire_resistance_ohm = cfg.Float("device.wire_resistance_ohm");
  d.ir_drop_exact = cfg.Str("device.ir_drop_model") == "exact";
  const int64_t cells = cfg.Int("mapping.crossbar_rows") * cfg.Int("mapping.crossbar_cols");
  if (d.ir_drop_exact && d.wire_resistance_ohm > 0 && cells > kIrDropExactMaxCells) {
    throw ConfigError(StrCat(cfg.Where("device.ir_drop_model"), ": device.ir_drop_model: exact solves arrays of at most ",
                             kIrDropExactMaxCells, " cells, not ", cfg.Int("mapping.crossbar_rows"), "x",
                             cfg.Int("mapping.crossbar_cols"), "; use fast"));
  }
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
  const std::string& placement = cfg.Str("faults.placement");
  if (placement == "both") {
    throw ConfigError(StrCat(cfg.Where("faults.placement"), ": faults.placement: 'both' (placed and unplaced curves) is "
                             "for xbar faults; one chip is placed or not: on or off"));
  }
  f.placement = placement == "on";
  if (f.placement && DeviceSpec::FromConfig(cfg).wire_resistance_ohm > 0) {
    throw ConfigError(StrCat(cfg.Where("faults.placement"), ": faults.placement: not modelled together with IR drop "
                             "(device.wire_resistance_ohm > 0: the placed rows and columns would see other wire drops)"));
  }
  f.seed = static_cast<uint64_t>(cfg.Int("seed"));
  return f;
}

}  // namespace xbar
