// ResNets for small images: ResNet-20 (He et al. 2016, CIFAR variant with the parameter-free
// option A shortcut, as github.com/akamaster/pytorch_resnet_cifar10) and ResNet-18
// (github.com/kuangliu/pytorch-cifar, 1x1-conv shortcuts).
#include "zoo_impl.h"

namespace xbar {

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride_, bool conv_shortcut)
    : stride(stride_) {
  using torch::nn::Conv2dOptions;
  conv1 = register_module("conv1", torch::nn::Conv2d(Conv2dOptions(in_planes, planes, 3).stride(stride).padding(1).bias(false)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", torch::nn::Conv2d(Conv2dOptions(planes, planes, 3).stride(1).padding(1).bias(false)));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  identity = stride == 1 && in_planes == planes;
  if (identity) return;
  if (conv_shortcut) {
    sc_conv = torch::nn::Conv2d(Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false));
    sc_bn = torch::nn::BatchNorm2d(planes);
    auto shortcut = torch::nn::Sequential();
    shortcut->push_back(sc_conv);
    shortcut->push_back(sc_bn);
    register_module("shortcut", shortcut);
  } else {
    pad_lo = (planes - in_planes) / 2;
    pad_hi = planes - in_planes - pad_lo;
  }
}

ResNet::ResNet(const ModelSpec& s, const std::vector<int64_t>& planes, int64_t blocks_per_stage, bool conv_shortcut)
    : Model(s.name) {
  const int64_t first = Scaled(planes[0], s.width);
  conv1 = register_module(
      "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(s.in_channels, first, 3).stride(1).padding(1).bias(false)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(first));
  int64_t in = first, h = s.height, w = s.width_px;
  for (size_t stage = 0; stage < planes.size(); ++stage) {
    const int64_t out = Scaled(planes[stage], s.width);
    auto layer = torch::nn::ModuleList();
    for (int64_t b = 0; b < blocks_per_stage; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      if (stride == 2) {
        h = (h - 1) / 2 + 1;
        w = (w - 1) / 2 + 1;
      }
      auto block = BasicBlock(in, out, stride, conv_shortcut);
      layer->push_back(block);
      blocks_.push_back(block);
      block_names_.push_back(StrCat("layer", stage + 1, ".", b));
      block_stage_.push_back(static_cast<int64_t>(stage));
      in = out;
    }
    register_module(StrCat("layer", stage + 1), layer);
  }
  CheckSpatial(s, h, w);
  linear = register_module("linear", torch::nn::Linear(in, s.num_classes));
  FinalizeLayers();
}

torch::Tensor ResNet::Block(BasicBlockImpl& b, const torch::Tensor& x) {
  torch::Tensor out = torch::relu(b.bn1->forward(RunConv(*b.conv1, x)));
  out = b.bn2->forward(RunConv(*b.conv2, out));
  torch::Tensor sc;
  if (b.identity) {
    sc = x;
  } else if (b.sc_conv) {
    sc = b.sc_bn->forward(RunConv(*b.sc_conv, x));
  } else {
    using torch::indexing::Slice;
    sc = x.index({Slice(), Slice(), Slice(torch::indexing::None, torch::indexing::None, b.stride),
                  Slice(torch::indexing::None, torch::indexing::None, b.stride)});
    sc = torch::constant_pad_nd(sc, {0, 0, 0, 0, b.pad_lo, b.pad_hi}, 0);
  }
  return torch::relu(out + sc);
}

std::vector<ChannelSpace> ResNet::ChannelSpaces() const {
  // One space per stage stream (identity shortcuts tie its blocks' outputs channel by channel),
  // then one per block for the conv1 -> conv2 activation.
  const auto stages = static_cast<size_t>(block_stage_.back() + 1);
  std::vector<ChannelSpace> spaces(stages);
  spaces[0].writers.push_back({"conv1", "bn1"});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const BasicBlockImpl& b = *blocks_[i];
    const std::string& n = block_names_[i];
    const auto stage = static_cast<size_t>(block_stage_[i]);
    ChannelSpace& out = spaces[stage];
    out.name = StrCat("layer", stage + 1);
    out.channels = b.conv2->options.out_channels();
    out.writers.push_back({n + ".conv2", n + ".bn2"});
    // The block reads the stream it starts from: its own stage's, or the previous one's when it
    // opens a stage.
    ChannelSpace& in = spaces[b.identity ? stage : stage - 1];
    in.readers.push_back({n + ".conv1", 9});
    if (!b.identity) {
      if (b.sc_conv) {
        in.readers.push_back({n + ".shortcut.0", 1});
        out.writers.push_back({n + ".shortcut.0", n + ".shortcut.1"});
      } else {
        in.passes.push_back({static_cast<int>(stage), b.pad_lo});
      }
    }
  }
  spaces.back().readers.push_back({"linear", 1});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string& n = block_names_[i];
    spaces.push_back({n + ".conv1", blocks_[i]->conv1->options.out_channels(), {{n + ".conv1", n + ".bn1"}},
                      {{n + ".conv2", 9}}, {}});
  }
  return spaces;
}

torch::Tensor ResNet::forward(torch::Tensor x) {
  x = torch::relu(bn1->forward(RunConv(*conv1, x)));
  for (auto& b : blocks_) x = Block(*b, x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return RunLinear(*linear, x);
}

}  // namespace xbar
