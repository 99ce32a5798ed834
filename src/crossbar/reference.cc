#include "xbar/crossbar/reference.h"

namespace xbar {

torch::Tensor ReferenceMvm(const torch::Tensor& q, const torch::Tensor& xq) {
  return torch::mm(xq.to(torch::kCPU, torch::kFloat64), q.to(torch::kCPU, torch::kFloat64).t());
}

}  // namespace xbar
