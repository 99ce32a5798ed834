// xbar/crossbar/workload.h — a network's work on the hardware description, for the cost model.
//
// The cost model (hw::Estimate) prices per layer what the crossbars do: how many arrays, cells,
// driven rows and read columns the mapping planner allocates (plan.h), how many MVMs an image
// makes, how many bit-serial cycles each MVM takes (a sign cycle where a layer's inputs can be
// negative) and, with zero-skipping, how many of them the fragments' inputs actually need. None of
// this builds a crossbar: the planner counts from the quantised weights, and zero-skipping counts
// the leading all-zero bit-planes of every fragment straight from the quantised activations of the
// ideal (lossless) crossbar network, with each tile's rows.
//
//   std::map<std::string, LayerInputs> in = ProbeInputs(model, torch::randn({1, 1, 28, 28}));
//   std::vector<hw::LayerWork> work = NetworkWork(model, map, scales, in, nullptr, torch::kCPU);
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "xbar/crossbar/spec.h"
#include "xbar/hw/hw.h"
#include "xbar/models/model.h"

namespace xbar {

// What a layer's inputs look like: MVMs per image and the input quantisation.
struct LayerInputs {
  int64_t positions = 0;       // output pixels per image (1 for linear); 0 = the forward pass skips it
  bool signed_inputs = false;  // some input < 0: two's-complement inputs with a sign cycle
  double scale = 1.0;          // input quantisation step (max |x| / top code)
  double max_abs = 0, min = 0; // the range seen
};

// Images per forward pass of a calibration or a zero-skipping count: fixed, because float32 GEMM
// kernels (and so the last bits of the ranges) depend on the batch size, and results must not.
// Batches run side by side on the CPU, each on one thread.
constexpr int64_t kCalibrationBatch = 50;

// Ranges over `images` of the float model, as the simulator calibrates them (NetworkSimulator),
// in batches of kCalibrationBatch.
std::map<std::string, LayerInputs> CalibrateInputs(Model& model, const torch::Tensor& images, torch::Device device,
                                                   int input_bits);
// Positions and signedness from one forward pass of `probe` (e.g. a seeded random normal batch: a
// layer whose input is not behind a ReLU then sees negative values); no data needed.
std::map<std::string, LayerInputs> ProbeInputs(Model& model, const torch::Tensor& probe, int input_bits);

// Cycles needed by the fragments (fragment_rows m consecutive entries of `rows`, GEMM row indices
// of one group) of one tile, summed over every position of every image, from the per-input planes
// needed `need` (PlanesNeeded, layer.h): [B, C, H + 2p, W + 2p] for a conv (its input padded by the
// layer's padding p) or [B, K] for a linear layer; `channel0` the group's first input channel.
int64_t NeededCycles(const torch::Tensor& need, const LayerInfo& l, int64_t channel0, const std::vector<int64_t>& rows,
                     int64_t m, int64_t out_h, int64_t out_w);

// Zero-skipping statistics of one layer (all groups): fragment cycles applied and needed.
struct SkipCounts {
  int64_t applied = 0, needed = 0;
};

// Per layer, in model.layers() order: the planner's counts, positions, input cycles, ADC bits and
// conversions, mean cell level and sign bits; with `sample` (images) the zero-skipping share,
// counted from the activations of the ideal quantised network (float32 sums, exact below 2^24)
// over those images, in batches of kCalibrationBatch side by side. `inputs` must
// hold every layer (CalibrateInputs or ProbeInputs). `skips` (optional) receives the raw counts.
// With a `device_spec` that has wire resistance, each layer's crossbars are programmed (CrossbarLayer)
// to measure what IR drop does to their read current (LayerWork::read_current_ratio).
std::vector<hw::LayerWork> NetworkWork(Model& model, const MappingSpec& map, const std::map<std::string, double>& scales,
                                       const std::map<std::string, LayerInputs>& inputs, const torch::Tensor* sample,
                                       torch::Device device,
                                       std::map<std::string, SkipCounts>* skips = nullptr,
                                       const DeviceSpec* device_spec = nullptr);

}  // namespace xbar
