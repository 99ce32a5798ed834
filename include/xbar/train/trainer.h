// xbar/train/trainer.h — the training loop, evaluation and resumable checkpoints.
//
// One epoch visits the training split in the order EpochOrder(seed, epoch) draws, applies the
// configured augmentation from a (seed, epoch) stream, and steps the optimiser per mini-batch.
// After every epoch the model and optimiser state are written atomically to
// <run_dir>/checkpoint.safetensors, so a run killed at any moment (even SIGKILL) resumes with
// `resume = true` from its last completed epoch and ends with the same weights as an
// uninterrupted run with the same seed and thread count.
//
//   TrainOptions opt; opt.run_dir = "runs/lenet5"; opt.seed = 0;
//   TrainResult r = Train(*model, data, TrainSpec::FromConfig(cfg), opt);
//   std::cout << r.test.accuracy;
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xbar/data/dataset.h"
#include "xbar/models/model.h"
#include "xbar/train/data_parallel.h"
#include "xbar/train/optimizer.h"

namespace xbar {

struct EvalResult {
  double loss = 0.0;      // mean cross-entropy
  double accuracy = 0.0;  // top-1, in [0, 1]
  int64_t count = 0;
};

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  double lr = 0.0;
  double train_loss = 0.0, train_accuracy = 0.0;
  double val_loss = 0.0, val_accuracy = 0.0;  // 0 when there is no validation split
  double seconds = 0.0;
};

struct TrainOptions {
  std::string run_dir;  // where checkpoint.safetensors lives ("" = no checkpoints)
  bool resume = false;
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  // Settings that must match for a checkpoint to be resumed (key -> value text).
  std::map<std::string, std::string> fingerprint;

  // Hooks for training variants (ADMM, masked retraining); all optional.
  std::function<void()> after_backward;          // gradients computed, optimiser not yet stepped
  std::function<void()> after_step;              // optimiser stepped
  std::function<void(int64_t epoch)> on_epoch_end;  // 1-based epoch done, before its checkpoint
  // Extra state saved in every checkpoint under "extra." and restored on resume.
  std::function<NamedTensors()> extra_state;
  std::function<void(const SafeTensors& st, const std::string& prefix, const std::string& source)> load_extra_state;
  bool evaluate_test = true;  // evaluate on the test split at the end
  // Several processes (data_parallel.h): each trains on its shard of every global batch, gradients
  // are summed before after_backward, batch-norm statistics averaged at each epoch's end, and only
  // rank 0 writes checkpoints. nullptr = this process alone.
  std::shared_ptr<DataParallel> data_parallel;
};

struct TrainResult {
  std::vector<EpochStats> history;
  EvalResult test;
  double seconds = 0.0;           // training time over all sessions of this run
  int64_t resumed_from_epoch = 0;  // completed epochs found in the checkpoint (0 = fresh start)
};

// Top-1 accuracy and mean loss over `data` in eval mode, without gradients.
EvalResult Evaluate(Model& model, const Dataset& data, int64_t batch_size, torch::Device device);

// Re-estimates every batch-norm layer's running mean and variance on the first `images` images of
// `data` (in order, batches of `batch_size`; a last batch of one image left out), as the average
// over those batches: the batch-norm layers alone run in training mode, without gradients,
// everything else as in eval mode. After a hard projection the statistics that training left
// describe other weights. Returns the number of batch-norm layers re-estimated (0 with fewer than
// two images) and, in images_used, how many images the statistics came from; the model's mode and
// each layer's momentum are restored.
int64_t RecalibrateBatchNorm(Model& model, const Dataset& data, int64_t images, int64_t batch_size,
                             torch::Device device, int64_t* images_used = nullptr);

// Trains `model` in place and evaluates it on the test split. Throws InterruptedError when a
// SIGINT/SIGTERM arrives (InstallInterruptHandlers), ConfigError when a checkpoint to resume was
// made with a different configuration.
TrainResult Train(Model& model, const DataBundle& data, const TrainSpec& spec, const TrainOptions& options);

// Per-epoch statistics as a JSON array (train.json "history", checkpoint metadata) and back.
nlohmann::json HistoryToJson(const std::vector<EpochStats>& history);
std::vector<EpochStats> HistoryFromJson(const nlohmann::json& j);

// Throws ConfigError naming the first setting of `current` that `saved` (from the file `path`)
// lacks or holds with another value: a checkpoint is only resumed by the run that wrote it.
void CheckFingerprint(const std::map<std::string, std::string>& saved,
                      const std::map<std::string, std::string>& current, const std::string& path);

inline constexpr const char* kCheckpointFile = "checkpoint.safetensors";

}  // namespace xbar
