// xbar/models/model.h — the network base class: named conv/linear layers and a layer hook.
//
// Every model is a torch::nn::Module whose parameter and buffer names are exactly those of the
// equivalent PyTorch module (docs/MODELS.md has the Python definitions), so state dicts move both
// ways through safetensors. Each conv/linear layer is addressable by its module path
// ("conv1", "features.3", "layer2.0.shortcut.0"), which is also its name in every result file.
//
// Models call their conv/linear layers through RunConv/RunLinear, so a later stage (the crossbar
// simulator) can replace any layer's computation without touching the model code:
//
//   auto model = CreateModel(spec);
//   for (const LayerInfo& l : model->layers()) std::cout << l.name << " " << l.gemm_rows() << "x" << l.gemm_cols();
//   model->SetLayerOverride([](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) { return ideal(x); });
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace xbar {

enum class LayerKind { kConv2d, kLinear };

struct LayerInfo {
  std::string name;  // module path, e.g. "features.0"
  LayerKind kind = LayerKind::kConv2d;
  int64_t in_channels = 0;   // linear: in_features
  int64_t out_channels = 0;  // linear: out_features
  int64_t kernel_h = 1, kernel_w = 1, stride = 1, padding = 0, groups = 1, dilation = 1;
  bool bias = false;

  // Crossbar (GEMM) orientation: rows = inputs in/groups * kh * kw, columns = outputs.
  int64_t gemm_rows() const { return in_channels / groups * kernel_h * kernel_w; }
  int64_t gemm_cols() const { return out_channels; }
  int64_t weight_count() const { return gemm_rows() * gemm_cols(); }
  // A conv's output size along a spatial dimension of `in` pixels (kernel `k`: kernel_h or kernel_w).
  int64_t out_size(int64_t in, int64_t k) const { return (in + 2 * padding - dilation * (k - 1) - 1) / stride + 1; }
  std::string weight_name() const { return name + ".weight"; }
};

// Channel bookkeeping for unused-path removal (compress/postprocess.h). A channel space is one
// activation tensor's channels after its ReLU; layers write and read its channels:
//   writer: a conv/linear whose output channel c (GEMM column c) lands in channel c, optionally
//           through a batch norm ("bn", a module path);
//   reader: a conv/linear whose GEMM rows [c·rows_per_channel, (c+1)·rows_per_channel) read channel c
//           (kh·kw for a conv, the flattened h·w for a linear after a flatten, 1 otherwise);
//   pass:   a parameter-free shortcut copying channel c into channel c + offset of space `to`.
// A residual stage (identity shortcuts) is one space with several writers.
struct ChannelSpace {
  struct Writer {
    std::string layer, bn;
  };
  struct Reader {
    std::string layer;
    int64_t rows_per_channel = 1;
  };
  struct Pass {
    int to = 0;
    int64_t offset = 0;
  };
  std::string name;
  int64_t channels = 0;
  std::vector<Writer> writers;
  std::vector<Reader> readers;
  std::vector<Pass> passes;
};

using LayerFn = std::function<torch::Tensor(const torch::Tensor&)>;
// (layer, input, the layer's own float computation) -> output.
using LayerOverride = std::function<torch::Tensor(const LayerInfo&, const torch::Tensor&, const LayerFn&)>;

class Model : public torch::nn::Module {
 public:
  explicit Model(std::string arch) : arch_(std::move(arch)) {}
  virtual torch::Tensor forward(torch::Tensor x) = 0;

  const std::string& arch() const { return arch_; }
  // Conv/linear layers in forward order.
  const std::vector<LayerInfo>& layers() const { return layers_; }
  const LayerInfo* FindLayer(const std::string& name) const;
  // The weight parameter of a layer ([out, in/groups, kh, kw] or [out, in]).
  torch::Tensor LayerWeight(const std::string& name);

  // Replaces every conv/linear computation (nullptr restores the float layers).
  void SetLayerOverride(LayerOverride fn) { override_ = std::move(fn); }

  // The channel spaces between layers (see ChannelSpace), in forward order.
  virtual std::vector<ChannelSpace> ChannelSpaces() const = 0;

 protected:
  torch::Tensor RunConv(torch::nn::Conv2dImpl& m, const torch::Tensor& x);
  torch::Tensor RunLinear(torch::nn::LinearImpl& m, const torch::Tensor& x);
  // Call at the end of the subclass constructor, after registering modules in forward order, or
  // with `order` (module paths) when registration order is not the forward order.
  void FinalizeLayers(const std::vector<std::string>& order = {});

 private:
  torch::Tensor Run(const torch::nn::Module* m, const torch::Tensor& x, const LayerFn& ideal);

  std::string arch_;
  std::vector<LayerInfo> layers_;
  std::unordered_map<const torch::nn::Module*, size_t> index_;
  LayerOverride override_;
};

}  // namespace xbar
