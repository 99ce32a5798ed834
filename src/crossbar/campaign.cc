#include "xbar/crossbar/campaign.h"

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"

namespace xbar {

double StudentT975(int64_t dof) {
  XBAR_CHECK(dof >= 1, "Student t needs at least one degree of freedom");
  // Exact values up to 9 degrees of freedom; beyond, the Cornish-Fisher expansion around the normal
  // quantile (Abramowitz & Stegun 26.7.5), within 2e-5 of the exact quantile from 9 on.
  static constexpr double kSmall[] = {12.706204736174698, 4.302652729749464, 3.182446305284263,
                                      2.776445105197793,  2.570581835636314, 2.446911851144969,
                                      2.364624251592785,  2.306004135204166, 2.262157162798205};
  if (dof <= 9) return kSmall[dof - 1];
  const double z = 1.959963984540054, n = static_cast<double>(dof);
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z, z9 = z7 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n) +
         (79 * z9 + 776 * z7 + 1482 * z5 - 1920 * z3 - 945 * z) / (92160 * n * n * n * n);
}

PointStats Summarize(double rate, std::vector<double> accuracies, bool refined) {
  XBAR_CHECK(!accuracies.empty(), "a campaign point needs at least one sample");
  PointStats p;
  p.rate = rate;
  p.refined = refined;
  p.accuracies = std::move(accuracies);
  const double n = static_cast<double>(p.accuracies.size());
  double sum = 0;
  for (double a : p.accuracies) sum += a;
  p.mean = sum / n;
  double ss = 0;
  for (double a : p.accuracies) ss += (a - p.mean) * (a - p.mean);
  p.std = p.accuracies.size() > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
  const double half = p.accuracies.size() > 1 ? StudentT975(static_cast<int64_t>(n) - 1) * p.std / std::sqrt(n) : 0.0;
  p.ci_low = p.mean - half;
  p.ci_high = p.mean + half;
  return p;
}

Curve RunCurve(const std::vector<double>& rates, double threshold, int refine_steps,
               const std::function<PointStats(double rate, bool refined)>& eval, bool geometric) {
  Curve c;
  for (double r : rates) c.points.push_back(eval(r, false));
  size_t fail = c.points.size();
  for (size_t i = 0; i < c.points.size(); ++i) {
    if (c.points[i].mean < threshold) {
      fail = i;
      break;
    }
  }
  Tolerance& t = c.tolerance;
  if (fail == c.points.size()) {
    t.rate = rates.back();
    t.above_grid = true;
  } else if (fail == 0) {
    t.rate = 0;
    t.below_grid = true;
  } else {
    double lo = rates[fail - 1], hi = rates[fail];
    for (int s = 0; s < refine_steps; ++s) {
      const double mid = geometric ? std::sqrt(lo * hi) : 0.5 * (lo + hi);
      PointStats p = eval(mid, true);
      (p.mean >= threshold ? lo : hi) = mid;
      c.points.push_back(std::move(p));
    }
    t.rate = lo;
  }
  std::sort(c.points.begin(), c.points.end(), [](const PointStats& a, const PointStats& b) { return a.rate < b.rate; });
  for (const PointStats& p : c.points) {
    if (p.ci_low < threshold) break;
    t.ci_low = p.rate;
  }
  for (const PointStats& p : c.points) {
    if (p.ci_high < threshold) {
      t.ci_high = p.rate;
      break;
    }
  }
  return c;
}

}  // namespace xbar
