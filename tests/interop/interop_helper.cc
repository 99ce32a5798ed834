// Helper for tests/interop/pytorch_interop_test.py: exports xbar models with reference
// inputs/outputs for PyTorch to load, and checks PyTorch-written state dicts in xbar.
//
//   interop_helper export DIR   writes DIR/<tag>.safetensors and DIR/<tag>.io.safetensors
//   interop_helper check DIR    loads DIR/<tag>.pt.safetensors, compares with DIR/<tag>.pt_io.safetensors
#include <cstdio>
#include <string>
#include <vector>

#include "xbar/core/error.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"

namespace {

struct Case {
  const char* name;
  int64_t channels, size;
  double width;
};
// Keep in sync with CASES in pytorch_interop_test.py.
const std::vector<Case> kCases = {{"lenet5", 1, 28, 1.0},   {"lenet5", 3, 32, 1.0},   {"vgg8", 1, 28, 0.25},
                                  {"vgg11", 3, 32, 0.25},   {"vgg16", 1, 28, 0.125},  {"resnet20", 3, 32, 0.5},
                                  {"resnet18", 1, 28, 0.125}};

std::string Tag(const Case& c) { return xbar::StrCat(c.name, "_", c.channels, "x", c.size); }

xbar::ModelSpec Spec(const Case& c) {
  xbar::ModelSpec s;
  s.name = c.name;
  s.in_channels = c.channels;
  s.height = s.width_px = c.size;
  s.width = c.width;
  s.num_classes = 10;
  return s;
}

int Export(const std::string& dir) {
  int64_t seed = 0;
  for (const Case& c : kCases) {
    torch::manual_seed(++seed);
    auto m = xbar::CreateModel(Spec(c));
    m->train();
    { torch::NoGradGuard g; m->forward(torch::randn({8, c.channels, c.size, c.size})); }  // BN statistics
    m->eval();
    auto x = torch::randn({4, c.channels, c.size, c.size});
    torch::Tensor y;
    { torch::NoGradGuard g; y = m->forward(x); }
    xbar::SaveModel(dir + "/" + Tag(c) + ".safetensors", *m, xbar::ModelMetadata(Spec(c), "test", {0.0}, {1.0}));
    xbar::SafeTensors io;
    io.tensors["input"] = xbar::ToRaw(x);
    io.tensors["output"] = xbar::ToRaw(y);
    xbar::WriteSafeTensors(dir + "/" + Tag(c) + ".io.safetensors", io);
  }
  return 0;
}

int Check(const std::string& dir) {
  int failures = 0;
  for (const Case& c : kCases) {
    const std::string path = dir + "/" + Tag(c) + ".pt.safetensors";
    auto m = xbar::CreateModel(Spec(c));
    xbar::LoadStateDict(*m, xbar::ReadSafeTensors(path), path);
    m->eval();
    auto io = xbar::ReadSafeTensors(dir + "/" + Tag(c) + ".pt_io.safetensors");
    auto x = xbar::FromRaw(io.tensors.at("input"));
    auto want = xbar::FromRaw(io.tensors.at("output"));
    torch::Tensor got;
    { torch::NoGradGuard g; got = m->forward(x); }
    const double diff = (got - want).abs().max().item<double>();
    const bool ok = torch::allclose(got, want, 1e-4, 1e-5);
    std::printf("%-16s max |xbar - pytorch| = %.3g %s\n", Tag(c).c_str(), diff, ok ? "ok" : "MISMATCH");
    failures += ok ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: interop_helper export|check DIR\n");
    return 2;
  }
  try {
    const std::string cmd = argv[1];
    if (cmd == "export") return Export(argv[2]);
    if (cmd == "check") return Check(argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop_helper: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: interop_helper export|check DIR\n");
  return 2;
}
