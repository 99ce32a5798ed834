// xbar/crossbar/simulator.h — a whole network on crossbars (issue 4, SPEC §1-§4).
//
// Every conv/linear layer runs through its CrossbarLayer (inputs lowered with im2col, quantised to
// b_in bits with a per-layer scale calibrated on training batches, the layer's integer output
// rescaled by s_w·s_x plus the digital bias); ReLU, pooling and batch norm (the digital per-channel
// scale) stay in LibTorch. The same inputs also run through the float layer, so each layer reports
// the NMSE of its crossbar output.
//
//   NetworkSimulator sim(*model, map, device, scales);
//   sim.Calibrate(data.train);              // input ranges (and ADC ranges if calibrated)
//   sim.Program(faults, /*sample=*/0);      // stuck-at faults, variation, drift
//   EvalResult r = sim.Evaluate(data.test, SimMode::kCrossbar);
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/kernels.h"
#include "xbar/crossbar/layer.h"
#include "xbar/data/dataset.h"
#include "xbar/models/model.h"
#include "xbar/train/trainer.h"

namespace xbar {

enum class SimMode {
  kFloat,      // the model as trained (no quantisation)
  kReference,  // quantised weights and inputs, exact integer GEMMs (the ideal crossbar)
  kCrossbar,   // the bit-accurate crossbar engine with every configured non-ideality
};

struct LayerSimReport {
  std::string name;
  int64_t rows = 0, cols = 0, groups = 1;
  int64_t tiles = 0, crossbars = 0, cells = 0, first_crossbar = 0;
  int64_t used_rows = 0, used_columns = 0;  // summed over the physical arrays (all groups)
  double mean_level = 0;               // mean programmed level / L over the used cells (read current)
  double positions = 0;                // MVMs per image (output pixels; 1 for linear), last evaluation
  int64_t vectors = 0;                 // MVMs of the last evaluation (group 0)
  int adc_bits = 0;
  int64_t adc_conversions = 0;
  double output_nmse = 0.0;            // crossbar output vs the float layer on the same inputs
  double output_nmse_reference = 0.0;  // crossbar output vs the exact integer GEMM
  int64_t input_cycles = 0;            // bit-serial cycles per input vector (planes)
  double input_cycles_skipped = 0.0;   // share of fragment cycles zero-skipping saves
  bool signed_inputs = false;
  double weight_scale = 0.0, input_scale = 0.0;
  int64_t sa0 = 0, sa1 = 0;
  double read_current_ratio = 1.0;     // IR drop: array current with it over without (1 = off)
  bool lossless = false;
};

// Fault-map-aware placement of one crossbar (tile): which GEMM input drives each allocated word
// line and which GEMM output each column group serves, in physical order, and the column pairs
// stored the other way (output, slice); its harm (placement.h) before and after.
struct TilePlacementReport {
  int64_t tile = 0, first_crossbar = 0;
  std::vector<int64_t> word_lines, column_groups;
  std::vector<std::pair<int64_t, int>> flipped;
  double harm_before = 0, harm_after = 0;
};
struct LayerPlacementReport {
  std::string name;  // the crossbar layer (conv#g for a grouped convolution's group g)
  double seconds = 0, harm_before = 0, harm_after = 0;
  std::vector<TilePlacementReport> tiles;  // tiles with stuck cells only
};

class NetworkSimulator {
 public:
  // `weight_scales`: per layer quantisation steps to keep (e.g. from compression); others are
  // max|w| / (2^(b_w-1) - 1).
  NetworkSimulator(Model& model, const MappingSpec& map, const DeviceSpec& device,
                   const std::map<std::string, double>& weight_scales = {});
  ~NetworkSimulator();

  // Input ranges (per layer, from the float model) on the first mapping.calibration_images images
  // of `data`, which are kept for the ADC calibration; in batches of kCalibrationBatch images
  // whatever `batch_size` is (workload.h).
  void Calibrate(const Dataset& data, int64_t batch_size, torch::Device device);
  // Weight-side programming of every layer: faults (one stream per crossbar, or a measured map whose
  // every entry must address an allocated cell), variation, drift; then, with mapping.adc_range:
  // calibrated, the ADC ranges of the programmed crossbars from the calibration images.
  void Program(const FaultSpec& faults, uint64_t seed);

  EvalResult Evaluate(const Dataset& data, SimMode mode, int64_t batch_size, torch::Device device);
  // The network's output for one batch `x` (no statistics, no progress): the Python module's
  // analog forward.
  torch::Tensor Forward(const torch::Tensor& x, SimMode mode);
  // Statistics (NMSE against float and exact layers, ADC conversions, zero-skipping) cost extra
  // work per layer (on the fast path: the float64 reference layer and the read counts); on by default.
  void SetCollectStats(bool on) { stats_ = on; }
  // Statistics from the first `n` test images of an Evaluate only (0: every image, the default);
  // the other images skip the statistics' work. The images measured in
  // the last kCrossbar Evaluate: stats_images().
  void SetStatsImages(int64_t n) { stats_images_ = n; }
  int64_t stats_images() const { return evaluated_images_; }
  // Only the read statistics (ADC conversions, zero-skipping cycles), without the NMSE.
  void SetReadStatsOnly(bool on) { reads_only_ = on; }
  // Lossless and folded crossbars on the exact fast path, statistics counted on the unlowered inputs
  // (default); or every layer on its lowered inputs, through the engine (lossless crossbars: the
  // reference integer GEMM), statistics from those: the same results (tests compare the two).
  void SetFastPath(bool on) { fast_path_ = on; }
  // The engine's sum kernel on every crossbar (CrossbarLayer::SetSumKernel). With SumKernel::kTensor
  // the engine's layers run on the device of Evaluate's images (CUDA when torch_device is), the
  // others on the CPU. kAuto (the default) becomes kTensor when Calibrate, Evaluate or Forward
  // first runs on a CUDA device.
  void SetSumKernel(SumKernel k);
  // Seconds between plain progress lines when stderr is not a terminal (train.log_interval).
  void SetProgressInterval(double s) { progress_interval_s_ = s; }
  // No progress lines at all (a caller that runs many evaluations shows its own).
  void SetQuiet(bool quiet) { quiet_ = quiet; }
  // Per-layer statistics of the last kCrossbar Evaluate.
  std::vector<LayerSimReport> Report() const;
  // The placement of the last Program with FaultSpec::placement, per crossbar layer.
  std::vector<LayerPlacementReport> Placements() const;
  // Seconds the last Program spent placing (0 without placement).
  double placement_seconds() const;
  int64_t crossbars() const;

 private:
  struct LayerState;
  torch::Tensor RunLayer(LayerState& s, const LayerInfo& info, const torch::Tensor& x, const LayerFn& ideal,
                         SimMode mode);
  // The float layer on x in float64 (the NMSE reference), with the same bits at any batch size and
  // thread count.
  torch::Tensor FloatReference(const LayerState& s, const LayerInfo& l, const torch::Tensor& x) const;
  void CalibrateAdc();
  // Runs the calibration images through the model (under the layer override the caller set) in
  // batches of kCalibrationBatch, with a progress line labelled `what` unless quiet; on SIGINT or
  // SIGTERM it clears the override and throws InterruptedError between batches, naming `stage`.
  void ForwardCalibrationImages(const std::string& what, const std::string& stage);
  // On a CUDA device: exact float32 products (no TF32) and the tensor engine unless a kernel was set.
  void UseDevice(torch::Device device);
  void ComputeInputMoments();

  Model& model_;
  MappingSpec map_;
  DeviceSpec device_;
  std::vector<std::unique_ptr<LayerState>> layers_;
  uint64_t seed_ = 0;
  int64_t image_offset_ = 0;  // index of the current batch's first image (read-noise keys)
  torch::Tensor calibration_images_;
  torch::Device calibration_device_ = torch::kCPU;
  int64_t evaluated_images_ = 0;
  bool collect_ = false;
  bool stats_ = true;
  bool reads_only_ = false;
  bool fast_path_ = true;
  SumKernel kernel_ = SumKernel::kAuto;
  int64_t stats_images_ = 0;
  double progress_interval_s_ = 10.0;
  bool quiet_ = false;
};

// Integer input codes of a layer: round(x / scale) clamped to b_in-bit two's complement (signed)
// or b_in-bit unsigned.
torch::Tensor QuantizeInputs(const torch::Tensor& x, double scale, bool signed_inputs, int input_bits);
// A convolution's lowering for one group of a CPU float32 [B, C, H, W] input: rows
// [B * out_h * out_w, C / groups * kh * kw] in unfold's column order (channel, kernel row, kernel
// column), zeros outside the image, the positions split between the threads (one pass where
// unfold, transpose and reshape take two on one thread at batch 1).
torch::Tensor LowerConvRows(const LayerInfo& l, const torch::Tensor& x, int64_t group);
// The exact integer result of a conv/linear on integer-valued float tensors (float32 GEMMs while
// every partial sum stays below 2^24, split inputs or float64 beyond), as float64; `max_x` bounds |xq|.
torch::Tensor ExactLayer(const LayerInfo& l, const torch::Tensor& xq, const torch::Tensor& w, double max_x);
// How ExactPartials keeps a layer's sums exact for weights w and inputs bounded by max_x (see
// simulator.cc): one float32 conv/GEMM, float32 ones on equal chunks of the input channels
// (bounds, with the weights' chunks), base-16 input digits, or float64.
struct ExactPlan {
  double max_x = -1, max_w1 = 0;     // the input bound planned for; MaxRowL1(w)
  std::vector<int64_t> bounds;       // input-channel chunk boundaries {0, ..., C}, or empty
  std::vector<torch::Tensor> weights;  // the weights of each chunk, contiguous
  torch::Tensor w16;                   // the weights as int16 on the CPU where they fit (ExactIntSums), or undefined
};
ExactPlan PlanExactSums(const LayerInfo& l, const torch::Tensor& w, double max_x);
// The layer's exact integer sums as partial results to add: float32 tensors each exact (one, or
// one per chunk), or one float64 tensor. CombinePartials adds them (float64 when more than one).
// On CPU inputs with plan.w16, where one float32 pass would not be exact, the sums come from the
// integer kernel (ExactIntSums: one pass, one float64 tensor) instead of input-channel chunks (on
// AVX2 builds without AVX-512), base-16 digits or float64. Every way gives the same sums.
std::vector<torch::Tensor> ExactPartials(const LayerInfo& l, const torch::Tensor& xq, const torch::Tensor& w,
                                         const ExactPlan& plan);
// Layer l on input x ([B, C, H, W]; a linear layer's [B, ...] is the 1 x 1 case) as an integer
// convolution (kernels.h), and the sizes of its output ([B, O, OH, OW] or [B, O]).
IntConvShape IntConvShapeOf(const LayerInfo& l, const torch::Tensor& x, std::vector<int64_t>* out_sizes);
torch::Tensor CombinePartials(const std::vector<torch::Tensor>& parts);
// The largest L1 norm of an output's weights (a row of w viewed as [out, -1]).
double MaxRowL1(const torch::Tensor& w);
// One layer on the exact fast path, what the simulator runs for lossless (or folded) crossbars: the
// input codes xq = QuantizeInputs(x, input_scale, signed_inputs, input_bits), their exact integer
// sums with the integer weights wq (ExactPartials with plan = PlanExactSums(l, wq, max |xq|)), and
// the layer's float32 output y = sums · scale + bias (bias float64 per output channel, or undefined).
struct FastLayerOut {
  torch::Tensor xq, y;
  std::vector<torch::Tensor> parts;
};
FastLayerOut FastLayer(const LayerInfo& l, const torch::Tensor& x, double input_scale, bool signed_inputs,
                       int input_bits, const torch::Tensor& wq, const ExactPlan& plan, double scale,
                       const torch::Tensor& bias);

// simulate.json (docs/INTERFACE.md): accuracy on the crossbars, accuracy_reference of the float
// model, accuracy_quantized of the ideal crossbar (quantised, exact integer GEMMs).
nlohmann::ordered_json SimulateJson(const std::string& scheme, double accuracy, double accuracy_reference,
                                    double accuracy_quantized, const std::vector<LayerSimReport>& layers);

}  // namespace xbar
