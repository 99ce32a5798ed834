// xbar/crossbar/reference.h — the ideal crossbar, as its own engine: the exact integer GEMM of
// quantised inputs and weights that a lossless, fault-free crossbar computes. Simple on purpose:
// every engine and kernel is tested against it (bit-exact when lossless, within named error
// budgets otherwise).
//
//   torch::Tensor y = ReferenceMvm(q, xq);   // q [N, K], xq [M, K] integer-valued -> [M, N] float64
#pragma once

#include <torch/torch.h>

namespace xbar {

// xq [M, K] x q[N, K]^T in float64: exact while every sum stays below 2^53.
torch::Tensor ReferenceMvm(const torch::Tensor& q, const torch::Tensor& xq);

}  // namespace xbar
