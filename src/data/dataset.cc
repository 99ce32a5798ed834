#include "xbar/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/data/idx.h"

namespace xbar {
namespace {

const std::vector<std::string> kFashionClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                  "dog",      "frog",       "horse", "ship", "truck"};

// `configured` if set, else the standard name with .gz if that exists, else without.
std::string ResolveIdxFile(const std::string& dir, const std::string& configured, const std::string& standard,
                           const std::string& key) {
  if (!configured.empty()) {
    std::string p = JoinPath(dir, configured);
    if (!FileExists(p)) throw InputError(StrCat(p, ": file not found (", key, ")"));
    return p;
  }
  for (const std::string& candidate : {standard + ".gz", standard}) {
    std::string p = JoinPath(dir, candidate);
    if (FileExists(p)) return p;
  }
  throw InputError(StrCat(JoinPath(dir, standard), "[.gz]: file not found (set dataset.path or ", key, ")"));
}

// Finds the folder holding `marker`, accepting the folder itself or its usual sub-folder.
std::string ResolveCifarDir(const std::string& dir, const std::string& sub, const std::string& marker) {
  if (FileExists(JoinPath(dir, marker))) return dir;
  if (FileExists(JoinPath(JoinPath(dir, sub), marker))) return JoinPath(dir, sub);
  throw InputError(StrCat(JoinPath(dir, marker), ": file not found (dataset.path should hold the CIFAR binary "
                          "files or their folder ", sub, ")"));
}

torch::Tensor PixelsToTensor(const ImageSet& s) {
  auto t = torch::from_blob(const_cast<uint8_t*>(s.pixels.data()), {s.count, s.channels, s.height, s.width},
                            torch::kUInt8);
  return t.to(torch::kFloat32).div_(255.0f);
}

torch::Tensor LabelsToTensor(const ImageSet& s) {
  return torch::from_blob(const_cast<int64_t*>(s.labels.data()), {s.count}, torch::kInt64).clone();
}

Normalization ComputeNormalization(const torch::Tensor& x) {
  // Sums in double precision without a double copy of the whole set: var = E[x^2] - E[x]^2.
  Normalization n;
  for (int64_t c = 0; c < x.size(1); ++c) {
    auto ch = x.select(1, c);
    const double count = static_cast<double>(ch.numel());
    const double mean = ch.sum(torch::kFloat64).item<double>() / count;
    const double sq = ch.square().sum(torch::kFloat64).item<double>() / count;
    n.mean.push_back(mean);
    n.std.push_back(std::sqrt(std::max(0.0, sq - mean * mean)));
  }
  return n;
}

void Normalize(torch::Tensor& x, const Normalization& n) {
  for (int64_t c = 0; c < x.size(1); ++c) {
    const double sd = n.std[static_cast<size_t>(c)] > 0 ? n.std[static_cast<size_t>(c)] : 1.0;
    x.select(1, c).sub_(n.mean[static_cast<size_t>(c)]).div_(sd);
  }
}

}  // namespace

DatasetSpec DatasetSpec::FromConfig(const Config& cfg) {
  DatasetSpec s;
  s.name = cfg.Str("dataset.name");
  s.path = cfg.Str("dataset.path");
  s.train_images = cfg.Str("dataset.train_images");
  s.train_labels = cfg.Str("dataset.train_labels");
  s.test_images = cfg.Str("dataset.test_images");
  s.test_labels = cfg.Str("dataset.test_labels");
  s.validation_split = cfg.Float("dataset.validation_split");
  s.train_subset = cfg.Int("dataset.train_subset");
  s.test_subset = cfg.Int("dataset.test_subset");
  s.augment = cfg.Str("dataset.augment");
  s.normalize = cfg.Str("dataset.normalize");
  s.image_size = cfg.Int("dataset.image_size");
  s.channels = cfg.Int("dataset.channels");
  s.mean = cfg.FloatList("dataset.mean");
  s.std = cfg.FloatList("dataset.std");
  if (s.mean.size() != s.std.size()) {
    throw ConfigError(StrCat(cfg.Where(s.mean.empty() ? "dataset.std" : "dataset.mean"),
                             ": dataset.mean and dataset.std: give both, one value per channel (got ", s.mean.size(),
                             " and ", s.std.size(), ")"));
  }
  if (s.path.empty() && s.name != "fashion-mnist") {
    throw ConfigError(StrCat(cfg.Where("dataset.name"), ": dataset.path: required for dataset '", s.name,
                             "' (only fashion-mnist has a default location)"));
  }
  return s;
}

// dataset.image_size / dataset.channels: [0, 1] pixels resized (bilinear) and the channels replicated
// (one to many) or averaged (many to one).
torch::Tensor AdaptImages(torch::Tensor x, const DatasetSpec& spec) {
  const int64_t c = x.size(1);
  if (spec.channels > 0 && c != spec.channels && c != 1 && spec.channels != 1) {
    throw ConfigError(StrCat("dataset.channels: ", spec.channels, " from ", c, "-channel images; a proxy turns one "
                             "channel into several (replicated) or several into one (averaged)"));
  }
  if (spec.channels == 1 && c > 1) x = x.mean(1, true);
  if (spec.image_size > 0 && (x.size(2) != spec.image_size || x.size(3) != spec.image_size)) {
    namespace F = torch::nn::functional;
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{spec.image_size, spec.image_size})
                              .mode(torch::kBilinear)
                              .align_corners(false))
            .clamp_(0.0, 1.0);
  }
  if (spec.channels > 1 && x.size(1) == 1) x = x.expand({-1, spec.channels, -1, -1}).contiguous();
  return x;
}

DataBundle LoadData(const DatasetSpec& spec, uint64_t seed, const LoadOptions& options) {
  const std::string dir = spec.path.empty() ? kFashionMnistPath : spec.path;
  ImageSet train_set, test_set;
  DataBundle b;
  b.name = spec.name;
  b.augment = spec.augment;
  const bool need_train = options.train || (options.norm == nullptr && spec.mean.empty() && spec.normalize != "false");
  if (spec.name == "cifar10" || spec.name == "cifar100") {
    const bool c10 = spec.name == "cifar10";
    const std::string d = c10 ? ResolveCifarDir(dir, "cifar-10-batches-bin", "test_batch.bin")
                              : ResolveCifarDir(dir, "cifar-100-binary", "test.bin");
    const CifarKind kind = c10 ? CifarKind::kCifar10 : CifarKind::kCifar100;
    if (need_train) {
      std::vector<std::string> files;
      if (c10) {
        for (int i = 1; i <= 5; ++i) files.push_back(JoinPath(d, StrCat("data_batch_", i, ".bin")));
      } else {
        files.push_back(JoinPath(d, "train.bin"));
      }
      train_set = ReadCifarBinary(files, kind);
    }
    test_set = ReadCifarBinary({JoinPath(d, c10 ? "test_batch.bin" : "test.bin")}, kind);
    b.num_classes = c10 ? 10 : 100;
    if (c10) b.class_names = kCifar10Classes;
  } else {
    const int64_t max_classes = 256;
    // Resolved one after the other so the first missing file is the one reported.
    std::string train_labels, test_labels;
    if (need_train) {
      const std::string images = ResolveIdxFile(dir, spec.train_images, "train-images-idx3-ubyte", "dataset.train_images");
      train_labels = ResolveIdxFile(dir, spec.train_labels, "train-labels-idx1-ubyte", "dataset.train_labels");
      train_set = ReadIdxImageSet(images, train_labels, max_classes);
    }
    const std::string images = ResolveIdxFile(dir, spec.test_images, "t10k-images-idx3-ubyte", "dataset.test_images");
    test_labels = ResolveIdxFile(dir, spec.test_labels, "t10k-labels-idx1-ubyte", "dataset.test_labels");
    test_set = ReadIdxImageSet(images, test_labels, max_classes);
    // Every label of both sets is checked here, before any training: a bad one found by the loss
    // after an epoch would cost the epoch and leave a checkpoint behind.
    auto largest = [](const ImageSet& set) {
      int64_t at = 0;
      for (int64_t i = 1; i < set.count; ++i) at = set.labels[i] > set.labels[at] ? i : at;
      return at;
    };
    const int64_t train_at = need_train ? largest(train_set) : -1;
    const int64_t test_at = largest(test_set);
    const int64_t train_max = need_train ? train_set.labels[train_at] : 0;
    const int64_t test_max = test_set.labels[test_at];
    if (spec.name == "idx") {
      b.num_classes = std::max(train_max, test_max) + 1;
      if (need_train && test_max > train_max) {
        throw InputError(StrCat(test_labels, ": label ", test_max, " at index ", test_at,
                                " does not occur in the training labels (", train_labels, ": 0 to ", train_max, ")"));
      }
    } else {
      b.num_classes = 10;
      if (spec.name == "fashion-mnist") b.class_names = kFashionClasses;
      for (const auto& [max, at, file] : {std::tuple{train_max, train_at, train_labels}, std::tuple{test_max, test_at, test_labels}}) {
        if (max >= 10) {
          throw InputError(StrCat(file, ": label ", max, " at index ", at, " is out of range [0, 10) for ", spec.name,
                                  " (use dataset.name: idx for other IDX data)"));
        }
      }
    }
  }
  if (need_train && (train_set.channels != test_set.channels || train_set.height != test_set.height ||
                     train_set.width != test_set.width)) {
    throw InputError(StrCat(dir, ": training images are ", train_set.channels, "x", train_set.height, "x",
                            train_set.width, " but test images are ", test_set.channels, "x", test_set.height, "x",
                            test_set.width));
  }
  b.channels = test_set.channels;
  b.height = test_set.height;
  b.width = test_set.width;

  torch::Tensor test_x = AdaptImages(PixelsToTensor(test_set), spec);
  torch::Tensor test_y = LabelsToTensor(test_set);
  torch::Tensor train_x, train_y;
  if (need_train) {
    train_x = AdaptImages(PixelsToTensor(train_set), spec);
    train_y = LabelsToTensor(train_set);
  }
  if (test_x.size(1) != b.channels || test_x.size(2) != b.height || test_x.size(3) != b.width) {
    // A proxy for another input shape (e.g. Fashion-MNIST for CIFAR-sized networks): named so in
    // every result file and model file that uses it.
    b.channels = test_x.size(1);
    b.height = test_x.size(2);
    b.width = test_x.size(3);
    b.name = StrCat(spec.name, "@", b.channels, "x", b.height, "x", b.width, " (proxy)");
  }
  if (!spec.mean.empty()) {
    if (static_cast<int64_t>(spec.mean.size()) != b.channels) {
      throw ConfigError(StrCat("dataset.mean/dataset.std: ", spec.mean.size(), " values but ", spec.name, " has ",
                               b.channels, " channel(s)"));
    }
    b.norm = {spec.mean, spec.std};
  } else if (options.norm != nullptr) {
    b.norm = *options.norm;
    XBAR_CHECK(static_cast<int64_t>(b.norm.mean.size()) == b.channels, "normalisation has ", b.norm.mean.size(),
               " channels, data has ", b.channels);
  } else if (spec.normalize != "false") {
    b.norm = ComputeNormalization(train_x);
  } else {
    b.norm.mean.assign(static_cast<size_t>(b.channels), 0.0);
    b.norm.std.assign(static_cast<size_t>(b.channels), 1.0);
  }
  Normalize(test_x, b.norm);
  if (spec.test_subset > 0 && spec.test_subset < test_x.size(0)) {
    test_x = test_x.slice(0, 0, spec.test_subset).clone();
    test_y = test_y.slice(0, 0, spec.test_subset).clone();
  }
  b.test = {test_x, test_y};
  if (!options.train) return b;

  Normalize(train_x, b.norm);
  // A seeded permutation decides both the subset and the validation split.
  Rng rng(DeriveSeed(seed, "data.split"));
  std::vector<int64_t> perm = rng.Permutation(train_x.size(0));
  int64_t n = static_cast<int64_t>(perm.size());
  if (spec.train_subset > 0 && spec.train_subset < n) n = spec.train_subset;
  const auto n_val = static_cast<int64_t>(std::floor(spec.validation_split * static_cast<double>(n)));
  auto idx = torch::from_blob(perm.data(), {static_cast<int64_t>(perm.size())}, torch::kInt64);
  auto train_idx = idx.slice(0, 0, n - n_val);
  auto val_idx = idx.slice(0, n - n_val, n);
  b.train = {train_x.index_select(0, train_idx), train_y.index_select(0, train_idx)};
  if (n_val > 0) b.val = {train_x.index_select(0, val_idx), train_y.index_select(0, val_idx)};
  if (b.train.size() == 0) {
    throw ConfigError("dataset.validation_split: leaves no training images; lower it or raise dataset.train_subset");
  }
  return b;
}

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  Rng rng(DeriveSeed(seed, "data.shuffle", static_cast<uint64_t>(epoch)));
  return rng.Permutation(n);
}

std::pair<torch::Tensor, torch::Tensor> GetBatch(const Dataset& data, const std::vector<int64_t>& order,
                                                 int64_t start, int64_t count) {
  XBAR_CHECK(start >= 0 && start + count <= static_cast<int64_t>(order.size()), "batch out of range");
  auto idx = torch::from_blob(const_cast<int64_t*>(order.data()) + start, {count}, torch::kInt64);
  return {data.images.index_select(0, idx), data.labels.index_select(0, idx)};
}

torch::Tensor Augment(const torch::Tensor& batch, const std::string& mode, Rng& rng) {
  if (mode == "none") return batch;
  const bool crop = mode == "crop" || mode == "crop-flip";
  const bool flip = mode == "flip" || mode == "crop-flip";
  XBAR_CHECK(crop || flip, "unknown augmentation '", mode, "'");
  const int64_t b = batch.size(0), h = batch.size(2), w = batch.size(3);
  constexpr int64_t kPad = 4;
  torch::Tensor out = crop ? torch::empty_like(batch) : batch.clone();
  torch::Tensor padded = crop ? torch::constant_pad_nd(batch, {kPad, kPad, kPad, kPad}, 0) : torch::Tensor();
  for (int64_t i = 0; i < b; ++i) {
    if (crop) {
      const auto dy = static_cast<int64_t>(rng.UniformInt(2 * kPad + 1));
      const auto dx = static_cast<int64_t>(rng.UniformInt(2 * kPad + 1));
      out[i].copy_(padded[i].slice(1, dy, dy + h).slice(2, dx, dx + w));
    }
    if (flip && rng.UniformInt(2) == 1) out[i] = out[i].flip({2});
  }
  return out;
}

}  // namespace xbar
