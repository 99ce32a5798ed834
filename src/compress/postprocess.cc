#include "xbar/compress/postprocess.h"

#include <map>

#include "xbar/core/error.h"

namespace xbar {
namespace {

int64_t CountNonzero(Model& model) {
  int64_t n = 0;
  for (const auto& l : model.layers()) n += model.LayerWeight(l.name).ne(0).sum().item<int64_t>();
  return n;
}

class Params {
 public:
  explicit Params(Model& m) {
    for (const auto& p : m.named_parameters()) t_[p.key()] = p.value();
    for (const auto& b : m.named_buffers()) t_[b.key()] = b.value();
  }
  torch::Tensor Get(const std::string& name) const {
    auto it = t_.find(name);
    return it == t_.end() ? torch::Tensor() : it->second;
  }
  // The weight as [out, in*kh*kw]: row j = filter j, column k = GEMM row k.
  torch::Tensor Weight2d(const std::string& layer) const {
    torch::Tensor w = Get(layer + ".weight");
    XBAR_CHECK(w.defined(), "no weight for layer ", layer);
    return w.view({w.size(0), -1});
  }

 private:
  std::map<std::string, torch::Tensor> t_;
};

// Per output channel: the value the writer produces when its filter is zero (bias through BN).
torch::Tensor ConstantOutput(const Params& p, const ChannelSpace::Writer& w, int64_t channels) {
  torch::Tensor c = p.Get(w.layer + ".bias");
  c = c.defined() ? c.detach().to(torch::kFloat64).cpu() : torch::zeros({channels}, torch::kFloat64);
  if (!w.bn.empty()) {
    const auto g = p.Get(w.bn + ".weight").detach().to(torch::kFloat64).cpu();
    const auto b = p.Get(w.bn + ".bias").detach().to(torch::kFloat64).cpu();
    const auto mean = p.Get(w.bn + ".running_mean").detach().to(torch::kFloat64).cpu();
    const auto var = p.Get(w.bn + ".running_var").detach().to(torch::kFloat64).cpu();
    c = (c - mean) / torch::sqrt(var + 1e-5) * g + b;
  }
  return c;
}

}  // namespace

int64_t Purify(Model& model, const std::vector<std::string>& layers, double threshold) {
  if (threshold <= 0) return 0;
  torch::NoGradGuard no_grad;
  Params p(model);
  int64_t removed = 0;
  for (const auto& name : layers) {
    torch::Tensor w = p.Weight2d(name);
    for (int dim : {1, 0}) {  // filters (norm over a row of w), then input rows (over a column)
      torch::Tensor norm = w.square().sum(dim);
      const double mean = norm.mean().item<double>();
      torch::Tensor weak = norm.gt(0).logical_and(norm.lt(threshold * mean));
      removed += weak.sum().item<int64_t>();
      w.mul_((dim == 1 ? weak.unsqueeze(1) : weak.unsqueeze(0)).logical_not().to(w.scalar_type()));
    }
  }
  return removed;
}

PathReport RemoveUnusedPaths(Model& model) {
  torch::NoGradGuard no_grad;
  PathReport report;
  const int64_t before = CountNonzero(model);
  const std::vector<ChannelSpace> spaces = model.ChannelSpaces();
  Params p(model);
  // Rows of reader r that channel c of its space covers.
  auto rows_of = [&](const ChannelSpace::Reader& r, int64_t c) {
    return p.Weight2d(r.layer).narrow(1, c * r.rows_per_channel, r.rows_per_channel);
  };
  std::vector<std::vector<char>> dead(spaces.size()), unused(spaces.size());
  for (int iteration = 0; iteration < 1000; ++iteration) {
    bool changed = false;
    // Forward: dead channels, sources before targets (passes only go forward).
    for (size_t s = 0; s < spaces.size(); ++s) {
      const ChannelSpace& sp = spaces[s];
      dead[s].assign(static_cast<size_t>(sp.channels), 1);
      for (const auto& w : sp.writers) {
        torch::Tensor filter_zero = p.Weight2d(w.layer).ne(0).any(1).logical_not().cpu();
        torch::Tensor quiet = ConstantOutput(p, w, sp.channels).le(0);
        auto ok = filter_zero.logical_and(quiet);
        for (int64_t c = 0; c < sp.channels; ++c) dead[s][static_cast<size_t>(c)] &= ok[c].item<bool>() ? 1 : 0;
      }
      for (size_t src = 0; src < s; ++src) {
        for (const auto& pass : spaces[src].passes) {
          if (pass.to != static_cast<int>(s)) continue;
          for (int64_t c = 0; c < spaces[src].channels; ++c) {
            dead[s][static_cast<size_t>(c + pass.offset)] &= dead[src][static_cast<size_t>(c)];
          }
        }
      }
      for (int64_t c = 0; c < sp.channels; ++c) {
        if (!dead[s][static_cast<size_t>(c)]) continue;
        bool counted = false;
        for (const auto& r : sp.readers) {
          torch::Tensor rows = rows_of(r, c);
          if (rows.ne(0).any().item<bool>()) {
            rows.zero_();
            changed = true;
            if (!counted) ++report.dead_channels;
            counted = true;
          }
        }
      }
    }
    // Backward: unused channels, targets before sources.
    for (size_t s = spaces.size(); s-- > 0;) {
      const ChannelSpace& sp = spaces[s];
      unused[s].assign(static_cast<size_t>(sp.channels), 1);
      for (const auto& r : sp.readers) {
        torch::Tensor w = p.Weight2d(r.layer).ne(0).any(0).cpu();  // per GEMM row
        auto read = w.view({sp.channels, r.rows_per_channel}).any(1);
        for (int64_t c = 0; c < sp.channels; ++c) unused[s][static_cast<size_t>(c)] &= read[c].item<bool>() ? 0 : 1;
      }
      for (const auto& pass : sp.passes) {
        for (int64_t c = 0; c < sp.channels; ++c) {
          unused[s][static_cast<size_t>(c)] &= unused[static_cast<size_t>(pass.to)][static_cast<size_t>(c + pass.offset)];
        }
      }
      for (int64_t c = 0; c < sp.channels; ++c) {
        if (!unused[s][static_cast<size_t>(c)]) continue;
        bool counted = false;
        for (const auto& w : sp.writers) {
          torch::Tensor filter = p.Weight2d(w.layer)[c];
          if (!filter.ne(0).any().item<bool>()) continue;
          filter.zero_();
          if (torch::Tensor b = p.Get(w.layer + ".bias"); b.defined()) b[c].zero_();
          if (!w.bn.empty()) {
            p.Get(w.bn + ".weight")[c].zero_();
            p.Get(w.bn + ".bias")[c].zero_();
          }
          changed = true;
          if (!counted) ++report.unused_channels;
          counted = true;
        }
      }
    }
    if (!changed) break;
  }
  report.weights_zeroed = before - CountNonzero(model);
  return report;
}

}  // namespace xbar
