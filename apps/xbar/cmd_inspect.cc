// xbar inspect FILE.safetensors|FILE.onnx [--crossbar 128x128] [--json]
// Lists tensors, metadata and, per conv/linear weight, its GEMM shape and how many R x C crossbar
// tiles it needs (one cell per weight, before bit slicing and sign handling), both dense and
// counting only tiles that hold a non-zero weight (masked mapping).
#include <algorithm>
#include <cstdio>
#include <regex>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/safetensors.h"
#include "xbar/models/onnx.h"
#include "xbar/models/state_dict.h"

namespace xbar::app {
namespace {

struct InspectArgs {
  std::string file;
  std::string crossbar = "128x128";
  bool json = false;
};

// "features.10.weight" after "features.3.weight": numeric segments compare as numbers.
bool NaturalLess(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      const long long x = std::stoll(a.substr(i, i2 - i)), y = std::stoll(b.substr(j, j2 - j));
      if (x != y) return x < y;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

void RunInspect(const InspectArgs& a) {
  std::smatch m;
  static const std::regex kTile(R"((\d{1,7})x(\d{1,7}))");
  if (!std::regex_match(a.crossbar, m, kTile) || std::stoll(m[1]) < 1 || std::stoll(m[2]) < 1 ||
      std::stoll(m[1]) > 65536 || std::stoll(m[2]) > 65536) {
    throw ConfigError(StrCat("--crossbar ", a.crossbar, ": expected ROWSxCOLS with each in [1, 65536], e.g. 128x128"));
  }
  const int64_t R = std::stoll(m[1]), C = std::stoll(m[2]);
  const std::string bytes = ReadFile(a.file);
  SafeTensors st;
  if (LooksLikeOnnx(a.file, bytes)) {
    // An ONNX graph: its layers' weights in PyTorch's layout, named as the pipeline names them.
    std::shared_ptr<Model> model = LoadOnnxModelFromBytes(bytes, a.file);
    const OnnxInfo& info = OnnxModelInfo(*model);
    std::map<std::string, std::string> meta = info.metadata;
    meta["architecture"] = "onnx";
    meta["input_shape"] = StrCat("[", info.channels, ", ", info.height, ", ", info.width, "]");
    meta["num_classes"] = std::to_string(info.num_classes);
    meta["onnx_graph_hash"] = info.graph_hash;
    st = ModelToSafeTensors(*model, meta);
  } else {
    st = ParseSafeTensors(bytes, a.file);
  }

  std::vector<std::string> names;
  for (const auto& [name, t] : st.tensors) names.push_back(name);
  std::sort(names.begin(), names.end(), NaturalLess);

  nlohmann::ordered_json tensors = nlohmann::ordered_json::array(), layers = nlohmann::ordered_json::array();
  int64_t params = 0, nonzero_total = 0, tiles_total = 0, tiles_nz_total = 0, weights_total = 0, weights_nz = 0;
  for (const auto& name : names) {
    const RawTensor& t = st.tensors.at(name);
    const std::vector<double> v = t.ToDoubles();
    const int64_t nz = std::count_if(v.begin(), v.end(), [](double x) { return x != 0.0; });
    params += t.numel();
    nonzero_total += nz;
    tensors.push_back({{"name", name}, {"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"numel", t.numel()},
                       {"nonzero", nz}});
    const bool is_weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (!is_weight || (t.shape.size() != 4 && t.shape.size() != 2)) continue;
    // Crossbar orientation: rows = inputs (in*kh*kw), columns = outputs.
    const int64_t N = t.shape[0];
    const int64_t K = t.numel() / std::max<int64_t>(N, 1);
    const int64_t tr = (K + R - 1) / R, tc = (N + C - 1) / C;
    std::vector<char> occupied(static_cast<size_t>(tr * tc), 0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        if (v[static_cast<size_t>(n * K + k)] != 0.0) occupied[static_cast<size_t>((k / R) * tc + n / C)] = 1;
      }
    }
    const int64_t tiles_nz = std::count(occupied.begin(), occupied.end(), 1);
    tiles_total += tr * tc;
    tiles_nz_total += tiles_nz;
    weights_total += t.numel();
    weights_nz += nz;
    layers.push_back({{"name", name.substr(0, name.size() - 7)},
                      {"kind", t.shape.size() == 4 ? "conv2d" : "linear"},
                      {"rows", K},
                      {"cols", N},
                      {"weights", t.numel()},
                      {"nonzero", nz},
                      {"crossbars", tr * tc},
                      {"crossbars_nonzero", tiles_nz}});
  }

  if (a.json) {
    nlohmann::ordered_json j = {{"schema_version", 1},
                                {"file", a.file},
                                {"metadata", st.metadata},
                                {"parameters", params},
                                {"nonzero", nonzero_total},
                                {"crossbar", {{"rows", R}, {"cols", C}}},
                                {"weights", weights_total},
                                {"weights_nonzero", weights_nz},
                                {"crossbars", tiles_total},
                                {"crossbars_nonzero", tiles_nz_total},
                                {"layers", layers},
                                {"tensors", tensors}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("%s: %zu tensors, %lld parameters (%lld non-zero)\n", a.file.c_str(), names.size(),
              static_cast<long long>(params), static_cast<long long>(nonzero_total));
  for (const auto& [k, v] : st.metadata) std::printf("  %-16s %s\n", k.c_str(), v.c_str());
  std::printf("\n%-28s %-5s %-18s %10s\n", "tensor", "dtype", "shape", "non-zero");
  for (const auto& t : tensors) {
    std::string shape = "[";
    for (size_t i = 0; i < t["shape"].size(); ++i) shape += (i ? "," : "") + std::to_string(t["shape"][i].get<int64_t>());
    shape += "]";
    std::printf("%-28s %-5s %-18s %10lld\n", t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
                shape.c_str(), static_cast<long long>(t["nonzero"].get<int64_t>()));
  }
  std::printf("\ncrossbar layers on %lldx%lld tiles (one cell per weight):\n", static_cast<long long>(R),
              static_cast<long long>(C));
  std::printf("%-24s %-7s %13s %10s %10s %9s %9s\n", "layer", "kind", "rows x cols", "weights", "non-zero", "tiles",
              "tiles nz");
  for (const auto& l : layers) {
    const std::string rc = StrCat(l["rows"].get<int64_t>(), "x", l["cols"].get<int64_t>());
    std::printf("%-24s %-7s %13s %10lld %10lld %9lld %9lld\n", l["name"].get<std::string>().c_str(),
                l["kind"].get<std::string>().c_str(), rc.c_str(), static_cast<long long>(l["weights"].get<int64_t>()),
                static_cast<long long>(l["nonzero"].get<int64_t>()), static_cast<long long>(l["crossbars"].get<int64_t>()),
                static_cast<long long>(l["crossbars_nonzero"].get<int64_t>()));
  }
  std::printf("%-24s %-7s %13s %10lld %10lld %9lld %9lld\n", "total", "", "", static_cast<long long>(weights_total),
              static_cast<long long>(weights_nz), static_cast<long long>(tiles_total),
              static_cast<long long>(tiles_nz_total));
}

}  // namespace

void RegisterInspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "list a .safetensors model's tensors, metadata and crossbar tiles");
  cmd->add_option("file", args->file, "model .safetensors file")->required();
  cmd->add_option("--crossbar", args->crossbar, "tile size ROWSxCOLS (default 128x128)");
  cmd->add_flag("--json", args->json, "print JSON instead of tables");
  cmd->callback([args]() { RunInspect(*args); });
}

}  // namespace xbar::app
