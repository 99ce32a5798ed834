// The experiment schema: every key xbar understands, its type, default, range and meaning.
// `xbar keys` prints this table; docs/USER_GUIDE.md embeds that output (a CLI test checks it).
#include <limits>

#include "xbar/config/config.h"

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
      Bool("dataset.normalize", "true", "subtract the training-set mean and divide by its std, per channel"),
      // ---- model -----------------------------------------------------------------------------
      Enum("model.name", "lenet5", {"lenet5", "vgg8", "vgg11", "vgg16", "resnet20", "resnet18"},
           "architecture"),
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
      Float("train.log_interval", "10", 0, 86400, false, false,
            "seconds between progress lines when stderr is not a terminal"),
  };
}

}  // namespace

const std::vector<KeySpec>& Schema() {
  static const std::vector<KeySpec> schema = BuildSchema();
  return schema;
}

}  // namespace xbar
