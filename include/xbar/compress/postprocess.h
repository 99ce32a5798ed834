// xbar/compress/postprocess.h — network purification and unused-path removal (SPEC §2.3).
//
// Purification zeroes structures ADMM left nearly empty: filters (GEMM columns) and input rows
// whose squared norm is below `threshold` times the layer's mean for that structure.
// Unused-path removal then walks the model's channel spaces (Model::ChannelSpaces) to a fixed point:
//   * a channel is dead when every writer's filter for it is zero and its constant output
//     (bias, through batch norm) is <= 0, so the ReLU makes it identically 0 (for a residual
//     stream also every shortcut source) -> the readers' rows for it are zeroed;
//   * a channel is unused when every reader's rows for it are zero (and any shortcut target
//     channel is unused) -> the writers' filters, biases and batch-norm weights for it are zeroed.
// Both rules leave the network's function unchanged; they only turn weights that cannot matter
// into zeros, across residual connections too.
//
//   int64_t groups = Purify(*model, {"conv2", "fc1"}, 0.01);
//   PathReport r = RemoveUnusedPaths(*model);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/models/model.h"

namespace xbar {

int64_t Purify(Model& model, const std::vector<std::string>& layers, double threshold);

struct PathReport {
  int64_t dead_channels = 0;    // channels whose readers' rows were zeroed
  int64_t unused_channels = 0;  // channels whose writers' filters were zeroed
  int64_t weights_zeroed = 0;   // conv/linear weights that became zero
};
PathReport RemoveUnusedPaths(Model& model);

}  // namespace xbar
