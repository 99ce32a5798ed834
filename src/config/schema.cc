// The experiment schema: every key xbar understands, its type, default, range and meaning.
// `xbar keys` prints this table; docs/USER_GUIDE.md embeds that output (a CLI test checks it).
#include <limits>

#include "xbar/config/config.h"
#include "xbar/crossbar/scheme.h"

namespace xbar {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

KeySpec Int(std::string key, std::string def, double min, double max, std::string help) {
  return KeySpec{std::move(key), ValueType::kInt, std::move(def), min, max, false, false, {}, std::move(help)};
}
KeySpec Float(std::string key, std::string def, double min, double max, bool min_excl, bool max_excl,
              std::string help) {
  return KeySpec{std::move(key), ValueType::kFloat, std::move(def), min, max, min_excl, max_excl, {},
                 std::move(help)};
}
KeySpec Bool(std::string key, std::string def, std::string help) {
  return KeySpec{std::move(key), ValueType::kBool, std::move(def), -kInf, kInf, false, false, {}, std::move(help)};
}
KeySpec Str(std::string key, std::string def, std::string help) {
  return KeySpec{std::move(key), ValueType::kString, std::move(def), -kInf, kInf, false, false, {}, std::move(help)};
}
KeySpec Enum(std::string key, std::string def, std::vector<std::string> choices, std::string help) {
  return KeySpec{std::move(key), ValueType::kEnum, std::move(def), -kInf, kInf, false, false, std::move(choices),
                 std::move(help)};
}

std::vector<KeySpec> BuildSchema() {
  return {
      // ---- experiment ------------------------------------------------------------------------
      Str("name", "", "experiment name; default run directory is runs/<name> (default: the file's stem)"),
      Int("seed", "0", 0, kInf, "global seed; every random draw derives from it"),
      Int("threads", "0", 0, 1024, "intra-op CPU threads (0 = all cores)"),
      Str("torch_device", "cpu", "LibTorch device for tensor work: cpu, cuda, cuda:N"),
      // ---- dataset ---------------------------------------------------------------------------
      Enum("dataset.name", "fashion-mnist", {"fashion-mnist", "mnist", "idx", "cifar10", "cifar100"},
           "dataset; fashion-mnist is the Debian package dataset-fashion-mnist"),
      Str("dataset.path", "", "folder of the data files (default: /usr/share/datasets/fashion-mnist "
                              "for fashion-mnist; required otherwise)"),
      Str("dataset.train_images", "", "idx/mnist: training images file in dataset.path "
                                      "(default train-images-idx3-ubyte[.gz])"),
      Str("dataset.train_labels", "", "idx/mnist: training labels file (default train-labels-idx1-ubyte[.gz])"),
      Str("dataset.test_images", "", "idx/mnist: test images file (default t10k-images-idx3-ubyte[.gz])"),
      Str("dataset.test_labels", "", "idx/mnist: test labels file (default t10k-labels-idx1-ubyte[.gz])"),
      Float("dataset.validation_split", "0.1", 0, 0.9, false, false,
            "fraction of the training set held out for validation (0 = none)"),
      Int("dataset.train_subset", "0", 0, kInf, "use this many training images, drawn with the seed (0 = all)"),
      Int("dataset.test_subset", "0", 0, kInf, "use the first N test images (0 = all)"),
      Enum("dataset.augment", "none", {"none", "flip", "crop", "crop-flip"},
           "training augmentation: horizontal flip and/or random 4-pixel-padded crop"),
      Enum("dataset.normalize", "auto", {"auto", "true", "false"},
           "input normalisation: auto = a weights file's normalize_mean/normalize_std (refused when it has "
           "none), or the training set's statistics when training from scratch; true = the file's, else the "
           "training set's; false = raw [0, 1] pixels"),
      Int("dataset.image_size", "0", 0, 1024,
          "resize images to N x N pixels (bilinear), e.g. 32 to feed CIFAR-shaped networks; 0 = as stored"),
      Int("dataset.channels", "0", 0, 64,
          "replicate a grey channel to N (e.g. 3) or average colour to 1; 0 = as stored. With image_size the "
          "data is labelled a proxy (name@CxHxW) in every result"),
      KeySpec{"dataset.mean", ValueType::kFloatList, "[]", -1e308, 1e308, false, false, {},
              "per-channel mean subtracted from [0, 1] pixels (with dataset.std; overrides dataset.normalize)"},
      KeySpec{"dataset.std", ValueType::kFloatList, "[]", 0, 1e308, true, false, {},
              "per-channel standard deviation the pixels are divided by (with dataset.mean)"},
      // ---- model -----------------------------------------------------------------------------
      Enum("model.name", "lenet5", {"lenet5", "vgg8", "vgg11", "vgg16", "resnet20", "resnet18"},
           "architecture"),
      Str("model.onnx", "", "an ONNX file to use instead of model.name (docs/MODELS.md); its graph input and "
                            "output fix the image shape and class count"),
      Float("model.width", "1.0", 0, 8, true, false, "channel width multiplier (VGG and ResNet)"),
      Bool("model.batch_norm", "true", "VGG: batch normalisation after every conv layer"),
      // ---- train -----------------------------------------------------------------------------
      Int("train.epochs", "15", 1, 100000, "training epochs"),
      Int("train.batch_size", "64", 1, 65536, "mini-batch size"),
      Enum("train.optimizer", "adam", {"sgd", "adam"}, "optimiser (PyTorch semantics)"),
      Float("train.lr", "0.001", 0, 10, true, false, "initial learning rate"),
      Float("train.momentum", "0.9", 0, 1, false, true, "SGD momentum"),
      Bool("train.nesterov", "false", "SGD: Nesterov momentum"),
      Float("train.weight_decay", "0", 0, 1, false, true, "L2 weight decay added to the gradient"),
      Enum("train.schedule", "cosine", {"constant", "step", "cosine"},
           "learning-rate schedule over epochs"),
      Int("train.step_epochs", "10", 1, 100000, "step schedule: multiply the lr by gamma every N epochs"),
      Float("train.gamma", "0.1", 0, 1, true, false, "step schedule: lr factor"),
      Int("train.warmup_epochs", "0", 0, 100000, "linear lr warm-up epochs before the schedule"),
      Int("train.eval_batch_size", "1000", 1, 65536, "batch size for evaluation"),
      Enum("train.precision", "fp32", {"fp32", "bf16", "auto"},
           "arithmetic of training's forward and backward passes (train and compress): bf16 = autocast, "
           "convolutions and matrix products in bfloat16 over fp32 weights, ~2x faster on CPUs with "
           "AVX512-BF16/AMX (emulated, and many times slower, on CPUs without); auto = bf16 on a CPU with "
           "AVX512-BF16, else fp32 (config.resolved.yaml records which); evaluation and every reported "
           "accuracy stay fp32"),
      Float("train.log_interval", "10", 0, 86400, false, false,
            "seconds between progress lines (train, simulate) when stderr is not a terminal"),
      // ---- compress -------------------------------------------------------------------------
      Float("compress.sparsity", "0", 0, 1, false, true,
            "fraction of each layer's groups (weights, filters, crossbar rows, ...) removed; 0 = no pruning"),
      Enum("compress.structure", "unstructured",
           {"unstructured", "filter", "column", "channel", "crossbar-row", "crossbar-column", "crossbar-block",
            "crossbar-tile"},
           "what a pruned group is (SPEC §2.2; crossbar-* use the mapping tile)"),
      Int("compress.quantize_bits", "0", 0, 16, "weight bits including sign, levels {0, ±s, ..., ±(2^(b-1)-1)s}; 0 = float"),
      Int("compress.polarize_fragment", "0", 0, 65536, "FORMS: rows m per single-signed column fragment; 0 = off"),
      Int("compress.column_budget", "0", 0, 65536, "TinyADC: max non-zeros per column segment of a tile; 0 = off"),
      Int("compress.admm_rounds", "10", 0, 1000, "ADMM rounds (Z/U updates); 0 = project directly"),
      Int("compress.epochs_per_round", "2", 1, 1000, "training epochs (W-step) per ADMM round"),
      Float("compress.rho", "0.001", 0, 10, true, false, "initial ADMM penalty rho"),
      Float("compress.rho_growth", "1.5", 1, 100, false, false, "rho multiplier after every round"),
      Float("compress.rho_max", "1.0", 0, 1000, true, false, "upper bound of rho"),
      Float("compress.lr", "0.001", 0, 10, true, false, "learning rate of the ADMM W-step (constant)"),
      Int("compress.retrain_epochs", "10", 0, 1000, "masked retraining epochs after the hard projection"),
      Float("compress.retrain_lr", "0.001", 0, 10, true, false, "initial learning rate of masked retraining (cosine)"),
      Float("compress.purify_threshold", "0", 0, 1, false, true,
            "network purification: zero filters and input rows whose squared norm is below this share of "
            "the layer's mean group norm; 0 = off"),
      Bool("compress.remove_unused_paths", "true",
           "zero channels that are always zero in the layers reading them, and filters nobody reads"),
      Int("compress.bn_recalibration_images", "2000", 0, kInf,
          "after the hard projection, re-estimate batch-norm statistics on this many training images; 0 = off"),
      Bool("compress.search", "false", "search the largest sparsity within compress.search_max_loss first"),
      Float("compress.search_max_loss", "0.01", 0, 1, true, false, "ratio search: allowed accuracy loss (absolute)"),
      KeySpec{"compress.search_ratios", ValueType::kFloatList, "[0.5, 0.7, 0.8, 0.9, 0.95]", 0, 1, false, true, {},
              "ratio search: coarse sparsity candidates, ascending"},
      Int("compress.search_epochs", "1", 0, 1000, "ratio search: masked retraining epochs per candidate"),
      Int("compress.search_refine_steps", "3", 0, 20, "ratio search: bisection steps after the coarse sweep"),
      Float("compress.target_ratio", "0", 0, 1e6, false, false,
            "compression target without per-layer keys: total weights / non-zero weights (crossbar-* "
            "structures: dense / kept crossbars), allocated over the layers by their measured sensitivity; 0 = off"),
      Int("compress.allocation_images", "1000", 1, kInf,
          "target_ratio: validation images that measure each layer's sensitivity to each sparsity"),
      Float("compress.layers.*.sparsity", "", 0, 1, false, true, "per-layer override of compress.sparsity"),
      Enum("compress.layers.*.structure", "",
           {"unstructured", "filter", "column", "channel", "crossbar-row", "crossbar-column", "crossbar-block",
            "crossbar-tile"},
           "per-layer override of compress.structure"),
      Int("compress.layers.*.quantize_bits", "", 0, 16, "per-layer override of compress.quantize_bits"),
      Int("compress.layers.*.polarize_fragment", "", 0, 65536, "per-layer override of compress.polarize_fragment"),
      Int("compress.layers.*.column_budget", "", 0, 65536, "per-layer override of compress.column_budget"),
      Bool("compress.layers.*.skip", "", "leave this layer uncompressed"),
      // ---- mapping ---------------------------------------------------------------------------
      Int("mapping.crossbar_rows", "128", 1, 65536, "crossbar rows R (word lines, inputs) per tile"),
      Int("mapping.crossbar_cols", "128", 1, 65536, "crossbar columns C (bit lines, outputs) per tile"),
      Int("mapping.weight_bits", "8", 2, 16, "weight bits including sign stored on the crossbars"),
      Enum("mapping.scheme", "two-column", SchemeNames(), "signed-weight scheme (SPEC §3)"),
      Int("mapping.cell_bits", "2", 1, 8, "bits per cell c: levels 0 .. 2^c - 1 between G_min and G_max"),
      Int("mapping.input_bits", "8", 1, 16, "input bits b_in (two's complement where inputs can be negative)"),
      Int("mapping.dac_bits", "1", 1, 8, "DAC bits v: input bits applied per cycle"),
      Int("mapping.adc_bits", "0", 0, 32, "ADC bits per column read; 0 = lossless for every read"),
      Enum("mapping.adc_range", "worst-case", {"worst-case", "calibrated"},
           "ADC full scale: the largest possible column current, or what the calibration images reach"),
      Float("mapping.adc_percentile", "100", 0, 100, true, false,
            "calibrated ADC range: this percentile of the |partial sums| each read column saw (100 = the largest; "
            "lower clips rare peaks)"),
      Enum("mapping.subtract", "digital", {"digital", "analog"},
           "column pairs (two-column, complementary): subtract after two ADC reads, or currents before one"),
      Bool("mapping.flip_columns", "false",
           "ISAAC's flipped encoding (offset scheme): a column whose levels sum past half the maximum stores "
           "L - level and is subtracted from L x the unit column's read; one ADC bit less"),
      Int("mapping.fragment_rows", "8", 1, 65536,
          "rows per fragment: polarized sign groups and ADC reads, and the zero-skipping statistics"),
      Int("mapping.column_budget", "0", 0, 65536,
          "TinyADC: size the ADCs for this many non-zero cells per column segment (the layers must respect it); "
          "0 = all rows"),
      Bool("mapping.compact", "true", "masked mapping: allocate no crossbar rows, columns or tiles that pruning emptied"),
      Int("mapping.calibration_images", "400", 1, 1000000,
          "training images that calibrate the input ranges (and calibrated ADC ranges), whatever the batch size"),
      // ---- device ----------------------------------------------------------------------------
      Float("device.on_off_ratio", "10", 1, 1e9, true, false, "G_max / G_min"),
      Float("device.variation_sigma", "0", 0, 10, false, false,
            "lognormal device-to-device variation sigma, G' = G exp(N(0, sigma^2)), at programming"),
      Float("device.read_noise_sigma", "0", 0, 10, false, false, "Gaussian read noise per read, relative to each cell's G"),
      Float("device.drift_nu", "0", 0, 1, false, false, "conductance drift exponent: G(t) = G0 (t/t0)^-nu"),
      Float("device.drift_time", "1", 1, 1e12, false, false, "t / t0 at inference, for drift"),
      Float("device.r_on_ohm", "1e6", 0, 1e12, true, false, "on-state resistance R_on = 1 / G_max (ohm), for IR drop"),
      Float("device.wire_resistance_ohm", "0", 0, 1e6, false, false,
            "word- and bit-line wire resistance per cell segment (ohm); 0 = no IR drop"),
      Enum("device.ir_drop_model", "fast", {"fast", "exact"},
           "IR drop: first-order model, or the exact nodal solve (arrays of at most 16384 cells)"),
      // ---- faults ----------------------------------------------------------------------------
      Float("faults.rate", "0", 0, 1, false, false, "total stuck-at probability per physical cell"),
      KeySpec{"faults.sa0_to_sa1", ValueType::kFloatList, "[1, 5.2]", 0, 1e9, false, false, {},
              "stuck-off : stuck-on ratio splitting faults.rate (seed 000: 1 : 5.2)"},
      Float("faults.sa0_rate", "0", 0, 1, false, false, "stuck-off (G_min) rate, instead of rate + ratio"),
      Float("faults.sa1_rate", "0", 0, 1, false, false, "stuck-on (G_max) rate, instead of rate + ratio"),
      Enum("faults.placement", "off", {"off", "on", "both"},
           "fault-map-aware placement: per crossbar, inputs on word lines, outputs on column groups and (pair "
           "schemes) each column pair's direct or complementary encoding chosen for the known stuck cells; both = "
           "xbar faults runs placed and unplaced curves"),
      Str("faults.map", "", "measured fault map, CSV lines crossbar,row,col,type (type SA0 or SA1); replaces the rates"),
      KeySpec{"faults.rates", ValueType::kFloatList, "[1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2]", 0, 1,
              false, false, {}, "xbar faults: fault-rate grid (increasing), each point faults.samples random fault maps"},
      Int("faults.samples", "100", 1, 1000000, "xbar faults: random fault maps per grid point"),
      Float("faults.max_hours", "168", 0, 1e9, false, false,
            "xbar faults: refuse a campaign whose time, priced by its first chip, would exceed this many hours (0 = no limit)"),
      KeySpec{"faults.schemes", ValueType::kEnumList, "[]", 0, 0, false, false, SchemeNames(),
              "xbar faults: signed-weight schemes to compare, one curve each per weights file ([] = mapping.scheme)"},
      Float("faults.max_drop", "0.01", 0, 1, true, false,
            "xbar faults: accuracy loss (absolute) a tolerable fault rate may cost against fault-free"),
      Int("faults.test_images", "0", 0, 1 << 30,
          "xbar faults: evaluate each sampled chip on the first N test images (0 = dataset.test_subset)"),
      Int("faults.refine_steps", "3", 0, 20,
          "xbar faults: bisection steps (geometric) refining each curve's tolerable rate between grid points"),
      Str("faults.axis", "faults.rate",
          "xbar faults: the swept quantity: faults.rate (grid faults.rates), or a numeric mapping.* / device.* key "
          "(grid faults.axis_values, at the fixed faults.rate)"),
      KeySpec{"faults.axis_values", ValueType::kFloatList, "[]", -1e308, 1e308, false, false, {},
              "xbar faults: increasing values of faults.axis when it is not faults.rate"},
      // ---- simulate --------------------------------------------------------------------------
      Int("simulate.batch_size", "200", 1, 65536, "images per simulated batch"),
      Int("simulate.stats_images", "500", 0, kInf,
          "per-layer statistics (NMSE, ADC conversions, zero-skipping) from the first N test images, 0 = all; "
          "the others skip that work"),
      // ---- run: the whole pipeline (xbar run) -------------------------------------------------
      KeySpec{"run.stages", ValueType::kEnumList, "[train, compress, simulate, faults, estimate, report]", 0, 0, false,
              false, {"train", "compress", "simulate", "faults", "estimate", "report"},
              "xbar run: the stages to run, in pipeline order (compress is passed through when no layer is constrained)"},
      KeySpec{"run.schemes", ValueType::kEnumList, "[]", 0, 0, false, false, SchemeNames(),
              "xbar run: signed-weight schemes simulated on the final weights, one simulate/<scheme> each ([] = mapping.scheme)"},
      KeySpec{"run.faults_models", ValueType::kEnumList, "[]", 0, 0, false, false, {"trained", "compressed"},
              "xbar run: the weights the fault campaign compares ([] = the final weights)"},
      KeySpec{"run.estimate_presets", ValueType::kEnumList, "[]", 0, 0, false, false,
              {"generic", "isaac", "forms", "islped19"},
              "xbar run: reference chips the final weights are also priced on, besides this run's own hardware description"},
      Str("report.title", "", "xbar run: the report's title (default: the experiment name)"),
      Int("estimate.images", "200", 1, 1000000, "test images whose input bit-planes measure zero-skipping (xbar estimate, zero-skipping architectures)"),
      // ---- arch: the preset, and the fields only the cost model reads -------------------------
      Str("arch.preset", "generic",
          "hardware preset supplying defaults for every mapping.*, device.* and arch.* key not set: generic, isaac, "
          "forms, islped19 (configs/arch), or a path to a preset YAML"),
      Str("arch.tech", "isaac32.yaml", "component table: a name under configs/tech or a path"),
      Bool("arch.zero_skipping", "false", "skip all-zero leading input bit-planes per fragment of mapping.fragment_rows"),
      Bool("arch.replicate", "false",
           "copy the slowest layers onto the chip's spare crossbars to balance the pipeline (ISAAC)"),
      Float("arch.cycle_ns", "100", 0, 1e9, true, false, "crossbar read cycle in ns"),
      Int("arch.crossbars_per_ima", "8", 1, 1 << 20, "crossbars per IMA"),
      Int("arch.adcs_per_ima", "8", 1, 1 << 20, "ADCs per IMA"),
      Int("arch.ima_shift_adds", "4", 0, 1 << 20, "shift-and-add units per IMA"),
      Int("arch.imas_per_tile", "12", 1, 1 << 20, "IMAs per tile"),
      Int("arch.tiles", "168", 1, 1 << 30, "tiles per chip"),
      Int("arch.tiles_per_router", "4", 1, 1 << 20, "tiles sharing one router"),
      Int("arch.sigmoids_per_tile", "2", 0, 1 << 20, "sigmoid units per tile"),
      Int("arch.hypertransport_links", "4", 0, 1 << 20, "off-chip HyperTransport links per chip"),
  };
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& ReplacedKeys() {
  // One key per quantity: the hardware description's duplicates were folded into mapping.*.
  static const std::vector<std::pair<std::string, std::string>> keys = {
      {"arch.crossbar_rows", "mapping.crossbar_rows"}, {"arch.crossbar_cols", "mapping.crossbar_cols"},
      {"arch.cell_bits", "mapping.cell_bits"},         {"arch.weight_bits", "mapping.weight_bits"},
      {"arch.input_bits", "mapping.input_bits"},       {"arch.dac_bits", "mapping.dac_bits"},
      {"arch.adc_bits", "mapping.adc_bits"},           {"arch.scheme", "mapping.scheme"},
      {"arch.fragment_rows", "mapping.fragment_rows"}, {"mapping.calibration_batches", "mapping.calibration_images"},
  };
  return keys;
}

const std::vector<KeySpec>& Schema() {
  static const std::vector<KeySpec> schema = BuildSchema();
  return schema;
}

}  // namespace xbar
