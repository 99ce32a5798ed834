// CompressSpec::FromConfig: the compress and mapping sections, validated before any training.
#include <set>

#include "xbar/compress/compress.h"
#include "xbar/core/error.h"

namespace xbar {
namespace {

constexpr const char* kLayerPrefix = "compress.layers.";

// "compress.layers.features.0.sparsity" -> ("features.0", "sparsity").
std::pair<std::string, std::string> SplitLayerKey(const std::string& key) {
  const std::string rest = key.substr(std::string(kLayerPrefix).size());
  const size_t dot = rest.rfind('.');
  return {rest.substr(0, dot), rest.substr(dot + 1)};
}

}  // namespace

CompressSpec CompressSpec::FromConfig(const Config& cfg, const Model& model) {
  CompressSpec spec;
  spec.map = MappingSpec::FromConfig(cfg);
  // Crossbar-* structures prune what one physical crossbar holds: R rows x the weights side by side.
  spec.tile = {spec.map.rows, spec.map.LogicalColumns()};
  spec.admm_rounds = cfg.Int("compress.admm_rounds");
  spec.epochs_per_round = cfg.Int("compress.epochs_per_round");
  spec.rho = cfg.Float("compress.rho");
  spec.rho_growth = cfg.Float("compress.rho_growth");
  spec.rho_max = cfg.Float("compress.rho_max");
  spec.lr = cfg.Float("compress.lr");
  spec.retrain_epochs = cfg.Int("compress.retrain_epochs");
  spec.retrain_lr = cfg.Float("compress.retrain_lr");
  spec.purify_threshold = cfg.Float("compress.purify_threshold");
  spec.remove_unused_paths = cfg.Bool("compress.remove_unused_paths");
  spec.search = cfg.Bool("compress.search");
  spec.search_max_loss = cfg.Float("compress.search_max_loss");
  spec.search_ratios = cfg.FloatList("compress.search_ratios");
  spec.search_epochs = cfg.Int("compress.search_epochs");
  spec.search_refine_steps = cfg.Int("compress.search_refine_steps");
  spec.target_ratio = cfg.Float("compress.target_ratio");
  spec.allocation_images = cfg.Int("compress.allocation_images");
  spec.bn_recalibration_images = cfg.Int("compress.bn_recalibration_images");
  if (spec.target_ratio > 0 && spec.target_ratio <= 1) {
    throw ConfigError(StrCat(cfg.Where("compress.target_ratio"), ": compress.target_ratio: expected 0 (off) or a ratio "
                             "above 1 (e.g. 20 for 20x fewer weights), got ", spec.target_ratio));
  }
  if (spec.target_ratio > 0 && spec.search) {
    throw ConfigError(StrCat(cfg.Where("compress.target_ratio"), ": compress.target_ratio and compress.search both "
                             "choose the sparsity; set one"));
  }
  spec.train = TrainSpec::FromConfig(cfg);
  const int64_t weight_bits = cfg.Int("mapping.weight_bits");

  if (spec.search && spec.search_ratios.empty()) {
    throw ConfigError(StrCat(cfg.Where("compress.search_ratios"), ": compress.search_ratios: needs at least one ratio"));
  }
  for (size_t i = 1; i < spec.search_ratios.size(); ++i) {
    if (spec.search_ratios[i] <= spec.search_ratios[i - 1]) {
      throw ConfigError(StrCat(cfg.Where("compress.search_ratios"),
                               ": compress.search_ratios: expected strictly ascending ratios"));
    }
  }

  // Per-layer overrides must name layers of this model.
  std::set<std::string> names;
  for (const auto& l : model.layers()) names.insert(l.name);
  std::map<std::string, std::map<std::string, std::string>> overrides;  // layer -> field -> key
  for (const std::string& key : cfg.KeysWithPrefix(kLayerPrefix)) {
    auto [layer, field] = SplitLayerKey(key);
    if (!names.count(layer)) {
      std::string valid;
      for (const auto& l : model.layers()) valid += (valid.empty() ? "" : ", ") + l.name;
      throw ConfigError(StrCat(cfg.Where(key), ": ", key, ": model ", model.arch(), " has no layer '", layer,
                               "'; its layers are ", valid));
    }
    overrides[layer][field] = key;
  }

  for (const auto& l : model.layers()) {
    const auto& ov = overrides[l.name];
    auto key_for = [&](const std::string& field) {
      auto it = ov.find(field);
      return it == ov.end() ? "compress." + field : it->second;
    };
    if (ov.count("skip") && cfg.Bool(ov.at("skip"))) continue;
    LayerConstraints c;
    c.tile = spec.tile;
    c.kernel_area = l.kernel_h * l.kernel_w;
    c.sparsity = cfg.Float(key_for("sparsity"));
    const std::string structure = cfg.Str(key_for("structure"));
    XBAR_CHECK(ParseStructure(structure, &c.structure), "schema and StructureNames() disagree on ", structure);
    c.quantize_bits = static_cast<int>(cfg.Int(key_for("quantize_bits")));
    c.polarize_fragment = cfg.Int(key_for("polarize_fragment"));
    c.column_budget = cfg.Int(key_for("column_budget"));

    const std::string qk = key_for("quantize_bits");
    if (c.quantize_bits == 1) {
      throw ConfigError(StrCat(cfg.Where(qk), ": ", qk, ": expected 0 (float) or 2..16 bits; 1 bit leaves no "
                               "magnitude next to the sign"));
    }
    if (c.quantize_bits > weight_bits) {
      throw ConfigError(StrCat(cfg.Where(qk), ": ", qk, ": ", c.quantize_bits, " bits exceed mapping.weight_bits (",
                               weight_bits, ") that the crossbars store"));
    }
    const std::string pk = key_for("polarize_fragment");
    if (c.polarize_fragment > spec.tile.rows) {
      throw ConfigError(StrCat(cfg.Where(pk), ": ", pk, ": fragment of ", c.polarize_fragment,
                               " rows is larger than the tile's ", spec.tile.rows, " rows (mapping.crossbar_rows)"));
    }
    const std::string bk = key_for("column_budget");
    if (c.column_budget > spec.tile.rows) {
      throw ConfigError(StrCat(cfg.Where(bk), ": ", bk, ": budget of ", c.column_budget, " non-zeros exceeds the ",
                               spec.tile.rows, " cells of a column segment (mapping.crossbar_rows)"));
    }
    if (c.structure == Structure::kChannel && l.kind == LayerKind::kLinear && c.prunes()) {
      // A linear layer's "channels" are its inputs: kernel_area 1 makes channel = row pruning.
      c.kernel_area = 1;
    }
    const bool active = c.prunes() || c.quantize_bits > 0 || c.polarize_fragment > 0 || c.column_budget > 0;
    // The search (or the target's allocation) sets the sparsity of layers whose sparsity is not fixed
    // per layer.
    if ((spec.search || spec.target_ratio > 0) && !ov.count("sparsity")) {
      spec.search_layers.push_back(l.name);
    } else if (!active) {
      continue;
    }
    spec.layers[l.name] = c;
  }
  return spec;
}

}  // namespace xbar
