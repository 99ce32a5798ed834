// xbar/data/dataset.h — datasets as in-memory tensors, splits, normalisation and batching.
//
// A dataset is small enough for memory (Fashion-MNIST: 60k x 784 floats = 188 MB), so it is loaded
// once into float tensors [N, C, H, W] (normalised) and int64 labels [N]; a mini-batch is an
// index_select with a per-epoch permutation drawn from the experiment seed. Everything is
// deterministic: the same spec and seed give the same splits, order and augmentation.
//
//   DatasetSpec spec = DatasetSpec::FromConfig(cfg);
//   DataBundle data = LoadData(spec, cfg.Int("seed"));
//   auto order = EpochOrder(data.train.size(), seed, epoch);
//   auto [x, y] = GetBatch(data.train, order, start, 64);
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "xbar/config/config.h"
#include "xbar/core/rng.h"

namespace xbar {

// The default location of the Debian package dataset-fashion-mnist.
inline constexpr const char* kFashionMnistPath = "/usr/share/datasets/fashion-mnist";

struct DatasetSpec {
  std::string name = "fashion-mnist";  // fashion-mnist | mnist | idx | cifar10 | cifar100
  std::string path;                    // "" = the default for the dataset
  std::string train_images, train_labels, test_images, test_labels;  // idx file names ("" = standard)
  double validation_split = 0.1;
  int64_t train_subset = 0;  // 0 = all
  int64_t test_subset = 0;   // 0 = all
  std::string augment = "none";
  std::string normalize = "auto";     // auto | true | false (dataset.normalize)
  int64_t image_size = 0;             // resize to image_size x image_size (0 = as stored)
  int64_t channels = 0;               // replicate / average to this many channels (0 = as stored)
  std::vector<double> mean, std;      // dataset.mean / dataset.std: explicit statistics (empty = none)

  static DatasetSpec FromConfig(const Config& cfg);
};

// Per-channel statistics of the raw [0, 1] pixels of the training file.
struct Normalization {
  std::vector<double> mean, std;
};

struct Dataset {
  torch::Tensor images;  // float32 [N, C, H, W], normalised
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct DataBundle {
  std::string name;  // dataset.name, or "fashion-mnist@3x32x32 (proxy)" when resized / re-channelled
  int64_t channels = 0, height = 0, width = 0, num_classes = 0;
  std::vector<std::string> class_names;  // empty when the dataset has none
  std::string augment = "none";          // training augmentation (DatasetSpec::augment)
  Normalization norm;
  Dataset train, val, test;
};

struct LoadOptions {
  bool train = true;                           // load train/val (false: test only, e.g. for eval)
  const Normalization* norm = nullptr;         // use these statistics (a model file's) instead of computing them
                                               // (dataset.mean/std still take precedence)
};

// Loads, splits and normalises. Throws InputError naming the file for missing or corrupt data,
// ConfigError for an impossible spec (e.g. dataset.path unset for cifar10).
DataBundle LoadData(const DatasetSpec& spec, uint64_t seed, const LoadOptions& options = {});

// The visiting order of epoch `epoch`: a permutation drawn from (seed, epoch) only, so a resumed
// run sees exactly the batches an uninterrupted one would.
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

// Rows order[start, start + count) of `data`.
std::pair<torch::Tensor, torch::Tensor> GetBatch(const Dataset& data, const std::vector<int64_t>& order,
                                                 int64_t start, int64_t count);

// Applies `mode` (none | flip | crop | crop-flip) to a batch [B, C, H, W], drawing from `rng`.
// Crop pads by 4 pixels with zeros and takes a random H x W window, as in the CIFAR literature.
torch::Tensor Augment(const torch::Tensor& batch, const std::string& mode, Rng& rng);

}  // namespace xbar
