// xbar/models/pool.h — max pooling for inference. LibTorch 1.13's CPU max_pool2d always computes
// the argmax indices (max_pool2d_with_indices) and was a third of a LeNet-5 fault campaign; where
// no gradient is wanted, a float32 NCHW-contiguous CPU input takes a loop without indices that
// returns LibTorch's values bit for bit (the first of equal maxima, a NaN wins, -inf for a window
// in the padding only). Anything else (gradients, other dtypes, layouts or devices, invalid
// parameters, which LibTorch reports) goes to torch::max_pool2d.
#pragma once

#include <torch/torch.h>

namespace xbar {

torch::Tensor MaxPool2d(const torch::Tensor& x, torch::IntArrayRef kernel, torch::IntArrayRef stride,
                        torch::IntArrayRef padding, torch::IntArrayRef dilation, bool ceil_mode);
inline torch::Tensor MaxPool2d(const torch::Tensor& x, int64_t kernel) {
  return MaxPool2d(x, {kernel, kernel}, {kernel, kernel}, {0, 0}, {1, 1}, false);
}
inline torch::Tensor MaxPool2d(const torch::Tensor& x, const torch::nn::MaxPool2dOptions& o) {
  return MaxPool2d(x, *o.kernel_size(), *o.stride(), *o.padding(), *o.dilation(), o.ceil_mode());
}

}  // namespace xbar
