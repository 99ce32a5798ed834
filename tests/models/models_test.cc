#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/models/pool.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"

namespace xbar {
namespace {

ModelSpec Spec(const std::string& name, int64_t c, int64_t hw, double width = 1.0) {
  ModelSpec s;
  s.name = name;
  s.in_channels = c;
  s.height = hw;
  s.width_px = hw;
  s.width = width;
  s.num_classes = 10;
  return s;
}

std::set<std::string> Names(Model& m) {
  std::set<std::string> out;
  for (const auto& [n, t] : StateDict(m)) out.insert(n);
  return out;
}

class EveryModel : public ::testing::TestWithParam<std::tuple<std::string, int64_t, int64_t>> {};

TEST_P(EveryModel, OutputShapeForBothInputSizes) {
  const auto& [name, c, hw] = GetParam();
  torch::manual_seed(0);
  const double width = name == "lenet5" ? 1.0 : 0.25;  // keeps the test fast; shapes are what matter
  auto m = CreateModel(Spec(name, c, hw, width));
  m->eval();
  auto y = m->forward(torch::randn({2, c, hw, hw}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  for (const auto& l : m->layers()) {
    EXPECT_TRUE(m->LayerWeight(l.name).defined()) << l.name;
    EXPECT_EQ(m->LayerWeight(l.name).numel(), l.weight_count()) << l.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, EveryModel,
                         ::testing::Combine(::testing::Values("lenet5", "vgg8", "vgg11", "vgg16", "resnet20", "resnet18"),
                                            ::testing::Values(1, 3), ::testing::Values(28, 32)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param)) + "x" +
                                  std::to_string(std::get<2>(info.param));
                         });

// MaxPool2d without indices (inference) returns LibTorch's max_pool2d bit for bit: shapes with
// padding, dilation, ceil_mode (partial last windows), odd sizes, and values that tell orders
// apart -- NaN, +-0, +-inf and repeated maxima (the bits of +0 and -0 differ) -- on one and two
// threads; with gradients wanted, and for invalid parameters, it is LibTorch's own call.
TEST(Models, MaxPoolWithoutIndicesGivesLibTorchsBits) {
  struct Case {
    int64_t h, w, kh, kw, sh, sw, ph, pw, dh, dw;
    bool ceil;
  };
  const std::vector<Case> cases = {{28, 28, 2, 2, 2, 2, 0, 0, 1, 1, false}, {10, 10, 2, 2, 2, 2, 0, 0, 1, 1, false},
                                   {7, 9, 2, 2, 2, 2, 0, 0, 1, 1, true},    {7, 9, 2, 2, 2, 2, 0, 0, 1, 1, false},
                                   {8, 8, 3, 3, 2, 2, 1, 1, 1, 1, false},   {9, 7, 3, 2, 2, 1, 1, 1, 1, 1, true},
                                   {11, 12, 3, 3, 1, 2, 1, 0, 2, 2, false}, {6, 5, 5, 4, 3, 3, 2, 2, 1, 1, true},
                                   {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, false},   {13, 13, 3, 3, 3, 3, 1, 1, 1, 1, true}};
  const float inf = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    torch::manual_seed(static_cast<uint64_t>(i));
    // Small integers (many ties), with NaN, +-0 and +-inf sprinkled in.
    torch::Tensor x = torch::randint(-3, 3, {3, 4, c.h, c.w}).to(torch::kFloat);
    const torch::Tensor pick = torch::randint(0, 40, x.sizes());
    x = torch::where(pick == 0, torch::full_like(x, std::nanf("")), x);
    x = torch::where(pick == 1, torch::full_like(x, -0.0f), x);
    x = torch::where(pick == 2, torch::full_like(x, 0.0f), x);
    x = torch::where(pick == 3, torch::full_like(x, inf), x);
    x = torch::where(pick == 4, torch::full_like(x, -inf), x);
    if (i == 0) x = torch::full_like(x, -inf);  // every window -inf
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      torch::NoGradGuard no_grad;
      const torch::Tensor want = torch::max_pool2d(x, {c.kh, c.kw}, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.ceil);
      const torch::Tensor got = MaxPool2d(x, {c.kh, c.kw}, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.ceil);
      ASSERT_EQ(got.sizes(), want.sizes()) << "case " << i;
      // Bitwise: NaN equals NaN, -0 differs from +0.
      EXPECT_TRUE(torch::equal(got.view(torch::kInt32), want.view(torch::kInt32))) << "case " << i << ", " << threads
                                                                                   << " threads";
    }
  }
  at::set_num_threads(1);
  // The zoo's pooling layers, as LeNet-5 and VGG call them.
  const torch::Tensor x = torch::randn({2, 6, 28, 28});
  EXPECT_TRUE(torch::equal(MaxPool2d(x, 2), torch::max_pool2d(x, 2)));
  EXPECT_TRUE(torch::equal(MaxPool2d(x, torch::nn::MaxPool2dOptions(2).stride(2).ceil_mode(true)),
                           torch::max_pool2d(x, 2, 2, 0, 1, true)));
  // Gradients still flow (LibTorch's pooling, with its indices).
  const torch::Tensor leaf = x.clone().requires_grad_(true);
  MaxPool2d(leaf, 2).sum().backward();
  EXPECT_EQ(leaf.grad().sum().item<float>(), 2.0f * 6 * 14 * 14);
  // Invalid parameters: LibTorch's error (padding beyond half the kernel).
  torch::NoGradGuard no_grad;
  EXPECT_THROW(MaxPool2d(x, {2, 2}, {2, 2}, {2, 2}, {1, 1}, false), c10::Error);
}

TEST(Models, LeNet5MatchesTheClassicShapeAndPyTorchNames) {
  auto m = CreateModel(Spec("lenet5", 1, 28));
  EXPECT_EQ(Names(*m), (std::set<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                              "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}));
  int64_t params = 0, weights = 0;
  for (const auto& p : m->parameters()) params += p.numel();
  for (const auto& l : m->layers()) weights += l.weight_count();
  EXPECT_EQ(params, 61706);
  EXPECT_EQ(weights, 61470);  // the weights_total of docs/INTERFACE.md's compress.json example
  const auto& L = m->layers();
  ASSERT_EQ(L.size(), 5u);
  EXPECT_EQ(L[0].name, "conv1");
  EXPECT_EQ(L[0].padding, 2);
  EXPECT_EQ(L[0].gemm_rows(), 25);
  EXPECT_EQ(L[1].gemm_rows(), 150);
  EXPECT_EQ(L[1].gemm_cols(), 16);
  EXPECT_EQ(L[2].kind, LayerKind::kLinear);
  EXPECT_EQ(L[2].gemm_rows(), 400);
  EXPECT_EQ(L[4].name, "fc3");
  auto m32 = CreateModel(Spec("lenet5", 3, 32));
  EXPECT_EQ(m32->layers()[0].padding, 0);
  EXPECT_EQ(m32->layers()[2].gemm_rows(), 400);
}

TEST(Models, VggAndResNetNamesFollowTheirPyTorchSources) {
  auto vgg8 = CreateModel(Spec("vgg8", 3, 32));
  auto n = Names(*vgg8);
  for (const char* k : {"features.0.weight", "features.1.running_mean", "features.1.num_batches_tracked",
                        "features.3.weight", "classifier.0.weight", "classifier.2.bias"}) {
    EXPECT_TRUE(n.count(k)) << k;
  }
  EXPECT_EQ(vgg8->layers().size(), 8u);  // 6 conv + 2 linear
  EXPECT_EQ(vgg8->layers()[6].gemm_rows(), 512 * 4 * 4);
  EXPECT_EQ(vgg8->layers()[6].gemm_cols(), 1024);

  auto count = [](Model& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.numel();
    return n;
  };
  EXPECT_EQ(count(*vgg8), 12979850);  // 6 conv + BN, FC 8192x1024, FC 1024x10
  EXPECT_EQ(count(*CreateModel(Spec("vgg11", 3, 32))), 9231114);  // kuangliu VGG('VGG11')

  auto vgg16 = CreateModel(Spec("vgg16", 3, 32));
  EXPECT_EQ(count(*vgg16), 14728266);  // kuangliu VGG('VGG16')
  EXPECT_EQ(vgg16->layers().size(), 14u);
  EXPECT_TRUE(Names(*vgg16).count("classifier.weight"));
  EXPECT_TRUE(Names(*vgg16).count("features.40.weight"));  // last conv of kuangliu's VGG16 with BN

  auto r18 = CreateModel(Spec("resnet18", 3, 32));
  auto r = Names(*r18);
  for (const char* k : {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight",
                        "layer2.0.shortcut.1.running_var", "layer4.1.bn2.bias", "linear.weight"}) {
    EXPECT_TRUE(r.count(k)) << k;
  }
  EXPECT_FALSE(r.count("layer1.0.shortcut.0.weight"));
  int64_t params = 0;
  for (const auto& p : r18->parameters()) params += p.numel();
  EXPECT_EQ(params, 11173962);  // kuangliu ResNet18, CIFAR-10

  auto r20 = CreateModel(Spec("resnet20", 3, 32));
  params = 0;
  for (const auto& p : r20->parameters()) params += p.numel();
  EXPECT_EQ(params, 269722);  // He et al.'s "0.27M"
  EXPECT_EQ(r20->layers().size(), 20u);
  EXPECT_EQ(r20->layers()[7].name, "layer2.0.conv1");
  EXPECT_EQ(r20->layers()[7].stride, 2);
}

TEST(Models, WidthMultiplierAndBadSpecs) {
  auto m = CreateModel(Spec("vgg8", 1, 28, 0.25));
  EXPECT_EQ(m->layers()[0].out_channels, 32);
  EXPECT_EQ(m->layers()[6].gemm_cols(), 256);
  EXPECT_THROW(CreateModel(Spec("alexnet", 3, 32)), ConfigError);
  EXPECT_THROW(CreateModel(Spec("lenet5", 1, 12)), ConfigError);
}

TEST(Models, LayerOverrideSeesEveryLayerInForwardOrder) {
  torch::manual_seed(1);
  auto m = CreateModel(Spec("resnet20", 3, 32, 0.5));
  m->eval();
  auto x = torch::randn({2, 3, 32, 32});
  auto ref = m->forward(x);
  std::vector<std::string> seen;
  m->SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& in, const LayerFn& ideal) {
    seen.push_back(l.name);
    return ideal(in);
  });
  auto out = m->forward(x);
  EXPECT_TRUE(torch::equal(out, ref));
  ASSERT_EQ(seen.size(), m->layers().size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], m->layers()[i].name);
  m->SetLayerOverride([](const LayerInfo& l, const torch::Tensor& in, const LayerFn& ideal) {
    return l.name == "linear" ? torch::zeros_like(ideal(in)) : ideal(in);
  });
  EXPECT_EQ(m->forward(x).abs().sum().item<float>(), 0.0f);
  m->SetLayerOverride(nullptr);
  EXPECT_TRUE(torch::equal(m->forward(x), ref));
}

TEST(StateDict, SafetensorsRoundTripReproducesOutputsAndMetadata) {
  torch::manual_seed(2);
  ModelSpec spec = Spec("vgg8", 1, 28, 0.25);
  auto a = CreateModel(spec);
  a->train();
  a->forward(torch::randn({4, 1, 28, 28}));  // move BN running statistics off their defaults
  a->eval();
  const std::string path = ::testing::TempDir() + "/vgg8.safetensors";
  SaveModel(path, *a, ModelMetadata(spec, "fashion-mnist", {0.286}, {0.353}));

  SafeTensors st = ReadSafeTensors(path);
  EXPECT_EQ(st.metadata.at("architecture"), "vgg8");
  EXPECT_EQ(st.tensors.at("features.1.num_batches_tracked").dtype, DType::kI64);
  ModelSpec back = ModelSpecFromMetadata(st.metadata, path);
  EXPECT_EQ(back.name, "vgg8");
  EXPECT_EQ(back.width, 0.25);
  EXPECT_EQ(back.height, 28);
  std::vector<double> mean, sd;
  ASSERT_TRUE(NormalizationFromMetadata(st.metadata, &mean, &sd));
  EXPECT_EQ(mean, std::vector<double>{0.286});

  torch::manual_seed(99);
  auto b = CreateModel(back);
  LoadStateDict(*b, st, path);
  b->eval();
  auto x = torch::randn({3, 1, 28, 28});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
}

TEST(StateDict, StrictLoadingNamesTheOffendingTensor) {
  ModelSpec spec = Spec("lenet5", 1, 28);
  auto m = CreateModel(spec);
  SafeTensors st = ModelToSafeTensors(*m, {});
  auto err = [&](SafeTensors s) -> std::string {
    try {
      LoadStateDict(*m, s, "w.safetensors");
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(err(st), "");
  SafeTensors missing = st;
  missing.tensors.erase("fc3.bias");
  EXPECT_EQ(err(missing), "w.safetensors: missing tensor 'fc3.bias' (shape [10]) that the model needs; a network other than xbar's zoo definition (docs/MODELS.md) can be imported as ONNX");
  SafeTensors shaped = st;
  shaped.tensors["conv1.weight"].shape = {6, 3, 5, 5};
  shaped.tensors["conv1.weight"].bytes.resize(6 * 3 * 25 * 4);
  EXPECT_EQ(err(shaped), "w.safetensors: tensor 'conv1.weight' has shape [6, 3, 5, 5] but the model expects [6, 1, 5, 5]; a network other than xbar's zoo definition (docs/MODELS.md) can be imported as ONNX");
  SafeTensors extra = st;
  extra.tensors["fc4.weight"] = st.tensors["fc3.bias"];
  EXPECT_EQ(err(extra), "w.safetensors: unexpected tensor 'fc4.weight' that the model does not have; a network other than xbar's zoo definition (docs/MODELS.md) can be imported as ONNX");
  SafeTensors typed = st;
  typed.tensors["fc3.bias"].dtype = DType::kI32;
  EXPECT_NE(err(typed).find("has dtype I32, expected a floating-point type"), std::string::npos);
  // Double precision weights (as some exporters write) convert.
  SafeTensors f64 = st;
  RawTensor& t = f64.tensors["fc3.bias"];
  std::vector<double> vals(10, 0.5);
  t.dtype = DType::kF64;
  t.bytes.assign(reinterpret_cast<uint8_t*>(vals.data()), reinterpret_cast<uint8_t*>(vals.data()) + 80);
  EXPECT_EQ(err(f64), "");
  EXPECT_EQ(m->named_parameters()["fc3.bias"][0].item<float>(), 0.5f);
  EXPECT_THROW(ModelSpecFromMetadata({{"architecture", "lenet5"}}, "w"), InputError);
}

}  // namespace
}  // namespace xbar
