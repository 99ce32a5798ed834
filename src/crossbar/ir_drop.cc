#include "xbar/crossbar/ir_drop.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "xbar/core/error.h"

namespace xbar {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

torch::Tensor Fast(const torch::Tensor& g, double r) {
  const int64_t R = g.size(0), C = g.size(1);
  // A_sj = sum_{l <= j} G_sl (l + 1) + (j + 1) sum_{l > j} G_sl: the word-line segments shared by
  // the currents of row s's cells l and the path to cell j.
  torch::Tensor l1 = torch::arange(1, C + 1, kF64).view({1, C});
  torch::Tensor total = g.sum(1, true);
  torch::Tensor a = torch::cumsum(g * l1, 1) + l1 * (total - torch::cumsum(g, 1));
  // B_sj = (R - s) sum_{i <= s} G_ij + sum_{i > s} G_ij (R - i): the bit-line segments shared by the
  // current row s injects at column j and the path from cell (i, j) to the sense amplifier.
  torch::Tensor down = (static_cast<double>(R) - torch::arange(0, R, kF64)).view({R, 1});  // R - i
  torch::Tensor gw = g * down;
  torch::Tensor b = down * torch::cumsum(g, 0) + (gw.sum(0, true) - torch::cumsum(gw, 0));
  return g / (1.0 + r * (a + b));
}

// sum_i a[i] b[i] over n terms (b read backwards from b[0], b[-1], ... when reversed_b), in four
// independent partial sums: a fixed order, so the same result on every run.
double Dot(const double* a, const double* b, int64_t n, bool reversed_b = false) {
  const int64_t step = reversed_b ? -1 : 1;
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[step * i];
    s1 += a[i + 1] * b[step * (i + 1)];
    s2 += a[i + 2] * b[step * (i + 2)];
    s3 += a[i + 3] * b[step * (i + 3)];
  }
  for (; i < n; ++i) s0 += a[i] * b[step * i];
  return (s0 + s1) + (s2 + s3);
}

torch::Tensor Exact(const torch::Tensor& g, double r) {
  const int64_t R = g.size(0), C = g.size(1), n = 2 * R * C;
  XBAR_CHECK(R * C <= kIrDropExactMaxCells, "exact IR-drop solve of a ", R, "x", C, " array (at most ",
             kIrDropExactMaxCells, " cells)");
  // Nodes interleaved row by row: word-line node (i, j) is 2 (i C + j), its bit-line node the next;
  // neighbours on a word line are 2 apart, on a bit line 2 C apart, so the symmetric positive
  // definite conductance matrix is banded with half-bandwidth p = 2 C. Banded Cholesky: O(n p^2).
  const int64_t p = 2 * C;
  std::vector<double> band(static_cast<size_t>(n * (p + 1)), 0.0);  // band[k (p + 1) + d] = A(k, k - d)
  auto a = [&](int64_t k, int64_t j) -> double& { return band[static_cast<size_t>(k * (p + 1) + (k - j))]; };
  const double* gp = g.data_ptr<double>();
  const double gw = 1.0 / r;
  for (int64_t i = 0; i < R; ++i) {
    for (int64_t j = 0; j < C; ++j) {
      const double gc = gp[i * C + j];
      const int64_t w = 2 * (i * C + j), b = w + 1;
      // Word-line node: the cell, the segment towards the driver (or the previous node), the next one.
      a(w, w) += gc + gw + (j + 1 < C ? gw : 0.0);
      if (j > 0) a(w, w - 2) -= gw;
      // Bit-line node: the cell, the segment towards the sense amplifier (or the next row), the one above.
      a(b, b) += gc + gw + (i > 0 ? gw : 0.0);
      a(b, w) -= gc;
      if (i > 0) a(b, b - p) -= gw;
    }
  }
  // In place: A = L L^T, L in the band. Row k of L sits reversed in band[k (p + 1) ...], so the
  // sums over m of L(k, m) L(j, m) are dot products of two contiguous runs.
  const double* bp = band.data();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t j0 = std::max<int64_t>(0, k - p);
    for (int64_t j = j0; j <= k; ++j) {
      const int64_t m0 = std::max(j0, j - p);  // m in [m0, j)
      double s = a(k, j);
      if (j > m0) s -= Dot(bp + k * (p + 1) + (k - j + 1), bp + j * (p + 1) + 1, j - m0);
      if (j < k) {
        a(k, j) = s / a(j, j);
      } else {
        XBAR_CHECK(s > 0, "IR-drop conductance matrix is not positive definite");
        a(k, k) = std::sqrt(s);
      }
    }
  }
  // One solve per unit input (row s driven at 1 V through its first segment). Only the last row's
  // bit-line voltages are needed (I_j = V(bit-line node (R - 1, j)) / r into the virtual ground),
  // and back-substitution finds the last nodes first, so it stops after them.
  torch::Tensor out = torch::empty({R, C}, kF64);
  double* op = out.data_ptr<double>();
  const int64_t last = 2 * (R - 1) * C;  // word-line node (R - 1, 0)
  at::parallel_for(0, R, 1, [&](int64_t s0, int64_t s1) {
    std::vector<double> y(static_cast<size_t>(n));
    for (int64_t s = s0; s < s1; ++s) {
      std::fill(y.begin(), y.end(), 0.0);
      const int64_t first = 2 * s * C;  // word-line node (s, 0); y is zero above it
      y[static_cast<size_t>(first)] = gw;
      for (int64_t k = first; k < n; ++k) {  // L y = b
        const int64_t m0 = std::max(first, k - p);
        double v = y[static_cast<size_t>(k)];
        if (k > m0) v -= Dot(bp + k * (p + 1) + 1, y.data() + k - 1, k - m0, /*reversed_b=*/true);
        y[static_cast<size_t>(k)] = v / a(k, k);
      }
      for (int64_t k = n - 1; k >= last; --k) {  // L^T u = y, column by column from the bottom
        const double u = y[static_cast<size_t>(k)] / a(k, k);
        y[static_cast<size_t>(k)] = u;
        for (int64_t m = std::max<int64_t>(0, k - p); m < k; ++m) y[static_cast<size_t>(m)] -= a(k, m) * u;
      }
      for (int64_t j = 0; j < C; ++j) op[s * C + j] = y[static_cast<size_t>(2 * ((R - 1) * C + j) + 1)] * gw;
    }
  });
  return out;
}

}  // namespace

torch::Tensor IrDropEffective(const torch::Tensor& g_in, double wire_ohm, IrDropModel model) {
  torch::Tensor g = g_in.to(torch::kCPU, torch::kFloat64).contiguous();
  XBAR_CHECK(g.dim() == 2, "IR drop: conductances must be [rows, cols]");
  if (wire_ohm <= 0 || g.numel() == 0) return g.clone();
  return model == IrDropModel::kExact ? Exact(g, wire_ohm) : Fast(g, wire_ohm);
}

}  // namespace xbar
