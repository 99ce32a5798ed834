// ONNX graphs executed in LibTorch (include/xbar/models/onnx.h).
#include "xbar/models/onnx.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <unordered_map>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/rng.h"
#include "xbar/models/pool.h"

namespace xbar {
namespace {

namespace F = torch::nn::functional;

enum class Op {
  kConv, kLinear, kMatMul, kGemm, kBatchNorm, kRelu, kClip, kLeakyRelu, kSigmoid, kTanh, kMaxPool, kAvgPool,
  kGlobalAvgPool, kGlobalMaxPool, kAdd, kSub, kMul, kDiv, kConcat, kFlatten, kReshape, kIdentity, kSoftmax,
  kLogSoftmax, kShape, kGather, kUnsqueeze, kSqueeze, kTranspose, kPad, kCast, kReduceMean, kConstantOfShape, kSlice,
  // Activations and element-wise maths of exported CNNs (MobileNetV3's HardSigmoid/HardSwish, GELU
  // as Erf or Gelu, LayerNorm's Pow and Sqrt, PReLU, ELU, SELU, Softplus/Mish).
  kHardSigmoid, kHardSwish, kErf, kGelu, kPow, kSqrt, kExp, kLog, kNeg, kAbs, kReciprocal, kPRelu, kElu, kSelu,
  kSoftplus, kMax, kMin, kLayerNorm
};

const std::map<std::string, Op>& OpTable() {
  static const std::map<std::string, Op> t = {
      {"Conv", Op::kConv}, {"Gemm", Op::kGemm}, {"MatMul", Op::kMatMul}, {"BatchNormalization", Op::kBatchNorm},
      {"Relu", Op::kRelu}, {"Clip", Op::kClip}, {"LeakyRelu", Op::kLeakyRelu}, {"Sigmoid", Op::kSigmoid},
      {"Tanh", Op::kTanh}, {"MaxPool", Op::kMaxPool}, {"AveragePool", Op::kAvgPool},
      {"GlobalAveragePool", Op::kGlobalAvgPool}, {"GlobalMaxPool", Op::kGlobalMaxPool}, {"Add", Op::kAdd},
      {"Sub", Op::kSub}, {"Mul", Op::kMul}, {"Div", Op::kDiv}, {"Concat", Op::kConcat}, {"Flatten", Op::kFlatten},
      {"Reshape", Op::kReshape}, {"Identity", Op::kIdentity}, {"Dropout", Op::kIdentity},
      {"Softmax", Op::kSoftmax}, {"LogSoftmax", Op::kLogSoftmax}, {"Shape", Op::kShape}, {"Gather", Op::kGather},
      {"Unsqueeze", Op::kUnsqueeze}, {"Squeeze", Op::kSqueeze}, {"Transpose", Op::kTranspose}, {"Pad", Op::kPad},
      {"Cast", Op::kCast}, {"ReduceMean", Op::kReduceMean}, {"ConstantOfShape", Op::kConstantOfShape},
      {"Slice", Op::kSlice}, {"HardSigmoid", Op::kHardSigmoid}, {"HardSwish", Op::kHardSwish}, {"Erf", Op::kErf},
      {"Gelu", Op::kGelu}, {"Pow", Op::kPow}, {"Sqrt", Op::kSqrt}, {"Exp", Op::kExp}, {"Log", Op::kLog},
      {"Neg", Op::kNeg}, {"Abs", Op::kAbs}, {"Reciprocal", Op::kReciprocal}, {"PRelu", Op::kPRelu}, {"Elu", Op::kElu},
      {"Selu", Op::kSelu}, {"Softplus", Op::kSoftplus}, {"Max", Op::kMax}, {"Min", Op::kMin},
      {"LayerNormalization", Op::kLayerNorm}};
  return t;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string IntsText(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// ONNX TensorProto data types.
torch::ScalarType TorchType(int dt, const std::string& where) {
  switch (dt) {
    case onnx::TensorProto::FLOAT: return torch::kFloat32;
    case onnx::TensorProto::DOUBLE: return torch::kFloat64;
    case onnx::TensorProto::FLOAT16: return torch::kFloat16;
    case onnx::TensorProto::INT64: return torch::kInt64;
    case onnx::TensorProto::INT32: return torch::kInt32;
    case onnx::TensorProto::INT8: return torch::kInt8;
    case onnx::TensorProto::UINT8: return torch::kUInt8;
    case onnx::TensorProto::BOOL: return torch::kBool;
    default: throw InputError(StrCat(where, ": tensor data type ", dt, " is not supported (float, double, float16, "
                                     "int64, int32, int8, uint8 and bool are)"));
  }
}

// Bounds on what a graph may ask for: values per input image (ImageNet's 3 x 224 x 224 is 150,528)
// and per computed constant.
constexpr int64_t kMaxImageValues = int64_t{1} << 26;
constexpr int64_t kMaxTensorValues = int64_t{1} << 30;

torch::Tensor FromProto(const onnx::TensorProto& t, const std::string& where) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    throw InputError(StrCat(where, ": tensor '", t.name(), "' keeps its data in an external file; export the model "
                            "as one file (models under 2 GB: torch.onnx.export writes one by default)"));
  }
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  for (int64_t d : dims) {
    if (d < 0) throw InputError(StrCat(where, ": tensor '", t.name(), "' has a negative dimension"));
  }
  const torch::ScalarType type = TorchType(t.data_type(), StrCat(where, ": tensor '", t.name(), "'"));
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d > 0 && n > (int64_t{1} << 40) / d) throw InputError(StrCat(where, ": tensor '", t.name(), "' is too large"));
    n *= d;
  }
  const size_t bytes = static_cast<size_t>(n) * c10::elementSize(type);
  auto bad = [&](size_t have) {
    return InputError(StrCat(where, ": tensor '", t.name(), "' of shape ", IntsText(dims), " holds ", have,
                             " values or bytes, expected ", n));
  };
  // The data present is checked against the shape before anything is allocated: a header may claim
  // a huge shape that no data backs.
  if (t.has_raw_data() && t.raw_data().size() != bytes) throw bad(t.raw_data().size());
  if (!t.has_raw_data()) {
    const int64_t have = t.data_type() == onnx::TensorProto::FLOAT    ? t.float_data_size()
                         : t.data_type() == onnx::TensorProto::DOUBLE ? t.double_data_size()
                         : t.data_type() == onnx::TensorProto::INT64  ? t.int64_data_size()
                                                                      : t.int32_data_size();
    if (have != n) throw bad(static_cast<size_t>(have));
  }
  torch::Tensor out = torch::empty(dims, torch::TensorOptions().dtype(type));
  if (t.has_raw_data()) {
    if (bytes > 0) std::memcpy(out.data_ptr(), t.raw_data().data(), bytes);
    return out;
  }
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      if (t.float_data_size() != n) throw bad(static_cast<size_t>(t.float_data_size()));
      std::copy(t.float_data().begin(), t.float_data().end(), out.data_ptr<float>());
      break;
    case onnx::TensorProto::DOUBLE:
      if (t.double_data_size() != n) throw bad(static_cast<size_t>(t.double_data_size()));
      std::copy(t.double_data().begin(), t.double_data().end(), out.data_ptr<double>());
      break;
    case onnx::TensorProto::INT64:
      if (t.int64_data_size() != n) throw bad(static_cast<size_t>(t.int64_data_size()));
      std::copy(t.int64_data().begin(), t.int64_data().end(), out.data_ptr<int64_t>());
      break;
    default: {  // int32, int8, uint8, bool, float16 bits: int32_data
      if (t.int32_data_size() != n) throw bad(static_cast<size_t>(t.int32_data_size()));
      torch::Tensor v = torch::empty({n}, torch::kInt32);
      std::copy(t.int32_data().begin(), t.int32_data().end(), v.data_ptr<int32_t>());
      if (type == torch::kFloat16) {
        out = v.to(torch::kInt16).view(torch::kFloat16).reshape(dims);
      } else {
        out = v.to(type).reshape(dims);
      }
    }
  }
  return out;
}

void ToProto(const torch::Tensor& src, onnx::TensorProto* t) {
  const torch::Tensor c = src.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  t->clear_float_data();
  t->clear_double_data();
  t->clear_int32_data();
  t->clear_int64_data();
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->clear_dims();
  for (int64_t d : c.sizes()) t->add_dims(d);
  t->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * sizeof(float)));
}

const onnx::AttributeProto* FindAttr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}
int64_t AttrInt(const onnx::NodeProto& n, const std::string& name, int64_t def) {
  const auto* a = FindAttr(n, name);
  return a ? a->i() : def;
}
double AttrFloat(const onnx::NodeProto& n, const std::string& name, double def) {
  const auto* a = FindAttr(n, name);
  return a ? a->f() : def;
}
std::string AttrStr(const onnx::NodeProto& n, const std::string& name, const std::string& def) {
  const auto* a = FindAttr(n, name);
  return a ? a->s() : def;
}
std::vector<int64_t> AttrInts(const onnx::NodeProto& n, const std::string& name, std::vector<int64_t> def) {
  const auto* a = FindAttr(n, name);
  if (!a) return def;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

// "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1": each scope is a child of the one before, named
// either by its attribute ("conv1") or prefixed with its container's ("layer1.0").
std::string ScopePath(const std::string& node_name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= node_name.size()) {
    size_t end = node_name.find('/', start);
    if (end == std::string::npos) end = node_name.size();
    if (end > start) parts.push_back(node_name.substr(start, end - start));
    start = end + 1;
  }
  if (node_name.empty() || node_name[0] != '/' || parts.size() < 2) return "";
  parts.pop_back();  // the op ("Conv", "Gemm_1")
  std::string path, prev;
  for (const auto& p : parts) {
    if (!prev.empty() && p.size() > prev.size() && p.compare(0, prev.size() + 1, prev + ".") == 0) {
      path += p.substr(prev.size());
    } else {
      path += (path.empty() ? "" : ".") + p;
    }
    prev = p;
  }
  return path;
}

bool ValidName(const std::string& path) {
  if (path.empty() || path.front() == '.' || path.back() == '.' || path.find("..") != std::string::npos) return false;
  return std::all_of(path.begin(), path.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; });
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Node {
  Op op;
  std::string name, type;
  std::vector<int> in, out;  // value slots; -1 = an absent optional input
  // Conv / pooling.
  std::vector<int64_t> kernel, strides, pads, dilations;  // pads: [top, left, bottom, right]
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false, count_include_pad = false;
  bool prepad = false;  // pads applied with F::pad before the op (asymmetric / auto_pad)
  // Scalars.
  double alpha = 0, beta = 0, min = -INFINITY, max = INFINITY, eps = 1e-5, momentum = 0.1;
  int64_t axis = 0, keepdims = 1, to = 1, allowzero = 0, start = 0, end = std::numeric_limits<int64_t>::max();
  bool has_axis = false;
  std::vector<int64_t> ints;  // perm / axes
  std::string mode = "constant";
  torch::Tensor value;                  // ConstantOfShape's fill value
  std::vector<int64_t> starts, ends;    // Slice before opset 10 (attributes)
  // Modules.
  torch::nn::Conv2dImpl* conv = nullptr;
  torch::nn::LinearImpl* linear = nullptr;
  torch::nn::BatchNorm2dImpl* bn = nullptr;
  std::string module;  // the layer / batch-norm path
  bool transposed = false;      // the ONNX weight is [in, out] (MatMul, Gemm transB = 0)
  // A MatMul over the last axis of an [N, L, C] or [N, H, W, C] tensor (ConvNeXt's and MLP-Mixer's
  // Linear on channels-last activations): runs as a 1x1 convolution with the channels moved to
  // axis 1, so every stage sees a convolution with L or H x W positions per image. The rank of x.
  int64_t channels_last = 0;
  std::vector<int64_t> bias_dims;  // Gemm C's dims as stored
};

class OnnxModel : public Model {
 public:
  OnnxModel(const std::string& bytes, const std::string& path) : Model("onnx"), path_(path) {
    if (!proto_.ParseFromString(bytes)) {
      throw InputError(StrCat(path, ": not a readable ONNX model (protobuf parse failed)"));
    }
    if (!proto_.has_graph()) throw InputError(StrCat(path, ": ONNX model has no graph"));
    for (const auto& op : proto_.opset_import()) {
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
    }
    for (const auto& p : proto_.metadata_props()) info_.metadata[p.key()] = p.value();
    Build();
  }

  torch::Tensor forward(torch::Tensor x) override { return Execute(x, nullptr); }
  std::vector<ChannelSpace> ChannelSpaces() const override { return spaces_; }

  const OnnxInfo& info() const { return info_; }
  void Save(const std::string& path, const std::map<std::string, std::string>& metadata);

 private:
  int Slot(const std::string& name) {
    auto it = slot_.find(name);
    if (it != slot_.end()) return it->second;
    const int s = static_cast<int>(names_.size());
    slot_[name] = s;
    names_.push_back(name);
    consts_.emplace_back();
    return s;
  }
  bool IsConst(int s) const { return s >= 0 && consts_[static_cast<size_t>(s)].defined(); }
  const torch::Tensor& Const(int s) const { return consts_[static_cast<size_t>(s)]; }
  std::string Where(const onnx::NodeProto& n) const {
    const std::string& name = !n.name().empty() || n.output_size() == 0 ? n.name() : n.output(0);
    return StrCat(path_, ": node '", name, "' (", n.op_type().substr(0, 64), ")");
  }

  void Build();
  void BuildNode(const onnx::NodeProto& n, size_t index);
  void ReadAttributes(const onnx::NodeProto& n, Node& d);
  void Fold(const onnx::NodeProto& n, Node d);
  std::string ModuleName(const onnx::NodeProto& n, const std::string& weight, const std::string& fallback);
  void Place(const std::string& path, std::shared_ptr<torch::nn::Module> m);
  void Pools(const onnx::NodeProto& n, Node& d, int64_t spatial);
  torch::Tensor Execute(const torch::Tensor& x, std::vector<std::vector<int64_t>>* shapes);
  torch::Tensor RunNode(const Node& d, std::vector<torch::Tensor>& v);
  void DeriveChannelSpaces(const std::vector<std::vector<int64_t>>& shapes);
  void ChannelsLastLayers(const std::vector<std::vector<int64_t>>& shapes);

  std::string path_;
  onnx::ModelProto proto_;
  int64_t opset_ = 13;
  OnnxInfo info_;
  std::unordered_map<std::string, int> slot_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> consts_;  // defined for initializers and Constant outputs
  torch::Device const_device_ = torch::kCPU;
  std::vector<Node> nodes_;
  int input_ = -1, output_ = -1;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> containers_;
  std::set<std::string> leaves_, used_names_;
  std::vector<std::string> order_;
  std::vector<ChannelSpace> spaces_;
  // Where each layer's / batch norm's tensors enter the graph: (node index, input index).
  std::map<std::string, std::pair<int, int>> refs_;
  std::map<std::string, bool> transposed_;
  std::set<std::string> channels_last_;  // MatMul layers run as 1x1 convolutions (Node::channels_last)
  bool channels_last_done_ = false;
  std::map<std::string, std::vector<int64_t>> bias_dims_;
};

void OnnxModel::Place(const std::string& path, std::shared_ptr<torch::nn::Module> m) {
  torch::nn::Module* parent = this;
  std::string prefix;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    if (dot == std::string::npos) break;
    const std::string part = path.substr(start, dot - start);
    prefix += (prefix.empty() ? "" : ".") + part;
    auto it = containers_.find(prefix);
    if (it == containers_.end()) {
      auto c = std::make_shared<torch::nn::Module>();
      parent->register_module(part, c);
      it = containers_.emplace(prefix, c).first;
    }
    parent = it->second.get();
    start = dot + 1;
  }
  parent->register_module(path.substr(start), std::move(m));
  leaves_.insert(path);
  used_names_.insert(path);
  order_.push_back(path);
}

// A module path that neither clashes with another module nor nests inside a leaf.
std::string OnnxModel::ModuleName(const onnx::NodeProto& n, const std::string& weight, const std::string& fallback) {
  auto usable = [&](const std::string& p) {
    if (!ValidName(p) || used_names_.count(p) || containers_.count(p)) return false;
    for (size_t dot = p.find('.'); dot != std::string::npos; dot = p.find('.', dot + 1)) {
      if (leaves_.count(p.substr(0, dot))) return false;
    }
    return true;
  };
  const std::string suffix = ".weight";
  if (weight.size() > suffix.size() && weight.compare(weight.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string p = weight.substr(0, weight.size() - suffix.size());
    if (usable(p)) return p;
  }
  const std::string scope = ScopePath(n.name());
  if (usable(scope)) return scope;
  std::string p = fallback;
  for (int k = 1; !usable(p); ++k) p = StrCat(fallback, "_", k);
  return p;
}

void OnnxModel::Pools(const onnx::NodeProto& n, Node& d, int64_t spatial) {
  const std::string where = Where(n);
  d.kernel = AttrInts(n, "kernel_shape", d.kernel);  // a Conv's defaults to its weight's
  if (d.kernel.size() != static_cast<size_t>(spatial)) {
    throw InputError(StrCat(where, ": only 2-D operations are supported (kernel_shape ", IntsText(d.kernel), ")"));
  }
  d.strides = AttrInts(n, "strides", {1, 1});
  d.dilations = AttrInts(n, "dilations", {1, 1});
  d.pads = AttrInts(n, "pads", {0, 0, 0, 0});
  d.auto_pad = AttrStr(n, "auto_pad", "NOTSET");
  if (d.strides.size() != 2 || d.dilations.size() != 2 || d.pads.size() != 4) {
    throw InputError(StrCat(where, ": strides, dilations and pads must have 2, 2 and 4 entries"));
  }
  if (d.auto_pad != "NOTSET" && d.auto_pad != "VALID" && d.auto_pad != "SAME_UPPER" && d.auto_pad != "SAME_LOWER") {
    throw InputError(StrCat(where, ": auto_pad '", d.auto_pad, "' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER"));
  }
  if (d.auto_pad == "VALID") d.pads = {0, 0, 0, 0};
  const bool symmetric = d.pads[0] == d.pads[2] && d.pads[1] == d.pads[3];
  d.prepad = !symmetric || d.auto_pad == "SAME_UPPER" || d.auto_pad == "SAME_LOWER";
}

// Pads for auto_pad SAME_* at run time, as ONNX defines them: [top, left, bottom, right].
std::vector<int64_t> SamePads(const Node& d, int64_t h, int64_t w) {
  std::vector<int64_t> p(4, 0);
  const int64_t in[2] = {h, w};
  for (int i = 0; i < 2; ++i) {
    const int64_t s = d.strides[i], k = (d.kernel[i] - 1) * d.dilations[i] + 1;
    const int64_t out = (in[i] + s - 1) / s;
    const int64_t total = std::max<int64_t>(0, (out - 1) * s + k - in[i]);
    const int64_t small = total / 2, big = total - small;
    p[i] = d.auto_pad == "SAME_UPPER" ? small : big;
    p[i + 2] = total - p[i];
  }
  return p;
}

torch::Tensor PrePad(const Node& d, const torch::Tensor& x, double value) {
  const std::vector<int64_t> p = d.auto_pad == "SAME_UPPER" || d.auto_pad == "SAME_LOWER"
                                     ? SamePads(d, x.size(2), x.size(3))
                                     : d.pads;
  return F::pad(x, F::PadFuncOptions({p[1], p[3], p[0], p[2]}).value(value));
}

void OnnxModel::Build() {
  const onnx::GraphProto& g = proto_.graph();
  for (int i = 0; i < g.initializer_size(); ++i) {
    const onnx::TensorProto& t = g.initializer(i);
    if (slot_.count(t.name())) {
      throw InputError(StrCat(path_, ": initializer '", t.name().substr(0, 200),
                              "' is defined twice; an ONNX graph names each value once"));
    }
    const int s = Slot(t.name());
    consts_[static_cast<size_t>(s)] = FromProto(t, path_);
  }
  for (const auto& in : g.input()) {
    if (IsConst(Slot(in.name()))) continue;  // old exporters list initializers as inputs too
    if (input_ >= 0) {
      throw InputError(StrCat(path_, ": the graph has more than one input ('", names_[static_cast<size_t>(input_)],
                              "', '", in.name(), "'); xbar runs image classifiers with one input"));
    }
    input_ = Slot(in.name());
    const auto& shape = in.type().tensor_type().shape();
    std::vector<int64_t> dims;
    std::string text;
    for (const auto& dim : shape.dim()) {
      dims.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
      text += (text.empty() ? "" : " x ") + (dim.has_dim_value() ? std::to_string(dim.dim_value()) : dim.dim_param());
    }
    if (dims.size() != 4 || dims[1] <= 0 || dims[2] <= 0 || dims[3] <= 0) {
      throw InputError(StrCat(path_, ": graph input '", in.name(), "' has shape [", text,
                              "]; xbar needs images N x C x H x W with fixed C, H and W (export with a fixed-size "
                              "example input; a dynamic batch dimension is fine)"));
    }
    if (dims[1] > kMaxImageValues / dims[2] / dims[3]) {  // checked in this order, no overflow
      throw InputError(StrCat(path_, ": graph input '", in.name(), "' has shape [", text, "], more than ",
                              kMaxImageValues, " values per image"));
    }
    info_.channels = dims[1];
    info_.height = dims[2];
    info_.width = dims[3];
  }
  if (input_ < 0) throw InputError(StrCat(path_, ": the graph has no input"));
  if (g.output_size() < 1) throw InputError(StrCat(path_, ": the graph has no output"));

  for (size_t i = 0; i < static_cast<size_t>(g.node_size()); ++i) BuildNode(g.node(static_cast<int>(i)), i);
  output_ = Slot(g.output(0).name());
  {
    std::set<int> produced = {input_};
    for (const auto& d : nodes_) produced.insert(d.out.begin(), d.out.end());
    if (!produced.count(output_) && !IsConst(output_)) {
      throw InputError(StrCat(path_, ": graph output '", g.output(0).name(), "' is produced by no node"));
    }
  }
  FinalizeLayers(order_);

  // Shapes of every value from one forward pass of a zero image; also proves the graph runs.
  std::vector<std::vector<int64_t>> shapes;
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    const bool was_training = is_training();
    eval();
    y = Execute(torch::zeros({1, info_.channels, info_.height, info_.width}), &shapes);
    train(was_training);
  }
  if (y.dim() != 2 || y.size(0) != 1) {
    throw InputError(StrCat(path_, ": the graph output has shape ", IntsText(y.sizes().vec()),
                            " for one image; xbar needs class scores N x K"));
  }
  info_.num_classes = y.size(1);
  ChannelsLastLayers(shapes);
  DeriveChannelSpaces(shapes);

  // The graph's structure without the initializers' data: which trained weights fit it.
  std::string structure;
  for (const auto& n : g.node()) structure += n.SerializeAsString();
  for (const auto& t : g.initializer()) {
    structure += t.name() + ":" + std::to_string(t.data_type());
    for (int64_t d : t.dims()) structure += "," + std::to_string(d);
    structure += ";";
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(HashBytes(structure)));
  info_.graph_hash = hex;
}

void OnnxModel::BuildNode(const onnx::NodeProto& n, size_t index) {
  const std::string where = Where(n);
  if (!n.domain().empty() && n.domain() != "ai.onnx") {
    throw InputError(StrCat(where, ": op domain '", n.domain(), "' is not supported; supported ops (default domain): ",
                            Join(OnnxSupportedOps())));
  }
  for (const auto& in : n.input()) {
    if (!in.empty() && !slot_.count(in)) {
      throw InputError(StrCat(where, ": reads '", in, "', which no earlier node, initializer or input produces"));
    }
  }
  for (const auto& out : n.output()) {
    if (!out.empty() && slot_.count(out)) {
      throw InputError(StrCat(where, ": writes '", out.substr(0, 200),
                              "', which an earlier node, initializer or input already defines; an ONNX graph "
                              "names each value once"));
    }
  }
  if (n.op_type() == "Constant") {
    torch::Tensor c;
    for (const auto& a : n.attribute()) {
      if (a.name() == "value") {
        c = FromProto(a.t(), where);
      } else if (a.name() == "value_float") {
        c = torch::tensor(a.f(), torch::kFloat32);
      } else if (a.name() == "value_floats") {
        c = torch::tensor(std::vector<float>(a.floats().begin(), a.floats().end()), torch::kFloat32);
      } else if (a.name() == "value_int") {
        c = torch::tensor(a.i(), torch::kInt64);
      } else if (a.name() == "value_ints") {
        c = torch::tensor(std::vector<int64_t>(a.ints().begin(), a.ints().end()), torch::kInt64);
      }
    }
    if (!c.defined() || n.output_size() != 1) throw InputError(StrCat(where, ": Constant without a supported value"));
    const int s = Slot(n.output(0));
    consts_[static_cast<size_t>(s)] = c;
    return;
  }
  auto op_it = OpTable().find(n.op_type());
  if (op_it == OpTable().end()) {
    throw InputError(StrCat(where, ": op ", n.op_type(), " is not supported; supported ops: ",
                            Join(OnnxSupportedOps())));
  }
  Node d;
  d.op = op_it->second;
  d.type = n.op_type();
  for (const auto& in : n.input()) d.in.push_back(in.empty() ? -1 : Slot(in));
  for (const auto& out : n.output()) d.out.push_back(out.empty() ? -1 : Slot(out));
  if (d.in.empty() || d.in[0] < 0 || d.out.empty() || d.out[0] < 0) {
    throw InputError(StrCat(where, ": needs an input and an output"));
  }
  d.name = n.name().empty() ? n.output(0) : n.name();
  auto need_inputs = [&](size_t k) {
    if (d.in.size() < k) throw InputError(StrCat(where, ": expected ", k, " inputs, got ", d.in.size()));
  };
  auto const_input = [&](size_t i) -> const torch::Tensor& {
    if (i >= d.in.size() || !IsConst(d.in[i])) {
      throw InputError(StrCat(where, ": input ", i + 1, " must be a constant (an initializer)"));
    }
    return Const(d.in[i]);
  };
  auto remember = [&](const std::string& key, size_t i) { refs_[key] = {static_cast<int>(index), static_cast<int>(i)}; };
  auto float_weight = [&](const torch::Tensor& t, size_t i) {
    if (t.scalar_type() != torch::kFloat32) {
      throw InputError(StrCat(where, ": weight '", n.input(static_cast<int>(i)), "' is ",
                              c10::toString(t.scalar_type()), "; xbar imports float32 weights"));
    }
  };

  // A node of constants only (e.g. the Identity copies of a deduplicated initializer) is folded.
  if (d.op != Op::kConv && d.op != Op::kBatchNorm &&
      std::all_of(d.in.begin(), d.in.end(), [&](int s) { return s < 0 || IsConst(s); })) {
    Fold(n, std::move(d));
    return;
  }
  switch (d.op) {
    case Op::kConv: {
      need_inputs(2);
      const torch::Tensor& w = const_input(1);
      float_weight(w, 1);
      if (w.dim() != 4) {
        throw InputError(StrCat(where, ": only 2-D convolutions are supported (weight shape ",
                                IntsText(w.sizes().vec()), ")"));
      }
      d.kernel = AttrInts(n, "kernel_shape", {w.size(2), w.size(3)});
      if (d.kernel != std::vector<int64_t>{w.size(2), w.size(3)}) {
        throw InputError(StrCat(where, ": kernel_shape ", IntsText(d.kernel), " disagrees with the weight"));
      }
      Pools(n, d, 2);
      const int64_t groups = AttrInt(n, "group", 1);
      if (d.strides[0] != d.strides[1] || d.dilations[0] != d.dilations[1]) {
        throw InputError(StrCat(where, ": strides ", IntsText(d.strides), " and dilations ", IntsText(d.dilations),
                                " must be equal along height and width (crossbar lowering uses one of each)"));
      }
      if (groups < 1 || d.strides[0] < 1 || d.dilations[0] < 1) {
        throw InputError(StrCat(where, ": group, strides and dilations must be >= 1"));
      }
      if (!d.prepad && d.pads[0] != d.pads[1]) d.prepad = true;
      const bool has_bias = d.in.size() > 2 && d.in[2] >= 0;
      auto conv = std::make_shared<torch::nn::Conv2dImpl>(
          torch::nn::Conv2dOptions(w.size(1) * groups, w.size(0), {w.size(2), w.size(3)})
              .stride(d.strides[0])
              .padding(d.prepad ? 0 : d.pads[0])
              .dilation(d.dilations[0])
              .groups(groups)
              .bias(has_bias));
      d.module = ModuleName(n, n.input(1), "conv");
      torch::NoGradGuard no_grad;
      conv->weight.copy_(w);
      remember(d.module + ".weight", 1);
      if (has_bias) {
        const torch::Tensor& b = const_input(2);
        float_weight(b, 2);
        if (b.numel() != w.size(0)) throw InputError(StrCat(where, ": bias has ", b.numel(), " values, expected ", w.size(0)));
        conv->bias.copy_(b.reshape({-1}));
        remember(d.module + ".bias", 2);
      }
      d.conv = conv.get();
      Place(d.module, conv);
      break;
    }
    case Op::kGemm:
    case Op::kMatMul: {
      need_inputs(2);
      const bool gemm = d.op == Op::kGemm;
      ReadAttributes(n, d);  // Gemm: alpha, beta, transA, transB
      const bool trans_a = gemm && d.ints[0] != 0;
      const bool trans_b = gemm && d.ints[1] != 0;
      if (!gemm) d.alpha = d.beta = 1.0;
      const bool has_c = gemm && d.in.size() > 2 && d.in[2] >= 0;
      if (!IsConst(d.in[1]) || Const(d.in[1]).dim() != 2 || trans_a) break;  // a plain op, not a layer
      const torch::Tensor& w = Const(d.in[1]);
      float_weight(w, 1);
      const int64_t in_f = trans_b ? w.size(1) : w.size(0), out_f = trans_b ? w.size(0) : w.size(1);
      if (d.alpha != 1.0 || (has_c && d.beta != 1.0)) {
        throw InputError(StrCat(where, ": alpha = ", d.alpha, ", beta = ", d.beta,
                                "; xbar maps Gemm layers with alpha = beta = 1 (PyTorch's nn.Linear export)"));
      }
      if (has_c && (!IsConst(d.in[2]) || Const(d.in[2]).numel() != out_f)) {
        throw InputError(StrCat(where, ": the bias C must be a constant of ", out_f, " values"));
      }
      auto lin = std::make_shared<torch::nn::LinearImpl>(torch::nn::LinearOptions(in_f, out_f).bias(has_c));
      d.module = ModuleName(n, n.input(1), gemm ? "gemm" : "matmul");
      d.transposed = !trans_b;
      torch::NoGradGuard no_grad;
      lin->weight.copy_(trans_b ? w : w.t());
      remember(d.module + ".weight", 1);
      if (has_c) {
        const torch::Tensor& b = Const(d.in[2]);
        float_weight(b, 2);
        lin->bias.copy_(b.reshape({-1}));
        bias_dims_[d.module] = b.sizes().vec();
        remember(d.module + ".bias", 2);
      }
      transposed_[d.module] = d.transposed;
      d.linear = lin.get();
      d.op = Op::kLinear;
      Place(d.module, lin);
      break;
    }
    case Op::kBatchNorm: {
      need_inputs(5);
      for (size_t i = 1; i < 5; ++i) float_weight(const_input(i), i);
      if (AttrInt(n, "training_mode", 0) != 0 || (d.out.size() > 1 && d.out[1] >= 0)) {
        throw InputError(StrCat(where, ": training-mode batch norm is not supported; export in eval mode"));
      }
      const int64_t c = Const(d.in[1]).numel();
      for (size_t i = 2; i < 5; ++i) {
        if (Const(d.in[i]).numel() != c) throw InputError(StrCat(where, ": scale, B, mean and var must have ", c, " values"));
      }
      d.eps = AttrFloat(n, "epsilon", 1e-5);
      d.momentum = 1.0 - AttrFloat(n, "momentum", 0.9);
      auto bn = std::make_shared<torch::nn::BatchNorm2dImpl>(
          torch::nn::BatchNormOptions(c).eps(d.eps).momentum(d.momentum));
      d.module = ModuleName(n, n.input(1), "bn");
      torch::NoGradGuard no_grad;
      const char* fields[4] = {".weight", ".bias", ".running_mean", ".running_var"};
      torch::Tensor* dst[4] = {&bn->weight, &bn->bias, &bn->running_mean, &bn->running_var};
      for (size_t i = 0; i < 4; ++i) {
        dst[i]->copy_(Const(d.in[i + 1]).reshape({-1}));
        remember(d.module + fields[i], i + 1);
      }
      d.bn = bn.get();
      Place(d.module, bn);
      break;
    }
    default:
      ReadAttributes(n, d);
  }
  nodes_.push_back(std::move(d));
}

// The attributes of the ops that are not layers, checked.
void OnnxModel::ReadAttributes(const onnx::NodeProto& n, Node& d) {
  const std::string where = Where(n);
  switch (d.op) {
    case Op::kGemm:
      d.alpha = AttrFloat(n, "alpha", 1.0);
      d.beta = AttrFloat(n, "beta", 1.0);
      d.ints = {AttrInt(n, "transA", 0) != 0 ? 1 : 0, AttrInt(n, "transB", 0) != 0 ? 1 : 0};
      break;
    case Op::kLeakyRelu: d.alpha = AttrFloat(n, "alpha", 0.01); break;
    case Op::kHardSigmoid:
      d.alpha = AttrFloat(n, "alpha", 0.2);
      d.beta = AttrFloat(n, "beta", 0.5);
      break;
    case Op::kElu: d.alpha = AttrFloat(n, "alpha", 1.0); break;
    case Op::kSelu:
      d.alpha = AttrFloat(n, "alpha", 1.67326319217681884765625);
      d.beta = AttrFloat(n, "gamma", 1.05070102214813232421875);  // gamma, the output scale
      break;
    case Op::kGelu:
      d.mode = AttrStr(n, "approximate", "none");
      if (d.mode != "none" && d.mode != "tanh") {
        throw InputError(StrCat(where, ": approximate '", d.mode, "' is not one of none, tanh"));
      }
      break;
    case Op::kPow: case Op::kPRelu:
      if (d.in.size() < 2) throw InputError(StrCat(where, ": expected 2 inputs, got ", d.in.size()));
      break;
    case Op::kLayerNorm:  // opset 17; PyTorch exports LayerNorm as it from opset 17 on
      if (d.in.size() < 2 || d.in[1] < 0) throw InputError(StrCat(where, ": expected inputs X and Scale"));
      if (d.out.size() > 1 && std::any_of(d.out.begin() + 1, d.out.end(), [](int o) { return o >= 0; })) {
        throw InputError(StrCat(where, ": the Mean and InvStdDev outputs are not supported"));
      }
      d.axis = AttrInt(n, "axis", -1);
      d.eps = AttrFloat(n, "epsilon", 1e-5);
      break;
    case Op::kClip:
      if (opset_ < 11) {
        d.min = AttrFloat(n, "min", -INFINITY);
        d.max = AttrFloat(n, "max", INFINITY);
      }
      break;
    case Op::kMaxPool:
    case Op::kAvgPool: {
      Pools(n, d, 2);
      d.ceil_mode = AttrInt(n, "ceil_mode", 0) != 0;
      d.count_include_pad = AttrInt(n, "count_include_pad", 0) != 0;
      if (d.out.size() > 1 && d.out[1] >= 0) throw InputError(StrCat(where, ": the Indices output is not supported"));
      if (d.pads[0] * 2 > d.kernel[0] || d.pads[1] * 2 > d.kernel[1]) d.prepad = true;
      const bool any_pad = d.auto_pad.rfind("SAME", 0) == 0 || std::any_of(d.pads.begin(), d.pads.end(), [](int64_t p) { return p != 0; });
      if (d.op == Op::kAvgPool) {
        if (d.dilations != std::vector<int64_t>{1, 1}) throw InputError(StrCat(where, ": dilated average pooling is not supported"));
        if (d.prepad && any_pad && !d.count_include_pad) {
          throw InputError(StrCat(where, ": asymmetric padding with count_include_pad = 0 is not supported"));
        }
      }
      break;
    }
    case Op::kAdd: case Op::kSub: case Op::kMul: case Op::kDiv:
      if (d.in.size() < 2) throw InputError(StrCat(where, ": expected 2 inputs, got ", d.in.size()));
      break;
    case Op::kConcat:
      if (!FindAttr(n, "axis")) throw InputError(StrCat(where, ": missing attribute axis"));
      d.axis = AttrInt(n, "axis", 1);
      break;
    case Op::kFlatten: d.axis = AttrInt(n, "axis", 1); break;
    case Op::kReshape:
      d.allowzero = AttrInt(n, "allowzero", 0);
      d.ints = AttrInts(n, "shape", {});
      if (d.in.size() < 2 && d.ints.empty()) throw InputError(StrCat(where, ": needs a shape"));
      break;
    case Op::kSoftmax:
    case Op::kLogSoftmax: d.axis = AttrInt(n, "axis", opset_ >= 13 ? -1 : 1); break;
    case Op::kShape:
      d.start = AttrInt(n, "start", 0);
      d.end = AttrInt(n, "end", std::numeric_limits<int64_t>::max());
      break;
    case Op::kGather: d.axis = AttrInt(n, "axis", 0); break;
    case Op::kUnsqueeze:
    case Op::kSqueeze:
    case Op::kReduceMean:
      d.ints = AttrInts(n, "axes", {});
      d.keepdims = AttrInt(n, "keepdims", 1);
      break;
    case Op::kTranspose: d.ints = AttrInts(n, "perm", {}); break;
    case Op::kPad:
      d.mode = AttrStr(n, "mode", "constant");
      d.ints = AttrInts(n, "pads", {});
      d.alpha = AttrFloat(n, "value", 0.0);
      if (d.mode != "constant" && d.mode != "reflect" && d.mode != "edge") {
        throw InputError(StrCat(where, ": pad mode '", d.mode, "' is not one of constant, reflect, edge"));
      }
      break;
    case Op::kCast:
      d.to = AttrInt(n, "to", 1);
      TorchType(static_cast<int>(d.to), where);
      break;
    case Op::kConstantOfShape:
      d.value = FindAttr(n, "value") ? FromProto(FindAttr(n, "value")->t(), where) : torch::zeros({1});
      break;
    case Op::kSlice:
      d.starts = AttrInts(n, "starts", {});
      d.ends = AttrInts(n, "ends", {});
      d.ints = AttrInts(n, "axes", {});
      break;
    default: break;
  }
}

void OnnxModel::Fold(const onnx::NodeProto& n, Node d) {
  ReadAttributes(n, d);
  torch::Tensor y;
  try {
    y = RunNode(d, consts_);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw InputError(StrCat(Where(n), " failed on its constant inputs: ", msg.substr(0, msg.find('\n'))));
  }
  consts_[static_cast<size_t>(d.out[0])] = y;
}

torch::Tensor OnnxModel::Execute(const torch::Tensor& x, std::vector<std::vector<int64_t>>* shapes) {
  if (x.dim() != 4 || x.size(1) != info_.channels || x.size(2) != info_.height || x.size(3) != info_.width) {
    throw InputError(StrCat(path_, ": the graph takes N x ", info_.channels, " x ", info_.height, " x ", info_.width,
                            " images, got ", IntsText(x.sizes().vec())));
  }
  if (x.device() != const_device_) {
    for (auto& c : consts_) {
      if (c.defined() && c.is_floating_point()) c = c.to(x.device());
    }
    const_device_ = x.device();
  }
  std::vector<torch::Tensor> v = consts_;
  v[static_cast<size_t>(input_)] = x;
  if (shapes) {
    shapes->assign(v.size(), {});
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].defined()) (*shapes)[i] = v[i].sizes().vec();
    }
  }
  for (const Node& d : nodes_) {
    torch::Tensor y;
    try {
      y = RunNode(d, v);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      std::string msg = e.what();
      msg = msg.substr(0, msg.find('\n'));
      throw InputError(StrCat(path_, ": node '", d.name, "' (", d.type, ") failed: ", msg));
    }
    v[static_cast<size_t>(d.out[0])] = y;
    if (shapes) (*shapes)[static_cast<size_t>(d.out[0])] = y.sizes().vec();
  }
  const torch::Tensor& out = v[static_cast<size_t>(output_)];
  XBAR_CHECK(out.defined(), "graph output not computed");
  return out;
}

std::vector<int64_t> IntsOf(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

torch::Tensor OnnxModel::RunNode(const Node& d, std::vector<torch::Tensor>& v) {
  auto has = [&](size_t i) { return i < d.in.size() && d.in[i] >= 0; };
  auto in = [&](size_t i) -> const torch::Tensor& {
    if (!has(i) || !v[static_cast<size_t>(d.in[i])].defined()) {
      throw InputError(StrCat(path_, ": node '", d.name, "' (", d.type, "): input ", i + 1, " is not computed"));
    }
    return v[static_cast<size_t>(d.in[i])];
  };
  auto norm_axis = [](int64_t a, int64_t rank) { return a < 0 ? a + rank : a; };
  const torch::Tensor& x = in(0);
  switch (d.op) {
    case Op::kConv: {
      if (d.channels_last > 0) {
        const int64_t c = d.conv->options.in_channels();
        if (x.dim() != d.channels_last || x.size(-1) != c || (input_ >= 0 && v[static_cast<size_t>(input_)].defined() &&
                                                             x.size(0) != v[static_cast<size_t>(input_)].size(0))) {
          throw InputError(StrCat(path_, ": node '", d.name, "' (", d.type, "): input ", IntsText(x.sizes().vec()),
                                  " is not a rank-", d.channels_last, " tensor of ", c, " features with the images on its first axis"));
        }
        // Contiguous both ways, so the float model and the crossbar simulation (whose outputs are
        // contiguous) hand the ops after the layer the same layout.
        const torch::Tensor xc = (d.channels_last == 4 ? x.permute({0, 3, 1, 2}) : x.permute({0, 2, 1}).unsqueeze(3)).contiguous();
        const torch::Tensor y = RunConv(*d.conv, xc);
        return (d.channels_last == 4 ? y.permute({0, 2, 3, 1}) : y.squeeze(3).permute({0, 2, 1})).contiguous();
      }
      if (x.dim() != 4 || x.size(1) != d.conv->options.in_channels()) {
        throw InputError(StrCat(path_, ": node '", d.name, "' (Conv): input ", IntsText(x.sizes().vec()),
                                " does not have ", d.conv->options.in_channels(), " channels"));
      }
      return RunConv(*d.conv, d.prepad ? PrePad(d, x, 0.0) : x);
    }
    case Op::kLinear:
      // Only in the shape pass: ChannelsLastLayers then turns such a MatMul into a 1x1 convolution.
      if ((x.dim() == 3 || x.dim() == 4) && d.type == "MatMul" && !channels_last_done_) return d.linear->forward(x);
      if (x.dim() != 2) {
        throw InputError(StrCat(path_, ": node '", d.name, "' (", d.type, "): input ", IntsText(x.sizes().vec()),
                                "; xbar maps matrix products of 2-D inputs [N, features] onto crossbars"));
      }
      return RunLinear(*d.linear, x);
    case Op::kGemm: {
      torch::Tensor a = d.ints[0] ? x.t() : x, b = d.ints[1] ? in(1).t() : in(1);
      torch::Tensor y = torch::mm(a, b) * d.alpha;
      return has(2) ? y + in(2) * d.beta : y;
    }
    case Op::kMatMul: return torch::matmul(x, in(1));
    case Op::kBatchNorm:
      return torch::batch_norm(x, d.bn->weight, d.bn->bias, d.bn->running_mean, d.bn->running_var,
                               d.bn->is_training(), d.momentum, d.eps, false);
    case Op::kRelu: return torch::relu(x);
    case Op::kClip: {
      c10::optional<c10::Scalar> lo, hi;
      const double mn = has(1) ? in(1).item<double>() : d.min, mx = has(2) ? in(2).item<double>() : d.max;
      if (std::isfinite(mn)) lo = mn;
      if (std::isfinite(mx)) hi = mx;
      return torch::clamp(x, lo, hi);
    }
    case Op::kLeakyRelu: return torch::leaky_relu(x, d.alpha);
    case Op::kHardSigmoid: return torch::clamp(x * d.alpha + d.beta, 0.0, 1.0);
    case Op::kHardSwish: return torch::hardswish(x);  // x * HardSigmoid(x; 1/6, 1/2), PyTorch's own
    case Op::kErf: return torch::erf(x);
    case Op::kGelu: return torch::gelu(x, d.mode);
    case Op::kPow: return torch::pow(x, in(1)).to(x.scalar_type());
    case Op::kSqrt: return torch::sqrt(x);
    case Op::kExp: return torch::exp(x);
    case Op::kLog: return torch::log(x);
    case Op::kNeg: return torch::neg(x);
    case Op::kAbs: return torch::abs(x);
    case Op::kReciprocal: return torch::reciprocal(x);
    case Op::kPRelu: return torch::where(x >= 0, x, x * in(1));
    case Op::kElu: return torch::elu(x, d.alpha);
    case Op::kSelu: return torch::elu(x, d.alpha, d.beta);
    case Op::kSoftplus: return torch::softplus(x);
    case Op::kLayerNorm: {
      // Normalised over the axes from `axis` on: (x - mean) / sqrt(var + epsilon) * Scale + B.
      const int64_t axis = norm_axis(d.axis, x.dim());
      if (axis < 0 || axis >= x.dim()) {
        throw InputError(StrCat(path_, ": node '", d.name, "' (LayerNormalization): axis ", d.axis, " of a rank-", x.dim(), " input"));
      }
      std::vector<int64_t> dims;
      for (int64_t k = axis; k < x.dim(); ++k) dims.push_back(k);
      const torch::Tensor mean = x.mean(dims, true);
      const torch::Tensor var = (x - mean).pow(2).mean(dims, true);
      torch::Tensor y = (x - mean) / torch::sqrt(var + d.eps) * in(1);
      return has(2) ? y + in(2) : y;
    }
    case Op::kMax:
    case Op::kMin: {
      torch::Tensor y = x;
      for (size_t i = 1; i < d.in.size(); ++i) y = d.op == Op::kMax ? torch::maximum(y, in(i)) : torch::minimum(y, in(i));
      return y;
    }
    case Op::kSigmoid: return torch::sigmoid(x);
    case Op::kTanh: return torch::tanh(x);
    case Op::kMaxPool: {
      const torch::Tensor xp = d.prepad ? PrePad(d, x, -INFINITY) : x;
      const std::vector<int64_t> pad = d.prepad ? std::vector<int64_t>{0, 0} : std::vector<int64_t>{d.pads[0], d.pads[1]};
      return MaxPool2d(xp, d.kernel, d.strides, pad, d.dilations, d.ceil_mode);
    }
    case Op::kAvgPool: {
      const torch::Tensor xp = d.prepad ? PrePad(d, x, 0.0) : x;
      const std::vector<int64_t> pad = d.prepad ? std::vector<int64_t>{0, 0} : std::vector<int64_t>{d.pads[0], d.pads[1]};
      return torch::avg_pool2d(xp, d.kernel, d.strides, pad, d.ceil_mode, d.count_include_pad);
    }
    case Op::kGlobalAvgPool:
    case Op::kGlobalMaxPool: {
      std::vector<int64_t> dims;
      for (int64_t k = 2; k < x.dim(); ++k) dims.push_back(k);
      return d.op == Op::kGlobalAvgPool ? x.mean(dims, true) : x.amax(dims, true);
    }
    case Op::kAdd: return x + in(1);
    case Op::kSub: return x - in(1);
    case Op::kMul: return x * in(1);
    case Op::kDiv: {
      const torch::Tensor& b = in(1);
      if (!x.is_floating_point() && !b.is_floating_point()) return torch::div(x, b, "trunc");
      return x / b;
    }
    case Op::kConcat: {
      std::vector<torch::Tensor> parts;
      for (size_t i = 0; i < d.in.size(); ++i) parts.push_back(in(i));
      return torch::cat(parts, d.axis);
    }
    case Op::kFlatten: {
      const int64_t axis = norm_axis(d.axis, x.dim());
      int64_t outer = 1;
      for (int64_t k = 0; k < axis; ++k) outer *= x.size(k);
      int64_t inner = 1;
      for (int64_t k = axis; k < x.dim(); ++k) inner *= x.size(k);
      return x.reshape({outer, inner});
    }
    case Op::kReshape: {
      std::vector<int64_t> shape = has(1) ? IntsOf(in(1)) : d.ints;
      for (size_t k = 0; k < shape.size(); ++k) {
        if (shape[k] == 0 && d.allowzero == 0 && static_cast<int64_t>(k) < x.dim()) shape[k] = x.size(static_cast<int64_t>(k));
      }
      return x.reshape(shape);
    }
    case Op::kIdentity: return x;
    case Op::kSoftmax:
    case Op::kLogSoftmax: {
      const bool log = d.op == Op::kLogSoftmax;
      const int64_t axis = norm_axis(d.axis, x.dim());
      if (opset_ >= 13) return log ? torch::log_softmax(x, axis) : torch::softmax(x, axis);
      int64_t outer = 1;
      for (int64_t k = 0; k < axis; ++k) outer *= x.size(k);
      const torch::Tensor f = x.reshape({outer, -1});
      return (log ? torch::log_softmax(f, 1) : torch::softmax(f, 1)).reshape(x.sizes());
    }
    case Op::kShape: {
      const int64_t r = x.dim();
      int64_t s = std::clamp<int64_t>(d.start < 0 ? d.start + r : d.start, 0, r);
      int64_t e = std::clamp<int64_t>(d.end < 0 ? d.end + r : d.end, 0, r);
      std::vector<int64_t> sizes;
      for (int64_t k = s; k < e; ++k) sizes.push_back(x.size(k));
      return torch::tensor(sizes, torch::kInt64);
    }
    case Op::kGather: {
      const int64_t axis = norm_axis(d.axis, x.dim());
      torch::Tensor idx = in(1).to(torch::kInt64);
      idx = torch::where(idx < 0, idx + x.size(axis), idx);
      if (idx.dim() == 0) return x.select(axis, idx.item<int64_t>());
      std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + axis);
      for (int64_t s : idx.sizes()) shape.push_back(s);
      for (int64_t k = axis + 1; k < x.dim(); ++k) shape.push_back(x.size(k));
      return x.index_select(axis, idx.flatten().to(x.device())).reshape(shape);
    }
    case Op::kUnsqueeze: {
      std::vector<int64_t> axes = has(1) ? IntsOf(in(1)) : d.ints;
      const int64_t r = x.dim() + static_cast<int64_t>(axes.size());
      for (auto& a : axes) a = norm_axis(a, r);
      std::sort(axes.begin(), axes.end());
      torch::Tensor y = x;
      for (int64_t a : axes) y = y.unsqueeze(a);
      return y;
    }
    case Op::kSqueeze: {
      std::vector<int64_t> axes = has(1) ? IntsOf(in(1)) : d.ints;
      if (axes.empty()) return x.squeeze();
      for (auto& a : axes) a = norm_axis(a, x.dim());
      std::sort(axes.rbegin(), axes.rend());
      torch::Tensor y = x;
      for (int64_t a : axes) y = y.squeeze(a);
      return y;
    }
    case Op::kTranspose: {
      std::vector<int64_t> perm = d.ints;
      if (perm.empty()) {
        for (int64_t k = x.dim() - 1; k >= 0; --k) perm.push_back(k);
      }
      return x.permute(perm);
    }
    case Op::kPad: {
      const std::vector<int64_t> p = has(1) ? IntsOf(in(1)) : d.ints;
      const int64_t r = x.dim();
      if (static_cast<int64_t>(p.size()) != 2 * r) {
        throw InputError(StrCat(path_, ": node '", d.name, "' (Pad): ", p.size(), " pads for a rank-", r, " input"));
      }
      int64_t first = 0;  // outer dimensions without padding are left out (reflect/edge need that)
      while (first < r && p[static_cast<size_t>(first)] == 0 && p[static_cast<size_t>(first + r)] == 0) ++first;
      std::vector<int64_t> tp;
      for (int64_t k = r - 1; k >= first; --k) {
        tp.push_back(p[static_cast<size_t>(k)]);
        tp.push_back(p[static_cast<size_t>(k + r)]);
      }
      if (tp.empty()) return x;
      const double value = has(2) ? in(2).item<double>() : d.alpha;
      F::PadFuncOptions o(tp);
      if (d.mode == "reflect") return F::pad(x, o.mode(torch::kReflect));
      if (d.mode == "edge") return F::pad(x, o.mode(torch::kReplicate));
      return F::pad(x, o.value(value));
    }
    case Op::kCast: return x.to(TorchType(static_cast<int>(d.to), d.name));
    case Op::kConstantOfShape: {
      const std::vector<int64_t> shape = IntsOf(x);
      int64_t n = 1;
      for (int64_t s : shape) {
        if (s < 0 || (s > 0 && n > kMaxTensorValues / s)) {
          throw InputError(StrCat(d.name, ": ConstantOfShape of shape ", IntsText(shape), ": more than ",
                                  kMaxTensorValues, " values"));
        }
        n *= s;
      }
      return d.value.reshape({}).to(x.device()).expand(shape).clone();
    }
    case Op::kSlice: {
      const std::vector<int64_t> starts = has(1) ? IntsOf(in(1)) : d.starts;
      const std::vector<int64_t> ends = has(2) ? IntsOf(in(2)) : d.ends;
      std::vector<int64_t> axes = has(3) ? IntsOf(in(3)) : d.ints;
      const std::vector<int64_t> steps = has(4) ? IntsOf(in(4)) : std::vector<int64_t>(starts.size(), 1);
      if (axes.empty()) {
        for (size_t k = 0; k < starts.size(); ++k) axes.push_back(static_cast<int64_t>(k));
      }
      if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
        throw InputError(StrCat(path_, ": node '", d.name, "' (Slice): starts, ends, axes and steps differ in length"));
      }
      torch::Tensor y = x;
      for (size_t k = 0; k < starts.size(); ++k) {
        const int64_t axis = norm_axis(axes[k], x.dim()), dim = y.size(axis), step = steps[k];
        if (step == 0) throw InputError(StrCat(path_, ": node '", d.name, "' (Slice): step 0"));
        auto norm = [&](int64_t v) { return v < 0 ? v + dim : v; };
        int64_t b = norm(starts[k]), e = norm(std::clamp<int64_t>(ends[k], -dim - 1, dim + 1));
        if (step > 0) {
          b = std::clamp<int64_t>(b, 0, dim);
          e = std::clamp<int64_t>(e, 0, dim);
        } else {
          b = std::clamp<int64_t>(b, 0, dim - 1);
          e = std::clamp<int64_t>(e, -1, dim - 1);
        }
        const torch::Tensor idx = torch::arange(b, e, step, torch::TensorOptions().dtype(torch::kInt64).device(y.device()));
        y = y.index_select(axis, idx);
      }
      return y;
    }
    case Op::kReduceMean: {
      std::vector<int64_t> axes = has(1) ? IntsOf(in(1)) : d.ints;
      if (axes.empty()) {
        for (int64_t k = 0; k < x.dim(); ++k) axes.push_back(k);
      }
      return x.mean(axes, d.keepdims != 0);
    }
  }
  XBAR_CHECK(false, "unhandled op ", d.type);
  return {};
}

// MatMul layers over the last axis of [N, L, C] / [N, H, W, C] become the 1x1 convolutions they
// equal (Node::channels_last), once the shape pass has seen their inputs.
void OnnxModel::ChannelsLastLayers(const std::vector<std::vector<int64_t>>& shapes) {
  bool any = false;
  for (Node& d : nodes_) {
    if (d.op != Op::kLinear) continue;
    // The shape pass ran one image: the first axis is the batch where it has size 1 (an attention
    // block's [L, N, C] does not qualify and is refused here; RunNode checks the batch again).
    const std::vector<int64_t>& s = shapes[static_cast<size_t>(d.in[0])];
    if (s.size() <= 2) continue;
    if ((s.size() != 3 && s.size() != 4) || s[0] != 1) {
      throw InputError(StrCat(path_, ": node '", d.name, "' (", d.type, "): input ", IntsText(s),
                              " for one image; xbar maps matrix products of [N, features] inputs, and of [N, L, "
                              "features] or [N, H, W, features] as 1x1 convolutions, onto crossbars"));
    }
    const torch::nn::LinearImpl& lin = *d.linear;
    const int64_t in_f = lin.options.in_features(), out_f = lin.options.out_features();
    auto conv = std::make_shared<torch::nn::Conv2dImpl>(torch::nn::Conv2dOptions(in_f, out_f, 1).bias(lin.options.bias()));
    {
      torch::NoGradGuard no_grad;
      conv->weight.copy_(lin.weight.view({out_f, in_f, 1, 1}));
      if (lin.options.bias()) conv->bias.copy_(lin.bias);
    }
    const size_t dot = d.module.rfind('.');
    torch::nn::Module* parent = dot == std::string::npos ? this : containers_.at(d.module.substr(0, dot)).get();
    parent->replace_module(dot == std::string::npos ? d.module : d.module.substr(dot + 1), conv);
    d.channels_last = static_cast<int64_t>(s.size());
    d.conv = conv.get();
    d.linear = nullptr;
    d.op = Op::kConv;
    channels_last_.insert(d.module);
    any = true;
  }
  channels_last_done_ = true;
  if (any) FinalizeLayers(order_);
}

// Channel spaces from the graph (see onnx.h). Values are tracked as
//   pre:   a sum of writers' outputs (conv/linear [-> batch norm]) and of earlier spaces, before a ReLU;
//   space: a ReLU's output, maybe pooled; flat: a space flattened to [N, C*H*W] (readers see H*W rows
//          per channel).
// Residual adds merge spaces (one residual stream = one space with several writers); a concat of
// spaces is a new space the sources pass into. A value used by any other op "escapes": its space,
// or every space holding its writers, is left out.
void OnnxModel::DeriveChannelSpaces(const std::vector<std::vector<int64_t>>& shapes) {
  struct Pre {
    std::vector<ChannelSpace::Writer> writers;
    std::vector<int> spaces;
  };
  struct Space {
    int parent;
    int64_t channels;
    std::vector<ChannelSpace::Writer> writers;
    std::vector<ChannelSpace::Reader> readers;
    std::vector<std::pair<int, int64_t>> passes;  // (target space, offset)
    bool invalid = false;
  };
  enum class Kind { kNone, kPre, kSpace, kFlat };
  struct Val {
    Kind kind = Kind::kNone;
    int id = -1;        // pre index or space index
    int64_t hw = 1;     // flat: rows per channel
  };
  std::vector<Pre> pres;
  std::vector<Space> spaces;
  std::vector<Val> val(names_.size());
  std::set<std::string> escaped;  // writer layers whose output reaches an op outside the analysis
  std::function<int(int)> find = [&](int s) {
    while (spaces[static_cast<size_t>(s)].parent != s) s = spaces[static_cast<size_t>(s)].parent;
    return s;
  };
  auto merge = [&](int a, int b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (b < a) std::swap(a, b);
    spaces[static_cast<size_t>(b)].parent = a;
    Space& A = spaces[static_cast<size_t>(a)];
    Space& B = spaces[static_cast<size_t>(b)];
    if (A.channels != B.channels) A.invalid = true;
    A.invalid = A.invalid || B.invalid;
    A.writers.insert(A.writers.end(), B.writers.begin(), B.writers.end());
    A.readers.insert(A.readers.end(), B.readers.begin(), B.readers.end());
    A.passes.insert(A.passes.end(), B.passes.begin(), B.passes.end());
  };
  auto new_space = [&](int64_t channels) {
    spaces.push_back({static_cast<int>(spaces.size()), channels, {}, {}, {}, false});
    return static_cast<int>(spaces.size()) - 1;
  };
  auto escape = [&](int slot) {
    if (slot < 0) return;
    const Val& v = val[static_cast<size_t>(slot)];
    if (v.kind == Kind::kSpace || v.kind == Kind::kFlat) spaces[static_cast<size_t>(find(v.id))].invalid = true;
    if (v.kind == Kind::kPre) {
      for (const auto& w : pres[static_cast<size_t>(v.id)].writers) escaped.insert(w.layer);
      for (int s : pres[static_cast<size_t>(v.id)].spaces) spaces[static_cast<size_t>(find(s))].invalid = true;
    }
  };
  auto shape = [&](int slot) -> const std::vector<int64_t>& { return shapes[static_cast<size_t>(slot)]; };
  auto as_space = [&](int slot, Kind kind, int id) { val[static_cast<size_t>(slot)] = {kind, id, 1}; };

  for (const Node& d : nodes_) {
    const int x = d.in[0], y = d.out[0];
    const Val vx = val[static_cast<size_t>(x)];
    auto escape_inputs = [&] {
      for (int s : d.in) escape(s);
    };
    switch (d.op) {
      case Op::kConv:
      case Op::kLinear: {
        if (d.channels_last > 0) {  // channels on the last axis: outside the analysis, in and out
          escape(x);
          escaped.insert(d.module);
          break;
        }
        const LayerInfo* l = FindLayer(d.module);
        XBAR_CHECK(l != nullptr, "layer ", d.module, " not registered");
        if (vx.kind == Kind::kSpace && l->groups == 1 &&
            (d.op == Op::kConv || shape(x).size() == 2)) {
          spaces[static_cast<size_t>(find(vx.id))].readers.push_back({d.module, l->kernel_h * l->kernel_w});
        } else if (vx.kind == Kind::kFlat && d.op == Op::kLinear) {
          spaces[static_cast<size_t>(find(vx.id))].readers.push_back({d.module, vx.hw});
        } else {
          escape(x);
        }
        pres.push_back({{{d.module, ""}}, {}});
        as_space(y, Kind::kPre, static_cast<int>(pres.size()) - 1);
        break;
      }
      case Op::kBatchNorm:
        if (vx.kind == Kind::kPre && pres[static_cast<size_t>(vx.id)].writers.size() == 1 &&
            pres[static_cast<size_t>(vx.id)].spaces.empty() && pres[static_cast<size_t>(vx.id)].writers[0].bn.empty()) {
          pres.push_back({{{pres[static_cast<size_t>(vx.id)].writers[0].layer, d.module}}, {}});
          as_space(y, Kind::kPre, static_cast<int>(pres.size()) - 1);
        } else {
          escape(x);
        }
        break;
      case Op::kAdd: {
        const int x2 = d.in[1];
        const Val v2 = val[static_cast<size_t>(x2)];
        auto ok = [](const Val& v) { return v.kind == Kind::kPre || v.kind == Kind::kSpace; };
        if (ok(vx) && ok(v2) && shape(x) == shape(x2) && shape(x) == shape(y)) {
          Pre p;
          for (const Val& v : {vx, v2}) {
            if (v.kind == Kind::kPre) {
              const Pre& q = pres[static_cast<size_t>(v.id)];
              p.writers.insert(p.writers.end(), q.writers.begin(), q.writers.end());
              p.spaces.insert(p.spaces.end(), q.spaces.begin(), q.spaces.end());
            } else {
              p.spaces.push_back(v.id);
            }
          }
          pres.push_back(p);
          as_space(y, Kind::kPre, static_cast<int>(pres.size()) - 1);
        } else {
          escape_inputs();
        }
        break;
      }
      case Op::kRelu:
      case Op::kClip: {
        bool relu = d.op == Op::kRelu;
        if (d.op == Op::kClip) {
          const double mn = d.in.size() > 1 && d.in[1] >= 0 ? (IsConst(d.in[1]) ? Const(d.in[1]).item<double>() : -1.0) : d.min;
          relu = mn >= 0 && shape(x).size() >= 2;
        }
        if (relu && vx.kind == Kind::kPre && shape(x).size() >= 2) {
          const Pre& p = pres[static_cast<size_t>(vx.id)];
          const int s = new_space(shape(x)[1]);
          spaces[static_cast<size_t>(s)].writers = p.writers;
          for (int o : p.spaces) merge(s, o);
          as_space(y, Kind::kSpace, find(s));
        } else if (relu && vx.kind == Kind::kSpace) {
          as_space(y, Kind::kSpace, vx.id);
        } else {
          escape_inputs();
        }
        break;
      }
      case Op::kMaxPool:
      case Op::kIdentity:
        if (vx.kind == Kind::kSpace || vx.kind == Kind::kPre) {
          val[static_cast<size_t>(y)] = vx;
        } else {
          escape_inputs();
        }
        break;
      case Op::kAvgPool:
      case Op::kGlobalAvgPool:
      case Op::kGlobalMaxPool:
        if (vx.kind == Kind::kSpace) {
          val[static_cast<size_t>(y)] = vx;
        } else {
          escape_inputs();
        }
        break;
      case Op::kFlatten:
      case Op::kReshape: {
        const auto& si = shape(x);
        const auto& so = shape(y);
        if (vx.kind == Kind::kSpace && si.size() == 4 && so.size() == 2 && so[0] == si[0] && so[1] == si[1] * si[2] * si[3]) {
          val[static_cast<size_t>(y)] = {Kind::kFlat, vx.id, si[2] * si[3]};
        } else if (vx.kind == Kind::kSpace && si == so) {
          val[static_cast<size_t>(y)] = vx;
        } else {
          escape_inputs();
        }
        if (d.in.size() > 1) escape(d.in[1]);
        break;
      }
      case Op::kConcat: {
        bool all = shape(y).size() >= 2 && (d.axis == 1 || d.axis == 1 - static_cast<int64_t>(shape(y).size()));
        for (int s : d.in) all = all && val[static_cast<size_t>(s)].kind == Kind::kSpace;
        if (!all) {
          escape_inputs();
          break;
        }
        const int t = new_space(shape(y)[1]);
        int64_t offset = 0;
        for (int s : d.in) {
          spaces[static_cast<size_t>(find(val[static_cast<size_t>(s)].id))].passes.push_back({t, offset});
          offset += shape(s)[1];
        }
        as_space(y, Kind::kSpace, t);
        break;
      }
      case Op::kShape:
        break;  // reads only the shape, not the channels
      default:
        escape_inputs();
    }
  }
  escape(output_);

  // Roots in creation order; a space is out when it (or a space it passes to or from) escaped, or a
  // writer of it escaped.
  std::vector<int> roots;
  for (int s = 0; s < static_cast<int>(spaces.size()); ++s) {
    if (find(s) != s) continue;
    Space& sp = spaces[static_cast<size_t>(s)];
    for (const auto& w : sp.writers) sp.invalid = sp.invalid || escaped.count(w.layer) > 0;
    for (auto& p : sp.passes) {
      p.first = find(p.first);
      if (p.first <= s) sp.invalid = true;
    }
    roots.push_back(s);
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (int s : roots) {
      Space& sp = spaces[static_cast<size_t>(s)];
      for (const auto& p : sp.passes) {
        Space& t = spaces[static_cast<size_t>(p.first)];
        if (sp.invalid != t.invalid) {
          sp.invalid = t.invalid = true;
          changed = true;
        }
      }
    }
  }
  std::map<int, int> index;
  for (int s : roots) {
    const Space& sp = spaces[static_cast<size_t>(s)];
    if (sp.invalid) continue;
    index[s] = static_cast<int>(spaces_.size());
    ChannelSpace cs;
    cs.name = !sp.writers.empty() ? sp.writers.front().layer : StrCat("concat", s);
    cs.channels = sp.channels;
    cs.writers = sp.writers;
    cs.readers = sp.readers;
    spaces_.push_back(cs);
  }
  for (int s : roots) {
    if (!index.count(s)) continue;
    for (const auto& p : spaces[static_cast<size_t>(s)].passes) {
      spaces_[static_cast<size_t>(index[s])].passes.push_back({index.at(p.first), p.second});
    }
  }
}

// The graph with every layer tensor as its own initializer named as in PyTorch ("conv1.weight"),
// wired into the node that reads it; initializers, Identity and Constant nodes left unread are dropped.
void OnnxModel::Save(const std::string& path, const std::map<std::string, std::string>& metadata) {
  torch::NoGradGuard no_grad;
  onnx::ModelProto out = proto_;
  onnx::GraphProto* g = out.mutable_graph();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // key -> value in ONNX layout
  auto put = [&](const std::string& key, const torch::Tensor& t) { tensors.emplace_back(key, t.detach().cpu()); };
  // A MatMul/Gemm layer's weight [out, in] and bias, in the layout its node reads them.
  auto put_matmul = [&](const std::string& name, const torch::Tensor& w, const torch::Tensor* bias) {
    put(name + ".weight", transposed_.at(name) ? w.t() : w);
    if (bias != nullptr) {
      auto dims = bias_dims_.find(name);
      put(name + ".bias", dims == bias_dims_.end() ? *bias : bias->reshape(dims->second));
    }
  };
  for (const auto& item : named_modules("", false)) {
    const std::string& name = item.key();
    if (auto* c = item.value()->as<torch::nn::Conv2d>(); c && channels_last_.count(name)) {
      put_matmul(name, c->weight.reshape({c->options.out_channels(), c->options.in_channels()}),
                 c->options.bias() ? &c->bias : nullptr);
    } else if (c) {
      put(name + ".weight", c->weight);
      if (c->options.bias()) put(name + ".bias", c->bias);
    } else if (auto* l = item.value()->as<torch::nn::Linear>()) {
      put_matmul(name, l->weight, l->options.bias() ? &l->bias : nullptr);
    } else if (auto* b = item.value()->as<torch::nn::BatchNorm2d>()) {
      put(name + ".weight", b->weight);
      put(name + ".bias", b->bias);
      put(name + ".running_mean", b->running_mean);
      put(name + ".running_var", b->running_var);
    }
  }
  // Rewire, then drop what nothing reads any more.
  std::set<std::string> names;
  for (const auto& t : g->initializer()) names.insert(t.name());
  for (const auto& n : g->node()) names.insert(n.output().begin(), n.output().end());
  std::vector<std::pair<std::string, const torch::Tensor*>> fresh;
  for (const auto& [key, t] : tensors) {
    auto ref = refs_.find(key);
    XBAR_CHECK(ref != refs_.end(), "no ONNX input for ", key);
    std::string name = key;
    while (names.count(name) && name != g->node(ref->second.first).input(ref->second.second)) name += "_";
    names.insert(name);
    g->mutable_node(ref->second.first)->set_input(ref->second.second, name);
    fresh.emplace_back(name, &t);
  }
  for (bool changed = true; changed;) {
    changed = false;
    std::set<std::string> read;
    for (const auto& n : g->node()) read.insert(n.input().begin(), n.input().end());
    for (const auto& o : g->output()) read.insert(o.name());
    for (int i = g->node_size() - 1; i >= 0; --i) {
      const auto& n = g->node(i);
      if ((n.op_type() == "Identity" || n.op_type() == "Constant") &&
          std::none_of(n.output().begin(), n.output().end(), [&](const std::string& o) { return read.count(o) > 0; })) {
        g->mutable_node()->DeleteSubrange(i, 1);
        changed = true;
      }
    }
    for (int i = g->initializer_size() - 1; i >= 0; --i) {
      if (!read.count(g->initializer(i).name())) {
        g->mutable_initializer()->DeleteSubrange(i, 1);
        changed = true;
      }
    }
    for (int i = g->input_size() - 1; i >= 0; --i) {
      if (!read.count(g->input(i).name())) g->mutable_input()->DeleteSubrange(i, 1);
    }
  }
  std::set<std::string> present;
  for (const auto& t : g->initializer()) present.insert(t.name());
  for (const auto& [name, t] : fresh) {
    onnx::TensorProto* tp = nullptr;
    if (present.count(name)) {
      for (auto& i : *g->mutable_initializer()) {
        if (i.name() == name) tp = &i;
      }
    } else {
      tp = g->add_initializer();
      tp->set_name(name);
    }
    ToProto(*t, tp);
  }
  for (const auto& [k, value] : metadata) {
    onnx::StringStringEntryProto* e = nullptr;
    for (auto& p : *out.mutable_metadata_props()) {
      if (p.key() == k) e = &p;
    }
    if (!e) {
      e = out.add_metadata_props();
      e->set_key(k);
    }
    e->set_value(value);
  }
  std::string bytes;
  XBAR_CHECK(out.SerializeToString(&bytes), "ONNX serialisation failed");
  WriteFileAtomic(path, bytes);
}

}  // namespace

const std::vector<std::string>& OnnxSupportedOps() {
  static const std::vector<std::string> ops = [] {
    std::vector<std::string> v = {"Constant"};
    for (const auto& [name, op] : OpTable()) v.push_back(name);
    std::sort(v.begin(), v.end());
    return v;
  }();
  return ops;
}

bool LooksLikeOnnx(const std::string& path, const std::string& bytes) {
  if (path.size() >= 5 && Lower(path.substr(path.size() - 5)) == ".onnx") return true;
  return !bytes.empty() && bytes[0] == 0x08 && (bytes.size() < 9 || bytes[8] != '{');
}

std::shared_ptr<Model> LoadOnnxModelFromBytes(const std::string& bytes, const std::string& path) {
  try {
    return std::make_shared<OnnxModel>(bytes, path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw InputError(StrCat(path, ": cannot import the ONNX graph: ", msg.substr(0, msg.find('\n'))));
  }
}

std::shared_ptr<Model> LoadOnnxModel(const std::string& path) { return LoadOnnxModelFromBytes(ReadFile(path), path); }

OnnxInfo ReadOnnxInfo(const std::string& path) {
  auto m = LoadOnnxModel(path);
  return static_cast<const OnnxModel&>(*m).info();
}

const OnnxInfo& OnnxModelInfo(const Model& m) {
  const auto* o = dynamic_cast<const OnnxModel*>(&m);
  XBAR_CHECK(o != nullptr, "not an ONNX model");
  return o->info();
}

void SaveOnnx(Model& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
  auto* o = dynamic_cast<OnnxModel*>(&model);
  if (!o) {
    throw ConfigError(StrCat("ONNX export: model '", model.arch(), "' was not imported from ONNX; zoo models are "
                             "saved as safetensors (PyTorch names, docs/MODELS.md)"));
  }
  o->Save(path, metadata);
}

}  // namespace xbar
