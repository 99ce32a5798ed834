// The ONNX reader: protobuf, graph checks, constant folding, layer building and one forward pass
// of the network it accepts (on a 1-image batch of its own input shape).
#include <torch/torch.h>

#include "fuzz_common.h"
#include "xbar/models/onnx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool once = [] {
    torch::set_num_threads(1);
    return true;
  }();
  (void)once;
  return xbar::fuzz::Expect(data, size, [](const std::string& bytes) {
    std::shared_ptr<xbar::Model> m = xbar::LoadOnnxModelFromBytes(bytes, "fuzz.onnx");
    const xbar::OnnxInfo& info = xbar::OnnxModelInfo(*m);
    if (info.channels * info.height * info.width > (int64_t{1} << 20)) return;  // a large network: parsed is enough
    torch::NoGradGuard no_grad;
    (void)m->forward(torch::zeros({1, info.channels, info.height, info.width}));
  });
}
