// xbar/hw/hw.h — hardware cost model of a ReRAM crossbar accelerator (SPEC §5). Torch-free.
//
// A technology table (configs/tech/*.yaml) gives the power and area of every component with its
// source; an architecture (configs/arch/*.yaml, every field overridable with arch.* keys) says how
// many of each make an IMA, a tile and the chip, and how weights and inputs are encoded. From them:
//
//   * Chip(): area, peak power and peak throughput of the whole chip (ISAAC's Table I totals);
//   * Estimate(): the cost of running one mapped network — crossbars, IMAs and tiles per layer,
//     bit-serial cycles (with FORMS zero-skipping from measured input statistics), pipeline
//     throughput, energy per inference from action counts × per-action energy, area and power.
//
//   hw::TechTable tech = hw::TechTable::Load("configs/tech/isaac32.yaml");
//   hw::ArchSpec arch = hw::ArchSpec::Preset("isaac");
//   hw::ChipCost chip = hw::Chip(arch, tech);   // 65.8 W, 85.4 mm², 479 GOPs/(s·mm²)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "xbar/crossbar/spec.h"

namespace xbar {
namespace hw {

// `count` instances of a component together draw power_mw and occupy area_mm2 (as the source
// tabulates them); one instance is the quotient.
struct Component {
  std::string name;
  double count = 1;
  double power_mw = 0;
  double area_mm2 = 0;
  int bits = 0;                 // ADC/DAC resolution
  double sample_rate_gsps = 0;  // ADC conversions per ns
  int64_t rows = 0, cols = 0;   // crossbar size the numbers are for
  int64_t bytes = 0;            // buffer capacity
  std::string source;
  double unit_power_mw() const { return power_mw / count; }
  double unit_area_mm2() const { return area_mm2 / count; }
};

// The component names a table may define ("adc-<bits>b" for ADCs of any resolution).
const std::vector<std::string>& ComponentNames();

struct TechTable {
  std::string name, path;
  std::map<std::string, Component> components;

  // ConfigError (naming the file, entry and field) for an unknown component, a missing or
  // non-positive power/area/count, or a missing source.
  static TechTable Load(const std::string& path);
  static TechTable Parse(const std::string& yaml_text, const std::string& source);
  // ConfigError when the table lacks the component.
  const Component& Get(const std::string& name) const;
  // The table's ADC of `bits`, or one derived from the nearest tabulated ADC with power and area
  // scaled by 2^(bits - tabulated bits) at the same sample rate (Walden figure of merit); the
  // derivation is written into its source.
  Component Adc(int bits) const;
};

// The architecture: the hardware description's crossbars and device (the same MappingSpec and
// DeviceSpec that simulate and compress read, from the same resolved config) and the fields only
// the cost model needs (component table, IMA/tile/chip organisation, cycle, zero-skipping).
struct ArchSpec {
  std::string name;                 // preset name
  MappingSpec map;                  // crossbar geometry and encoding (mapping.*)
  DeviceSpec device;                // device (device.*): the on/off ratio sets the read current
  std::string tech = "isaac32.yaml"; // component table: a path, or a name under configs/tech
  bool zero_skipping = false;       // skip all-zero leading input bit-planes per fragment
  bool replicate = false;           // copy slow layers onto spare crossbars to balance the pipeline
  double cycle_ns = 100;            // crossbar read cycle
  int64_t crossbars_per_ima = 8, adcs_per_ima = 8, ima_shift_adds = 4;
  int64_t imas_per_tile = 12, tiles = 168, tiles_per_router = 4, sigmoids_per_tile = 2;
  int64_t hypertransport_links = 4;

  // The resolved config with arch.preset = name_or_path and nothing else set.
  static ArchSpec Preset(const std::string& name_or_path);
  // mapping.*, device.* and arch.* of a resolved config (the preset already applied).
  static ArchSpec FromConfig(const Config& cfg);

  int ChipAdcBits() const;           // the ADC of a full read: mapping.adc_bits, or the lossless need
  double WeightsPerCrossbar() const;  // weights per physical array (half a pair's for two-crossbar)
  int64_t InputCycles() const;       // ceil(input_bits / dac_bits) (unsigned inputs; peak figures)
  int64_t ReadsPerColumn() const;    // ADC conversions per column per cycle (fragments)
  std::string TechPath() const;      // tech resolved against configs/tech
};

struct CostItem {
  std::string component;  // table name ("adc-8b", "crossbar", ...)
  std::string level;      // ima | tile | chip
  double count = 0;       // instances in the chip
  double power_w = 0, area_mm2 = 0;
  std::string source;
};

struct ChipCost {
  double ima_power_mw = 0, ima_area_mm2 = 0;
  double tile_power_mw = 0, tile_area_mm2 = 0;
  double power_w = 0, area_mm2 = 0;
  double cycle_ns = 0;             // effective: max(cycle_ns, ADC-limited cycle)
  double peak_gops = 0;            // 2 x MACs per second with every crossbar busy
  double peak_gops_per_s_per_mm2 = 0, peak_gops_per_w = 0;
  double adc_power_share = 0, adc_area_share = 0;  // of a tile
  std::vector<CostItem> items;
};

ChipCost Chip(const ArchSpec& arch, const TechTable& tech);

// One conv/linear layer mapped onto this architecture's crossbars (built by the caller from the
// crossbar mapper and, for zero-skipping, measured input statistics).
struct LayerWork {
  std::string name;
  int64_t rows = 0, cols = 0;       // GEMM K (inputs) x N (outputs)
  int64_t positions = 1;            // MVMs per inference (output pixels; 1 for linear)
  int64_t weights = 0, nonzero = 0; // K x N and the non-zero ones
  int64_t crossbars = 0;            // physical arrays after masked mapping
  int64_t cells = 0;                // cells holding weights (allocated rows x used columns)
  int64_t used_rows = 0;            // word lines driven per MVM, summed over the layer's crossbars
  int64_t used_cols = 0;            // bit lines read per cycle, summed over the layer's crossbars
  double cycle_share = 1.0;         // input cycles needed / applied (zero-skipping), in (0, 1]
  double conversions_per_cycle = 0; // ADC conversions per input cycle of one MVM (0 = used_cols x fragments)
  double mean_level = 0.5;          // mean programmed level / L of the used cells: read current scales
                                    // the crossbar energy (the table's figure is for a half-level array)
  double read_current_ratio = 1.0;  // IR drop: array current with every word line driven over the
                                    // current without wire resistance (scales the crossbar energy)
  int64_t sign_bits = 0;            // FORMS sign indicators (one per fragment per column), stored digitally
  int adc_bits = 0;                 // ADC resolution this layer needs (0 = the architecture's)
  int64_t input_cycles = 0;         // bit-serial cycles per MVM (signed inputs need a sign cycle; 0 = unsigned)
};

struct LayerCost {
  std::string name;
  int64_t replicas = 1;             // copies of the layer's weights (pipeline balancing)
  int64_t crossbars = 0, imas = 0;  // all copies
  int adc_bits = 0;
  double cycles = 0;                // crossbar cycles per inference (all of the layer's arrays in parallel)
  double latency_us = 0;            // one pipeline stage: the layer's positions over its copies
  double adc_conversions = 0;
  double energy_nj = 0;
  int64_t sign_bits = 0;
  double area_mm2 = 0;              // the layer's IMAs and their share of the tiles' shared parts
  std::map<std::string, double> energy_breakdown_nj;
};

struct CostReport {
  ChipCost chip;
  std::vector<LayerCost> layers;
  int64_t crossbars = 0, imas = 0, tiles = 0;
  double chips = 0;                 // tiles / tiles per chip
  double ops_per_inference = 0;     // 2 x dense MACs (the model's nominal work)
  double latency_us = 0;            // one inference through every layer
  double fps = 0;                   // pipelined: 1 / slowest layer
  double energy_per_inference_uj = 0;
  double area_mm2 = 0;              // the layers' IMAs with their share of the tiles (no chip I/O)
  double power_w = 0;               // energy per inference x fps
  double gops_per_s_per_mm2 = 0, gops_per_w = 0;
  // Busy-unit accounting, the way ISAAC's and FORMS' component tables count power (each figure is
  // a unit's power while it works): every IMA the layers occupy draws its whole table power, with
  // its share of its tile's shared parts, for the whole frame period, whatever its activity. Same
  // units as `area_mm2` (no chip I/O). power_w above charges each action and each unit's busy time.
  double busy_power_w = 0, busy_energy_per_inference_uj = 0, busy_gops_per_w = 0;
};

CostReport Estimate(const std::vector<LayerWork>& layers, const ArchSpec& arch, const TechTable& tech);

}  // namespace hw
}  // namespace xbar
