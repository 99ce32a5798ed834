#include "xbar/models/model.h"

#include "xbar/core/error.h"

namespace xbar {

const LayerInfo* Model::FindLayer(const std::string& name) const {
  for (const auto& l : layers_) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

torch::Tensor Model::LayerWeight(const std::string& name) {
  // The dictionary named_parameters() returns must outlive the pointer find() gives into it
  // (AddressSanitizer: heap-use-after-free when it was a temporary).
  const auto params = named_parameters();
  const torch::Tensor* p = params.find(name + ".weight");
  XBAR_CHECK(p != nullptr, "model ", arch_, " has no layer '", name, "'");
  return *p;
}

void Model::FinalizeLayers(const std::vector<std::string>& order) {
  layers_.clear();
  index_.clear();
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    LayerInfo info;
    info.name = item.key();
    const torch::nn::Module* ptr = item.value().get();
    if (const auto* c = dynamic_cast<const torch::nn::Conv2dImpl*>(ptr)) {
      const auto& o = c->options;
      info.kind = LayerKind::kConv2d;
      info.in_channels = o.in_channels();
      info.out_channels = o.out_channels();
      info.kernel_h = (*o.kernel_size())[0];
      info.kernel_w = (*o.kernel_size())[1];
      info.stride = (*o.stride())[0];
      XBAR_CHECK((*o.stride())[0] == (*o.stride())[1], "non-square strides are not supported");
      const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
      XBAR_CHECK(pad != nullptr && (**pad)[0] == (**pad)[1], "only explicit square padding is supported");
      info.padding = (**pad)[0];
      info.groups = o.groups();
      info.dilation = (*o.dilation())[0];
      XBAR_CHECK((*o.dilation())[0] == (*o.dilation())[1], "non-square dilations are not supported");
      info.bias = o.bias();
    } else if (const auto* l = dynamic_cast<const torch::nn::LinearImpl*>(ptr)) {
      info.kind = LayerKind::kLinear;
      info.in_channels = l->options.in_features();
      info.out_channels = l->options.out_features();
      info.bias = l->options.bias();
    } else {
      continue;
    }
    index_[ptr] = layers_.size();
    layers_.push_back(std::move(info));
  }
  if (order.empty()) return;
  std::unordered_map<std::string, size_t> rank;
  for (size_t i = 0; i < order.size(); ++i) rank[order[i]] = i;
  std::vector<size_t> perm(layers_.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = i;
  auto pos = [&](size_t i) {
    auto it = rank.find(layers_[i].name);
    return it == rank.end() ? order.size() + i : it->second;
  };
  std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return pos(a) < pos(b); });
  std::vector<LayerInfo> sorted;
  std::vector<size_t> new_index(layers_.size());
  for (size_t k = 0; k < perm.size(); ++k) {
    sorted.push_back(layers_[perm[k]]);
    new_index[perm[k]] = k;
  }
  layers_ = std::move(sorted);
  for (auto& [ptr, i] : index_) i = new_index[i];
}

torch::Tensor Model::Run(const torch::nn::Module* m, const torch::Tensor& x, const LayerFn& ideal) {
  if (!override_) return ideal(x);
  auto it = index_.find(m);
  XBAR_CHECK(it != index_.end(), "layer of ", arch_, " not registered; call FinalizeLayers()");
  return override_(layers_[it->second], x, ideal);
}

torch::Tensor Model::RunConv(torch::nn::Conv2dImpl& m, const torch::Tensor& x) {
  return Run(&m, x, [&m](const torch::Tensor& in) { return m.forward(in); });
}

torch::Tensor Model::RunLinear(torch::nn::LinearImpl& m, const torch::Tensor& x) {
  return Run(&m, x, [&m](const torch::Tensor& in) { return m.forward(in); });
}

}  // namespace xbar
