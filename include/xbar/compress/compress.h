// xbar/compress/compress.h — crossbar-aware ADMM compression of a trained model (SPEC §2).
//
// Pipeline (`xbar compress`), each phase's test accuracy reported:
//   dense -> [ratio search] -> ADMM (W-step: train with the penalty sum rho_i/2 ||W_i - Z_i + U_i||^2;
//   Z-step: Z_i = Project(W_i + U_i); U-step: U_i += W_i - Z_i; rho_i grows per round)
//   -> hard projection W_i = Project(W_i) -> purification and unused-path removal
//   -> masked retraining (pruned weights stay zero, signs stay, quantised weights stay on their
//   levels: the optimiser updates a float master copy and the model always holds its projection)
//   -> exact verification of every constraint.
// Phases checkpoint into the run directory, so --resume continues after a kill.
//
//   CompressSpec spec = CompressSpec::FromConfig(cfg, *model);   // validates before any training
//   CompressResult r = Compress(*model, data, spec, options);
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xbar/compress/projection.h"
#include "xbar/config/config.h"
#include "xbar/crossbar/spec.h"
#include "xbar/data/dataset.h"
#include "xbar/models/model.h"
#include "xbar/train/trainer.h"
#include "xbar/train/optimizer.h"

namespace xbar {

struct CompressSpec {
  std::map<std::string, LayerConstraints> layers;  // compressed layers (others stay as they are)
  MappingSpec map;  // the hardware description's crossbars (crossbar counts in compress.json)
  Tiling tile;      // the weights one crossbar holds: map.rows x map.LogicalColumns() (crossbar-* structures)
  int64_t admm_rounds = 10;
  int64_t epochs_per_round = 2;
  double rho = 1e-3, rho_growth = 1.5, rho_max = 1.0;
  double lr = 1e-3;
  int64_t retrain_epochs = 10;
  double retrain_lr = 1e-3;
  double purify_threshold = 0.0;
  bool remove_unused_paths = true;
  // Ratio search (largest sparsity within an accuracy-loss budget).
  bool search = false;
  double search_max_loss = 0.01;
  std::vector<double> search_ratios;
  int64_t search_epochs = 1;
  int64_t search_refine_steps = 3;
  std::vector<std::string> search_layers;  // layers whose sparsity the search or the allocation sets
  // Compression target (compress.target_ratio): weights, or crossbars for crossbar-* structures,
  // allocated over search_layers from their one-shot sensitivity on allocation_images images.
  double target_ratio = 0.0;
  int64_t allocation_images = 1000;
  // Batch-norm running statistics re-estimated after the hard projection (RecalibrateBatchNorm).
  int64_t bn_recalibration_images = 2000;
  TrainSpec train;                         // optimiser, batch size, ... from the train section

  // Reads the compress and mapping sections. Throws ConfigError (file:line) for constraints that
  // cannot be met: sparsity >= 1, quantize_bits 1 or above mapping.weight_bits, a polarisation
  // fragment or column budget larger than the tile's rows, an unknown layer name.
  static CompressSpec FromConfig(const Config& cfg, const Model& model);
};

struct PhaseAccuracy {
  std::string phase;  // dense, search, admm, projected, postprocessed, retrained
  double accuracy = 0.0;
};

struct LayerReport {
  std::string name;
  int64_t rows = 0, cols = 0;  // GEMM shape (crossbar orientation)
  int64_t total = 0, nonzero = 0;
  std::vector<std::string> constraints;
  int64_t violations = 0;
  int64_t distinct_levels = 0;
  int bits = 32;       // storage bits per non-zero weight (quantize_bits, else 32)
  double scale = 0.0;  // quantisation step (0 = float)
  int64_t crossbars_dense = 0, crossbars = 0;  // physical arrays (PlanLayer); -1 when the layer cannot be mapped
  std::string mapping_error;                    // why not (e.g. not polarised for the polarized scheme)
};

struct CompressResult {
  std::vector<PhaseAccuracy> phases;
  std::vector<LayerReport> layers;
  nlohmann::json search;      // ratio-search trace (empty when off)
  nlohmann::json allocation;  // target_ratio: the per-layer sparsities chosen and why (empty when off)
  nlohmann::json postprocess;
  double seconds = 0.0;
  double accuracy(const std::string& phase) const;
};

struct CompressOptions {
  std::string run_dir;  // phase checkpoints; "" = none
  bool resume = false;
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  std::map<std::string, std::string> fingerprint;
  // Several processes (data_parallel.h): every training phase splits its batches, ADMM's Z/U steps
  // run on identical weights in every process, rank 0 writes the phase files. nullptr = one process.
  std::shared_ptr<DataParallel> data_parallel;
  // Called after each one-shot evaluation the compress.target_ratio allocation measures, with how
  // many it has measured in this call (tests interrupt the allocation there).
  std::function<void(int64_t)> on_allocation_evaluation;
};

CompressResult Compress(Model& model, const DataBundle& data, const CompressSpec& spec, const CompressOptions& options);

// Tiles of R×C weights a K×N matrix needs after masked mapping: all-zero columns are dropped
// and, per group of C remaining columns, all-zero rows are dropped (or rows first, then columns,
// whichever needs fewer). One cell per weight, before bit slicing and sign handling: a bound for
// structure experiments; compress.json counts physical crossbars with the mapping planner.
int64_t CompactedCrossbars(const CrossbarMatrix& m, const Tiling& t);
int64_t DenseCrossbars(int64_t rows, int64_t cols, const Tiling& t);

// Report rows for every conv/linear layer of `model` (constraints from `spec`, scales from `scales`).
std::vector<LayerReport> ReportLayers(Model& model, const CompressSpec& spec, const std::map<std::string, double>& scales);

// compress.json (docs/INTERFACE.md) from a result.
nlohmann::ordered_json CompressJson(const CompressResult& r);

}  // namespace xbar
