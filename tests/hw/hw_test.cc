// The hardware cost model (issue 5): ISAAC's published totals, table and preset validation, and the
// model-driven estimate's bookkeeping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "xbar/config/config.h"
#include "xbar/core/error.h"
#include "xbar/hw/hw.h"

namespace xbar::hw {
namespace {

TechTable Isaac32() { return TechTable::Load(std::string(XBAR_SOURCE_DIR) + "/configs/tech/isaac32.yaml"); }

ArchSpec Preset(const std::string& name) { return ArchSpec::Preset(name); }

void ExpectWithin(double got, double want, double tolerance, const char* what) {
  EXPECT_LE(std::abs(got / want - 1.0), tolerance) << what << ": got " << got << ", published " << want;
}

TEST(Isaac, ReproducesThePublishedChipTotalsWithinThreePercent) {
  const ChipCost c = Chip(Preset("isaac"), Isaac32());
  ExpectWithin(c.power_w, 65.8, 0.03, "chip power W");
  ExpectWithin(c.area_mm2, 85.4, 0.03, "chip area mm2");
  ExpectWithin(c.peak_gops_per_s_per_mm2, 478.95, 0.03, "peak GOPs/(s mm2)");
  ExpectWithin(c.peak_gops_per_w, 627.5, 0.03, "peak GOPs/W");
  // The intermediate totals of Table I, and the ADC shares the paper quotes.
  ExpectWithin(c.ima_power_mw, 24.09, 0.01, "IMA power mW");
  ExpectWithin(c.ima_area_mm2, 0.01315, 0.01, "IMA area mm2");
  ExpectWithin(c.tile_power_mw, 330, 0.01, "tile power mW");
  ExpectWithin(c.tile_area_mm2, 0.372, 0.01, "tile area mm2");
  ExpectWithin(c.adc_power_share, 0.58, 0.03, "ADC share of tile power");
  ExpectWithin(c.adc_area_share, 0.31, 0.03, "ADC share of tile area");
  EXPECT_DOUBLE_EQ(c.cycle_ns, 100.0);  // 8 ADCs x 1.28 GS/s convert 1,024 columns in 100 ns
}

TEST(Tech, AdcOfAnotherResolutionIsDerivedAndSaysSo) {
  TechTable t = Isaac32();
  const Component a6 = t.Adc(6);
  EXPECT_DOUBLE_EQ(a6.unit_power_mw(), t.Get("adc-8b").unit_power_mw() / 4);
  EXPECT_NE(a6.source.find("derived from adc-8b"), std::string::npos);
  EXPECT_DOUBLE_EQ(t.Adc(4).unit_power_mw(), 15.2 / 32);  // tabulated: the FORMS ADC
}

void ExpectConfigError(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Tech, UnknownComponentsAndMissingFieldsAreConfigErrors) {
  ExpectConfigError([] { TechTable::Parse("components:\n  adcc: {power_mw: 1, area_mm2: 1, source: x}\n", "t.yaml"); },
                    "t.yaml:2: unknown component 'adcc'");
  ExpectConfigError([] { TechTable::Parse("components:\n  dac: {power_mw: 1, source: x}\n", "t.yaml"); },
                    "dac: missing field 'area_mm2'");
  ExpectConfigError([] { TechTable::Parse("components:\n  dac: {power_mw: -1, area_mm2: 1, source: x}\n", "t.yaml"); },
                    "dac.power_mw: expected a number >= 0");
  ExpectConfigError([] { TechTable::Parse("components:\n  dac: {power_mw: 1, area_mm2: 1, source: x, colour: red}\n", "t.yaml"); },
                    "unknown field 'colour'");
  ExpectConfigError([] { TechTable::Parse("components:\n  adc-6b: {power_mw: 1, area_mm2: 1, source: x}\n", "t.yaml"); },
                    "missing field 'sample_rate_gsps'");
  TechTable partial = TechTable::Parse("components:\n  dac: {power_mw: 1, area_mm2: 1, source: x}\n", "t.yaml");
  ExpectConfigError([&] { Chip(Preset("isaac"), partial); }, "has no ADC");
}

TEST(Arch, PresetsLoadAndBadFieldsAreConfigErrors) {
  for (const char* name : {"generic", "isaac", "forms", "islped19"}) {
    ArchSpec a = Preset(name);
    EXPECT_EQ(a.name, name);
    const ChipCost c = Chip(a, Isaac32());
    EXPECT_GT(c.peak_gops, 0) << name;
  }
  EXPECT_EQ(Preset("isaac").map.scheme->Name(), std::string("offset"));
  EXPECT_EQ(Preset("isaac").map.weight_bits, 16);
  EXPECT_EQ(Preset("forms").map.scheme->Name(), std::string("polarized"));
  EXPECT_TRUE(Preset("forms").zero_skipping);
  // generic's lossless ADC: a 128-row read of 2-bit cells needs 9 bits.
  EXPECT_EQ(Preset("generic").ChipAdcBits(), 9);
  ExpectConfigError([] { ArchSpec::Preset("tpu"); }, "expected one of generic, isaac, forms, islped19");
  auto parse = [](const std::string& yaml) { return ArchSpec::FromConfig(Config::Parse(yaml, "a.yaml")); };
  ExpectConfigError([&] { parse("arch:\n  tiles: 4\n  colour: red\n"); }, "a.yaml:3: unknown key 'arch.colour'");
  ExpectConfigError([&] { parse("mapping:\n  scheme: four-column\n"); }, "expected one of two-column");
  ExpectConfigError([&] { parse("mapping:\n  crossbar_cols: 4\n"); }, "4 columns cannot hold one 8-bit weight");
  ExpectConfigError([&] { parse("mapping:\n  fragment_rows: 256\n"); }, "do not fit a crossbar of 128 rows");
  // ISAAC's flipped encoding needs the unit column's input sum; with it, ISAAC's 8-bit ADC is lossless.
  ExpectConfigError([&] { parse("mapping:\n  flip_columns: true\n"); },
                    "a.yaml:2: mapping.flip_columns: the flipped encoding subtracts from the unit column's input sum; "
                    "two-column has no unit column");
  EXPECT_TRUE(Preset("isaac").map.flip_columns);
  EXPECT_FALSE(parse("arch:\n  preset: isaac\nmapping:\n  scheme: two-column\n").map.flip_columns)
      << "the preset's encoding of its own scheme does not apply to another one";
  EXPECT_EQ(Preset("isaac").map.LosslessAdcBits(128), 8);
  EXPECT_EQ(Preset("isaac").ChipAdcBits(), 8);
  ExpectConfigError([&] { parse("arch:\n  tiles: 1.5\n"); }, "arch.tiles: expected an integer");
  // One key per quantity: the old duplicates name their replacement.
  ExpectConfigError([&] { parse("arch:\n  adc_bits: 6\n"); }, "a.yaml:2: arch.adc_bits: replaced by mapping.adc_bits");
  ExpectConfigError([&] { parse("arch:\n  scheme: offset\n"); }, "replaced by mapping.scheme");
}

TEST(Arch, ExperimentKeysOverrideThePreset) {
  Config cfg = Config::Parse("arch:\n  preset: isaac\n  tiles: 84\nmapping:\n  adc_bits: 6\n", "exp.yaml");
  ArchSpec a = ArchSpec::FromConfig(cfg);
  EXPECT_EQ(a.tiles, 84);
  EXPECT_EQ(a.map.adc_bits, 6);
  EXPECT_EQ(a.map.weight_bits, 16);  // untouched: the preset's
  EXPECT_TRUE(cfg.FromPreset("mapping.weight_bits"));
  EXPECT_FALSE(cfg.IsSet("mapping.weight_bits"));
  EXPECT_TRUE(cfg.IsSet("mapping.adc_bits"));
  EXPECT_NE(cfg.Where("mapping.weight_bits").find("preset isaac"), std::string::npos) << cfg.Where("mapping.weight_bits");
  // The resolved YAML says where every value came from.
  const std::string yaml = cfg.ToYaml();
  EXPECT_NE(yaml.find("weight_bits: 16  # preset isaac"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("adc_bits: 6  # exp.yaml:5"), std::string::npos) << yaml;
  // Re-loading the resolved YAML describes the same hardware.
  const Config again = Config::Parse(yaml, "config.resolved.yaml");
  EXPECT_EQ(again.Int("mapping.weight_bits"), 16);
  EXPECT_EQ(again.Int("arch.tiles"), 84);
  Config bad = Config::Parse("arch:\n  preset: isaac\nmapping:\n  crossbar_cols: 4\n", "exp.yaml");
  ExpectConfigError([&] { ArchSpec::FromConfig(bad); }, "exp.yaml:4: mapping.crossbar_cols: 4 columns cannot hold");
  // A preset file may hold only hardware keys.
  const std::string path = ::testing::TempDir() + "/bad_preset.yaml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("train:\n  epochs: 3\n", f);
    std::fclose(f);
  }
  ExpectConfigError([&] { Config::Parse("arch:\n  preset: " + path + "\n", "exp.yaml"); },
                    "a preset sets only mapping.*, device.* and arch.* keys");
}

TEST(Arch, CostModelReadsTheDeviceOnOffRatio) {
  // The crossbar read energy follows G = G_min + level: a smaller on/off ratio raises G_min.
  const TechTable t = Isaac32();
  LayerWork w;
  w.name = "l";
  w.rows = 128;
  w.cols = 16;
  w.positions = 10;
  w.crossbars = 1;
  w.used_rows = 128;
  w.used_cols = 128;
  w.mean_level = 0.25;
  ArchSpec a = Preset("isaac");
  const double e10 = Estimate({w}, a, t).layers[0].energy_breakdown_nj.at("crossbar");
  a.device.on_off_ratio = 3;  // g0 = 1/2
  const double e3 = Estimate({w}, a, t).layers[0].energy_breakdown_nj.at("crossbar");
  EXPECT_NEAR(e3 / e10, ((0.5 + 0.25) / (0.5 + 0.5)) / ((1.0 / 9 + 0.25) / (1.0 / 9 + 0.5)), 1e-12);
  // IR drop: the read current the workload measured scales the crossbar energy, nothing else.
  const CostReport full = Estimate({w}, a, t);
  w.read_current_ratio = 0.8;
  const CostReport dropped = Estimate({w}, a, t);
  EXPECT_NEAR(dropped.layers[0].energy_breakdown_nj.at("crossbar") / full.layers[0].energy_breakdown_nj.at("crossbar"), 0.8,
              1e-12);
  EXPECT_EQ(dropped.layers[0].energy_breakdown_nj.at("dac"), full.layers[0].energy_breakdown_nj.at("dac"));
  EXPECT_EQ(dropped.layers[0].latency_us, full.layers[0].latency_us);
}

LayerWork Layer(int64_t positions, int64_t crossbars, double share = 1.0) {
  LayerWork w;
  w.name = "conv";
  w.rows = 576;
  w.cols = 64;
  w.positions = positions;
  w.crossbars = crossbars;
  w.used_rows = 576;
  w.used_cols = crossbars * 128;
  w.cycle_share = share;
  return w;
}

TEST(Estimate, CyclesEnergyAndThroughputFollowTheActionCounts) {
  const TechTable t = Isaac32();
  ArchSpec isaac = Preset("isaac");
  CostReport r = Estimate({Layer(100, 5)}, isaac, t);
  ASSERT_EQ(r.layers.size(), 1u);
  EXPECT_DOUBLE_EQ(r.layers[0].cycles, 100.0 * 16);          // 16-bit inputs, 1-bit DACs
  EXPECT_DOUBLE_EQ(r.layers[0].latency_us, 100.0 * 16 * 0.1);
  EXPECT_DOUBLE_EQ(r.fps, 1e6 / 160.0);
  EXPECT_DOUBLE_EQ(r.layers[0].adc_conversions, 5.0 * 128 * 100 * 16);
  EXPECT_EQ(r.imas, 1);
  EXPECT_EQ(r.tiles, 1);
  EXPECT_DOUBLE_EQ(r.ops_per_inference, 2.0 * 576 * 64 * 100);
  // ADC energy: 2 mW / 1.28 GS/s = 1.5625 pJ per conversion.
  EXPECT_NEAR(r.layers[0].energy_breakdown_nj.at("adc-8b"), 5.0 * 128 * 1600 * 1.5625e-3, 1e-9);
  CostReport twice = Estimate({Layer(200, 5)}, isaac, t);
  EXPECT_NEAR(twice.energy_per_inference_uj, 2 * r.energy_per_inference_uj, 1e-12);
  // Zero-skipping only where the architecture has it.
  CostReport half = Estimate({Layer(100, 5, 0.5)}, isaac, t);
  EXPECT_DOUBLE_EQ(half.layers[0].cycles, r.layers[0].cycles);
  ArchSpec skip = isaac;
  skip.zero_skipping = true;
  EXPECT_DOUBLE_EQ(Estimate({Layer(100, 5, 0.5)}, skip, t).layers[0].cycles, 800.0);
  // Crossbar read energy follows the programmed conductance (complementary keeps cells near G_max).
  LayerWork bright = Layer(100, 5);
  bright.mean_level = 1.0;
  const double g0 = 1.0 / 9.0;
  EXPECT_NEAR(Estimate({bright}, isaac, t).layers[0].energy_breakdown_nj.at("crossbar"),
              r.layers[0].energy_breakdown_nj.at("crossbar") * (g0 + 1.0) / (g0 + 0.5), 1e-9);
  // Measured conversions per cycle (fragments actually populated) replace the worst case.
  LayerWork few = Layer(100, 5);
  few.conversions_per_cycle = 10;
  EXPECT_DOUBLE_EQ(Estimate({few}, isaac, t).layers[0].adc_conversions, 10.0 * 1600);
  // The pipeline runs at the pace of the slowest layer.
  CostReport two = Estimate({Layer(100, 5), Layer(400, 5)}, isaac, t);
  EXPECT_DOUBLE_EQ(two.fps, 1e6 / 640.0);
  EXPECT_DOUBLE_EQ(two.latency_us, 160.0 + 640.0);
}

TEST(Estimate, ReplicationBalancesThePipelineWithinTheChip) {
  const TechTable t = Isaac32();
  ArchSpec a = Preset("isaac");
  a.tiles = 1;  // 12 IMAs of 8 crossbars
  a.replicate = true;
  const CostReport once = Estimate({Layer(100, 5), Layer(400, 5)}, Preset("isaac"), t);
  const CostReport r = Estimate({Layer(100, 5), Layer(400, 5)}, a, t);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_LE(r.imas, 12);
  EXPECT_GT(r.crossbars, 96 - 2 * 8);  // stops only when the next copy does not fit
  EXPECT_GT(r.layers[1].replicas, 3 * r.layers[0].replicas);
  EXPECT_EQ(r.layers[0].crossbars, 5 * r.layers[0].replicas);
  EXPECT_GT(r.fps, 10 * once.fps);
  // Copies share the positions: the work, and the energy of every action, stay the same.
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_DOUBLE_EQ(r.layers[i].cycles, once.layers[i].cycles);
    for (const char* k : {"crossbar", "dac", "adc-8b", "sample-hold"}) {
      EXPECT_DOUBLE_EQ(r.layers[i].energy_breakdown_nj.at(k), once.layers[i].energy_breakdown_nj.at(k)) << k;
    }
  }
  // A single-position layer cannot be split.
  LayerWork fc = Layer(1, 5);
  EXPECT_EQ(Estimate({fc}, a, t).layers[0].replicas, 1);
}

// Issue 14: the papers' accounting — every occupied IMA at its Table I power, with its twelfth of
// the tile's shared parts, for the whole frame period — beside the activity-based energy.
TEST(Estimate, BusyUnitPowerIsTheTablePowerOfTheOccupiedUnits) {
  const TechTable t = Isaac32();
  const ArchSpec isaac = Preset("isaac");
  const ChipCost chip = Chip(isaac, t);
  // A full tile (12 IMAs of 8 crossbars, one layer) draws the tile's 330 mW.
  const CostReport full = Estimate({Layer(100, 96)}, isaac, t);
  ASSERT_EQ(full.imas, 12);
  EXPECT_NEAR(full.busy_power_w, chip.tile_power_mw / 1000.0, 1e-12);
  EXPECT_NEAR(full.busy_power_w, 0.330, 0.001);
  EXPECT_NEAR(full.busy_energy_per_inference_uj, full.busy_power_w * full.latency_us, 1e-9);  // W x us = uJ
  EXPECT_NEAR(full.busy_gops_per_w, full.ops_per_inference * full.fps / 1e9 / full.busy_power_w, 1e-9);
  // Activity-based power is lower: the layer's 64 columns of work leave most of 96 crossbars idle.
  EXPECT_LT(full.power_w, full.busy_power_w);
  // The busy figure does not depend on what the units do, only on how many and for how long: a
  // second, shorter layer adds its IMAs' power but the frame period stays the slowest layer's.
  const CostReport two = Estimate({Layer(100, 96), Layer(10, 8)}, isaac, t);
  EXPECT_EQ(two.imas, 13);
  EXPECT_NEAR(two.busy_power_w, full.busy_power_w * 13.0 / 12.0, 1e-12);
  EXPECT_DOUBLE_EQ(two.fps, full.fps);
}

}  // namespace
}  // namespace xbar::hw
