// The compression pipeline: ADMM, hard projection, post-processing, masked retraining, report.
#include "xbar/compress/compress.h"

#include "xbar/crossbar/plan.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

#include "xbar/compress/postprocess.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/crossbar/plan.h"
#include "xbar/models/state_dict.h"
#include "xbar/train/trainer.h"

namespace xbar {
namespace {

// Crossbar view of a CPU float tensor [out, ...] (contiguous).
CrossbarMatrix View(torch::Tensor& t) {
  XBAR_CHECK(t.is_contiguous() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32, "need a CPU float tensor");
  return {t.data_ptr<float>(), t.numel() / t.size(0), t.size(0)};
}

torch::Tensor CpuCopy(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone(); }

// Project(t) as a new tensor on t's device; *scale receives the quantisation step.
torch::Tensor ProjectTensor(const torch::Tensor& t, const LayerConstraints& c, double* scale) {
  torch::Tensor cpu = CpuCopy(t);
  const ProjectionResult r = Project(View(cpu), c);
  if (scale != nullptr) *scale = r.scale;
  return cpu.to(t.device());
}

// The same rounding as QuantizeWithScale, as tensor ops (any device).
torch::Tensor QuantizeTensor(const torch::Tensor& w, int bits, double scale) {
  const double n = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  const auto s_f = static_cast<float>(scale), inv = static_cast<float>(1.0 / scale);
  torch::Tensor q = torch::clamp_max(torch::floor(w.abs() * inv + 0.5f), n) * s_f;
  return torch::copysign(q, w);
}

std::string Percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100.0 * x);
  return buf;
}

// ADMM state of every compressed layer: Z (projection), U (scaled dual), rho.
class Admm {
 public:
  Admm(Model& model, const CompressSpec& spec) : spec_(spec) {
    for (const auto& [name, c] : spec.layers) layers_.push_back({name, c, model.LayerWeight(name), {}, {}, spec.rho});
  }

  void Start() {
    torch::NoGradGuard no_grad;
    for (auto& l : layers_) {
      l.z = ProjectTensor(l.w, l.c, nullptr);
      l.u = torch::zeros_like(l.w);
      l.rho = spec_.rho;
    }
  }

  // d/dW of rho/2 ||W - Z + U||^2.
  void AddPenaltyGradients() {
    torch::NoGradGuard no_grad;
    for (auto& l : layers_) {
      if (l.w.grad().defined()) l.w.mutable_grad().add_(l.w - l.z + l.u, l.rho);
    }
  }

  // Z-step, U-step, rho growth. Returns the relative primal residual ||W - Z|| / ||W|| before it.
  double Round() {
    torch::NoGradGuard no_grad;
    double diff = 0, norm = 0;
    for (auto& l : layers_) {
      l.z = ProjectTensor(l.w + l.u, l.c, nullptr);
      l.u.add_(l.w - l.z);
      diff += (l.w - l.z).square().sum().item<double>();
      norm += l.w.square().sum().item<double>();
      l.rho = std::min(l.rho * spec_.rho_growth, spec_.rho_max);
    }
    return norm > 0 ? std::sqrt(diff / norm) : 0.0;
  }

  NamedTensors State() const {
    NamedTensors out;
    for (const auto& l : layers_) {
      out.emplace_back("admm." + l.name + ".z", l.z);
      out.emplace_back("admm." + l.name + ".u", l.u);
      out.emplace_back("admm." + l.name + ".rho", torch::tensor(l.rho, torch::kFloat64));
    }
    return out;
  }

  void Load(const SafeTensors& st, const std::string& prefix, const std::string& source) {
    for (auto& l : layers_) {
      for (const char* part : {".z", ".u", ".rho"}) {
        const std::string key = prefix + "admm." + l.name + part;
        if (!st.tensors.count(key)) throw InputError(StrCat(source, ": checkpoint lacks ADMM state '", key, "'"));
      }
      l.z = FromRaw(st.tensors.at(prefix + "admm." + l.name + ".z")).to(l.w.device());
      l.u = FromRaw(st.tensors.at(prefix + "admm." + l.name + ".u")).to(l.w.device());
      l.rho = FromRaw(st.tensors.at(prefix + "admm." + l.name + ".rho")).item<double>();
    }
  }

 private:
  struct Layer {
    std::string name;
    LayerConstraints c;
    torch::Tensor w, z, u;
    double rho;
  };
  const CompressSpec& spec_;
  std::vector<Layer> layers_;
};

// Keeps every constraint during retraining: pruned weights stay zero, signs stay, quantised
// weights stay on their fixed-scale levels (the optimiser updates a float master copy).
class MaskedTraining {
 public:
  MaskedTraining(Model& model, const CompressSpec& spec, const std::map<std::string, double>& scales) {
    torch::NoGradGuard no_grad;
    for (const auto& l : model.layers()) {
      Layer x;
      x.name = l.name;
      x.w = model.LayerWeight(l.name);
      x.mask = x.w.ne(0).to(x.w.scalar_type());
      auto it = spec.layers.find(l.name);
      if (it != spec.layers.end()) {
        x.keep_sign = it->second.polarize_fragment > 0;
        x.bits = it->second.quantize_bits;
        x.scale = scales.count(l.name) ? scales.at(l.name) : 0.0;
      }
      x.sign = x.w.sign();
      if (x.bits > 0) x.master = x.w.detach().clone();
      x.needed = x.keep_sign || x.bits > 0 || x.mask.lt(1).any().item<bool>();
      if (x.needed) layers_.push_back(std::move(x));
    }
  }

  void AfterBackward() {  // the optimiser steps the float masters, with gradients taken at the levels
    torch::NoGradGuard no_grad;
    for (auto& l : layers_) {
      if (l.bits > 0) l.w.copy_(l.master);
    }
  }

  void AfterStep() {
    torch::NoGradGuard no_grad;
    for (auto& l : layers_) {
      torch::Tensor m = l.w * l.mask;
      if (l.keep_sign) m = l.sign * torch::relu(l.sign * m);
      if (l.bits > 0) {
        l.master.copy_(m);
        l.w.copy_(QuantizeTensor(m, l.bits, l.scale));
      } else {
        l.w.copy_(m);
      }
    }
  }

  NamedTensors State() const {
    NamedTensors out;
    for (const auto& l : layers_) {
      if (l.bits > 0) out.emplace_back("master." + l.name, l.master);
    }
    return out;
  }

  void Load(const SafeTensors& st, const std::string& prefix, const std::string& source) {
    for (auto& l : layers_) {
      if (l.bits == 0) continue;
      const std::string key = prefix + "master." + l.name;
      if (!st.tensors.count(key)) throw InputError(StrCat(source, ": checkpoint lacks '", key, "'"));
      l.master = FromRaw(st.tensors.at(key)).to(l.w.device());
    }
  }

 private:
  struct Layer {
    std::string name;
    torch::Tensor w, mask, sign, master;
    bool keep_sign = false, needed = false;
    int bits = 0;
    double scale = 0.0;
  };
  std::vector<Layer> layers_;
};

std::vector<std::string> LayerNames(const CompressSpec& spec) {
  std::vector<std::string> names;
  for (const auto& [name, c] : spec.layers) names.push_back(name);
  return names;
}

// Hard projection of every compressed layer; returns the quantisation scales.
std::map<std::string, double> HardProject(Model& model, const CompressSpec& spec) {
  torch::NoGradGuard no_grad;
  std::map<std::string, double> scales;
  for (const auto& [name, c] : spec.layers) {
    torch::Tensor w = model.LayerWeight(name);
    double s = 0;
    w.copy_(ProjectTensor(w, c, &s));
    if (c.quantize_bits > 0) scales[name] = s;
  }
  return scales;
}

TrainOptions PhaseOptions(const CompressOptions& o, const std::string& phase) {
  TrainOptions t;
  t.run_dir = o.run_dir.empty() ? "" : JoinPath(o.run_dir, phase);
  if (!t.run_dir.empty()) MakeDirs(t.run_dir);
  t.resume = o.resume;
  t.seed = DeriveSeed(o.seed, "compress." + phase);
  t.device = o.device;
  t.fingerprint = o.fingerprint;
  t.evaluate_test = false;
  t.data_parallel = o.data_parallel;
  return t;
}

double TestAccuracy(Model& model, const DataBundle& data, const CompressSpec& spec, torch::Device device) {
  return Evaluate(model, data.test, spec.train.eval_batch_size, device).accuracy;
}

// Masked retraining for `epochs` at `lr` (cosine); resumable through `phase`'s checkpoint.
void Retrain(Model& model, const DataBundle& data, const CompressSpec& spec, const std::map<std::string, double>& scales,
             int64_t epochs, double lr, const CompressOptions& o, const std::string& phase) {
  if (epochs <= 0) return;
  MaskedTraining masked(model, spec, scales);
  TrainSpec ts = spec.train;
  ts.epochs = epochs;
  ts.lr = lr;
  ts.schedule = "cosine";
  ts.warmup_epochs = 0;
  TrainOptions t = PhaseOptions(o, phase);
  t.after_backward = [&] { masked.AfterBackward(); };
  t.after_step = [&] { masked.AfterStep(); };
  t.extra_state = [&] { return masked.State(); };
  t.load_extra_state = [&](const SafeTensors& st, const std::string& prefix, const std::string& source) {
    masked.Load(st, prefix, source);
  };
  Train(model, data, ts, t);
}

// A copy of a model's parameters and buffers, put back by Restore().
class StateSnapshot {
 public:
  explicit StateSnapshot(Model& model) : state_(StateDict(model)) {
    for (const auto& [n, t] : state_) saved_.push_back(t.detach().clone());
  }
  void Restore() const {
    torch::NoGradGuard g;
    for (size_t i = 0; i < saved_.size(); ++i) state_[i].second.copy_(saved_[i]);
  }

 private:
  std::vector<std::pair<std::string, torch::Tensor>> state_;
  std::vector<torch::Tensor> saved_;
};

// The sparsity search (issue 3 item 4): for each candidate ratio, hard-project the dense model
// with that sparsity on the searched layers, retrain masked for a few epochs and measure the
// validation accuracy; keep the largest ratio within the loss budget, then bisect towards the
// next larger candidate.
double SearchSparsity(Model& model, const DataBundle& data, CompressSpec& spec, const CompressOptions& o,
                      double dense_val, nlohmann::json* trace) {
  const StateSnapshot dense(model);
  auto restore = [&] { dense.Restore(); };
  const Dataset& eval_set = data.val.size() > 0 ? data.val : data.test;
  int step = 0;
  auto try_ratio = [&](double ratio) {
    CompressSpec s = spec;
    for (const auto& name : spec.search_layers) s.layers[name].sparsity = ratio;
    auto scales = HardProject(model, s);
    CompressOptions no_ckpt = o;
    no_ckpt.run_dir = "";
    Retrain(model, data, s, scales, spec.search_epochs, spec.retrain_lr, no_ckpt, StrCat("search", step++));
    const double acc = Evaluate(model, eval_set, spec.train.eval_batch_size, o.device).accuracy;
    restore();
    trace->push_back({{"sparsity", ratio}, {"accuracy", acc}, {"loss", dense_val - acc}});
    std::fprintf(stderr, "search: sparsity %.4f -> %s (dense %s)\n", ratio, Percent(acc).c_str(), Percent(dense_val).c_str());
    return dense_val - acc <= spec.search_max_loss;
  };
  double best = 0.0, fail = -1.0;
  for (double r : spec.search_ratios) {
    if (!try_ratio(r)) {
      fail = r;
      break;
    }
    best = r;
  }
  if (fail > 0) {
    double lo = best, hi = fail;
    for (int64_t i = 0; i < spec.search_refine_steps; ++i) {
      const double mid = 0.5 * (lo + hi);
      (try_ratio(mid) ? lo : hi) = mid;
    }
    best = lo;
  }
  for (const auto& name : spec.search_layers) spec.layers[name].sparsity = best;
  return best;
}

}  // namespace

double CompressResult::accuracy(const std::string& phase) const {
  for (const auto& p : phases) {
    if (p.phase == phase) return p.accuracy;
  }
  return 0.0;
}

int64_t DenseCrossbars(int64_t rows, int64_t cols, const Tiling& t) {
  return ((rows + t.rows - 1) / t.rows) * ((cols + t.cols - 1) / t.cols);
}

int64_t CompactedCrossbars(const CrossbarMatrix& m, const Tiling& t) {
  // Columns first: keep non-zero columns, group them by C, count rows non-zero in each group.
  auto columns_first = [&](bool transpose) {
    const int64_t outer = transpose ? m.rows : m.cols, inner = transpose ? m.cols : m.rows;
    const int64_t group = transpose ? t.rows : t.cols, pack = transpose ? t.cols : t.rows;
    auto at = [&](int64_t o, int64_t i) { return transpose ? m.at(o, i) : m.at(i, o); };
    std::vector<int64_t> live;
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        if (at(o, i) != 0.0f) {
          live.push_back(o);
          break;
        }
      }
    }
    int64_t tiles = 0;
    for (size_t g0 = 0; g0 < live.size(); g0 += static_cast<size_t>(group)) {
      int64_t used = 0;
      for (int64_t i = 0; i < inner; ++i) {
        for (size_t g = g0; g < std::min(live.size(), g0 + static_cast<size_t>(group)); ++g) {
          if (at(live[g], i) != 0.0f) {
            ++used;
            break;
          }
        }
      }
      tiles += (used + pack - 1) / pack;
    }
    return tiles;
  };
  return std::min(columns_first(false), columns_first(true));
}

// Physical crossbars of one layer's weights `w` under the hardware description (the mapping planner).
int64_t LayerCrossbars(const LayerInfo& l, const torch::Tensor& w, const CompressSpec& spec, double stored_scale,
                       bool compact) {
  const torch::Tensor w2d = w.reshape({l.out_channels, -1});
  const double scale = WeightScale(w2d, spec.map.weight_bits, stored_scale);
  MappingSpec map = spec.map;
  map.compact = compact;
  const int64_t per_group = l.out_channels / l.groups;
  int64_t n = 0;
  for (int64_t g = 0; g < l.groups; ++g) {
    n += PlanLayer(l.groups == 1 ? l.name : StrCat(l.name, "#", g), w2d.narrow(0, g * per_group, per_group), scale, map)
             .crossbars;
  }
  return n;
}

bool IsCrossbarStructure(Structure s) {
  return s == Structure::kCrossbarRow || s == Structure::kCrossbarColumn || s == Structure::kCrossbarBlock ||
         s == Structure::kCrossbarTile;
}

// A layer's constraints that fix zeros whatever the values: its structure with this sparsity and
// column budget, without quantisation and polarisation.
static LayerConstraints PruningOnly(const LayerConstraints& c, double sparsity, int64_t column_budget) {
  LayerConstraints only = c;
  only.sparsity = sparsity;
  only.column_budget = column_budget;
  only.quantize_bits = 0;
  only.polarize_fragment = 0;
  return only;
}

// Named in allocation.json; an allocation made by another method is not reused by --resume.
constexpr const char* kAllocationMethod =
    "one-shot sensitivity per layer and candidate sparsity, greedy by units saved per point of loss, "
    "units counted after unused-path removal when it is on";

// compress.target_ratio: per-layer sparsities from each layer's one-shot sensitivity. Every layer
// of `spec.search_layers` is projected alone at each candidate sparsity (its other constraints
// included) and the validation accuracy measured; then, from all-dense, the move (a layer to a
// higher candidate) that saves the most weights (or crossbars) per point of measured loss is taken
// until the total meets the target. Returns the allocation for compress.json.
// `measured`: an earlier allocation of the same settings (allocation.json's "allocation"), or the
// one-shot losses an interrupted allocation had measured, which are taken instead of measured again
// where it has them. `save_partial` receives the losses measured so far after every evaluation (for
// allocation.partial.json) and returns the file it wrote them to, or "". Interruptible (SIGINT,
// SIGTERM) between evaluations.
nlohmann::json AllocateSparsity(Model& model, const DataBundle& data, CompressSpec& spec, torch::Device device,
                                const nlohmann::json* measured,
                                const std::function<std::string(const nlohmann::json&)>& save_partial,
                                const std::function<void(int64_t)>& on_evaluation) {
  static const std::vector<double> kRatios = {0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99};
  torch::NoGradGuard no_grad;
  const Dataset& pool = data.val.size() > 0 ? data.val : data.test;
  const int64_t n = std::min<int64_t>(spec.allocation_images, pool.size());
  const Dataset eval_set{pool.images.narrow(0, 0, n), pool.labels.narrow(0, 0, n)};
  // The earlier allocation's one-shot loss of a layer at a sparsity, or NaN.
  auto measured_loss = [&](const std::string& layer, double sparsity) -> double {
    if (measured == nullptr || !measured->contains("layers") || !measured->at("layers").contains(layer)) return NAN;
    for (const auto& c : measured->at("layers").at(layer).value("candidates", nlohmann::json::array())) {
      if (std::abs(c.value("sparsity", -1.0) - sparsity) < 1e-9 && c.contains("one_shot_loss")) {
        return c.at("one_shot_loss").get<double>();
      }
    }
    return NAN;
  };
  const bool reuse_base = measured != nullptr && measured->contains("accuracy_before") && measured->value("images", -1) == n;
  if (measured != nullptr && !reuse_base) measured = nullptr;  // other images: measure everything again
  const double base = reuse_base ? measured->at("accuracy_before").get<double>()
                                 : Evaluate(model, eval_set, spec.train.eval_batch_size, device).accuracy;
  bool crossbars = false;
  for (const auto& name : spec.search_layers) crossbars = crossbars || IsCrossbarStructure(spec.layers.at(name).structure);
  const std::set<std::string> free(spec.search_layers.begin(), spec.search_layers.end());

  // A layer's weights as its cost counts them, under constraints c (nullptr: none) from its input
  // weights w0, with the quantisation step in *scale (0: not quantised). For a crossbar target the
  // projection, whose physical crossbars are counted. Otherwise the pruning mask alone: pruning
  // (structure and sparsity) and a column budget fix zeros; quantisation and polarisation zero
  // further weights only as the values fall — many on the dense network, far fewer after ADMM has
  // polarised it — so counting those would promise a ratio the compressed network does not reach.
  // `projected`, when the caller has it: ProjectTensor(w0, *c, scale), with *scale set by it.
  auto counted_weights = [&](const LayerInfo& l, const torch::Tensor& w0, const LayerConstraints* c, double* scale,
                             const torch::Tensor& projected = {}) {
    if (crossbars && c != nullptr) {
      torch::Tensor w = projected.defined() ? projected : ProjectTensor(w0, *c, scale);
      if (c->quantize_bits == 0) *scale = 0.0;
      return w;
    }
    *scale = 0.0;
    if (crossbars) return w0;
    // Ties broken as the projection of the input weights breaks them; its zeros made tiny, not
    // zero, so that weights that happen to be zero in the input (an already pruned network) are
    // counted as training may revive them, and the rows the mask keeps stay whole.
    const torch::Tensor revivable = torch::where(w0 == 0, torch::full_like(w0, 1e-30f), w0);
    if (c == nullptr) return revivable;  // trained freely: any weight can end non-zero
    auto pruned = [&](double sparsity, int64_t budget_per_column) {
      return ProjectTensor(revivable, PruningOnly(*c, sparsity, budget_per_column), nullptr);
    };
    torch::Tensor w = pruned(c->sparsity, 0);
    if (c->column_budget > 0) {
      torch::Tensor b = pruned(0.0, c->column_budget);
      if (b.ne(0).sum().item<int64_t>() < w.ne(0).sum().item<int64_t>()) w = b;
    }
    return w;
  };
  auto cost_of = [&](const LayerInfo& l, const torch::Tensor& counted, double scale) -> int64_t {
    return crossbars ? LayerCrossbars(l, counted, spec, scale, spec.map.compact) : counted.ne(0).sum().item<int64_t>();
  };

  // With unused-path removal on, the network keeps fewer units than the layers' costs add up to:
  // a channel that no reader's rows use any more frees the filters (and their crossbars) that write
  // it. The choices are then counted on the network itself: every layer's counted weights, unused
  // paths removed, the rest counted, the network restored. The free layers' counted weights per
  // option are kept while they take at most four copies of the network (the greedy moves change
  // one layer at a time); the fixed layers' always.
  const bool paths = spec.remove_unused_paths;
  std::map<std::pair<std::string, size_t>, std::pair<torch::Tensor, double>> counted_cache;
  std::map<std::string, std::pair<torch::Tensor, double>> fixed_counted;
  std::map<std::string, torch::Tensor> dense_weights;
  int64_t cached = 0, network = 0;
  for (const LayerInfo& l : model.layers()) network += model.LayerWeight(l.name).numel();
  auto remember = [&](const std::pair<std::string, size_t>& key, const torch::Tensor& w, double scale) {
    if (cached + w.numel() > 4 * network) {
      counted_cache.clear();
      cached = 0;
    }
    counted_cache[key] = {w, scale};
    cached += w.numel();
  };

  struct Option {
    double ratio;
    int64_t cost;
    double loss;
  };
  std::map<std::string, std::vector<Option>> options;
  // The one-shot losses known so far, in allocation.json's form: what --resume continues from.
  auto partial = [&] {
    nlohmann::json layers = nlohmann::json::object();
    for (const auto& [name, opts] : options) {
      nlohmann::json table = nlohmann::json::array();
      for (const Option& o : opts) table.push_back({{"sparsity", o.ratio}, {"one_shot_loss", o.loss}});
      layers[name] = {{"candidates", table}};
    }
    return nlohmann::json{{"partial", true}, {"images", n}, {"accuracy_before", base}, {"layers", layers}};
  };
  const int64_t evaluations = static_cast<int64_t>(free.size() * kRatios.size());
  int64_t considered = 0, measured_here = 0;
  Progress bar("allocate", evaluations, stderr, -1, spec.train.log_interval_s);
  int64_t dense = 0, fixed = 0;
  for (const LayerInfo& l : model.layers()) {
    torch::Tensor w = model.LayerWeight(l.name);
    const torch::Tensor w0 = w.detach().clone();
    if (paths) dense_weights[l.name] = w0;
    dense += crossbars ? LayerCrossbars(l, w0, spec, 0.0, false) : w0.numel();
    auto it = spec.layers.find(l.name);
    if (!free.count(l.name)) {  // fixed by the config: its cost as configured
      double s = 0;
      torch::Tensor counted = counted_weights(l, w0, it == spec.layers.end() ? nullptr : &it->second, &s);
      fixed += cost_of(l, counted, s);
      if (paths) fixed_counted[l.name] = {counted, s};
      continue;
    }
    for (size_t k = 0; k < kRatios.size(); ++k) {
      LayerConstraints c = it->second;
      c.sparsity = kRatios[k];
      double s = 0;
      double loss = measured_loss(l.name, c.sparsity);
      torch::Tensor projected;  // evaluated, and for a crossbar target also the weights counted
      if (std::isnan(loss) || crossbars) projected = ProjectTensor(w0, c, &s);
      const bool measure = std::isnan(loss);
      if (measure) {
        if (InterruptRequested()) {
          const std::string file = save_partial ? save_partial(partial()) : "";
          throw InterruptedError(
              StrCat("interrupted during the compress.target_ratio allocation after ", considered, " of ", evaluations,
                     " one-shot evaluations; ",
                     file.empty() ? "nothing was written" : StrCat(file, " keeps them: continue with --resume")));
        }
        w.copy_(projected);
        loss = base - Evaluate(model, eval_set, spec.train.eval_batch_size, device).accuracy;
        w.copy_(w0);
      }
      const torch::Tensor counted = counted_weights(l, w0, &c, &s, projected);
      options[l.name].push_back({c.sparsity, cost_of(l, counted, s), loss});
      if (paths) remember({l.name, k}, counted, s);
      ++considered;
      if (measure) {
        ++measured_here;
        if (save_partial) save_partial(partial());
        if (on_evaluation) on_evaluation(measured_here);
      }
      bar.Update(considered, StrCat(l.name, " at ", c.sparsity, ": one-shot loss ", Percent(loss)));
    }
  }
  bar.Finish(StrCat(measured_here, " measured, ", considered - measured_here, " reused"));
  const double budget = static_cast<double>(dense) / spec.target_ratio;
  std::map<std::string, size_t> at;  // chosen option per layer
  int64_t total = fixed;             // the sum of the layers' costs
  for (const auto& [name, opts] : options) {
    at[name] = 0;
    total += opts[0].cost;
  }

  const std::optional<StateSnapshot> snapshot = paths ? std::optional<StateSnapshot>(std::in_place, model) : std::nullopt;
  auto kept_after_paths = [&](const std::map<std::string, size_t>& choice) -> int64_t {
    std::map<std::string, double> scales;
    for (const LayerInfo& l : model.layers()) {
      double s = 0;
      torch::Tensor w;
      if (!free.count(l.name)) {
        std::tie(w, s) = fixed_counted.at(l.name);
      } else {
        const std::pair<std::string, size_t> key{l.name, choice.at(l.name)};
        auto hit = counted_cache.find(key);
        if (hit == counted_cache.end()) {
          LayerConstraints c = spec.layers.at(l.name);
          c.sparsity = options.at(l.name)[key.second].ratio;
          w = counted_weights(l, dense_weights.at(l.name), &c, &s);
          remember(key, w, s);
        } else {
          std::tie(w, s) = hit->second;
        }
      }
      model.LayerWeight(l.name).copy_(w);
      scales[l.name] = s;
    }
    RemoveUnusedPaths(model);
    int64_t n = 0;
    for (const LayerInfo& l : model.layers()) n += cost_of(l, model.LayerWeight(l.name).detach(), scales[l.name]);
    snapshot->Restore();
    return n;
  };
  auto kept_of = [&](const std::map<std::string, size_t>& choice, int64_t sum) {
    return paths ? kept_after_paths(choice) : sum;
  };
  int64_t kept = kept_of(at, total);

  nlohmann::json steps = nlohmann::json::array();
  while (static_cast<double>(kept) > budget) {
    std::string best_layer;
    size_t best_option = 0;
    double best_gain = -1;
    for (const auto& [name, opts] : options) {
      const Option& now = opts[at[name]];
      for (size_t k = at[name] + 1; k < opts.size(); ++k) {
        const double saved = static_cast<double>(now.cost - opts[k].cost);
        if (saved <= 0) continue;
        const double gain = saved / (std::max(0.0, opts[k].loss - now.loss) + 1e-4);
        if (gain > best_gain) {
          best_gain = gain;
          best_layer = name;
          best_option = k;
        }
      }
    }
    if (best_layer.empty()) {
      throw ConfigError(StrCat("compress.target_ratio: ", spec.target_ratio, "x is out of reach: with every layer at ",
                               kRatios.back(), " sparsity the network keeps ", kept, " of ", dense,
                               crossbars ? " crossbars" : " weights", " (",
                               static_cast<double>(dense) / static_cast<double>(std::max<int64_t>(kept, 1)), "x)"));
    }
    total -= options[best_layer][at[best_layer]].cost - options[best_layer][best_option].cost;
    at[best_layer] = best_option;
    kept = kept_of(at, total);
    steps.push_back({{"layer", best_layer}, {"sparsity", options[best_layer][best_option].ratio}, {"total", kept}});
  }
  // The last move may overshoot: step layers back to lower sparsities while the target still holds,
  // the one that recovers the most measured accuracy first.
  for (bool moved = true; moved;) {
    moved = false;
    std::vector<std::pair<double, std::string>> back;  // (accuracy recovered, layer), most first
    for (const auto& [name, opts] : options) {
      if (at[name] == 0) continue;
      back.emplace_back(opts[at[name]].loss - opts[at[name] - 1].loss, name);
    }
    std::stable_sort(back.begin(), back.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [recovered, name] : back) {
      const auto& opts = options[name];
      const int64_t sum = total + opts[at[name] - 1].cost - opts[at[name]].cost;
      std::map<std::string, size_t> choice = at;
      --choice[name];
      const int64_t k = kept_of(choice, sum);
      if (static_cast<double>(k) > budget) continue;
      total = sum;
      kept = k;
      at = choice;
      steps.push_back({{"layer", name}, {"sparsity", opts[at[name]].ratio}, {"total", kept}, {"back", true}});
      moved = true;
      break;
    }
  }
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& [name, opts] : options) {
    spec.layers[name].sparsity = opts[at[name]].ratio;
    nlohmann::json table = nlohmann::json::array();
    for (const Option& o : opts) table.push_back({{"sparsity", o.ratio}, {"cost", o.cost}, {"one_shot_loss", o.loss}});
    layers[name] = {{"sparsity", opts[at[name]].ratio}, {"cost", opts[at[name]].cost}, {"candidates", table}};
    std::fprintf(stderr, "allocate: %-24s sparsity %.2f (one-shot loss %s)\n", name.c_str(), opts[at[name]].ratio,
                 Percent(opts[at[name]].loss).c_str());
  }
  const double reached = static_cast<double>(dense) / static_cast<double>(std::max<int64_t>(kept, 1));
  std::fprintf(stderr, "allocate: %.2fx of %s before training (target %.2fx%s)\n", reached,
               crossbars ? "crossbars" : "weights", spec.target_ratio, paths ? ", unused paths removed" : "");
  return {{"target_ratio", spec.target_ratio}, {"unit", crossbars ? "crossbars" : "weights"}, {"dense", dense},
          {"kept", kept}, {"kept_layer_sum", total}, {"counts_unused_paths", paths}, {"ratio_one_shot", reached},
          {"images", n}, {"accuracy_before", base}, {"method", kAllocationMethod}, {"layers", layers}, {"steps", steps}};
}

std::vector<LayerReport> ReportLayers(Model& model, const CompressSpec& spec, const std::map<std::string, double>& scales) {
  std::vector<LayerReport> out;
  for (const auto& l : model.layers()) {
    LayerReport r;
    r.name = l.name;
    torch::Tensor w = CpuCopy(model.LayerWeight(l.name));
    CrossbarMatrix m = View(w);
    r.rows = m.rows;
    r.cols = m.cols;
    r.total = m.size();
    auto it = spec.layers.find(l.name);
    LayerConstraints c = it != spec.layers.end() ? it->second : LayerConstraints{};
    c.tile = spec.tile;
    r.scale = scales.count(l.name) ? scales.at(l.name) : 0.0;
    const ConstraintReport check = CheckConstraints(m, c, r.scale);
    r.nonzero = check.nonzero;
    r.constraints = it != spec.layers.end() ? c.Names() : std::vector<std::string>{};
    r.violations = check.violations;
    r.distinct_levels = check.distinct_levels;
    r.bits = c.quantize_bits > 0 ? c.quantize_bits : 32;
    // Physical crossbars of the hardware description, as simulate and estimate count them.
    auto count = [&](bool compact) { return LayerCrossbars(l, w, spec, r.scale, compact); };
    try {
      r.crossbars_dense = count(false);
      r.crossbars = count(spec.map.compact);
    } catch (const InputError& e) {
      r.crossbars_dense = r.crossbars = -1;
      r.mapping_error = e.what();
    }
    out.push_back(r);
  }
  return out;
}

nlohmann::ordered_json CompressJson(const CompressResult& r) {
  int64_t total = 0, nonzero = 0, bits_dense = 0, bits = 0, xb_dense = 0, xb = 0, violations = 0;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& l : r.layers) {
    total += l.total;
    nonzero += l.nonzero;
    bits_dense += l.total * 32;
    bits += l.nonzero * l.bits;
    xb_dense += std::max<int64_t>(l.crossbars_dense, 0);
    xb += std::max<int64_t>(l.crossbars, 0);
    violations += l.violations;
    layers.push_back({{"name", l.name},
                      {"rows", l.rows},
                      {"cols", l.cols},
                      {"total", l.total},
                      {"nonzero", l.nonzero},
                      {"constraints", l.constraints},
                      {"constraint_violations", l.violations},
                      {"distinct_levels", l.distinct_levels},
                      {"bits", l.bits},
                      {"scale", l.scale},
                      {"crossbars_dense", l.crossbars < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(l.crossbars_dense)},
                      {"crossbars", l.crossbars < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(l.crossbars)}});
    if (!l.mapping_error.empty()) layers.back()["mapping_error"] = l.mapping_error;
  }
  nlohmann::ordered_json phases = nlohmann::ordered_json::object();
  for (const auto& p : r.phases) phases[p.phase] = p.accuracy;
  return {{"schema_version", 1},
          {"accuracy_dense", r.accuracy("dense")},
          {"accuracy_compressed", r.phases.empty() ? 0.0 : r.phases.back().accuracy},
          {"accuracy_phases", phases},
          {"weights_total", total},
          {"weights_nonzero", nonzero},
          {"compression_ratio", nonzero > 0 ? static_cast<double>(total) / static_cast<double>(nonzero) : 0.0},
          {"storage_bits_dense", bits_dense},
          {"storage_bits_compressed", bits},
          {"storage_ratio", bits > 0 ? static_cast<double>(bits_dense) / static_cast<double>(bits) : 0.0},
          {"crossbars_dense", xb_dense},
          {"crossbars_compressed", xb},
          {"constraint_violations", violations},
          {"seconds", r.seconds},
          {"search", r.search},
          {"allocation", r.allocation},
          {"postprocess", r.postprocess},
          {"layers", layers}};
}

namespace {

// The settings that act only after the ADMM phase (hard projection onwards), and those of the ADMM
// phase itself.
const std::set<std::string> kAfterAdmm = {"compress.retrain_epochs", "compress.retrain_lr",
                                          "compress.purify_threshold", "compress.bn_recalibration_images"};
const std::set<std::string> kAdmm = {"compress.admm_rounds", "compress.epochs_per_round", "compress.rho",
                                     "compress.rho_growth",  "compress.rho_max",          "compress.lr"};

// fp without the keys in `drop` and, with `drop_train`, without the train section.
std::map<std::string, std::string> Without(const std::map<std::string, std::string>& fp,
                                           const std::set<std::string>& drop, bool drop_train) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : fp) {
    if (!(drop_train && key.rfind("train.", 0) == 0) && !drop.count(key)) out[key] = value;
  }
  return out;
}

// The keys an allocation depends on: everything but the train section and the ADMM, retraining and
// purification settings, which act after it (the allocation only projects, removes unused paths
// when remove_unused_paths is on, and evaluates). A run
// that retunes those can start from a copy of an earlier run's allocation.json with --resume.
std::map<std::string, std::string> AllocationFingerprint(const std::map<std::string, std::string>& fp) {
  std::set<std::string> after = kAfterAdmm;
  after.insert(kAdmm.begin(), kAdmm.end());
  return Without(fp, after, true);
}

// Refuses one-shot losses (allocation.json or allocation.partial.json, `saved`) measured under other
// settings than `fingerprint`'s. The target only steers the choice: the losses measured for another
// target hold, so every other setting must be as it was measured.
void CheckOneShotFingerprint(const nlohmann::json& saved, const std::map<std::string, std::string>& fingerprint,
                             const std::string& file) {
  const std::set<std::string> target = {"compress.target_ratio"};
  CheckFingerprint(Without(saved.at("fingerprint").get<std::map<std::string, std::string>>(), target, false),
                   Without(AllocationFingerprint(fingerprint), target, false), file);
}

// The keys the ADMM phase's checkpoints depend on: everything but the settings that act after it,
// so that a run which retunes retraining, purification or the batch-norm re-estimation (or was
// checkpointed before such a key existed) continues from the ADMM it already trained.
std::map<std::string, std::string> AdmmFingerprint(const std::map<std::string, std::string>& fp) {
  return Without(fp, kAfterAdmm, false);
}

}  // namespace

CompressResult Compress(Model& model, const DataBundle& data, const CompressSpec& spec_in, const CompressOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  CompressSpec spec = spec_in;
  model.to(o.device);
  CompressResult result;
  auto phase = [&](const std::string& name) {
    const double acc = TestAccuracy(model, data, spec, o.device);
    result.phases.push_back({name, acc});
    std::fprintf(stderr, "compress: %-14s test accuracy %s\n", name.c_str(), Percent(acc).c_str());
  };
  phase("dense");

  const bool leader = !o.data_parallel || o.data_parallel->leader();  // writes the phase files
  const std::string admm_file = o.run_dir.empty() ? "" : JoinPath(o.run_dir, "admm.safetensors");
  const std::string search_file = o.run_dir.empty() ? "" : JoinPath(o.run_dir, "search.json");
  if (spec.search && o.resume && !search_file.empty() && FileExists(search_file)) {
    // A finished search is not repeated on --resume (same settings, same answer).
    nlohmann::json saved = nlohmann::json::parse(ReadFile(search_file));
    CheckFingerprint(saved.at("fingerprint").get<std::map<std::string, std::string>>(), o.fingerprint, search_file);
    result.search = saved.at("search");
    for (const auto& name : spec.search_layers) spec.layers[name].sparsity = result.search.at("chosen_sparsity");
  } else if (spec.search) {
    const Dataset& eval_set = data.val.size() > 0 ? data.val : data.test;
    const double dense_val = Evaluate(model, eval_set, spec.train.eval_batch_size, o.device).accuracy;
    result.search = nlohmann::json::array();
    const double best = SearchSparsity(model, data, spec, o, dense_val, &result.search);
    std::fprintf(stderr, "search: chose sparsity %.4f\n", best);
    result.search = {{"chosen_sparsity", best}, {"max_loss", spec.search_max_loss}, {"dense_accuracy", dense_val},
                     {"candidates", result.search}};
    if (!search_file.empty() && leader) {
      WriteFileAtomic(search_file, nlohmann::json({{"search", result.search}, {"fingerprint", o.fingerprint}}).dump(2));
    }
  }

  const std::string alloc_file = o.run_dir.empty() ? "" : JoinPath(o.run_dir, "allocation.json");
  bool reuse_allocation = spec.target_ratio > 0 && o.resume && !alloc_file.empty() && FileExists(alloc_file);
  nlohmann::json saved_allocation;
  const nlohmann::json* remeasure_from = nullptr;
  if (reuse_allocation) {
    saved_allocation = nlohmann::json::parse(ReadFile(alloc_file));
    const nlohmann::json& saved = saved_allocation.at("allocation");
    CheckOneShotFingerprint(saved_allocation, o.fingerprint, alloc_file);
    const bool other_target = saved.contains("target_ratio") && saved.at("target_ratio").get<double>() != spec.target_ratio;
    const bool other_method = !saved.at("method").is_string() || saved.at("method").get<std::string>() != kAllocationMethod;
    if (other_target) {
      std::fprintf(stderr,
                   "compress: %s was allocated for compress.target_ratio = %g; choosing again for %g from its "
                   "measured sensitivities\n",
                   alloc_file.c_str(), saved.at("target_ratio").get<double>(), spec.target_ratio);
    } else if (other_method) {
      std::fprintf(stderr,
                   "compress: %s was made by an earlier allocation method; choosing again from its measured "
                   "sensitivities\n",
                   alloc_file.c_str());
    }
    if (other_target || other_method) {
      reuse_allocation = false;
      remeasure_from = &saved;
    }
  }
  if (reuse_allocation) {
    result.allocation = saved_allocation.at("allocation");
    for (const auto& [name, l] : result.allocation.at("layers").items()) spec.layers[name].sparsity = l.at("sparsity");
  } else if (spec.target_ratio > 0) {
    // An interrupted allocation's one-shot losses (allocation.partial.json), written after every
    // evaluation, so that --resume continues where it stopped, even after SIGKILL.
    const std::string partial_file = alloc_file.empty() ? "" : JoinPath(o.run_dir, "allocation.partial.json");
    nlohmann::json continued;
    if (o.resume && !partial_file.empty() && FileExists(partial_file)) {
      nlohmann::json saved = nlohmann::json::parse(ReadFile(partial_file));
      CheckOneShotFingerprint(saved, o.fingerprint, partial_file);
      continued = saved.at("allocation");
      int64_t known = 0;
      for (const auto& [name, l] : continued.at("layers").items()) {
        known += static_cast<int64_t>(l.at("candidates").size());
      }
      // An earlier allocation's losses on the same images fill in the layers the partial run had not reached.
      if (remeasure_from != nullptr && remeasure_from->value("images", -1) == continued.value("images", -2)) {
        for (const auto& [name, l] : remeasure_from->at("layers").items()) {
          if (!continued["layers"].contains(name)) continued["layers"][name] = l;
        }
      }
      std::fprintf(stderr, "compress: continuing the allocation from the %lld one-shot evaluations in %s\n",
                   static_cast<long long>(known), partial_file.c_str());
      remeasure_from = &continued;
    }
    auto save_partial = [&](const nlohmann::json& losses) -> std::string {
      if (partial_file.empty() || !leader) return "";
      WriteFileAtomic(partial_file, nlohmann::json({{"allocation", losses}, {"fingerprint", o.fingerprint}}).dump(2));
      return partial_file;
    };
    result.allocation =
        AllocateSparsity(model, data, spec, o.device, remeasure_from, save_partial, o.on_allocation_evaluation);
    if (!alloc_file.empty() && leader) {
      WriteFileAtomic(alloc_file, nlohmann::json({{"allocation", result.allocation}, {"fingerprint", o.fingerprint}}).dump(2));
      std::remove(partial_file.c_str());
    }
  }

  const std::map<std::string, std::string> admm_fingerprint = AdmmFingerprint(o.fingerprint);
  if (o.resume && !admm_file.empty() && FileExists(admm_file)) {
    SafeTensors st = ReadSafeTensors(admm_file);
    std::map<std::string, std::string> saved;
    if (st.metadata.count("fingerprint")) {
      saved = nlohmann::json::parse(st.metadata.at("fingerprint")).get<std::map<std::string, std::string>>();
    }
    CheckFingerprint(saved, admm_fingerprint, admm_file);
    LoadStateDict(model, st, admm_file);
    std::fprintf(stderr, "compress: ADMM phase already done (%s)\n", admm_file.c_str());
  } else if (spec.admm_rounds > 0 && !spec.layers.empty()) {
    Admm admm(model, spec);
    admm.Start();
    TrainSpec ts = spec.train;
    ts.epochs = spec.admm_rounds * spec.epochs_per_round;
    ts.lr = spec.lr;
    ts.schedule = "constant";
    ts.warmup_epochs = 0;
    TrainOptions t = PhaseOptions(o, "admm");
    t.fingerprint = admm_fingerprint;
    t.after_backward = [&] { admm.AddPenaltyGradients(); };
    t.on_epoch_end = [&](int64_t epoch) {
      if (epoch % spec.epochs_per_round != 0) return;
      const double residual = admm.Round();
      std::fprintf(stderr, "admm: round %lld/%lld, ||W - Z|| / ||W|| = %.4g\n",
                   static_cast<long long>(epoch / spec.epochs_per_round), static_cast<long long>(spec.admm_rounds),
                   residual);
    };
    t.extra_state = [&] { return admm.State(); };
    t.load_extra_state = [&](const SafeTensors& st, const std::string& prefix, const std::string& source) {
      admm.Load(st, prefix, source);
    };
    Train(model, data, ts, t);
    if (!admm_file.empty() && leader) {
      SaveModel(admm_file, model, {{"phase", "admm"}, {"fingerprint", nlohmann::json(admm_fingerprint).dump()}});
    }
  }
  if (spec.admm_rounds > 0) phase("admm");

  std::map<std::string, double> scales = HardProject(model, spec);
  // The running statistics training left describe the weights before the projection; evaluated
  // with them, a projected network with batch norm can fall to chance although it still works on
  // batch statistics (VGG-16: 10.00 %, see docs/RESULTS.md).
  int64_t bn_images = 0;
  const int64_t recalibrated = RecalibrateBatchNorm(model, data.train, spec.bn_recalibration_images,
                                                    spec.train.batch_size, o.device, &bn_images);
  if (recalibrated > 0) {
    std::fprintf(stderr, "compress: batch-norm statistics of %lld layers re-estimated on %lld training images\n",
                 static_cast<long long>(recalibrated), static_cast<long long>(bn_images));
  }
  phase("projected");

  result.postprocess = nlohmann::json::object();
  if (spec.purify_threshold > 0 || spec.remove_unused_paths) {
    const int64_t purified = Purify(model, LayerNames(spec), spec.purify_threshold);
    PathReport paths;
    if (spec.remove_unused_paths) paths = RemoveUnusedPaths(model);
    result.postprocess = {{"purified_groups", purified},
                          {"dead_channels", paths.dead_channels},
                          {"unused_channels", paths.unused_channels},
                          {"weights_zeroed", paths.weights_zeroed}};
    if (purified > 0 || paths.weights_zeroed > 0) phase("postprocessed");
  }

  if (spec.retrain_epochs > 0) {
    Retrain(model, data, spec, scales, spec.retrain_epochs, spec.retrain_lr, o, "retrain");
    phase("retrained");
  }
  result.layers = ReportLayers(model, spec, scales);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace xbar
