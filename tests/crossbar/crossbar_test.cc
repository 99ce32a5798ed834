// The crossbar engine against the exact integer reference (issue 4, deliverable 7).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <numeric>

#include "xbar/compress/projection.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/crossbar/campaign.h"
#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/ir_drop.h"
#include "xbar/crossbar/kernels.h"
#include "xbar/crossbar/layer.h"
#include "xbar/crossbar/placement.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/crossbar/stage.h"
#include "xbar/crossbar/workload.h"
#include "xbar/models/zoo.h"

namespace xbar {
namespace {

const Scheme* const kTwoColumn = &FindScheme("two-column", "test");
const Scheme* const kTwoCrossbar = &FindScheme("two-crossbar", "test");
const Scheme* const kOffset = &FindScheme("offset", "test");
const Scheme* const kPolarized = &FindScheme("polarized", "test");
const Scheme* const kComplementary = &FindScheme("complementary", "test");

MappingSpec Map(const Scheme* s, int64_t rows, int64_t cols, int cell_bits, int dac_bits, bool analog = false) {
  MappingSpec m;
  m.scheme = s;
  m.rows = rows;
  m.cols = cols;
  m.cell_bits = cell_bits;
  m.dac_bits = dac_bits;
  m.analog_subtract = analog;
  m.fragment_rows = 8;
  return m;
}

// Random weights [N, K]; `prune` zeroes whole rows and columns and a share of single weights.
torch::Tensor Weights(int64_t n, int64_t k, uint64_t seed, bool prune) {
  torch::manual_seed(seed);
  torch::Tensor w = torch::randn({n, k});
  if (prune) {
    w.mul_(torch::rand({n, k}).gt(0.5));
    w.narrow(0, 0, n / 3).zero_();           // whole outputs (filters)
    w.narrow(1, k / 4, k / 4).zero_();       // whole inputs (rows)
  }
  return w;
}

torch::Tensor Inputs(int64_t m, int64_t k, int bits, bool signed_inputs, uint64_t seed) {
  torch::manual_seed(seed);
  const double top = std::ldexp(1.0, bits - (signed_inputs ? 1 : 0));
  torch::Tensor x = torch::floor(torch::rand({m, k}) * top);
  if (signed_inputs) x = x - std::ldexp(1.0, bits - 1) * torch::rand({m, k}).gt(0.5);
  x.masked_fill_(torch::rand({m, k}).lt(0.2), 0.0);  // zeros, as after a ReLU
  return x;
}

struct Case {
  const Scheme* scheme;
  bool analog;
  int cell_bits, dac_bits;
  bool flip = false;  // mapping.flip_columns (offset)
};

class Lossless : public ::testing::TestWithParam<Case> {};

TEST_P(Lossless, EverySchemeReproducesTheIntegerGemmBitExactly) {
  const Case c = GetParam();
  const std::vector<std::array<int64_t, 2>> shapes = {{1, 1}, {7, 25}, {16, 150}, {40, 300}, {130, 70}};
  DeviceSpec ideal;
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (bool prune : {false, true}) {
      for (bool signed_inputs : {false, true}) {
        const auto [n, k] = shapes[i];
        torch::Tensor w = Weights(n, k, 10 + i, prune);
        if (c.scheme == kPolarized) {
          // Polarise fragments of 8 rows in crossbar orientation (w is [N, K] = column-major K x N).
          torch::Tensor cm = w.contiguous();
          ProjectPolarize({cm.data_ptr<float>(), k, n}, 8, 64);
          w = cm;
        }
        MappingSpec map = Map(c.scheme, 64, 48, c.cell_bits, c.dac_bits, c.analog);
        map.flip_columns = c.flip;
        CrossbarLayer layer("l", w, 0.0, map, ideal);
        ASSERT_TRUE(layer.lossless());
        torch::Tensor x = Inputs(33, k, map.input_bits, signed_inputs, 99 + i);
        torch::Tensor want = layer.Reference(x);
        for (SumKernel kernel : {SumKernel::kFloat, SumKernel::kPacked, SumKernel::kAuto}) {
          layer.SetSumKernel(kernel);
          ReadStats st;
          torch::Tensor got = layer.Forward(x, signed_inputs, 0, &st);
          ASSERT_TRUE(torch::equal(got, want)) << c.scheme->Name() << " analog " << c.analog << " shape " << n
                                               << "x" << k << " prune " << prune << " signed " << signed_inputs
                                               << " kernel " << static_cast<int>(kernel) << " max diff "
                                               << (got - want).abs().max().item<double>();
          EXPECT_EQ(layer.packed_tiles(), kernel == SumKernel::kPacked ? layer.tiles()
                                          : kernel == SumKernel::kFloat ? 0 : layer.packed_tiles());
          EXPECT_EQ(st.adc_conversions > 0, layer.tiles() > 0);
          EXPECT_LE(st.input_cycles_needed, st.input_cycles);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, Lossless,
    ::testing::Values(Case{kTwoColumn, false, 2, 1}, Case{kTwoColumn, true, 2, 1},
                      Case{kTwoColumn, false, 1, 2}, Case{kTwoCrossbar, false, 2, 1},
                      Case{kTwoCrossbar, false, 3, 2}, Case{kOffset, false, 2, 1},
                      Case{kOffset, false, 3, 3}, Case{kOffset, false, 2, 1, true},
                      Case{kOffset, false, 3, 3, true}, Case{kPolarized, false, 2, 1},
                      Case{kPolarized, false, 1, 2}, Case{kComplementary, false, 2, 1},
                      Case{kComplementary, true, 2, 1}, Case{kComplementary, true, 3, 2}),
    [](const auto& info) {
      std::string n = info.param.scheme->Name();
      std::replace(n.begin(), n.end(), '-', '_');
      return StrCat(n, info.param.analog ? "_analog" : "_digital", "_c", info.param.cell_bits, "_v",
                    info.param.dac_bits, info.param.flip ? "_flipped" : "");
    });

// The bit-packed kernel computes the same column sums as the float one wherever cells are integers:
// lossy ADCs, stuck-at faults, every scheme; with device variation it is not used.
TEST(Kernels, PackedEqualsFloatUnderFaultsAndLossyAdc) {
  for (Case c : {Case{kTwoColumn, false, 1, 1}, Case{kTwoColumn, true, 2, 2},
                 Case{kOffset, false, 2, 1}, Case{kComplementary, true, 2, 1},
                 Case{kTwoCrossbar, false, 4, 3}}) {
    MappingSpec map = Map(c.scheme, 128, 64, c.cell_bits, c.dac_bits, c.analog);
    map.adc_bits = 4;
    FaultSpec fs;
    fs.sa0_rate = 0.01;
    fs.sa1_rate = 0.01;
    fs.seed = 7;
    FaultInjector inj(fs);
    CrossbarLayer layer("l", Weights(50, 200, 3, true), 0.0, map, DeviceSpec{});
    layer.Program(&inj, 5, 0);
    ASSERT_GT(layer.stuck_cells(), 0);
    torch::Tensor x = Inputs(70, 200, 8, true, 4);
    layer.SetSumKernel(SumKernel::kFloat);
    torch::Tensor a = layer.Forward(x, true, 0, nullptr);
    layer.SetSumKernel(SumKernel::kPacked);
    torch::Tensor b = layer.Forward(x, true, 0, nullptr);
    EXPECT_EQ(layer.packed_tiles(), layer.tiles());
    EXPECT_TRUE(torch::equal(a, b)) << c.scheme->Name();
  }
  DeviceSpec varied;
  varied.variation_sigma = 0.05;
  CrossbarLayer layer("l", Weights(20, 100, 3, false), 0.0, Map(kTwoColumn, 64, 64, 2, 1), varied);
  layer.Program(nullptr, 1, 0);
  layer.SetSumKernel(SumKernel::kPacked);
  layer.Forward(Inputs(5, 100, 8, false, 1), false, 0, nullptr);
  EXPECT_EQ(layer.packed_tiles(), 0);
}

TEST(Mapping, TilesCellsAndMaskedMapping) {
  DeviceSpec ideal;
  // 8-bit weights on 2-bit cells: 4 slices; two-column pairs: 8 columns per weight, 16 weights per
  // 128 columns. K = 300 rows -> 3 row tiles; N = 40 outputs -> 3 column groups.
  CrossbarLayer dense("d", Weights(40, 300, 1, false), 0.0, Map(kTwoColumn, 128, 128, 2, 1), ideal);
  EXPECT_EQ(dense.tiles(), 9);
  EXPECT_EQ(dense.crossbars(), 9);
  EXPECT_EQ(dense.cells(), 300 * 40 * 8);
  CrossbarLayer twoxb("d", Weights(40, 300, 1, false), 0.0, Map(kTwoCrossbar, 128, 128, 2, 1), ideal);
  EXPECT_EQ(twoxb.tiles(), 3 * 2);  // 32 weights per crossbar, two crossbars per tile
  EXPECT_EQ(twoxb.crossbars(), 12);
  // Masked mapping: 16 live outputs and 200 live inputs fit 2 row tiles x 1 column group.
  torch::Tensor w = Weights(40, 300, 2, false);
  w.narrow(0, 16, 24).zero_();
  w.narrow(1, 200, 100).zero_();
  CrossbarLayer masked("m", w, 0.0, Map(kTwoColumn, 128, 128, 2, 1), ideal);
  EXPECT_EQ(masked.tiles(), 2);
  MappingSpec no_compact = Map(kTwoColumn, 128, 128, 2, 1);
  no_compact.compact = false;
  EXPECT_EQ(CrossbarLayer("m", w, 0.0, no_compact, ideal).tiles(), 9);
}

// Issue 14: a removed filter must not shift crossbar-row-pruned column blocks across arrays.
// 16 outputs per 128-column array; block 0 keeps rows 0-127, block 1 rows 128-255 (two arrays).
// Zeroing output 3 would move output 16 into the first packed group (256 live rows: two arrays)
// and leave 15 outputs for a third; the aligned grouping keeps two.
TEST(Mapping, RemovedFilterKeepsPrunedColumnBlocksInTheirArrays) {
  DeviceSpec ideal;
  const MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
  torch::Tensor w = Weights(32, 256, 4, false);
  w.narrow(0, 0, 16).narrow(1, 128, 128).zero_();
  w.narrow(0, 16, 16).narrow(1, 0, 128).zero_();
  EXPECT_EQ(CrossbarLayer("b", w, 0.0, map, ideal).crossbars(), 2);
  w[3].zero_();
  EXPECT_EQ(CrossbarLayer("b", w, 0.0, map, ideal).crossbars(), 2);
  EXPECT_EQ(PlanLayer("b", w, WeightScale(w, map.weight_bits, 0.0), map).crossbars, 2);
  std::vector<TileLayout> tiles = LayoutTiles(QuantizeWeights(w, WeightScale(w, map.weight_bits, 0.0), 8), map);
  ASSERT_EQ(tiles.size(), 2u);
  EXPECT_EQ(tiles[0].cols.size(), 15u);
  EXPECT_EQ(tiles[1].cols.front(), 16);
  // Whole filters removed from the middle of dense rows: packing frees an array (2, not 3).
  torch::Tensor d = Weights(48, 100, 5, false);
  d.narrow(0, 8, 16).zero_();
  EXPECT_EQ(CrossbarLayer("p", d, 0.0, map, ideal).crossbars(), 2);
  EXPECT_EQ(PlanLayer("p", d, WeightScale(d, map.weight_bits, 0.0), map).crossbars, 2);
}

TEST(Mapping, NonPolarisedLayerIsRejectedByThePolarizedScheme) {
  DeviceSpec ideal;
  torch::Tensor w = torch::tensor({{1.0f, -1.0f, 0.5f}});
  try {
    CrossbarLayer("conv9", w, 0.0, Map(kPolarized, 16, 16, 2, 1), ideal);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer conv9 is not polarised"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("compress.polarize_fragment"), std::string::npos);
  }
}

// The planner (hw estimates) counts what CrossbarLayer builds, for every scheme and layout.
TEST(Mapping, PlanEqualsTheBuiltCrossbars) {
  DeviceSpec ideal;
  int cases = 0;
  for (const Scheme* scheme : {kTwoColumn, kTwoCrossbar, kOffset, kPolarized,
                        kComplementary}) {
    for (bool analog : {false, true}) {
      if (analog && scheme->Components() == 1) continue;
      for (int cell_bits : {1, 2}) {
        for (bool prune : {false, true}) {
          for (bool compact : {true, false}) {
            MappingSpec map = Map(scheme, 64, 64, cell_bits, 1 + cell_bits % 2, analog);
            map.compact = compact;
            map.weight_bits = 6;
            map.flip_columns = scheme == kOffset && (prune == compact);  // ISAAC's flipped encoding
            torch::Tensor w = Weights(37, 200, 10 + static_cast<uint64_t>(cases), prune);
            // A column budget under 64 rows: 42 cells x level 1 x digit 3 needs 7 ADC bits, not 8.
            // (Compaction would pack a lone column's non-zeros densely, so only without it.)
            const bool budget = scheme == kTwoColumn && !analog && prune && !compact && cell_bits == 1;
            if (budget) {
              map.column_budget = 42;
              w.mul_(torch::rand({37, 200}).gt(0.5));  // about 16 of 64 non-zero per column segment
            }
            if (scheme == kPolarized) {  // one sign per fragment of 8 rows and column
              torch::Tensor sign = (torch::arange(200).div(8, "floor").view({1, 200}) + torch::arange(37).view({37, 1}))
                                       .remainder(2).mul(2).sub(1);
              w = w.abs() * sign;
            }
            CrossbarLayer layer("l", w, 0.0, map, ideal);
            const LayerPlan plan = PlanLayer("l", w, WeightScale(w, map.weight_bits, 0.0), map);
            const std::string what = StrCat(scheme->Name(), " analog ", analog, " cell ", cell_bits, " prune ", prune,
                                            " compact ", compact, " flip ", map.flip_columns);
            EXPECT_EQ(plan.tiles, layer.tiles()) << what;
            EXPECT_EQ(plan.crossbars, layer.crossbars()) << what;
            EXPECT_EQ(plan.cells, layer.cells()) << what;
            EXPECT_EQ(plan.used_rows, layer.used_rows()) << what;
            EXPECT_EQ(plan.used_columns, layer.used_columns()) << what;
            EXPECT_EQ(plan.level_sum, layer.level_sum()) << what;
            EXPECT_EQ(plan.adc_bits, layer.adc_bits()) << what;
            if (budget) {
              EXPECT_EQ(plan.adc_bits, 7);
            }
            ReadStats reads;
            layer.CountReads(torch::zeros({1, 200}), false, &reads);
            const int64_t planes = (map.input_bits + map.dac_bits - 1) / map.dac_bits;
            EXPECT_EQ(plan.conversions_per_plane * planes, reads.adc_conversions) << what;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 64);
  // Both reject a tile over the column budget with the same message.
  MappingSpec tight = Map(kTwoColumn, 64, 64, 2, 1);
  tight.column_budget = 10;
  torch::Tensor w = Weights(37, 200, 3, false);
  std::string built, planned;
  try {
    CrossbarLayer("fc9", w, 0.0, tight, ideal);
  } catch (const InputError& e) {
    built = e.what();
  }
  try {
    PlanLayer("fc9", w, 0.0, tight);
  } catch (const InputError& e) {
    planned = e.what();
  }
  EXPECT_NE(built.find("layer fc9 exceeds mapping.column_budget = 10: output 0 has 64 non-zero weights"),
            std::string::npos) << built;
  EXPECT_EQ(planned, built);
}

TEST(Adc, FewerBitsThanLosslessStayWithinNamedErrorBudgets) {
  // 128-row tiles, 2-bit cells, 1-bit DAC: a column sum reaches 128*3 = 384 -> 9 bits lossless.
  torch::Tensor w = Weights(32, 256, 3, false);
  torch::Tensor x = Inputs(64, 256, 8, false, 4);
  DeviceSpec ideal;
  double previous = 1e300;
  // Budgets: NMSE against the exact GEMM, measured on this layer (3.6 %, 7.7 %, 19 %, 31 %, 70 %
  // for 8..4 bits) with headroom. Every dropped ADC bit doubles the LSB of all 64 reads per
  // output (8 planes x 4 slices x 2 columns), whose rounding errors are shifted up by up to 2^13.
  const std::map<int, double> budget = {{9, 0.0}, {8, 0.05}, {7, 0.12}, {6, 0.3}, {5, 0.5}, {4, 1.0}};
  for (int bits = 9; bits >= 4; --bits) {
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.adc_bits = bits;
    CrossbarLayer layer("l", w, 0.0, map, ideal);
    EXPECT_EQ(layer.lossless(), bits >= 9);
    torch::Tensor ref = layer.Reference(x);
    torch::Tensor got = layer.Forward(x, false, 0, nullptr);
    const double nmse = (got - ref).square().sum().item<double>() / ref.square().sum().item<double>();
    EXPECT_LE(nmse, budget.at(bits)) << bits << " bits";
    if (bits < 9) {
      EXPECT_GT(nmse, 0.0) << "fewer bits than lossless must lose something";
    }
    EXPECT_LE(previous == 1e300 ? 0.0 : previous, nmse + 1e-18) << "error grows as bits drop";
    previous = nmse;
  }
}

TEST(Adc, FlippedColumnsMakeIsaacsEightBitAdcLossless) {
  // ISAAC: 128 rows of 2-bit cells read through 1-bit DACs reach 128 x 3 = 384 (9 bits). The offset
  // scheme's biased 16-bit weights put level 2 or 1 in every top slice, so 8 bits round the reads;
  // with flipped columns (mapping.flip_columns) no read passes 192 and 8 bits are exact.
  const torch::Tensor w = Weights(24, 300, 5, false);
  DeviceSpec ideal;
  double unflipped_levels = 0;
  for (bool flip : {false, true}) {
    MappingSpec map = Map(kOffset, 128, 128, 2, 1);
    map.weight_bits = 16;
    map.adc_bits = 8;
    map.flip_columns = flip;
    EXPECT_EQ(map.LosslessAdcBits(128), flip ? 8 : 9);
    CrossbarLayer layer("l", w, 0.0, map, ideal);
    EXPECT_EQ(layer.lossless(), flip);
    EXPECT_EQ(layer.adc_bits(), 8);
    const LayerPlan plan = PlanLayer("l", w, WeightScale(w, map.weight_bits, 0.0), map);
    EXPECT_EQ(plan.level_sum, layer.level_sum()) << "flip " << flip;
    EXPECT_EQ(plan.adc_bits, layer.adc_bits());
    if (flip) {
      EXPECT_LT(layer.level_sum(), unflipped_levels) << "flipped columns store lower levels";
    } else {
      unflipped_levels = layer.level_sum();
    }
    for (bool signed_inputs : {false, true}) {
      const torch::Tensor x = Inputs(40, 300, 8, signed_inputs, 6);
      const torch::Tensor ref = layer.Reference(x);
      for (SumKernel kernel : {SumKernel::kFloat, SumKernel::kPacked, SumKernel::kTensor}) {
        layer.SetSumKernel(kernel);
        const torch::Tensor got = layer.Forward(x, signed_inputs, 0, nullptr);
        EXPECT_EQ(torch::equal(got, ref), flip) << "flip " << flip << " signed " << signed_inputs << " kernel "
                                                << static_cast<int>(kernel) << " max diff "
                                                << (got - ref).abs().max().item<double>();
      }
    }
    if (flip) {
      EXPECT_TRUE(torch::equal(layer.FoldedWeights(), layer.quantized().to(torch::kFloat64)));
    }
  }
  // A scheme without a unit column swapped in after the config was read (faults.schemes) keeps its
  // own encoding: no flipped columns, the full ADC range.
  MappingSpec swapped = Map(kTwoColumn, 128, 128, 2, 1);
  swapped.flip_columns = true;
  EXPECT_FALSE(swapped.Flipped());
  EXPECT_EQ(swapped.LosslessAdcBits(128), 9);
  // The planner's level sums on arrays whose column sums pass 16 bits (300 rows of 8-bit cells).
  MappingSpec tall = Map(kOffset, 300, 64, 8, 1);
  tall.flip_columns = true;
  CrossbarLayer layer("tall", w, 0.0, tall, ideal);
  EXPECT_EQ(PlanLayer("tall", w, WeightScale(w, tall.weight_bits, 0.0), tall).level_sum, layer.level_sum());
  EXPECT_TRUE(layer.lossless());
}

TEST(Faults, InjectedCountsMatchTheRatesWithinThreeSigma) {
  FaultSpec f;
  f.sa0_rate = 0.01 * 1.0 / 6.2;
  f.sa1_rate = 0.01 * 5.2 / 6.2;
  f.seed = 7;
  FaultInjector inj(f);
  int64_t sa0 = 0, sa1 = 0, n = 0;
  for (int64_t xb = 0; xb < 64; ++xb) {
    torch::Tensor s = inj.Draw(xb, 128, 128);
    sa0 += s.eq(1).sum().item<int64_t>();
    sa1 += s.eq(2).sum().item<int64_t>();
    n += s.numel();
  }
  auto within = [&](int64_t count, double p) {
    const double mean = static_cast<double>(n) * p, sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
    return std::fabs(static_cast<double>(count) - mean) <= 3 * sd;
  };
  EXPECT_TRUE(within(sa0, f.sa0_rate)) << sa0;
  EXPECT_TRUE(within(sa1, f.sa1_rate)) << sa1;
  // Same seed and crossbar, same map; another crossbar, another map.
  EXPECT_TRUE(torch::equal(inj.Draw(3, 64, 64), inj.Draw(3, 64, 64)));
  EXPECT_FALSE(torch::equal(inj.Draw(3, 64, 64), inj.Draw(4, 64, 64)));
}

// A layer whose weights are all zero but one; a stuck cell is placed with a fault map.
torch::Tensor FaultyOutput(const Scheme* scheme, int64_t crossbar_col, const char* type, double* ref_norm) {
  torch::Tensor w = torch::zeros({4, 8});
  w[0][0] = 1.0f;  // output 0, input 0: the only non-zero weight (scale 1/127 -> level 127)
  const std::string map_file = ::testing::TempDir() + "/faults.csv";
  WriteFileAtomic(map_file, StrCat("crossbar,row,col,type\n0,3,", crossbar_col, ",", type, "\n"));
  FaultSpec f;
  f.map_file = map_file;
  FaultInjector inj(f);
  MappingSpec map = Map(scheme, 16, 64, 2, 1);
  map.compact = false;  // keep the zero weights allocated
  DeviceSpec ideal;
  CrossbarLayer layer("l", w, 1.0 / 127, map, ideal);
  layer.Program(&inj, 0, 0);
  torch::Tensor x = torch::ones({1, 8}) * 255;
  torch::Tensor ref = layer.Reference(x);
  *ref_norm = ref.abs().max().item<double>();
  return layer.Forward(x, false, 0, nullptr) - ref;
}

TEST(Faults, StuckOnOnAZeroWeightCostsNothingUnderComplementaryAndFullScaleUnderTwoColumn) {
  // Row 3 holds input 3, whose weights are all zero. Physical column 2*(j*S + s) + a: output 1,
  // slice 3 (the top slice of 7-bit magnitudes on 2-bit cells), component a.
  double ref = 0;
  // Two-column: zero weights are (0, 0); a stuck-on positive cell adds L * 4^3 * 255 to output 1.
  torch::Tensor err = FaultyOutput(kTwoColumn, 2 * (1 * 4 + 3) + 0, "SA1", &ref);
  EXPECT_DOUBLE_EQ(err[0][1].item<double>(), 3.0 * 64 * 255);
  EXPECT_GE(std::fabs(err[0][1].item<double>()), ref) << "as large as the layer's largest output";
  // Complementary: zero weights sit at (L, L); stuck-on changes nothing.
  err = FaultyOutput(kComplementary, 2 * (1 * 4 + 3) + 0, "SA1", &ref);
  EXPECT_EQ(err.abs().max().item<double>(), 0.0);
  err = FaultyOutput(kComplementary, 2 * (1 * 4 + 3) + 1, "SA1", &ref);
  EXPECT_EQ(err.abs().max().item<double>(), 0.0);
  // ...while stuck-off is the harmful fault there, and harmless under two-column.
  err = FaultyOutput(kComplementary, 2 * (1 * 4 + 3) + 1, "SA0", &ref);
  EXPECT_DOUBLE_EQ(err[0][1].item<double>(), 3.0 * 64 * 255);
  err = FaultyOutput(kTwoColumn, 2 * (1 * 4 + 3) + 1, "SA0", &ref);
  EXPECT_EQ(err.abs().max().item<double>(), 0.0);
}

TEST(Faults, MapFileErrorsNameTheLine) {
  const std::string p = ::testing::TempDir() + "/bad_faults.csv";
  WriteFileAtomic(p, "crossbar,row,col,type\n0,1,2,SA1\n0,1,x,SA0\n");
  FaultSpec f;
  f.map_file = p;
  try {
    FaultInjector inj(f);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad_faults.csv:3: 'x' is not a non-negative integer"), std::string::npos)
        << e.what();
  }
  WriteFileAtomic(p, "0,1,2,SA2\n");
  EXPECT_THROW(FaultInjector{f}, InputError);
}

TEST(Device, VariationAndNoiseAreSeededAndShrinkWithSigma) {
  torch::Tensor w = Weights(16, 64, 5, false);
  torch::Tensor x = Inputs(20, 64, 8, false, 6);
  auto run = [&](double var, double noise, uint64_t seed) {
    DeviceSpec d;
    d.variation_sigma = var;
    d.read_noise_sigma = noise;
    CrossbarLayer layer("l", w, 0.0, Map(kTwoColumn, 64, 64, 2, 1), d);
    layer.Program(nullptr, seed, 0);
    EXPECT_FALSE(layer.lossless());
    torch::Tensor ref = layer.Reference(x);
    torch::Tensor y = layer.Forward(x, false, seed, nullptr);
    return std::make_pair(y, (y - ref).square().sum().item<double>() / ref.square().sum().item<double>());
  };
  auto [a, ea] = run(0.1, 0.0, 1);
  auto [b, eb] = run(0.1, 0.0, 1);
  auto [c, ec] = run(0.1, 0.0, 2);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_GT(ea, 0.0);
  EXPECT_LT(run(0.02, 0.0, 1).second, ea);
  auto [n1, en] = run(0.0, 0.05, 3);
  EXPECT_GT(en, 0.0);
  EXPECT_TRUE(torch::equal(n1, run(0.0, 0.05, 3).first));
}

TEST(Network, LosslessCrossbarsGiveTheReferenceAccuracyExactly) {
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP();
  at::set_num_threads(1);
  DatasetSpec d;
  d.train_subset = 400;
  d.test_subset = 300;
  DataBundle data = LoadData(d, 0);
  torch::manual_seed(0);
  auto m = CreateModel(ModelSpec{});
  for (const Scheme* s : {kTwoColumn, kOffset, kComplementary}) {
    MappingSpec map = Map(s, 128, 128, 2, 1);
    NetworkSimulator sim(*m, map, DeviceSpec{});
    sim.Calibrate(data.train, 100, torch::kCPU);
    sim.Program(FaultSpec{}, 0);
    EvalResult ref = sim.Evaluate(data.test, SimMode::kReference, 100, torch::kCPU);
    EvalResult xb = sim.Evaluate(data.test, SimMode::kCrossbar, 100, torch::kCPU);
    EXPECT_EQ(xb.accuracy, ref.accuracy) << s->Name();
    EXPECT_EQ(xb.loss, ref.loss) << s->Name();
    for (const auto& r : sim.Report()) {
      EXPECT_TRUE(r.lossless) << r.name;
      EXPECT_EQ(r.output_nmse_reference, 0.0) << r.name;
      EXPECT_LT(r.output_nmse, 1e-3) << r.name << ": 8-bit quantisation only";
      EXPECT_GT(r.adc_conversions, 0) << r.name;
    }
    EXPECT_TRUE(sim.Report()[0].signed_inputs) << "normalised images are signed";
    EXPECT_FALSE(sim.Report()[1].signed_inputs) << "post-ReLU inputs are not";
    // The statistics come from the fast path (read counts on the unlowered inputs): the same as on
    // the lowered inputs through the reference integer GEMM.
    const nlohmann::ordered_json fast_stats = SimulateJson("s", 0, 0, 0, sim.Report())["layers"];
    sim.SetFastPath(false);
    EvalResult lowered = sim.Evaluate(data.test, SimMode::kCrossbar, 100, torch::kCPU);
    sim.SetFastPath(true);
    EXPECT_EQ(lowered.loss, xb.loss) << s->Name();
    EXPECT_EQ(SimulateJson("s", 0, 0, 0, sim.Report())["layers"], fast_stats) << s->Name();
    // Read statistics alone (xbar estimate): the same counts from the exact fast path.
    const std::vector<LayerSimReport> full = sim.Report();
    sim.SetReadStatsOnly(true);
    EvalResult counted = sim.Evaluate(data.test, SimMode::kCrossbar, 100, torch::kCPU);
    EXPECT_EQ(counted.accuracy, ref.accuracy) << s->Name();
    const std::vector<LayerSimReport> reads = sim.Report();
    for (size_t i = 0; i < full.size(); ++i) {
      EXPECT_EQ(reads[i].adc_conversions, full[i].adc_conversions) << full[i].name;
      EXPECT_EQ(reads[i].input_cycles_skipped, full[i].input_cycles_skipped) << full[i].name;
      EXPECT_EQ(reads[i].positions, full[i].positions) << full[i].name;
    }
    EXPECT_GT(full[1].input_cycles_skipped, 0.0) << "some post-ReLU fragments skip cycles";
  }
}

TEST(Network, ExactLayerIsExactInEveryRegime) {
  // ExactLayer picks one float32 GEMM when max|x| times the largest L1 norm of an output's weights
  // stays below 2^24; else float32 GEMMs/convolutions on the fewest equal input-channel chunks that
  // each stay below it; else (grouped convolutions, more than 64 chunks) 4-bit input digits when 15
  // times that norm does; float64 otherwise. Each must give the float64 integer product exactly.
  torch::manual_seed(5);
  LayerInfo l;
  l.kind = LayerKind::kLinear;
  l.in_channels = 4096;
  l.out_channels = 24;
  const torch::Tensor x = torch::randint(-128, 128, {16, 4096}, torch::kFloat32);
  enum Regime { kOne, kChunks, kDigits, kFloat64 };
  auto regime = [](const ExactPlan& p) {
    return p.max_x * p.max_w1 < 16777216.0 ? kOne
           : !p.bounds.empty()              ? kChunks
           : 15.0 * p.max_w1 < 16777216.0   ? kDigits
                                            : kFloat64;
  };
  auto check = [&](const LayerInfo& layer, const torch::Tensor& in, const torch::Tensor& w, double max_x, Regime want_regime,
                   const char* what) {
    const torch::Tensor want = layer.kind == LayerKind::kConv2d
                                   ? torch::conv2d(in.to(torch::kFloat64), w.to(torch::kFloat64), {}, layer.stride,
                                                   layer.padding, layer.dilation, layer.groups)
                                   : torch::mm(in.to(torch::kFloat64), w.to(torch::kFloat64).t());
    EXPECT_EQ(regime(PlanExactSums(layer, w, max_x)), want_regime) << what;
    EXPECT_TRUE(torch::equal(ExactLayer(layer, in, w, max_x), want)) << what;
  };
  // Sparse small weights: L1 <= 4096 * 0.05 * 3, times 128 below 2^24, although 128 * 127 * 4096 is not.
  torch::Tensor sparse = torch::randint(-3, 4, {24, 4096}, torch::kFloat32) * (torch::rand({24, 4096}) < 0.05);
  sparse[0][0] = 127;
  check(l, x, sparse, 128.0, kOne, "one float32 GEMM");
  const torch::Tensor w8 = torch::randint(-127, 128, {24, 4096}, torch::kFloat32);
  check(l, x, w8, 128.0, kChunks, "input chunks");
  check(l, torch::randint(-32768, 32768, {16, 4096}, torch::kFloat32), w8, 32768.0, kDigits, "16-bit inputs: digits");
  check(l, x, torch::randint(-32767, 32768, {24, 4096}, torch::kFloat32), 128.0, kFloat64, "float64");
  // Convolutions: ungrouped ones split their input channels, grouped ones their input digits.
  LayerInfo c;
  c.kind = LayerKind::kConv2d;
  c.in_channels = 512;
  c.out_channels = 8;
  c.kernel_h = c.kernel_w = 3;
  c.padding = 1;
  const torch::Tensor xc = torch::randint(0, 256, {2, 512, 5, 5}, torch::kFloat32);
  check(c, xc, torch::randint(-127, 128, {8, 512, 3, 3}, torch::kFloat32), 255.0, kChunks, "conv: channel chunks");
  c.groups = 2;
  check(c, xc, torch::randint(-127, 128, {8, 256, 3, 3}, torch::kFloat32), 255.0, kDigits, "grouped conv: digits");
  // Sums that really pass 2^24: all weights and inputs at their maxima.
  torch::Tensor big = torch::full({24, 4096}, 127.0f);
  EXPECT_TRUE(torch::equal(ExactLayer(l, torch::full({2, 4096}, 127.0f), big, 128.0),
                           torch::full({2, 24}, 127.0 * 127.0 * 4096.0, torch::kFloat64)));
}

TEST(Network, ExactFastPathEqualsTheIntegerReferenceOnLargeLayers) {
  // VGG-8's classifier.0 has K = 2048 inputs: 255 * 127 * 2048 > 2^24, so the float32 fast path must
  // split its inputs to stay exact. With the fast path off, lossless crossbars compute each layer
  // with the float64 integer Reference (which the Lossless tests prove equal to the bit-serial
  // engine); kReference and kCrossbar with it on run the fast path. Same logits, so the same loss.
  at::set_num_threads(1);
  torch::manual_seed(3);
  ModelSpec spec;
  spec.name = "vgg8";
  spec.width = 0.25;
  auto m = CreateModel(spec);
  Dataset data{torch::randn({24, 1, 28, 28}), torch::randint(0, 10, {24}, torch::kInt64)};
  // 16-bit weights and inputs (ISAAC) exceed even the split float32 path: float64 sums.
  for (int bits : {8, 16}) {
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.weight_bits = map.input_bits = bits;
    NetworkSimulator sim(*m, map, DeviceSpec{});
    sim.Calibrate(data, 8, torch::kCPU);
    sim.Program(FaultSpec{}, 0);
    EvalResult fast = sim.Evaluate(data, SimMode::kReference, 8, torch::kCPU);
    sim.SetFastPath(false);
    EvalResult engine = sim.Evaluate(data, SimMode::kCrossbar, 8, torch::kCPU);
    sim.SetFastPath(true);
    EXPECT_EQ(fast.loss, engine.loss) << bits;
    EXPECT_EQ(sim.Evaluate(data, SimMode::kCrossbar, 8, torch::kCPU).loss, engine.loss) << bits;
    for (const auto& r : sim.Report()) EXPECT_EQ(r.output_nmse_reference, 0.0) << r.name;
    sim.SetReadStatsOnly(true);  // the fast path with read counts (xbar estimate)
    EXPECT_EQ(sim.Evaluate(data, SimMode::kCrossbar, 8, torch::kCPU).loss, engine.loss) << bits;
  }
}

TEST(Faults, MeasuredMapEntriesOutsideTheAllocatedCellsAreErrorsAndAnEmptyMapKeepsTheFastPath) {
  torch::Tensor w = Weights(4, 8, 1, false);
  MappingSpec map = Map(kTwoColumn, 16, 64, 2, 1);  // 8 rows x (4 outputs x 4 slices x 2) = 8 x 32 cells
  const std::string file = ::testing::TempDir() + "/outside.csv";
  auto program = [&](const std::string& text) {
    WriteFileAtomic(file, text);
    FaultSpec f;
    f.map_file = file;
    FaultInjector inj(f);
    CrossbarLayer layer("l", w, 0.0, map, DeviceSpec{});
    layer.Program(&inj, 0, 0);
    inj.CheckAllUsed(layer.crossbars());
    return layer.lossless();
  };
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    try {
      program(text);
      ADD_FAILURE() << "no error for " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("crossbar,row,col,type\n0,1,1,SA1\n0,8,0,SA1\n", "outside.csv:3: cell (8, 0) of crossbar 0 is outside its 8 x 32");
  expect_error("0,0,32,SA0\n", "outside.csv:1: cell (0, 32)");
  expect_error("0,0,0,SA0\n5,0,0,SA1\n", "outside.csv:2: crossbar 5 does not exist: the mapping allocates 1 crossbars");
  EXPECT_TRUE(program("crossbar,row,col,type\n"));   // empty: still the exact fast path
  EXPECT_FALSE(program("0,7,31,SA1\n"));             // the last allocated cell is addressable
}

TEST(Device, ReadNoiseFollowsTheProgrammedConductance) {
  // 64 rows of +1 weights on 1-bit cells (component 0 at level 1, component 1 at level 0), drifted
  // by (t/t0)^-nu = 1e6^-0.1: each cell's G is (1 + g0) d, so a read's noise variance is
  // sigma^2 * 64 * ((1 + g0) d)^2, 16x less than with the nominal (undrifted) levels.
  MappingSpec map = Map(kTwoColumn, 64, 64, 1, 1);
  map.weight_bits = 2;
  map.input_bits = 1;
  DeviceSpec dev;
  dev.read_noise_sigma = 1.0;
  dev.drift_nu = 0.1;
  dev.drift_time = 1e6;
  CrossbarLayer layer("l", torch::ones({1, 64}), 1.0, map, dev);
  layer.Program(nullptr, 0, 0);
  torch::Tensor y = layer.Forward(torch::ones({4000, 64}), false, 7, nullptr).reshape({-1});
  const double g0 = 1.0 / 9.0, d = std::pow(1e6, -0.1);
  const double want = 64 * std::pow((1 + g0) * d, 2) + 1.0 / 12;  // + the ADC's rounding
  const double got = y.var().item<double>();
  EXPECT_NEAR(got / want, 1.0, 0.1) << "variance " << got << ", documented model " << want
                                    << ", nominal levels would give " << 64 * (1 + g0) * (1 + g0);
  // The draws are keyed by MVM index: the rows of a second call that continue the first
  // (first_mvm) are the same draws as one call over all of them.
  torch::Tensor x = torch::ones({300, 64});
  torch::Tensor whole = layer.Forward(x, false, 7, nullptr);
  torch::Tensor tail = layer.Forward(x.narrow(0, 100, 200), false, 7, nullptr, 100);
  EXPECT_TRUE(torch::equal(whole.narrow(0, 100, 200), tail));
}

TEST(CrossbarLayer, FloatConductancesGiveTheSameBitsAtAnyThreadCount) {
  // With variation the column sums are a float GEMM; OpenBLAS splits one differently on two threads
  // (these shapes gave other last bits before the engine ran its GEMMs on one thread each).
  // (50, 20 and 1 positions: the threads take whole crossbars; with read noise as well.)
  for (const auto& [N, K, M] : {std::array<int64_t, 3>{120, 120, 100}, {120, 400, 50}, {84, 400, 300}, {120, 400, 20},
                                {84, 400, 1}}) {
    torch::manual_seed(0);
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.weight_bits = 8;
    DeviceSpec dev;
    dev.variation_sigma = 0.05;
    dev.read_noise_sigma = M < 50 ? 0.02 : 0.0;
    const torch::Tensor w = torch::randn({N, K});
    CrossbarLayer layer("l", w, 0.0, map, dev);
    layer.Program(nullptr, 7, 0);
    const torch::Tensor x = torch::randint(0, 256, {M, K}).to(torch::kFloat32);
    at::set_num_threads(1);
    const torch::Tensor one = layer.Forward(x, false, 0, nullptr);
    at::set_num_threads(2);
    const torch::Tensor two = layer.Forward(x, false, 0, nullptr);
    EXPECT_TRUE(torch::equal(one, two)) << N << "x" << K << ", " << M << " positions";
  }
  at::set_num_threads(1);
}

TEST(Kernels, FloatSumsAddEveryRowInOrder) {
  // Each sum is acc <- acc + x[r] * w[r][c] for r in order from +0, one rounding per row with FMA (so
  // an AVX-512 and an AVX2 build give the same bits), two without; skipped all-zero digit rows
  // change nothing. Shapes that are not whole blocks of positions or vectors of columns; digit rows
  // that are zero (+0 and -0) in every position, in some, or in one block only; digits 0..3 with
  // random reads, where a product like 3 * w rounds, so one and two roundings differ.
  const bool fused = FloatSumsFuseMultiplyAdd();
  for (const auto& [G, rows, g, NR] : {std::array<int64_t, 4>{2, 13, 37, 21}, {1, 6, 128, 128}, {3, 1, 5, 3},
                                       {1, 20, 64, 70}}) {
    torch::manual_seed(static_cast<uint64_t>(rows));
    torch::Tensor xg = torch::randint(0, 4, {G, rows, g}).to(torch::kFloat32);
    xg.select(2, g / 2).zero_();
    if (g > 4) xg.select(2, 3).fill_(-0.0f);
    if (rows > 6) xg.narrow(1, 0, 6).select(2, g - 1).zero_();
    const torch::Tensor reads = torch::randn({G, g, NR});
    const torch::Tensor sums = FloatSums(xg, reads);
    ASSERT_EQ(sums.sizes(), (std::vector<int64_t>{G, rows, NR}));
    const auto X = xg.accessor<float, 3>();
    const auto W = reads.accessor<float, 3>();
    const auto S = sums.accessor<float, 3>();
    int64_t differ = 0, differ_other = 0;
    for (int64_t k = 0; k < G; ++k) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t c = 0; c < NR; ++c) {
          float one = 0.0f, two = 0.0f;
          for (int64_t r = 0; r < g; ++r) {
            one = std::fma(X[k][i][r], W[k][r][c], one);
            volatile float product = X[k][i][r] * W[k][r][c];  // rounded on its own
            two = two + product;
          }
          const float want = fused ? one : two, other = fused ? two : one;
          differ += std::memcmp(&want, &S[k][i][c], sizeof want) != 0;
          differ_other += std::memcmp(&other, &S[k][i][c], sizeof other) != 0;
        }
      }
    }
    EXPECT_EQ(differ, 0) << G << "x" << rows << "x" << g << "x" << NR << (fused ? ", fused" : ", unfused");
    if (g > 8) {
      EXPECT_GT(differ_other, 0) << "the shape does not tell one rounding from two";
    }
  }
}

TEST(Kernels, PatternSumsAreTheFloatSumsOfEveryPattern) {
  // Every digit pattern of a group fed to FloatSums as one input row, against PatternSums' entry for
  // it: the same bits. Reads of both signs and digits up to 15, so products and sums round; groups
  // of 1-8 rows, 1- to 4-bit digits, column counts that are not whole vectors.
  for (const auto& [G, g, NR, v] : {std::array<int64_t, 4>{3, 4, 21, 1},
                                    {2, 8, 128, 1},
                                    {1, 4, 9, 2},
                                    {2, 1, 70, 3},
                                    {1, 2, 16, 4},
                                    {2, 3, 5, 2}}) {
    torch::manual_seed(static_cast<uint64_t>(10 * g + v));
    const torch::Tensor reads = torch::randn({G, g, NR}) * 3;
    const int64_t patterns = int64_t{1} << (v * g);
    const torch::Tensor pat = torch::arange(patterns).view({patterns, 1});
    const torch::Tensor shift = (torch::arange(g) * v).view({1, g});
    const torch::Tensor digits = torch::bitwise_and(torch::bitwise_right_shift(pat, shift), (int64_t{1} << v) - 1);
    const torch::Tensor sums = FloatSums(digits.to(torch::kFloat32).unsqueeze(0).expand({G, patterns, g}), reads);
    const int64_t stride = PatternSumsStride(NR);
    ASSERT_GE(stride, NR);
    std::vector<float> table(static_cast<size_t>(G * patterns * stride), std::nanf(""));
    const int64_t built = PatternTablesBuilt();
    PatternSums(reads, static_cast<int>(v), table.data());
    EXPECT_EQ(PatternTablesBuilt(), built + 1);
    const auto S = sums.accessor<float, 3>();
    int64_t differ = 0;
    for (int64_t k = 0; k < G; ++k) {
      for (int64_t p = 0; p < patterns; ++p) {
        for (int64_t c = 0; c < NR; ++c) {
          const float got = table[static_cast<size_t>((k * patterns + p) * stride + c)];
          differ += std::memcmp(&got, &S[k][p][c], sizeof got) != 0;
        }
      }
    }
    EXPECT_EQ(differ, 0) << G << " groups of " << g << " rows, " << NR << " columns, " << v << "-bit digits";
  }
}

TEST(Kernels, PatternCodesConvertAsTheirSums) {
  // A table of sums turned into ADC codes, then one position's planes looked up: S[c] = scale[c] *
  // sum_p weight_p * code, computed here in double from the same sums (exact: integer codes times
  // powers of two). Columns that are not whole blocks (37: blocks of 32 and of 4), 16 planes, the top
  // one negative (signed inputs), a 4-bit, a signed 10-bit and a 17-bit ADC (whose sums pass int32:
  // the double path).
  const int64_t NR = 37, entries = 64, P = 16, stride = PatternSumsStride(NR);
  std::vector<double> weight(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p)
    weight[static_cast<size_t>(p)] = p == P - 1 ? -std::ldexp(1.0, p) : std::ldexp(1.0, p);
  for (const auto& [lo_code, hi_code] : {std::pair<float, float>{0, 15}, {-512, 511}, {0, 131071}}) {
    torch::manual_seed(static_cast<uint64_t>(hi_code));
    const torch::Tensor sums = torch::randn({entries, stride}) * (hi_code / 2) + hi_code / 4;
    std::vector<float> inv(static_cast<size_t>(NR)), lo(static_cast<size_t>(NR), lo_code),
        hi(static_cast<size_t>(NR), hi_code);
    std::vector<double> scale(static_cast<size_t>(NR));
    for (int64_t c = 0; c < NR; ++c) {
      inv[static_cast<size_t>(c)] = 0.5f + 0.125f * static_cast<float>(c % 7);
      scale[static_cast<size_t>(c)] = 1e-3 * static_cast<double>(c + 1);
    }
    const bool int_codes = CodesFitInt32(hi_code, weight);
    EXPECT_EQ(int_codes, hi_code < 1000);
    const ConvertTables tab{inv.data(), lo.data(), hi.data(), weight.data(), P, scale.data(), int_codes};
    std::vector<int32_t> codes(static_cast<size_t>(entries * stride), -1);
    PatternCodes(sums.data_ptr<float>(), entries, stride, NR, tab, codes.data());
    const auto sa = sums.accessor<float, 2>();
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<uint32_t> patterns(static_cast<size_t>(P));
      for (int64_t p = 0; p < P; ++p)
        patterns[static_cast<size_t>(p)] = static_cast<uint32_t>((trial * 37 + p * 11) % entries);
      std::vector<double> S(static_cast<size_t>(NR), std::nan(""));
      ConvertPatterns(codes.data(), stride, patterns.data(), tab, 0, NR, S.data());
      for (int64_t c = 0; c < NR; ++c) {
        double want = 0;
        for (int64_t p = 0; p < P; ++p) {
          const float sum = sa[patterns[static_cast<size_t>(p)]][c];
          const float code = std::min(hi_code, std::max(lo_code, std::nearbyint(sum * inv[static_cast<size_t>(c)])));
          want += weight[static_cast<size_t>(p)] * static_cast<double>(code);
        }
        want *= scale[static_cast<size_t>(c)];
        ASSERT_EQ(S[static_cast<size_t>(c)], want)
            << "codes up to " << hi_code << ", trial " << trial << ", column " << c;
      }
    }
  }
}

TEST(CrossbarLayer, PatternLookupGivesTheBitsOfTheFloatKernel) {
  // Crossbars with float cells (variation, drift, IR drop) whose groups have few rows -- FORMS
  // fragments of 4 and 8 (of 8-bit cells with an 11-bit ADC too: codes up to 2,040), a 2-bit DAC on
  // fragments of 4 (of 4-bit cells too), a two-column crossbar of 8 rows -- look
  // each group's sums and ADC codes up by digit pattern: the same outputs as FloatSums and
  // ConvertPosition for every position (SetPatternSums(false)), lossy ADC, signed and unsigned
  // inputs, 1 and 2 threads, many and few positions. Read noise (per read) and groups too large for
  // a table keep the float kernel.
  // Calibrated ADC ranges (the largest partial sum, or a percentile of their histogram) recorded
  // from the looked-up sums: the same ranges.
  struct Run {
    const Scheme* scheme;
    int64_t rows, fragment;
    int dac_bits;
    double wire_ohm, noise;
    bool patterns;      // whether the lookup applies
    double percentile;  // 0: worst-case ADC ranges, else calibrated
    int adc_bits = 0;   // 0: 3 calibrated, 4 worst-case
    int cell_bits = 2;  // 8 on fragments of 8 with an 11-bit ADC: codes up to 2,040
  };
  const std::vector<Run> runs = {
      {kPolarized, 128, 4, 1, 0, 0, true, 0},      {kPolarized, 128, 8, 1, 0, 0, true, 0},
      {kPolarized, 64, 4, 2, 0, 0, true, 0},       {kTwoColumn, 8, 8, 1, 0, 0, true, 0},
      {kPolarized, 128, 4, 1, 2.0, 0, true, 0},    {kPolarized, 128, 4, 1, 0, 0.02, false, 0},
      {kPolarized, 128, 16, 1, 0, 0, false, 0},    {kPolarized, 128, 8, 1, 0, 0, true, 100},
      {kPolarized, 128, 4, 2, 0, 0, true, 100},    {kPolarized, 128, 8, 1, 0, 0, true, 99.5},
      {kPolarized, 128, 4, 2, 0, 0, true, 99},     {kPolarized, 128, 8, 1, 0, 0, true, 0, 11, 8},
      {kPolarized, 128, 4, 2, 0, 0, true, 0, 6, 4}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    torch::Tensor w = Weights(40, 300, 90 + i, true);
    if (r.scheme == kPolarized) {
      torch::Tensor cm = w.contiguous();
      ProjectPolarize({cm.data_ptr<float>(), 300, 40}, r.fragment, 64);
      w = cm;
    }
    MappingSpec map = Map(r.scheme, r.rows, 64, r.cell_bits, r.dac_bits);
    map.fragment_rows = r.fragment;
    map.adc_bits = r.adc_bits > 0 ? r.adc_bits : r.percentile > 0 ? 3 : 4;  // calibrated: several levels per code
    DeviceSpec dev;
    dev.variation_sigma = 0.1;
    dev.drift_nu = 0.05;
    dev.drift_time = 100;
    dev.wire_resistance_ohm = r.wire_ohm;
    dev.read_noise_sigma = r.noise;
    map.adc_calibrated = r.percentile > 0;
    map.adc_percentile = r.percentile > 0 ? r.percentile : 100;
    CrossbarLayer layer("l", w, 0.0, map, dev);
    layer.Program(nullptr, 7, 0);
    EXPECT_EQ(layer.packed_tiles(), 0) << "float cells";
    for (bool signed_inputs : {false, true}) {
      const torch::Tensor x = Inputs(300, 300, map.input_bits, signed_inputs, 40 + i);
      auto calibrate = [&] {
        if (!map.adc_calibrated) return;
        layer.StartCalibration();
        layer.Forward(Inputs(400, 300, map.input_bits, signed_inputs, 60 + i), signed_inputs, 3, nullptr);
        layer.FinishCalibration();
      };
      at::set_num_threads(1);
      SetPatternSums(false);
      calibrate();
      const torch::Tensor want = layer.Forward(x, signed_inputs, 3, nullptr);
      SetPatternSums(true);
      const int64_t built = PatternTablesBuilt();
      calibrate();
      const torch::Tensor one = layer.Forward(x, signed_inputs, 3, nullptr);
      EXPECT_EQ(PatternTablesBuilt() > built, r.patterns) << "run " << i;
      at::set_num_threads(2);
      const torch::Tensor two = layer.Forward(x, signed_inputs, 3, nullptr);
      const torch::Tensor few = layer.Forward(x.narrow(0, 0, 40), signed_inputs, 3, nullptr);
      at::set_num_threads(1);
      const std::string what = StrCat("run ", i, " signed ", signed_inputs);
      EXPECT_TRUE(torch::equal(want, one)) << what << " max diff " << (want - one).abs().max().item<double>();
      EXPECT_TRUE(torch::equal(want, two)) << what << ", two threads";
      EXPECT_TRUE(torch::equal(want.narrow(0, 0, 40), few)) << what << ", 40 positions";
      EXPECT_GT(want.abs().sum().item<double>(), 0) << what;
    }
  }
  SetPatternSums(true);
}

// The first `train` training and `test` test images of Fashion-MNIST (callers skip without it).
DataBundle SmallFashionMnist(int64_t train, int64_t test) {
  DatasetSpec d;
  d.train_subset = train;
  d.test_subset = test;
  return LoadData(d, 0);
}

TEST(Network, CalibratedAdcRangesTakeEffectAndResultsDoNotDependOnBatchOrThreads) {
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP();
  DataBundle data = SmallFashionMnist(200, 40);
  torch::manual_seed(0);
  auto m = CreateModel(ModelSpec{});
  auto run = [&](bool calibrated, double percentile, double noise, int64_t batch, int threads) {
    at::set_num_threads(threads);
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.weight_bits = 8;
    map.adc_bits = 5;
    map.adc_calibrated = calibrated;
    map.adc_percentile = percentile;
    map.calibration_images = 60;
    DeviceSpec dev;
    dev.read_noise_sigma = noise;
    dev.variation_sigma = noise;  // float conductances: the engine's float GEMM path
    NetworkSimulator sim(*m, map, dev);
    sim.Calibrate(data.train, batch, torch::kCPU);
    sim.Program(FaultSpec{}, 3);
    const EvalResult r = sim.Evaluate(data.test, SimMode::kCrossbar, batch, torch::kCPU);
    return std::make_pair(r, sim.Report());
  };
  const auto worst = run(false, 100, 0, 20, 1);
  const auto cal = run(true, 100, 0, 20, 1);
  const auto clipped = run(true, 99, 0, 20, 1);
  // A calibrated range uses the ADC's codes on the currents that occur: far smaller errors.
  EXPECT_LT(cal.second[1].output_nmse, 0.5 * worst.second[1].output_nmse);
  EXPECT_NE(cal.first.loss, worst.first.loss);
  EXPECT_NE(clipped.first.loss, cal.first.loss);
  // Same results whatever the batch size and thread count (read noise and variation on, calibrated
  // ADC).
  const auto a = run(true, 99.9, 0.05, 20, 1);
  const auto b = run(true, 99.9, 0.05, 8, 2);
  EXPECT_EQ(a.first.loss, b.first.loss);
  EXPECT_EQ(a.first.accuracy, b.first.accuracy);
  for (size_t i = 0; i < a.second.size(); ++i) {
    EXPECT_EQ(a.second[i].output_nmse, b.second[i].output_nmse) << a.second[i].name;
    EXPECT_EQ(a.second[i].output_nmse_reference, b.second[i].output_nmse_reference) << a.second[i].name;
    EXPECT_EQ(a.second[i].adc_conversions, b.second[i].adc_conversions) << a.second[i].name;
  }
  at::set_num_threads(1);
}

// The ADC calibration runs every calibration image through the programmed crossbars (minutes on a
// ResNet-18): SIGINT/SIGTERM stop it between batches with InterruptedError (exit 4), naming the
// stage, and leave a simulator that programs and evaluates as one never interrupted.
TEST(Network, AdcCalibrationStopsOnInterrupt) {
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP();
  DataBundle data = SmallFashionMnist(200, 20);
  torch::manual_seed(0);
  auto m = CreateModel(ModelSpec{});
  MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
  map.weight_bits = 8;
  map.adc_bits = 5;
  map.adc_calibrated = true;
  map.calibration_images = 120;
  NetworkSimulator sim(*m, map, DeviceSpec{});
  sim.SetQuiet(true);
  sim.Calibrate(data.train, 20, torch::kCPU);
  InstallInterruptHandlers();  // SIGINT now sets a flag instead of killing the process
  std::raise(SIGINT);
  try {
    sim.Program(FaultSpec{}, 3);
    ADD_FAILURE() << "expected an InterruptedError";
  } catch (const InterruptedError& e) {
    EXPECT_NE(std::string(e.what()).find("during the ADC calibration"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("after 0 of 120 calibration images"), std::string::npos) << e.what();
  }
  ClearInterruptForTesting();
  sim.Program(FaultSpec{}, 3);
  const EvalResult after = sim.Evaluate(data.test, SimMode::kCrossbar, 10, torch::kCPU);
  NetworkSimulator fresh(*m, map, DeviceSpec{});
  fresh.SetQuiet(true);
  fresh.Calibrate(data.train, 20, torch::kCPU);
  fresh.Program(FaultSpec{}, 3);
  const EvalResult clean = fresh.Evaluate(data.test, SimMode::kCrossbar, 10, torch::kCPU);
  EXPECT_EQ(after.loss, clean.loss);
  EXPECT_EQ(after.accuracy, clean.accuracy);
}

TEST(Workload, ReadCountsFromUnloweredInputsEqualTheLoweredOnes) {
  // The fast path counts a layer's reads on its unlowered input (PlanesNeeded + NeededCycles through
  // the conv window); the engine on the lowered (im2col) rows: the same conversions and zero-
  // skipping cycles, with stride, padding, dilation, groups, compacted rows, fragments that do not
  // divide the rows, signed inputs and a 2-bit DAC.
  at::set_num_threads(2);
  struct Case {
    int64_t in, out, k, stride, padding, dilation, groups, hw;
  };
  int skipping = 0;  // layers where some fragment skips cycles
  for (const Case& c : {Case{6, 8, 3, 2, 1, 1, 2, 9}, Case{16, 12, 5, 1, 2, 1, 1, 12}, Case{8, 8, 3, 1, 2, 2, 4, 10},
                        Case{4, 6, 1, 2, 0, 1, 1, 7}}) {
    for (bool signed_inputs : {false, true}) {
      for (int dac : {1, 2}) {
        LayerInfo l;
        l.name = "conv";
        l.in_channels = c.in;
        l.out_channels = c.out;
        l.kernel_h = l.kernel_w = c.k;
        l.stride = c.stride;
        l.padding = c.padding;
        l.dilation = c.dilation;
        l.groups = c.groups;
        MappingSpec map = Map(kTwoColumn, 32, 32, 2, dac);
        map.fragment_rows = 12;
        const int64_t B = 3, K = l.gemm_rows(), per = c.out / c.groups, cin = c.in / c.groups;
        torch::Tensor x = Inputs(B * c.in * c.hw, c.hw, 8, signed_inputs, 7).view({B, c.in, c.hw, c.hw});
        x.narrow(1, 0, 1).zero_();  // a whole channel of zeros: fragments that skip everything
        const int64_t oh = l.out_size(c.hw, c.k), ow = oh;
        const int64_t P = map.InputCycles(signed_inputs);
        const torch::Tensor need = PlanesNeeded(x, dac, P, c.padding);
        for (int64_t g = 0; g < c.groups; ++g) {
          CrossbarLayer layer("conv", Weights(per, K, 3 + g, true), 0.0, map, DeviceSpec{});
          torch::Tensor cols = torch::nn::functional::unfold(
              x.narrow(1, g * cin, cin),
              torch::nn::functional::UnfoldFuncOptions({c.k, c.k}).padding(c.padding).stride(c.stride).dilation(c.dilation));
          cols = cols.transpose(1, 2).reshape({-1, K});
          ReadStats lowered, unlowered;
          layer.CountReads(cols, signed_inputs, &lowered);
          layer.CountReads(B * oh * ow, signed_inputs, [&](const std::vector<int64_t>& rows) {
            return NeededCycles(need, l, g * cin, rows, map.fragment_rows, oh, ow);
          }, &unlowered);
          const std::string what = "case in " + std::to_string(c.in) + " k " + std::to_string(c.k) + " signed " +
                                   std::to_string(signed_inputs) + " dac " + std::to_string(dac) + " group " + std::to_string(g);
          EXPECT_EQ(unlowered.adc_conversions, lowered.adc_conversions) << what;
          EXPECT_EQ(unlowered.input_cycles, lowered.input_cycles) << what;
          EXPECT_EQ(unlowered.input_cycles_needed, lowered.input_cycles_needed) << what;
          skipping += lowered.input_cycles_needed < lowered.input_cycles ? 1 : 0;
        }
      }
    }
  }
  EXPECT_GT(skipping, 10) << "the counts must be tested where they skip";
  at::set_num_threads(1);
}

TEST(Kernels, PlanesNeededIsTheBitLengthInDacSteps) {
  // PlanesNeeded (a vectorised pass over the float codes) against the definition: all P planes for a
  // negative code, else ceil(bit length / DAC bits); zero in the padding.
  auto bit_length = [](int64_t v) {
    int b = 0;
    while (v > 0) ++b, v >>= 1;
    return b;
  };
  torch::manual_seed(5);
  for (int dac : {1, 2, 3, 4, 5, 8}) {
    for (int64_t pad : {0, 2}) {
      // Every code 0..2^16 - 1 near a power of two, random ones, and negatives.
      std::vector<float> codes;
      for (int b = 0; b <= 16; ++b) {
        for (int64_t d : {-1, 0, 1}) {
          const int64_t v = (int64_t{1} << b) + d;
          if (v >= 0 && v < 65536) codes.push_back(static_cast<float>(v));
        }
      }
      for (int i = 0; i < 200; ++i) codes.push_back(static_cast<float>(torch::randint(0, 65536, {1}).item<int64_t>()));
      for (float v : {-1.0f, -128.0f, -32768.0f}) codes.push_back(v);
      const int64_t n = static_cast<int64_t>(codes.size()), W = 9, H = (n + W - 1) / W;
      codes.resize(static_cast<size_t>(H * W), 0.0f);
      const torch::Tensor x = torch::from_blob(codes.data(), {1, 1, H, W}).clone();
      const int64_t P = 17;
      for (bool conv : {true, false}) {
        const torch::Tensor need = conv ? PlanesNeeded(x, dac, P, pad) : PlanesNeeded(x.view({H, W}), dac, P, 0);
        const int64_t p = conv ? pad : 0;
        ASSERT_EQ(need.size(-1), W + 2 * p);
        const uint8_t* np = need.data_ptr<uint8_t>();
        int64_t wrong = 0, padding_wrong = 0;
        for (int64_t r = 0; r < H + 2 * p; ++r) {
          for (int64_t c = 0; c < W + 2 * p; ++c) {
            const uint8_t got = np[r * (W + 2 * p) + c];
            if (r < p || r >= H + p || c < p || c >= W + p) {
              padding_wrong += got != 0;
              continue;
            }
            const float v = codes[static_cast<size_t>((r - p) * W + (c - p))];
            const int want = v < 0 ? static_cast<int>(P) : (bit_length(static_cast<int64_t>(v)) + dac - 1) / dac;
            wrong += got != want;
          }
        }
        EXPECT_EQ(wrong, 0) << "dac " << dac << " pad " << pad << " conv " << conv;
        EXPECT_EQ(padding_wrong, 0) << "dac " << dac << " pad " << pad;
      }
    }
  }
}

TEST(Kernels, ExactIntConvGivesTheExactSumRoundedOnce) {
  // The counting pass of zero-skipping estimates convolves integer codes of up to 16 bits with
  // 8-bit weights: sums far past 2^24, where a float32 GEMM rounds. The reference is a float64
  // convolution (exact: every sum stays below 2^53), rounded once to float32. Both kernels are
  // checked where the CPU has them: ExactIntConv (oneDNN's on VNNI/AMX, else the AVX2 one) and the
  // AVX2 kernel alone.
  if (!ExactIntConvAvailable()) GTEST_SKIP() << "no exact integer kernels on this CPU or build";
  struct Case {
    IntConvShape c;
    int64_t code_min, code_max;
  };
  auto conv = [](int64_t n, int64_t ch, int64_t hw, int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dil,
                 int64_t groups) {
    IntConvShape c;
    c.batch = n, c.in_channels = ch, c.height = hw, c.width = hw, c.out_channels = o, c.kernel_h = k, c.kernel_w = k;
    c.stride = stride, c.padding = pad, c.dilation = dil, c.groups = groups;
    return c;
  };
  const std::vector<Case> cases = {
      {conv(3, 64, 14, 32, 3, 1, 1, 1, 1), 0, 65535},     // 16-bit codes: two byte passes, 288 weight pairs
      {conv(2, 32, 9, 48, 3, 2, 1, 1, 1), 0, 65535},      // stride 2, odd size
      {conv(2, 16, 10, 24, 1, 2, 0, 1, 1), 0, 65535},     // 1 x 1 shortcut
      {conv(2, 8, 12, 8, 3, 1, 2, 2, 1), 0, 65535},       // dilation 2
      {conv(2, 16, 8, 32, 3, 1, 1, 1, 4), 0, 65535},      // groups
      {conv(2, 16, 8, 16, 3, 1, 1, 1, 16), 0, 255},       // depthwise, 8-bit codes: one pass, odd reduction
      {conv(5, 300, 1, 10, 1, 1, 0, 1, 1), 0, 65535},     // a linear layer
      {conv(2, 3, 11, 6, 5, 1, 2, 1, 1), -32768, 32767},  // signed 16-bit codes (a first layer), 6 channels
      {conv(1, 130, 6, 5, 3, 1, 1, 1, 1), -128, 127},     // signed 8-bit, 585 pairs: three int32 runs
      {conv(3, 7, 13, 9, 3, 2, 0, 1, 1), 0, 32767},       // 15-bit codes (no offset), odd everything
      {conv(2, 20, 21, 7, 3, 1, 1, 1, 1), 0, 65535},      // rows of 21 at stride 1: runs of 16 read as vectors
  };
  torch::manual_seed(3);
  auto check = [](const IntConvShape& c, const torch::Tensor& x, const torch::Tensor& w, bool avx2_only,
                  const std::string& what) {
    const torch::Tensor want = torch::conv2d(x.to(torch::kFloat64), w.to(torch::kFloat64), {}, c.stride, c.padding,
                                             c.dilation, c.groups)
                                   .to(torch::kFloat32);
    torch::Tensor y = torch::full_like(want, -1.0f);
    const torch::Tensor w8 = w.to(torch::kInt8).contiguous();
    const bool ran = avx2_only ? ExactIntConvAvx2(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>())
                               : ExactIntConv(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>());
    // A build without AVX2 has only oneDNN's path (VNNI/AMX), which takes no signed codes.
    if (!ran && !ExactIntSumsAvailable()) return;
    ASSERT_TRUE(ran) << what << (avx2_only ? " (AVX2 kernel)" : "");
    EXPECT_TRUE(torch::equal(y, want)) << "max difference " << (y - want).abs().max().item<float>() << " on " << what
                                       << (avx2_only ? " (AVX2 kernel)" : "");
  };
  for (const Case& k : cases) {
    const IntConvShape& c = k.c;
    const torch::Tensor x =
        torch::randint(k.code_min, k.code_max + 1, {c.batch, c.in_channels, c.height, c.width}, torch::kFloat32);
    const torch::Tensor w =
        torch::randint(-128, 128, {c.out_channels, c.in_channels / c.groups, c.kernel_h, c.kernel_w}, torch::kFloat32);
    const std::string what =
        StrCat(c.in_channels, " -> ", c.out_channels, ", groups ", c.groups, ", codes ", k.code_min, "..", k.code_max);
    for (bool avx2_only : {false, true}) check(c, x, w, avx2_only, what);
    if (k.code_max == 65535 && c.groups == 1 && c.height > 1) {
      // What this replaces: the float32 convolution of the same codes rounds.
      EXPECT_FALSE(torch::equal(
          torch::conv2d(x, w, {}, c.stride, c.padding, c.dilation, c.groups),
          torch::conv2d(x.to(torch::kFloat64), w.to(torch::kFloat64), {}, c.stride, c.padding, c.dilation, c.groups)
              .to(torch::kFloat32)));
    }
  }
  // The extremes of an int32 run: codes at the ends of their range times weights of -128, over 256
  // weight pairs (the AVX2 kernel's limit is 255 a run) and 1,500 (an offset of 2^15 makes code 0
  // the most negative value).
  for (int64_t channels : {512, 3000}) {
    for (const auto& [lo, hi] :
         std::vector<std::pair<float, float>>{{-32768.0f, -32768.0f}, {0.0f, 65535.0f}, {65535.0f, 65535.0f}}) {
      const IntConvShape c = conv(2, channels, 1, 3, 1, 1, 0, 1, 1);
      torch::Tensor x = torch::full({2, channels, 1, 1}, lo);
      x[1][17][0][0] = hi;
      const torch::Tensor w = torch::full({3, channels, 1, 1}, -128.0f);
      for (bool avx2_only : {false, true})
        check(c, x, w, avx2_only, StrCat("extremes ", lo, "/", hi, " over ", channels));
    }
  }
  // The float64 variant with int16 weights (the simulator's fast path): the exact sums themselves,
  // for weights beyond 8 bits; refused where a pair of products could pass int32.
  if (ExactIntSumsAvailable()) {
    struct Wide {
      IntConvShape c;
      int64_t code_min, code_max, w_max;
    };
    const std::vector<Wide> wide = {
        {conv(2, 40, 12, 10, 3, 1, 1, 1, 1), 0, 255, 30000},  // 8-bit codes, 16-bit weights
        {conv(3, 9, 20, 7, 3, 2, 1, 1, 1), -128, 127, 2000},  // signed codes
        {conv(2, 16, 9, 12, 3, 1, 1, 1, 4), 0, 65535, 100},   // 16-bit codes, groups
        {conv(4, 700, 1, 5, 1, 1, 0, 1, 1), 0, 4095, 1000},   // a linear layer, short int32 runs
    };
    for (const Wide& k : wide) {
      const IntConvShape& c = k.c;
      const torch::Tensor x =
          torch::randint(k.code_min, k.code_max + 1, {c.batch, c.in_channels, c.height, c.width}, torch::kFloat32);
      const torch::Tensor w = torch::randint(
          -k.w_max, k.w_max + 1, {c.out_channels, c.in_channels / c.groups, c.kernel_h, c.kernel_w}, torch::kFloat64);
      const torch::Tensor want = torch::conv2d(x.to(torch::kFloat64), w, {}, c.stride, c.padding, c.dilation, c.groups);
      torch::Tensor y = torch::full_like(want, -1.0);
      const torch::Tensor w16 = w.to(torch::kInt16).contiguous();
      ASSERT_TRUE(ExactIntSums(c, x.data_ptr<float>(), w16.data_ptr<int16_t>(), y.data_ptr<double>()));
      EXPECT_TRUE(torch::equal(y, want)) << "max difference " << (y - want).abs().max().item<double>() << " on "
                                         << c.in_channels << " -> " << c.out_channels << ", weights up to " << k.w_max;
    }
    {  // Runs shorter than 255 pairs: 350 pairs of 8191 x -1000 would pass int32 in one run.
      const IntConvShape c = conv(2, 700, 1, 3, 1, 1, 0, 1, 1);
      const torch::Tensor x = torch::full({2, 700, 1, 1}, 8191.0f);
      const torch::Tensor w = torch::full({3, 700, 1, 1}, -1000.0, torch::kFloat64);
      const torch::Tensor want = torch::conv2d(x.to(torch::kFloat64), w);
      torch::Tensor y = torch::zeros_like(want);
      const torch::Tensor w16 = w.to(torch::kInt16).contiguous();
      ASSERT_TRUE(ExactIntSums(c, x.data_ptr<float>(), w16.data_ptr<int16_t>(), y.data_ptr<double>()));
      EXPECT_TRUE(torch::equal(y, want)) << y.flatten()[0].item<double>() << " vs " << want.flatten()[0].item<double>();
    }
    IntConvShape c = conv(1, 2, 3, 2, 1, 1, 0, 1, 1);
    torch::Tensor x = torch::full({1, 2, 3, 3}, 40000.0f);  // offset codes reach -2^15: 2^15 x 2^15 per product
    const torch::Tensor w16 = torch::full({2, 2, 1, 1}, -32768, torch::kInt16);
    torch::Tensor y = torch::full({1, 2, 3, 3}, 7.0, torch::kFloat64);
    EXPECT_FALSE(ExactIntSums(c, x.data_ptr<float>(), w16.data_ptr<int16_t>(), y.data_ptr<double>()));
    EXPECT_TRUE(torch::equal(y, torch::full({1, 2, 3, 3}, 7.0, torch::kFloat64)));
  }
  // Not integer codes in [0, 2^16) or [-2^15, 2^15): refused, the output untouched.
  IntConvShape c = conv(1, 2, 3, 2, 1, 1, 0, 1, 1);
  const torch::Tensor w8 = torch::ones({2, 2, 1, 1}, torch::kInt8);
  for (const auto& [bad, other] : std::vector<std::pair<float, float>>{
           {0.5f, 1.0f}, {-32769.0f, 1.0f}, {65536.0f, 1.0f}, {std::nanf(""), 1.0f}, {-1.0f, 32768.0f}}) {
    torch::Tensor x = torch::ones({1, 2, 3, 3});
    x[0][1][2][0] = bad;
    x[0][0][0][0] = other;
    for (bool avx2_only : {false, true}) {
      torch::Tensor y = torch::full({1, 2, 3, 3}, 7.0f);
      EXPECT_FALSE(avx2_only ? ExactIntConvAvx2(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>())
                             : ExactIntConv(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>()))
          << bad << " with " << other;
      EXPECT_TRUE(torch::equal(y, torch::full({1, 2, 3, 3}, 7.0f))) << bad;
    }
  }
}

TEST(Workload, ZeroSkippingCountsFromActivationsEqualTheEngines) {
  // NetworkWork counts each fragment's needed input cycles from the quantised activations and the
  // tiles' rows, without building a crossbar; the engine counts them on its lowered inputs.
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP();
  at::set_num_threads(2);
  DatasetSpec d;
  d.train_subset = 200;
  d.test_subset = 60;
  DataBundle data = LoadData(d, 0);
  torch::manual_seed(0);
  auto m = CreateModel(ModelSpec{});
  {  // prune, so tiles hold compacted rows
    torch::NoGradGuard ng;
    for (const auto& l : m->layers()) {
      torch::Tensor w = m->LayerWeight(l.name);
      w.mul_(torch::rand_like(w).gt(0.6));
    }
  }
  for (const Scheme* s : {kTwoColumn, kOffset}) {
    for (int input_bits : {8, 16}) {
      MappingSpec map = Map(s, 64, 64, 2, 1);
      map.input_bits = input_bits;
      map.calibration_images = 100;
      NetworkSimulator sim(*m, map, DeviceSpec{});
      sim.Calibrate(data.train, 50, torch::kCPU);
      sim.Program(FaultSpec{}, 0);
      sim.SetReadStatsOnly(true);
      sim.Evaluate(data.test, SimMode::kCrossbar, 30, torch::kCPU);
      const auto inputs = CalibrateInputs(*m, data.train.images.narrow(0, 0, 100), torch::kCPU, input_bits);
      std::map<std::string, SkipCounts> skips;
      const auto work = NetworkWork(*m, map, {}, inputs, &data.test.images, torch::kCPU, &skips);
      const auto rep = sim.Report();
      ASSERT_EQ(work.size(), rep.size());
      for (size_t i = 0; i < rep.size(); ++i) {
        const SkipCounts& k = skips.at(rep[i].name);
        EXPECT_GT(k.applied, 0) << rep[i].name;
        EXPECT_DOUBLE_EQ(1.0 - static_cast<double>(k.needed) / static_cast<double>(k.applied), rep[i].input_cycles_skipped)
            << s->Name() << " " << input_bits << " " << rep[i].name;
        EXPECT_EQ(work[i].crossbars, rep[i].crossbars) << rep[i].name;
        EXPECT_EQ(work[i].cells, rep[i].cells) << rep[i].name;
        EXPECT_EQ(work[i].input_cycles, rep[i].input_cycles) << rep[i].name;
        EXPECT_EQ(work[i].positions, static_cast<int64_t>(rep[i].positions)) << rep[i].name;
      }
    }
  }
  at::set_num_threads(1);
}

}  // namespace
}  // namespace xbar

namespace xbar {
namespace {

// ---- IR drop (issue 10, item 4) ----------------------------------------------------------------

// Cell conductances (siemens) of an R x C array at random levels of 2-bit cells, on/off ratio 10.
torch::Tensor RandomArray(int64_t rows, int64_t cols, double g_max, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor level = torch::randint(0, 4, {rows, cols}, torch::kFloat64) / 3.0;
  return (0.1 + 0.9 * level) * g_max;
}

TEST(Stages, ListsFollowTheHardwareDescriptionInOrder) {
  auto names = [](const std::vector<std::unique_ptr<WeightStage>>& l) {
    std::string out;
    for (const auto& s : l) out += (out.empty() ? "" : " > ") + std::string(s->Name());
    return out;
  };
  const MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
  DeviceSpec ideal;
  EXPECT_EQ(names(BuildWeightStages(map, ideal)), "levels > stuck-at");
  EXPECT_EQ(BuildReadStages(map, ideal).Names(), "dac > adc");
  EXPECT_TRUE(BuildReadStages(map, ideal).exact());
  DeviceSpec all;
  all.variation_sigma = 0.1;
  all.drift_nu = 0.05;
  all.drift_time = 100;
  all.read_noise_sigma = 0.01;
  all.wire_resistance_ohm = 1;
  EXPECT_EQ(names(BuildWeightStages(map, all)), "levels > stuck-at > variation > drift");
  EXPECT_EQ(BuildReadStages(map, all).Names(), "dac > ir-drop > read-noise > adc");
  EXPECT_FALSE(BuildReadStages(map, all).exact());
  all.drift_time = 1;  // no time elapsed: no drift stage
  EXPECT_EQ(names(BuildWeightStages(map, all)), "levels > stuck-at > variation");
}

TEST(IrDrop, ExactSolveMatchesClosedFormsOfSmallNetworks) {
  // One cell between two wire segments: I = V / (2 r + 1/G); the fast model is exact here too.
  torch::Tensor g = torch::full({1, 1}, 1e-3, torch::kFloat64);
  const double want = 1.0 / (2.0 * 50.0 + 1e3);
  EXPECT_NEAR(IrDropEffective(g, 50.0, IrDropModel::kExact).item<double>(), want, 1e-15);
  EXPECT_NEAR(IrDropEffective(g, 50.0, IrDropModel::kFast).item<double>(), want, 1e-15);
  // Two cells on one word line (1 x 2): the second column's current passes both word-line segments.
  // Node voltages by hand: a = V - r (I0 + I1), b = a - r I1, I0 = G0 (a - r I0)... solved numerically
  // by the exact model must conserve current: the driver current equals the two column currents.
  torch::Tensor g2 = torch::tensor({{1e-3, 2e-3}}, torch::kFloat64);
  torch::Tensor e2 = IrDropEffective(g2, 10.0, IrDropModel::kExact);
  EXPECT_LT(e2[0][1].item<double>(), 2e-3);
  EXPECT_LT(e2[0][0].item<double>(), 1e-3);
  // With no wire resistance there is no drop.
  torch::Tensor a = RandomArray(8, 8, 1e-4, 1);
  EXPECT_TRUE(torch::equal(IrDropEffective(a, 0.0, IrDropModel::kFast), a));
  EXPECT_LT((IrDropEffective(a, 1e-6, IrDropModel::kExact) - a).abs().max().item<double>(), 1e-8 * 1e-4);
}

TEST(IrDrop, FastModelStaysWithinItsDocumentedErrorOfTheExactSolve) {
  // 32 x 32 arrays; r G_max from negligible to severe drop. Column currents with every word line
  // driven (the worst case) and per-cell effective conductances, relative to the exact solve.
  struct Point {
    double r_gmax, max_column_error;
  };
  // The bounds ir_drop.h and docs/RESULTS.md document (mean drops ~0.4 %, 4 %, 12 %, 29 %, 54 %).
  const Point points[] = {{1e-5, 1e-4}, {1e-4, 1e-3}, {3e-4, 3e-3}, {1e-3, 2e-2}, {3e-3, 7e-2}};
  double last_drop = 0;
  for (const Point& p : points) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      torch::Tensor g = RandomArray(32, 32, 1e-4, seed);
      const double r = p.r_gmax / 1e-4;
      torch::Tensor exact = IrDropEffective(g, r, IrDropModel::kExact);
      torch::Tensor fast = IrDropEffective(g, r, IrDropModel::kFast);
      torch::Tensor ce = exact.sum(0), cf = fast.sum(0);
      const double err = ((cf - ce).abs() / ce).max().item<double>();
      EXPECT_LT(err, p.max_column_error) << "r G_max " << p.r_gmax << " seed " << seed;
      const double drop = 1.0 - ce.sum().item<double>() / g.sum().item<double>();
      if (seed == 1) {
        EXPECT_GT(drop, last_drop) << "more wire resistance, more drop";
        last_drop = drop;
      }
      // Every cell's effective conductance is below its own, and positive.
      EXPECT_TRUE(exact.lt(g).all().item<bool>());
      EXPECT_TRUE(fast.gt(0).all().item<bool>());
    }
  }
}

TEST(IrDrop, StageLowersTheReadCurrentAndLeavesTheExactPath) {
  torch::Tensor w = Weights(24, 96, 7, false);
  torch::Tensor x = Inputs(40, 96, 8, false, 8);
  auto run = [&](double wire_ohm, bool exact, const Scheme* s) {
    DeviceSpec d;
    d.r_on_ohm = 1e4;
    d.wire_resistance_ohm = wire_ohm;
    d.ir_drop_exact = exact;
    MappingSpec m = Map(s, 32, 32, 2, 1);
    CrossbarLayer layer("l", w, 0.0, m, d);
    layer.Program(nullptr, 0, 0);
    torch::Tensor ref = layer.Reference(x);
    torch::Tensor y = layer.Forward(x, false, 0, nullptr);
    const double nmse = (y - ref).square().sum().item<double>() / ref.square().sum().item<double>();
    return std::make_tuple(layer.lossless(), nmse, layer.read_current_ratio(), layer.read_stages(), y);
  };
  for (const Scheme* s : {kTwoColumn, kComplementary, kOffset, kTwoCrossbar}) {
    auto [l0, e0, c0, n0, y0] = run(0.0, false, s);
    EXPECT_TRUE(l0) << s->Name();
    EXPECT_EQ(e0, 0.0);
    EXPECT_EQ(c0, 1.0);
    EXPECT_EQ(n0, "dac > adc");
    double last = 0;
    for (double r : {0.1, 1.0, 5.0}) {
      auto [l, e, c, n, y] = run(r, false, s);
      EXPECT_FALSE(l);
      EXPECT_EQ(n, "dac > ir-drop > adc");
      EXPECT_GE(e, last) << s->Name() << " r " << r;
      EXPECT_LT(c, 1.0);
      last = e;
      // Deterministic, and the fast model close to the exact nodal solve of the same arrays.
      EXPECT_TRUE(torch::equal(y, std::get<4>(run(r, false, s))));
      auto [lx, ex, cx, nx, yx] = run(r, true, s);
      // Read current within 2 % of its drop; the output error within 20 % of the exact model's
      // (measured: 0-13 %; a pair's difference of two large currents magnifies the model's error).
      EXPECT_NEAR(cx, c, 0.02 * (1.0 - c) + 1e-6) << s->Name() << " r " << r;
      if (ex > 1e-3) {
        EXPECT_NEAR(e, ex, 0.2 * ex) << s->Name() << " r " << r;
      }
    }
  }
}

}  // namespace
}  // namespace xbar

namespace xbar {
namespace {

// ---- Fault campaigns (issue 11) -------------------------------------------------------------------

TEST(Campaign, StudentQuantilesAndConfidenceIntervals) {
  // Two-sided 95 % quantiles of Student's t (tables; scipy.stats.t.ppf(0.975, dof)).
  EXPECT_NEAR(StudentT975(1), 12.7062, 1e-4);
  EXPECT_NEAR(StudentT975(3), 3.18245, 1e-5);
  EXPECT_NEAR(StudentT975(9), 2.26216, 1e-5);
  EXPECT_NEAR(StudentT975(10), 2.22814, 5e-5);
  EXPECT_NEAR(StudentT975(29), 2.04523, 2e-5);
  EXPECT_NEAR(StudentT975(99), 1.98422, 1e-5);
  const PointStats p = Summarize(0.01, {0.8, 0.9, 1.0});
  EXPECT_DOUBLE_EQ(p.mean, 0.9);
  EXPECT_NEAR(p.std, 0.1, 1e-12);
  EXPECT_NEAR(p.ci_high - p.mean, 4.302652729749464 * 0.1 / std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(p.mean - p.ci_low, p.ci_high - p.mean, 1e-15);
  const PointStats one = Summarize(0.01, {0.7});
  EXPECT_EQ(one.std, 0.0);
  EXPECT_EQ(one.ci_low, 0.7);
}

TEST(Campaign, TolerableRateIsBisectedBetweenTheGridPoints) {
  // Accuracy 0.9 - 10 * rate, no noise: the 0.01-drop threshold 0.89 is crossed at rate 1e-3.
  auto eval = [](double rate, bool refined) { return Summarize(rate, {0.9 - 10 * rate, 0.9 - 10 * rate}, refined); };
  const std::vector<double> grid = {1e-4, 5e-4, 2e-3, 1e-2};
  const Curve c = RunCurve(grid, 0.89, 6, eval);
  EXPECT_EQ(c.points.size(), grid.size() + 6);
  EXPECT_LE(c.tolerance.rate, 1e-3);
  EXPECT_GT(c.tolerance.rate, 1e-3 / std::pow(2e-3 / 5e-4, 1.0 / 64) * 0.999);  // six halvings of the log bracket
  EXPECT_FALSE(c.tolerance.below_grid || c.tolerance.above_grid);
  for (size_t i = 1; i < c.points.size(); ++i) EXPECT_LT(c.points[i - 1].rate, c.points[i].rate);
  // Zero spread: the interval collapses onto the passing and failing rates.
  EXPECT_DOUBLE_EQ(c.tolerance.ci_low, c.tolerance.rate);
  ASSERT_TRUE(c.tolerance.ci_high.has_value());
  EXPECT_GT(*c.tolerance.ci_high, 1e-3);
  // A curve that never drops, and one that drops at once.
  EXPECT_TRUE(RunCurve(grid, 0.0, 3, eval).tolerance.above_grid);
  const Curve low = RunCurve(grid, 0.95, 3, eval);
  EXPECT_TRUE(low.tolerance.below_grid);
  EXPECT_EQ(low.tolerance.rate, 0.0);
  EXPECT_EQ(low.points.size(), grid.size());
}

}  // namespace
}  // namespace xbar

namespace xbar {
namespace {

TEST(Placement, AssignmentIsOptimal) {
  // Against brute force over every injective map of n rows into m columns.
  torch::manual_seed(4);
  for (int64_t n : {1, 3, 4, 5}) {
    const int64_t m = 6;
    torch::Tensor c = torch::rand({n, m}, torch::kFloat64) * 10;
    c.masked_fill_(torch::rand({n, m}).lt(0.3), 0.0);  // ties, as with fault-free positions
    std::vector<double> cost(c.data_ptr<double>(), c.data_ptr<double>() + n * m);
    const std::vector<int64_t> pick = MinCostAssignment(cost, n, m);
    double got = 0;
    std::vector<bool> used(m, false);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_GE(pick[i], 0);
      ASSERT_FALSE(used[pick[i]]) << "columns are distinct";
      used[pick[i]] = true;
      got += cost[i * m + pick[i]];
    }
    std::vector<int64_t> perm(m);
    std::iota(perm.begin(), perm.end(), 0);
    double best = 1e300;
    do {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += cost[i * m + perm[i]];
      best = std::min(best, sum);
    } while (std::next_permutation(perm.begin(), perm.end()));
    EXPECT_NEAR(got, best, 1e-9) << "n " << n;
  }
}

TEST(Placement, HarmModelIsWhatTheEngineComputesAndPlacementLowersIt) {
  // The harm PlaceTile minimises, Σ_k m_k Σ_n (W_folded - q)², must be the engine's: computed
  // from the folded weights of the programmed crossbars it equals the layer's harm before (the
  // mapping's own placement) and after, for every scheme; placement lowers it a lot and the placed
  // crossbars still compute exactly x · W_foldedᵀ (flips keep every pair's difference).
  struct Case {
    const Scheme* scheme;
    int cell_bits;
    bool flip = false;
  };
  torch::manual_seed(9);
  const int64_t K = 150, N = 40;
  std::vector<double> moments(K);
  const torch::Tensor mt = torch::rand({K}, torch::kFloat64).square() * 100;
  for (int64_t k = 0; k < K; ++k) moments[k] = k % 7 == 3 ? 0.0 : mt[k].item<double>();  // some dead inputs
  const torch::Tensor mk = torch::tensor(moments, torch::kFloat64);
  for (const Case& c : {Case{kTwoColumn, 2}, Case{kTwoCrossbar, 2}, Case{kOffset, 2}, Case{kOffset, 2, true},
                        Case{kPolarized, 2}, Case{kComplementary, 2}, Case{kComplementary, 1}}) {
    MappingSpec map = Map(c.scheme, 64, 64, c.cell_bits, 1);
    map.weight_bits = 8;
    map.flip_columns = c.flip;
    FaultSpec fs;
    fs.sa0_rate = 0.005;
    fs.sa1_rate = 0.02;
    fs.seed = 11;
    torch::Tensor wq = Weights(N, K, 3, true);
    if (c.scheme == kPolarized) wq = wq.abs();
    CrossbarLayer layer("l", wq, 0.0, map, DeviceSpec{});
    const torch::Tensor q = layer.quantized().to(torch::kFloat64);
    auto harm = [&](const torch::Tensor& w) { return ((w - q).square() * mk.view({1, -1})).sum().item<double>(); };
    FaultInjector inj(fs);
    layer.Program(&inj, 5, 0);
    const double unplaced = harm(layer.FoldedWeights());
    layer.Program(&inj, 5, 0, &moments);
    const torch::Tensor w = layer.FoldedWeights();
    ASSERT_TRUE(w.defined()) << c.scheme->Name();
    const double placed = harm(w);
    const std::string what = StrCat(c.scheme->Name(), " ", c.cell_bits, "-bit cells", c.flip ? ", flipped" : "");
    EXPECT_NEAR(layer.placement_harm_before(), unplaced, 1e-9 * unplaced) << what;
    EXPECT_NEAR(layer.placement_harm_after(), placed, 1e-9 * std::max(1.0, placed)) << what;
    EXPECT_LT(placed, 0.5 * unplaced) << what << ": placement should at least halve the harm";
    EXPECT_GT(layer.stuck_cells(), 0);
    const torch::Tensor x = Inputs(30, K, 8, false, 5);
    EXPECT_TRUE(torch::equal(layer.Forward(x, false, 0, nullptr), torch::mm(x.to(torch::kFloat64), w.t()))) << what;
    bool moved = false;
    for (int64_t t = 0; t < layer.tiles(); ++t) moved = moved || !layer.placement(t).empty();
    EXPECT_TRUE(moved) << what;
  }
}

namespace {
// LeNet-5 (seed 0) calibrated on 100 Fashion-MNIST training images and programmed with 0.2 %
// stuck-off and 1 % stuck-on cells (seed 3), scheme s on 128x128 arrays, lossless ADC; 150 test
// images. The fixture of the fast-path tests on faulty chips.
struct FaultyLeNet {
  DataBundle data;
  std::shared_ptr<Model> model;
  std::unique_ptr<NetworkSimulator> sim;
  explicit FaultyLeNet(const Scheme* s) {
    DatasetSpec d;
    d.train_subset = 100;
    d.test_subset = 150;
    data = LoadData(d, 0);
    torch::manual_seed(0);
    model = CreateModel(ModelSpec{});
    MappingSpec map = Map(s, 128, 128, 2, 1);
    map.calibration_images = 100;
    sim = std::make_unique<NetworkSimulator>(*model, map, DeviceSpec{});
    sim->Calibrate(data.train, 50, torch::kCPU);
    FaultSpec fs;
    fs.sa0_rate = 0.002;
    fs.sa1_rate = 0.01;
    fs.seed = 3;
    sim->Program(fs, 3);
  }
};
}  // namespace

TEST(Campaign, FaultyLosslessCrossbarsFoldIntoIntegerWeightsExactly) {
  // With a lossless ADC, stuck cells keep the crossbar an integer linear map: FoldedWeights() must
  // reproduce the engine bit for bit, for every scheme, signed and unsigned inputs, 1- and 2-bit
  // cells, FORMS fragments and the offset scheme's unit column.
  struct Case {
    const Scheme* scheme;
    int cell_bits, dac_bits;
    bool analog;
    bool flip = false;
  };
  for (const Case& c : {Case{kTwoColumn, 2, 1, false}, Case{kTwoColumn, 1, 2, true}, Case{kTwoCrossbar, 2, 1, false},
                        Case{kOffset, 2, 1, false}, Case{kOffset, 2, 1, false, true}, Case{kPolarized, 2, 1, false},
                        Case{kComplementary, 2, 1, false}, Case{kComplementary, 1, 1, false}}) {
    for (bool signed_inputs : {false, true}) {
      MappingSpec map = Map(c.scheme, 64, 64, c.cell_bits, c.dac_bits, c.analog);
      map.weight_bits = 8;
      map.flip_columns = c.flip;
      FaultSpec fs;
      fs.sa0_rate = 0.01;
      fs.sa1_rate = 0.05;
      fs.seed = 11;
      FaultInjector inj(fs);
      torch::Tensor wq = Weights(40, 150, 3, true);
      if (c.scheme == kPolarized) wq = wq.abs();  // single-signed fragments
      CrossbarLayer layer("l", wq, 0.0, map, DeviceSpec{});
      layer.Program(&inj, 5, 0);
      ASSERT_GT(layer.stuck_cells(), 0);
      ASSERT_FALSE(layer.lossless());
      const torch::Tensor w = layer.FoldedWeights();
      ASSERT_TRUE(w.defined()) << c.scheme->Name();
      const torch::Tensor x = Inputs(90, 150, 8, signed_inputs, 5);
      const torch::Tensor engine = layer.Forward(x, signed_inputs, 0, nullptr);
      const torch::Tensor folded = torch::mm(x.to(torch::kFloat64), w.t());
      EXPECT_TRUE(torch::equal(engine, folded)) << c.scheme->Name() << " cells " << c.cell_bits << " signed " << signed_inputs
                                                << ": max diff " << (engine - folded).abs().max().item<double>();
      EXPECT_FALSE(torch::equal(w, layer.Reference(torch::eye(150)).t())) << "the faults show in the folded weights";
    }
  }
  // A network with stuck cells runs on the folded weights, with or without statistics; on the engine
  // (fast path off) the same loss and accuracy to the last bit, and the same statistics: output
  // NMSE against the float and the fault-free integer layers, conversions, zero-skipping.
  if (FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) {
    at::set_num_threads(2);
    for (const Scheme* s : {kTwoColumn, kComplementary}) {
      FaultyLeNet f(s);
      NetworkSimulator& sim = *f.sim;
      const DataBundle& data = f.data;
      sim.SetCollectStats(true);
      sim.SetFastPath(false);
      const EvalResult engine = sim.Evaluate(data.test, SimMode::kCrossbar, 50, torch::kCPU);
      const nlohmann::ordered_json engine_stats = SimulateJson("s", 0, 0, 0, sim.Report())["layers"];
      sim.SetFastPath(true);
      const EvalResult folded_stats = sim.Evaluate(data.test, SimMode::kCrossbar, 50, torch::kCPU);
      EXPECT_EQ(SimulateJson("s", 0, 0, 0, sim.Report())["layers"], engine_stats) << s->Name();
      EXPECT_GT(engine_stats[0]["output_nmse_reference"].get<double>(), 0.0) << "the faults show in the statistics";
      sim.SetCollectStats(false);
      const EvalResult fast = sim.Evaluate(data.test, SimMode::kCrossbar, 50, torch::kCPU);
      EXPECT_EQ(engine.loss, fast.loss) << s->Name();
      EXPECT_EQ(engine.accuracy, fast.accuracy) << s->Name();
      EXPECT_EQ(folded_stats.loss, fast.loss) << s->Name();
      const EvalResult ideal = sim.Evaluate(data.test, SimMode::kReference, 50, torch::kCPU);
      EXPECT_NE(ideal.loss, fast.loss) << s->Name() << ": the faults matter";
    }
    at::set_num_threads(1);
  }
  // Not foldable: variation makes cells non-integer, a lossy ADC rounds.
  DeviceSpec var;
  var.variation_sigma = 0.05;
  CrossbarLayer v("v", Weights(8, 30, 1, false), 0.0, Map(kTwoColumn, 64, 64, 2, 1), var);
  v.Program(nullptr, 1, 0);
  EXPECT_FALSE(v.FoldedWeights().defined());
  MappingSpec lossy = Map(kTwoColumn, 64, 64, 2, 1);
  lossy.adc_bits = 3;
  CrossbarLayer a("a", Weights(8, 30, 1, false), 0.0, lossy, DeviceSpec{});
  a.Program(nullptr, 1, 0);
  EXPECT_FALSE(a.FoldedWeights().defined());
}

TEST(Network, StatisticsFromTheFirstImagesOnly) {
  // simulate.stats_images: the first k test images carry the per-layer statistics (on stuck cells
  // with a lossless ADC: from the folded weights), the rest skip that work; the accuracy and loss are those of an all-
  // statistics run, and the statistics those of a run over the first k images alone, even when a
  // batch would straddle image k.
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  FaultyLeNet f(kComplementary);
  NetworkSimulator& sim = *f.sim;
  const DataBundle& data = f.data;
  const EvalResult all = sim.Evaluate(data.test, SimMode::kCrossbar, 40, torch::kCPU);
  EXPECT_EQ(sim.stats_images(), 150);
  Dataset first;
  first.images = data.test.images.narrow(0, 0, 70);
  first.labels = data.test.labels.narrow(0, 0, 70);
  sim.Evaluate(first, SimMode::kCrossbar, 40, torch::kCPU);
  const nlohmann::ordered_json expected = SimulateJson("s", 0, 0, 0, sim.Report())["layers"];
  sim.SetStatsImages(70);
  const EvalResult some = sim.Evaluate(data.test, SimMode::kCrossbar, 40, torch::kCPU);
  EXPECT_EQ(sim.stats_images(), 70);
  EXPECT_EQ(some.loss, all.loss);
  EXPECT_EQ(some.accuracy, all.accuracy);
  EXPECT_EQ(SimulateJson("s", 0, 0, 0, sim.Report())["layers"], expected);
  EXPECT_GT(expected[0]["output_nmse_reference"].get<double>(), 0.0) << "the faults show in the statistics";
  sim.SetStatsImages(1000);  // more than the test set: every image
  sim.Evaluate(data.test, SimMode::kCrossbar, 40, torch::kCPU);
  EXPECT_EQ(sim.stats_images(), 150);
}

// Issue 15: the AVX-512 (or AVX2) kernels (bit-packed inputs cut from whole rows, gathered for
// compacted rows, or cut at unaligned fragment starts; counts, ADC and shift-and-add in registers)
// and the portable ones give the same bits, on both sum kernels, lossy and lossless, on every path
// the engine takes: 64-aligned tiles, unaligned tile starts (100-row arrays), FORMS fragments of 8
// and 64 rows, compacted (gathered) rows, the offset scheme's unit column, 1- and 2-bit DACs,
// signed inputs, 12-bit inputs (the scalar packing path) and plane sums past int32 (in doubles).
// A kernel-comparison case: 40 x 300 weights (pruned or not; polarised for the polarized scheme)
// mapped with the given geometry and bits.
struct KernelRun {
  const Scheme* scheme;
  int64_t rows, cols, fragment;
  int cell_bits, dac_bits, input_bits, adc_bits;
  bool prune;
  double noise;  // read noise sigma
};
CrossbarLayer KernelRunLayer(const KernelRun& r, uint64_t seed) {
  torch::Tensor w = Weights(40, 300, seed, r.prune);
  if (r.scheme == kPolarized) {
    torch::Tensor cm = w.contiguous();
    ProjectPolarize({cm.data_ptr<float>(), 300, 40}, r.fragment, 64);
    w = cm;
  }
  MappingSpec map = Map(r.scheme, r.rows, r.cols, r.cell_bits, r.dac_bits);
  map.fragment_rows = r.fragment;
  map.input_bits = r.input_bits;
  map.adc_bits = r.adc_bits;
  DeviceSpec dev;
  dev.read_noise_sigma = r.noise;
  return CrossbarLayer("l", w, 0.0, map, dev);
}

TEST(Kernels, PortableAndVectorKernelsGiveTheSameBits) {
  const bool vector = !PortableKernels();
  const std::vector<KernelRun> runs = {
      {kTwoColumn, 128, 128, 8, 1, 1, 8, 5, false, 0},  {kTwoColumn, 100, 96, 8, 2, 2, 8, 6, false, 0},
      {kOffset, 128, 128, 8, 2, 1, 8, 0, true, 0},      {kPolarized, 128, 128, 8, 1, 1, 8, 5, false, 0},
      {kPolarized, 128, 96, 64, 2, 2, 8, 4, true, 0},   {kComplementary, 64, 64, 8, 1, 1, 8, 6, true, 0},
      {kTwoCrossbar, 128, 128, 8, 2, 1, 12, 7, false, 0},
      // 256 rows of 8-bit cells, 16-bit inputs on an 8-bit DAC, lossless ADC: codes up to
      // 256 * 255 * 255 on planes weighted 1 and 256 pass int32, so the plane sums run in doubles.
      {kTwoColumn, 256, 128, 8, 8, 8, 16, 0, false, 0}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const KernelRun& r = runs[i];
    CrossbarLayer layer = KernelRunLayer(r, 70 + i);
    for (bool signed_inputs : {false, true}) {
      torch::Tensor x = Inputs(300, 300, r.input_bits, signed_inputs, 5 + i);
      std::vector<torch::Tensor> got;
      for (bool portable : {false, true}) {
        SetPortableKernels(portable);
        for (SumKernel kernel : {SumKernel::kPacked, SumKernel::kFloat}) {
          layer.SetSumKernel(kernel);
          got.push_back(layer.Forward(x, signed_inputs, 0, nullptr));
        }
      }
      SetPortableKernels(false);
      EXPECT_EQ(layer.packed_tiles(), 0) << "the last run was the float kernel";
      layer.SetSumKernel(SumKernel::kPacked);
      EXPECT_EQ(layer.packed_tiles(), layer.tiles()) << "integer cells: every crossbar packs (run " << i << ")";
      for (size_t k = 1; k < got.size(); ++k) {
        EXPECT_TRUE(torch::equal(got[0], got[k])) << "run " << i << " signed " << signed_inputs << " variant " << k
                                                  << " (vector kernels built: " << vector << ") max diff "
                                                  << (got[0] - got[k]).abs().max().item<double>();
      }
      if (r.adc_bits == 0) {
        EXPECT_TRUE(torch::equal(got[0], layer.Reference(x))) << "lossless run " << i;
      }
      // One chunk of positions on two threads (200: split inside each crossbar's position loop;
      // 40 and 1: the threads take whole crossbars): the same bits as one thread, either kernel.
      for (SumKernel kernel : {SumKernel::kPacked, SumKernel::kFloat}) {
        layer.SetSumKernel(kernel);
        for (int64_t n : {200, 40, 1}) {
          const torch::Tensor few = x.narrow(0, 0, n);
          at::set_num_threads(1);
          const torch::Tensor one = layer.Forward(few, signed_inputs, 0, nullptr);
          at::set_num_threads(2);
          const torch::Tensor two = layer.Forward(few, signed_inputs, 0, nullptr);
          at::set_num_threads(1);
          EXPECT_TRUE(torch::equal(one, two)) << "run " << i << " signed " << signed_inputs << ", " << n << " positions: two threads";
          EXPECT_TRUE(torch::equal(one, got[0].narrow(0, 0, n))) << "run " << i << ", " << n << " positions";
        }
      }
    }
  }
}

// The engine's lowering (LowerConvRows: positions split between the threads, written straight into
// rows) against unfold, transposed and reshaped, the lowering it replaced: the same rows with
// stride, padding, dilation and groups, at batch 1 and 3, on one and two threads; and quantising
// before lowering gives the codes of quantising the lowered rows (padding lowers to the code of 0).
TEST(Network, LoweredRowsEqualUnfoldAtAnyStrideDilationGroupAndThreadCount) {
  struct Case {
    int64_t in, k, stride, padding, dilation, groups, h, w;
  };
  const std::vector<Case> cases = {{3, 3, 1, 1, 1, 1, 8, 8}, {4, 3, 2, 1, 1, 2, 9, 7}, {6, 1, 2, 0, 1, 1, 7, 7},
                                   {4, 3, 1, 2, 2, 4, 6, 9}, {2, 5, 3, 2, 1, 1, 11, 10}};
  for (const Case& c : cases) {
    LayerInfo l;
    l.kind = LayerKind::kConv2d;
    l.in_channels = c.in;
    l.out_channels = c.groups;
    l.kernel_h = l.kernel_w = c.k;
    l.stride = c.stride;
    l.padding = c.padding;
    l.dilation = c.dilation;
    l.groups = c.groups;
    for (int64_t batch : {1, 3}) {
      const torch::Tensor x = torch::randn({batch, c.in, c.h, c.w}) * 40;
      const int64_t cin = c.in / c.groups;
      for (int64_t g = 0; g < c.groups; ++g) {
        const torch::Tensor u = torch::nn::functional::unfold(
            x.narrow(1, g * cin, cin),
            torch::nn::functional::UnfoldFuncOptions({c.k, c.k}).padding(c.padding).stride(c.stride).dilation(c.dilation));
        const torch::Tensor want = u.transpose(1, 2).reshape({-1, u.size(1)});
        for (int threads : {1, 2}) {
          at::set_num_threads(threads);
          const torch::Tensor got = LowerConvRows(l, x, g);
          EXPECT_TRUE(torch::equal(got, want)) << "k " << c.k << " stride " << c.stride << " dilation " << c.dilation
                                               << " group " << g << " batch " << batch << " threads " << threads;
          for (bool signed_inputs : {false, true}) {
            const torch::Tensor codes = LowerConvRows(l, QuantizeInputs(x, 0.5, signed_inputs, 8), g);
            EXPECT_TRUE(torch::equal(codes, QuantizeInputs(want, 0.5, signed_inputs, 8))) << "signed " << signed_inputs;
          }
        }
      }
    }
  }
  at::set_num_threads(1);
}

// Issue 15, item 5: the engine as batched tensor ops (SumKernel::kTensor, the kernel a CUDA build
// runs on the GPU) against the CPU kernels, here on the CPU: the same bits on integer cells (every
// scheme, FORMS fragments, the unit column, 1- and 2-bit DACs, signed and 12-bit inputs, lossy and
// lossless ADCs, read noise applied between the sums and the ADC, calibrated ADC ranges), within
// float rounding on float conductances; and a whole network's loss the same.
TEST(Kernels, TensorEngineGivesTheCpuKernelsBits) {
  // The DAC's digits as tensor ops (what a GPU runs) equal its CPU loop.
  for (int dac_bits : {1, 2, 3}) {
    for (bool signed_inputs : {false, true}) {
      MappingSpec map = Map(kTwoColumn, 64, 64, 2, dac_bits);
      const DacStage dac(map);
      const DacStage::Planes planes = dac.PlanesOf(signed_inputs);
      const torch::Tensor x = Inputs(50, 70, 8, signed_inputs, 3);
      EXPECT_TRUE(torch::equal(dac.Split(x, signed_inputs, planes), dac.SplitOps(x, signed_inputs, planes)))
          << "dac " << dac_bits << " signed " << signed_inputs;
    }
  }
  const std::vector<KernelRun> runs = {
      {kTwoColumn, 128, 128, 8, 1, 1, 8, 5, true, 0},   {kTwoColumn, 100, 96, 8, 2, 2, 8, 6, true, 0.05},
      {kOffset, 128, 128, 8, 2, 1, 8, 0, true, 0},      {kPolarized, 128, 96, 64, 2, 2, 8, 4, true, 0},
      {kComplementary, 64, 64, 8, 1, 1, 8, 6, true, 0}, {kTwoCrossbar, 128, 128, 8, 2, 1, 12, 7, true, 0.02}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const KernelRun& r = runs[i];
    CrossbarLayer layer = KernelRunLayer(r, 90 + i);
    layer.Program(nullptr, 3, 0);
    for (bool signed_inputs : {false, true}) {
      const torch::Tensor x = Inputs(300, 300, r.input_bits, signed_inputs, 15 + i);
      layer.SetSumKernel(SumKernel::kAuto);
      ReadStats cpu_reads, tensor_reads;
      const torch::Tensor cpu = layer.Forward(x, signed_inputs, 7, &cpu_reads, 11);
      layer.SetSumKernel(SumKernel::kTensor);
      const torch::Tensor tensor = layer.Forward(x, signed_inputs, 7, &tensor_reads, 11);
      EXPECT_TRUE(torch::equal(cpu, tensor)) << "run " << i << " signed " << signed_inputs << " max diff "
                                             << (cpu - tensor).abs().max().item<double>();
      EXPECT_EQ(cpu_reads.input_cycles_needed, tensor_reads.input_cycles_needed) << "run " << i;
    }
  }
  // Calibrated ADC ranges recorded through the tensor engine equal the CPU kernels'.
  {
    MappingSpec map = Map(kTwoColumn, 64, 64, 2, 1);
    map.adc_bits = 5;
    const torch::Tensor x = Inputs(200, 150, 8, false, 4);
    std::vector<torch::Tensor> got;
    for (SumKernel k : {SumKernel::kAuto, SumKernel::kTensor}) {
      CrossbarLayer layer("c", Weights(30, 150, 6, false), 0.0, map, DeviceSpec{});
      layer.Program(nullptr, 1, 0);
      layer.SetSumKernel(k);
      layer.StartCalibration();
      layer.Forward(x, false, 0, nullptr);
      layer.FinishCalibration();
      got.push_back(layer.Forward(x, false, 0, nullptr));
    }
    EXPECT_TRUE(torch::equal(got[0], got[1])) << "calibrated";
  }
  // Float conductances (variation): bmm sums in another order than the fixed-order kernel.
  {
    DeviceSpec var;
    var.variation_sigma = 0.05;
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.adc_bits = 6;
    CrossbarLayer layer("v", Weights(40, 300, 8, false), 0.0, map, var);
    layer.Program(nullptr, 2, 0);
    const torch::Tensor x = Inputs(200, 300, 8, false, 9);
    const torch::Tensor cpu = layer.Forward(x, false, 0, nullptr);
    layer.SetSumKernel(SumKernel::kTensor);
    const torch::Tensor tensor = layer.Forward(x, false, 0, nullptr);
    // A column sum rounding the other way moves one code by one LSB at most, rarely.
    const double lsb = (cpu - tensor).abs().max().item<double>();
    EXPECT_LE(static_cast<double>((cpu != tensor).sum().item<int64_t>()), 0.01 * static_cast<double>(cpu.numel()));
    EXPECT_LE(lsb, (cpu.abs().max().item<double>()) * 0.05) << "one code step at most";
  }
  // A whole network (5-bit ADC, read noise) through the simulator: the same loss to the last bit.
  {
    torch::manual_seed(4);
    auto m = CreateModel(ModelSpec{});
    Dataset data{torch::randn({40, 1, 28, 28}), torch::randint(0, 10, {40}, torch::kInt64)};
    MappingSpec map = Map(kTwoColumn, 128, 128, 2, 1);
    map.adc_bits = 5;
    DeviceSpec dev;
    dev.read_noise_sigma = 0.02;
    std::vector<double> loss;
    for (SumKernel k : {SumKernel::kAuto, SumKernel::kTensor}) {
      NetworkSimulator sim(*m, map, dev);
      sim.SetQuiet(true);
      sim.SetSumKernel(k);
      sim.Calibrate(data, 20, torch::kCPU);
      sim.Program(FaultSpec{}, 0);
      loss.push_back(sim.Evaluate(data, SimMode::kCrossbar, 20, torch::kCPU).loss);
    }
    EXPECT_EQ(loss[0], loss[1]);
  }
}

}  // namespace
}  // namespace xbar
