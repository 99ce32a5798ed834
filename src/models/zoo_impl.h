// Internal: the model classes behind CreateModel (include/xbar/models/zoo.h documents them).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "xbar/core/error.h"
#include "xbar/models/zoo.h"

namespace xbar {

// Throws ConfigError when an architecture would shrink the input below 1x1.
void CheckSpatial(const ModelSpec& s, int64_t h, int64_t w);
// Channel count scaled by the width multiplier, at least 1.
int64_t Scaled(int64_t channels, double width);

class LeNet5 : public Model {
 public:
  explicit LeNet5(const ModelSpec& s);
  torch::Tensor forward(torch::Tensor x) override;
  std::vector<ChannelSpace> ChannelSpaces() const override;

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  int64_t flat_hw_ = 25;  // spatial positions per channel entering fc1
};

class Vgg : public Model {
 public:
  Vgg(const ModelSpec& s, const std::vector<int64_t>& cfg, int64_t hidden_fc);
  torch::Tensor forward(torch::Tensor x) override;
  std::vector<ChannelSpace> ChannelSpaces() const override;

 private:
  enum class Op { kConv, kBatchNorm, kRelu, kPool };
  struct Step {
    Op op;
    size_t index;  // into convs_ / bns_ / pools_
  };
  torch::nn::Sequential features{nullptr};
  std::vector<Step> steps_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::BatchNorm2d> bns_;
  std::vector<torch::nn::MaxPool2d> pools_;
  // classifier: one Linear (vgg11/16) or Linear-ReLU-Linear (vgg8, hidden_fc > 0).
  torch::nn::Linear fc_{nullptr}, fc_hidden_{nullptr};
  int64_t flat_hw_ = 1;  // spatial positions per channel entering the classifier
};

struct BasicBlockImpl : torch::nn::Module {
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, bool conv_shortcut);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  // Option B (ResNet-18): 1x1 conv + BN registered as shortcut.{0,1}. Option A (ResNet-20):
  // subsample and zero-pad channels, no parameters.
  torch::nn::Conv2d sc_conv{nullptr};
  torch::nn::BatchNorm2d sc_bn{nullptr};
  int64_t stride, pad_lo = 0, pad_hi = 0;
  bool identity = true;
};
TORCH_MODULE(BasicBlock);

class ResNet : public Model {
 public:
  ResNet(const ModelSpec& s, const std::vector<int64_t>& planes, int64_t blocks_per_stage, bool conv_shortcut);
  torch::Tensor forward(torch::Tensor x) override;
  std::vector<ChannelSpace> ChannelSpaces() const override;

 private:
  torch::Tensor Block(BasicBlockImpl& b, const torch::Tensor& x);
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<BasicBlock> blocks_;
  std::vector<std::string> block_names_;  // "layer2.0", in forward order
  std::vector<int64_t> block_stage_;      // stage index of each block
  torch::nn::Linear linear{nullptr};
};

}  // namespace xbar
