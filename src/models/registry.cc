#include "xbar/core/error.h"
#include "xbar/models/onnx.h"
#include "zoo_impl.h"

namespace xbar {

void CheckSpatial(const ModelSpec& s, int64_t h, int64_t w) {
  if (h < 1 || w < 1) {
    throw ConfigError(StrCat("model.name: ", s.name, " needs larger inputs than ", s.in_channels, "x", s.height, "x",
                             s.width_px));
  }
}

int64_t Scaled(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(channels) * width)));
}

ModelSpec ModelSpec::FromConfig(const Config& cfg) {
  ModelSpec s;
  s.name = cfg.Str("model.name");
  s.width = cfg.Float("model.width");
  s.batch_norm = cfg.Bool("model.batch_norm");
  if (!cfg.Str("model.onnx").empty()) {
    s.name = "onnx";
    s.onnx = cfg.Str("model.onnx");
  }
  return s;
}

const std::vector<std::string>& ModelNames() {
  static const std::vector<std::string> names = {"lenet5", "vgg8", "vgg11", "vgg16", "resnet20", "resnet18"};
  return names;
}

std::shared_ptr<Model> CreateModel(const ModelSpec& s) {
  if (s.is_onnx()) {
    auto m = LoadOnnxModel(s.onnx);
    const OnnxInfo& info = OnnxModelInfo(*m);
    if (s.in_channels != info.channels || s.height != info.height || s.width_px != info.width) {
      throw InputError(StrCat(s.onnx, ": the graph takes ", info.channels, "x", info.height, "x", info.width,
                              " inputs but the data are ", s.in_channels, "x", s.height, "x", s.width_px));
    }
    if (s.num_classes != info.num_classes) {
      throw InputError(StrCat(s.onnx, ": the graph outputs ", info.num_classes, " classes but the data have ",
                              s.num_classes));
    }
    return m;
  }
  if (s.in_channels < 1 || s.num_classes < 1) {
    throw ConfigError(StrCat("model: need >= 1 input channel and class, got ", s.in_channels, " and ", s.num_classes));
  }
  constexpr int64_t M = 0;
  if (s.name == "lenet5") return std::make_shared<LeNet5>(s);
  if (s.name == "vgg8") return std::make_shared<Vgg>(s, std::vector<int64_t>{128, 128, M, 256, 256, M, 512, 512, M}, 1024);
  if (s.name == "vgg11") {
    return std::make_shared<Vgg>(s, std::vector<int64_t>{64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}, 0);
  }
  if (s.name == "vgg16") {
    return std::make_shared<Vgg>(
        s, std::vector<int64_t>{64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M}, 0);
  }
  if (s.name == "resnet20") return std::make_shared<ResNet>(s, std::vector<int64_t>{16, 32, 64}, 3, false);
  if (s.name == "resnet18") return std::make_shared<ResNet>(s, std::vector<int64_t>{64, 128, 256, 512}, 2, true);
  std::string valid;
  for (const auto& n : ModelNames()) valid += (valid.empty() ? "" : ", ") + n;
  throw ConfigError(StrCat("model.name: unknown model '", s.name, "'; expected one of ", valid));
}

}  // namespace xbar
