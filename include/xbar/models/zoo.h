// xbar/models/zoo.h — the model zoo: LeNet-5, VGG-8/11/16 and ResNet-20/18 for 1x28x28 and
// 3x32x32 inputs (any size works where the spatial sizes stay >= 1).
//
// Each class mirrors a well-known PyTorch definition, parameter for parameter:
//   lenet5    conv1, conv2, fc1, fc2, fc3 (ReLU, 2x2 max-pool; conv1 padded 2 for 28x28 inputs)
//   vgg8      features.N + classifier.{0,2}   (DNN+NeuroSim's VGG-8: 128,128,M,256,256,M,512,512,M, FC 1024)
//   vgg11/16  features.N + classifier         (github.com/kuangliu/pytorch-cifar VGG)
//   resnet20  conv1, bn1, layerL.B.{conv1,bn1,conv2,bn2}, linear   (He et al. option A shortcut)
//   resnet18  as resnet20 plus layerL.0.shortcut.{0,1}              (kuangliu/pytorch-cifar ResNet18)
// `width` scales every channel count (and VGG-8's hidden FC); BN follows every VGG conv when
// batch_norm is set. Pooling uses ceil_mode so 28x28 inputs survive five 2x2 pools.
//
//   ModelSpec spec{"vgg8", 0.25, true, 1, 28, 28, 10};
//   std::shared_ptr<Model> m = CreateModel(spec);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "xbar/config/config.h"
#include "xbar/models/model.h"

namespace xbar {

struct ModelSpec {
  std::string name = "lenet5";
  double width = 1.0;
  bool batch_norm = true;
  int64_t in_channels = 1, height = 28, width_px = 28;
  int64_t num_classes = 10;
  std::string onnx;       // name "onnx": the graph file (model.onnx); shape and classes come from it
  std::string onnx_hash;  // the graph's structure hash (OnnxInfo::graph_hash)

  bool is_onnx() const { return name == "onnx"; }

  // name/width/batch_norm from the config; the input shape and classes come from the data.
  static ModelSpec FromConfig(const Config& cfg);
};

const std::vector<std::string>& ModelNames();

// Builds a model with PyTorch's default initialisation drawn from torch's global generator
// (seed it with torch::manual_seed first). Throws ConfigError for an unknown name or an input too
// small for the architecture.
std::shared_ptr<Model> CreateModel(const ModelSpec& spec);

}  // namespace xbar
