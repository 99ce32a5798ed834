// VGG for small images: DNN+NeuroSim's VGG-8 and kuangliu/pytorch-cifar's VGG-11/16.
#include "xbar/models/pool.h"
#include "zoo_impl.h"

namespace xbar {

Vgg::Vgg(const ModelSpec& s, const std::vector<int64_t>& cfg, int64_t hidden_fc) : Model(s.name) {
  constexpr int64_t kPool = 0;  // 'M' in the usual cfg lists
  features = torch::nn::Sequential();
  int64_t in = s.in_channels, h = s.height, w = s.width_px;
  for (int64_t c : cfg) {
    if (c == kPool) {
      auto pool = torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2).ceil_mode(true));
      features->push_back(pool);
      steps_.push_back({Op::kPool, pools_.size()});
      pools_.push_back(pool);
      h = (h + 1) / 2;
      w = (w + 1) / 2;
      continue;
    }
    const int64_t out = Scaled(c, s.width);
    auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
    features->push_back(conv);
    steps_.push_back({Op::kConv, convs_.size()});
    convs_.push_back(conv);
    if (s.batch_norm) {
      auto bn = torch::nn::BatchNorm2d(out);
      features->push_back(bn);
      steps_.push_back({Op::kBatchNorm, bns_.size()});
      bns_.push_back(bn);
    }
    auto relu = torch::nn::ReLU(torch::nn::ReLUOptions(true));
    features->push_back(relu);
    steps_.push_back({Op::kRelu, 0});
    in = out;
  }
  CheckSpatial(s, h, w);
  register_module("features", features);
  flat_hw_ = h * w;
  const int64_t flat = in * h * w;
  if (hidden_fc > 0) {
    const int64_t hidden = Scaled(hidden_fc, s.width);
    auto classifier = torch::nn::Sequential();
    fc_hidden_ = torch::nn::Linear(flat, hidden);
    fc_ = torch::nn::Linear(hidden, s.num_classes);
    classifier->push_back(fc_hidden_);
    classifier->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
    classifier->push_back(fc_);
    register_module("classifier", classifier);
  } else {
    fc_ = register_module("classifier", torch::nn::Linear(flat, s.num_classes));
  }
  FinalizeLayers();
}

torch::Tensor Vgg::forward(torch::Tensor x) {
  for (const Step& step : steps_) {
    switch (step.op) {
      case Op::kConv:
        x = RunConv(*convs_[step.index], x);
        break;
      case Op::kBatchNorm:
        x = bns_[step.index]->forward(x);
        break;
      case Op::kRelu:
        x = torch::relu(x);
        break;
      case Op::kPool:
        x = MaxPool2d(x, pools_[step.index]->options);
        break;
    }
  }
  x = x.flatten(1);
  if (fc_hidden_) x = torch::relu(RunLinear(*fc_hidden_, x));
  return RunLinear(*fc_, x);
}

std::vector<ChannelSpace> Vgg::ChannelSpaces() const {
  // Module indices inside `features` follow the push order: conv, [bn], relu, or pool.
  std::vector<ChannelSpace> spaces;
  int64_t index = 0;
  for (const Step& step : steps_) {
    if (step.op == Op::kConv) {
      ChannelSpace s;
      s.name = StrCat("features.", index);
      s.channels = convs_[step.index]->options.out_channels();
      s.writers.push_back({s.name, ""});
      spaces.push_back(s);
    } else if (step.op == Op::kBatchNorm) {
      spaces.back().writers.back().bn = StrCat("features.", index);
    }
    ++index;
  }
  for (size_t i = 0; i + 1 < spaces.size(); ++i) spaces[i].readers.push_back({spaces[i + 1].name, 9});
  if (fc_hidden_) {
    spaces.back().readers.push_back({"classifier.0", flat_hw_});
    spaces.push_back({"classifier.0", fc_hidden_->options.out_features(), {{"classifier.0", ""}}, {{"classifier.2", 1}}, {}});
  } else {
    spaces.back().readers.push_back({"classifier", flat_hw_});
  }
  return spaces;
}

}  // namespace xbar
