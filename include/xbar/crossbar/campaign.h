// xbar/crossbar/campaign.h — Monte Carlo fault campaigns: statistics of a grid point and the
// tolerable fault rate of a curve (xbar faults; SPEC §5.4).
//
// A point is N accuracies, one per random fault map; it reports their mean, sample standard
// deviation and the 95 % confidence interval of the mean (Student's t, N - 1 degrees of freedom).
// A curve's tolerable fault rate is the largest rate whose mean accuracy stays at or above
// `threshold` (fault-free accuracy - faults.max_drop): the grid is evaluated in increasing order,
// and the bracket between the last passing and the first failing grid rate is refined by geometric
// bisection. Its confidence interval comes from the points' intervals: from the largest rate up to
// which every point's lower bound is above the threshold, to the smallest rate whose upper bound is
// below it.
//
//   Curve c = RunCurve(rates, 0.89, 3, [&](double rate, bool refined) { return Summarize(rate, accs); });
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace xbar {

struct PointStats {
  double rate = 0;
  bool refined = false;           // a bisection point, not on the grid
  std::vector<double> accuracies;  // one per sample, in sample order
  double mean = 0, std = 0;        // std: sample standard deviation (0 for one sample)
  double ci_low = 0, ci_high = 0;  // 95 % confidence interval of the mean
};

// Two-sided 97.5 % quantile of Student's t with `dof` >= 1 degrees of freedom.
double StudentT975(int64_t dof);
// Mean, standard deviation and confidence interval of `accuracies` (at least one).
PointStats Summarize(double rate, std::vector<double> accuracies, bool refined = false);

struct Tolerance {
  double rate = 0;                    // largest rate whose mean stays >= threshold
  double ci_low = 0;                  // every point up to it has its CI above the threshold
  std::optional<double> ci_high;      // smallest rate whose CI lies below it (none: never)
  bool below_grid = false;            // the first grid rate already fails
  bool above_grid = false;            // no grid rate fails
};

struct Curve {
  std::vector<PointStats> points;  // by rate
  Tolerance tolerance;
};

// Evaluates `rates` (increasing; > 0 when `geometric`) with `eval`, then `refine_steps` bisection
// points: geometric midpoints (fault rates on a log grid) or arithmetic ones (any other axis).
Curve RunCurve(const std::vector<double>& rates, double threshold, int refine_steps,
               const std::function<PointStats(double rate, bool refined)>& eval, bool geometric = true);

}  // namespace xbar
