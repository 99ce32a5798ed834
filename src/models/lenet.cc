// LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as in most PyTorch tutorials.
#include "xbar/models/pool.h"
#include "zoo_impl.h"

namespace xbar {

LeNet5::LeNet5(const ModelSpec& s) : Model("lenet5") {
  // 28x28 inputs are padded by 2 so both 28x28 and 32x32 reach 16x5x5 before fc1.
  const int64_t pad = s.height == 28 ? 2 : 0;
  const int64_t h = ((s.height + 2 * pad - 4) / 2 - 4) / 2;
  const int64_t w = ((s.width_px + 2 * pad - 4) / 2 - 4) / 2;
  CheckSpatial(s, h, w);
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(s.in_channels, 6, 5).padding(pad)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)));
  flat_hw_ = h * w;
  fc1 = register_module("fc1", torch::nn::Linear(16 * h * w, 120));
  fc2 = register_module("fc2", torch::nn::Linear(120, 84));
  fc3 = register_module("fc3", torch::nn::Linear(84, s.num_classes));
  FinalizeLayers();
}

torch::Tensor LeNet5::forward(torch::Tensor x) {
  x = MaxPool2d(torch::relu(RunConv(*conv1, x)), 2);
  x = MaxPool2d(torch::relu(RunConv(*conv2, x)), 2);
  x = x.flatten(1);
  x = torch::relu(RunLinear(*fc1, x));
  x = torch::relu(RunLinear(*fc2, x));
  return RunLinear(*fc3, x);
}

std::vector<ChannelSpace> LeNet5::ChannelSpaces() const {
  return {
      {"conv1", 6, {{"conv1", ""}}, {{"conv2", 25}}, {}},
      {"conv2", 16, {{"conv2", ""}}, {{"fc1", flat_hw_}}, {}},
      {"fc1", 120, {{"fc1", ""}}, {{"fc2", 1}}, {}},
      {"fc2", 84, {{"fc2", ""}}, {{"fc3", 1}}, {}},
  };
}

}  // namespace xbar
