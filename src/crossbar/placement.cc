#include "xbar/crossbar/placement.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "xbar/core/error.h"

namespace xbar {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One stuck cell at a physical position: column group p, slice s, component a, stuck level X.
struct Stuck {
  int64_t p;
  int s, a;
  double level;
};

// The problem flattened for the inner loops (tensors -> vectors), with the stuck cells indexed by
// (word line, column group).
class Model {
 public:
  explicit Model(const PlacementProblem& p) {
    XBAR_CHECK(p.scheme != nullptr && p.levels.dim() == 3 && p.states.sizes() == p.levels.sizes(),
               "placement: levels and states must both be [A, R, C*S]");
    A_ = static_cast<int>(p.levels.size(0));
    R_ = p.levels.size(1);
    CS_ = p.levels.size(2);
    S_ = p.scheme->Slices(p.encoding);
    XBAR_CHECK(S_ > 0 && CS_ % S_ == 0, "placement: ", CS_, " columns are not whole groups of ", S_, " slices");
    C_ = CS_ / S_;
    XBAR_CHECK(static_cast<int64_t>(p.moments.size()) == R_, "placement: ", p.moments.size(), " moments for ", R_, " rows");
    L_ = static_cast<double>(p.encoding.levels());
    pairs_ = p.scheme->Components() == 2;
    bias_ = static_cast<double>(p.scheme->Bias(p.encoding));
    XBAR_CHECK(p.column_sign.empty() || static_cast<int64_t>(p.column_sign.size()) == CS_, "placement: ",
               p.column_sign.size(), " column signs for ", CS_, " columns");
    XBAR_CHECK(p.unit_coef.empty() || static_cast<int64_t>(p.unit_coef.size()) == C_, "placement: ",
               p.unit_coef.size(), " unit coefficients for ", C_, " outputs");
    column_sign_ = p.column_sign;
    unit_coef_ = p.unit_coef;
    fragment_ = p.fragment_rows > 0 ? std::min(p.fragment_rows, R_) : R_;
    if (p.fragment_sign.defined()) {
      const torch::Tensor fs = p.fragment_sign.to(torch::kCPU, torch::kFloat64).abs().contiguous();
      XBAR_CHECK(fs.dim() == 2 && fs.size(1) == C_ && fs.size(0) * fragment_ >= R_, "placement: fragment signs ",
                 fs.sizes(), " for ", R_, " rows and ", C_, " outputs");
      read_.assign(fs.data_ptr<double>(), fs.data_ptr<double>() + fs.numel());
    }
    m_ = p.moments;
    const torch::Tensor lv = p.levels.to(torch::kCPU, torch::kFloat64).contiguous();
    lv_.assign(lv.data_ptr<double>(), lv.data_ptr<double>() + lv.numel());
    for (int a = 0; a < A_; ++a) sign_.push_back(p.scheme->ComponentSign(a));
    for (int s = 0; s < S_; ++s) base_.push_back(std::ldexp(1.0, p.encoding.cell_bits * s));
    const torch::Tensor st = p.states.to(torch::kCPU, torch::kInt8).contiguous();
    const int8_t* sp = st.data_ptr<int8_t>();
    // Stuck cells sorted by (r, p): offsets per (r, p).
    std::vector<std::vector<Stuck>> by_cell(static_cast<size_t>(R_ * C_));
    for (int a = 0; a < A_; ++a) {
      for (int64_t r = 0; r < R_; ++r) {
        for (int64_t c = 0; c < CS_; ++c) {
          const int8_t v = sp[(a * R_ + r) * CS_ + c];
          if (v == 0) continue;
          by_cell[static_cast<size_t>(r * C_ + c / S_)].push_back({c / S_, static_cast<int>(c % S_), a, v == 1 ? 0.0 : L_});
        }
      }
    }
    offset_.assign(static_cast<size_t>(R_ * C_ + 1), 0);
    for (int64_t k = 0; k < R_ * C_; ++k) {
      offset_[static_cast<size_t>(k + 1)] = offset_[static_cast<size_t>(k)] + static_cast<int64_t>(by_cell[static_cast<size_t>(k)].size());
      for (const Stuck& f : by_cell[static_cast<size_t>(k)]) stuck_.push_back(f);
    }
    if (p.unit.defined() && p.unit_states.defined()) {
      const torch::Tensor u = p.unit.to(torch::kCPU, torch::kFloat64).contiguous();
      const torch::Tensor us = p.unit_states.to(torch::kCPU, torch::kInt8).contiguous();
      unit_.assign(u.data_ptr<double>(), u.data_ptr<double>() + R_);
      for (int64_t r = 0; r < R_; ++r) {
        const int8_t v = us.data_ptr<int8_t>()[r];
        unit_stuck_.push_back(v == 0 ? -1.0 : v == 1 ? 0.0 : L_);
      }
    }
    // Faulty word lines and column groups.
    slot_rows_.assign(static_cast<size_t>(C_), {});
    slot_slices_.assign(static_cast<size_t>(C_), 0u);
    for (int64_t r = 0; r < R_; ++r) {
      bool faulty = UnitStuck(r);
      for (int64_t q = 0; q < C_; ++q) {
        if (Count(r, q) == 0) continue;
        faulty = true;
        slot_rows_[static_cast<size_t>(q)].push_back(r);
        for (int64_t k = Begin(r, q); k < End(r, q); ++k) slot_slices_[static_cast<size_t>(q)] |= 1u << stuck_[static_cast<size_t>(k)].s;
      }
      if (faulty) faulty_rows_.push_back(r);
    }
  }

  int64_t R() const { return R_; }
  int64_t C() const { return C_; }
  int S() const { return S_; }
  bool pairs() const { return pairs_; }
  int64_t fragment() const { return fragment_; }
  const std::vector<int64_t>& faulty_rows() const { return faulty_rows_; }
  const std::vector<int64_t>& slot_rows(int64_t q) const { return slot_rows_[static_cast<size_t>(q)]; }
  uint32_t slot_slices(int64_t q) const { return pairs_ ? slot_slices_[static_cast<size_t>(q)] : 0u; }
  double moment(int64_t i) const { return m_[static_cast<size_t>(i)]; }
  bool UnitStuck(int64_t r) const { return !unit_stuck_.empty() && unit_stuck_[static_cast<size_t>(r)] >= 0; }
  int64_t Count(int64_t r, int64_t q) const { return End(r, q) - Begin(r, q); }

  // Change of weight (i, j)'s integer value when it sits at word line r, column group q, with its
  // pairs flipped per bit s of `flips`.
  double Delta(int64_t i, int64_t j, int64_t r, int64_t q, uint32_t flips) const {
    // A FORMS fragment without weights has sign 0: its cells are never read.
    if (!read_.empty() && read_[static_cast<size_t>((i / fragment_) * C_ + j)] == 0) return UnitDelta(i, r, j);
    double d = 0;
    for (int64_t k = Begin(r, q); k < End(r, q); ++k) {
      const Stuck& f = stuck_[static_cast<size_t>(k)];
      const int64_t col = j * S_ + f.s;
      const double programmed = (flips >> f.s) & 1u ? L_ - Level(1 - f.a, i, col) : Level(f.a, i, col);
      const double flipped = column_sign_.empty() ? 1.0 : column_sign_[static_cast<size_t>(col)];
      d += base_[static_cast<size_t>(f.s)] * sign_[static_cast<size_t>(f.a)] * flipped * (f.level - programmed);
    }
    return d + UnitDelta(i, r, j);
  }
  // The unit column's share: its reads are subtracted times the bias (level-1 cells), or with the
  // flipped encoding count output j's own coefficient.
  double UnitDelta(int64_t i, int64_t r, int64_t j) const {
    if (!UnitStuck(r)) return 0.0;
    const double coef = unit_coef_.empty() ? -bias_ : unit_coef_[static_cast<size_t>(j)];
    return coef * (unit_stuck_[static_cast<size_t>(r)] - unit_[static_cast<size_t>(i)]);
  }

  // Harm of word line r holding logical row i, given the columns (output_at[q] = the output on group q).
  double RowCost(int64_t i, int64_t r, const std::vector<int64_t>& output_at, const std::vector<uint32_t>& flips) const {
    double sum = 0;
    int64_t clean_groups = C_;
    for (int64_t q = 0; q < C_; ++q) {
      if (Count(r, q) == 0) continue;
      --clean_groups;
      const int64_t j = output_at[static_cast<size_t>(q)];
      const double d = Delta(i, j, r, q, flips[static_cast<size_t>(j)]);
      sum += d * d;
    }
    if (UnitStuck(r) && unit_coef_.empty()) {
      const double u = UnitDelta(i, r, 0);
      sum += static_cast<double>(clean_groups) * u * u;
    } else if (UnitStuck(r)) {
      for (int64_t q = 0; q < C_; ++q) {
        if (Count(r, q) != 0) continue;
        const double u = UnitDelta(i, r, output_at[static_cast<size_t>(q)]);
        sum += u * u;
      }
    }
    return moment(i) * sum;
  }

 private:
  int64_t Begin(int64_t r, int64_t q) const { return offset_[static_cast<size_t>(r * C_ + q)]; }
  int64_t End(int64_t r, int64_t q) const { return offset_[static_cast<size_t>(r * C_ + q + 1)]; }
  double Level(int a, int64_t i, int64_t col) const { return lv_[static_cast<size_t>((a * R_ + i) * CS_ + col)]; }

  int A_ = 1, S_ = 1;
  int64_t R_ = 0, C_ = 0, CS_ = 0, fragment_ = 0;
  double L_ = 1, bias_ = 0;
  std::vector<double> column_sign_, unit_coef_;
  bool pairs_ = false;
  std::vector<double> m_, lv_, sign_, base_, unit_, unit_stuck_, read_;
  std::vector<Stuck> stuck_;
  std::vector<int64_t> offset_;
  std::vector<std::vector<int64_t>> slot_rows_;
  std::vector<uint32_t> slot_slices_;
  std::vector<int64_t> faulty_rows_;
};

// The state of the alternation: which logical row / output sits where, and each output's flips.
struct State {
  std::vector<int64_t> row_at;     // word line r -> logical row
  std::vector<int64_t> output_at;  // column group q -> logical output
  std::vector<uint32_t> flips;     // per logical output: bit s = slice s's pair flipped
};

double Cost(const Model& m, const State& st) {
  double sum = 0;
  for (int64_t r : m.faulty_rows()) sum += m.RowCost(st.row_at[static_cast<size_t>(r)], r, st.output_at, st.flips);
  return sum;
}

// Column groups with stuck cells get the outputs (and flips) that cost least there, rows fixed.
void ColumnStep(const Model& m, State& st) {
  const int64_t C = m.C();
  std::vector<int64_t> faulty;
  for (int64_t q = 0; q < C; ++q) {
    if (!m.slot_rows(q).empty()) faulty.push_back(q);
  }
  if (faulty.empty()) return;
  const int64_t n = static_cast<int64_t>(faulty.size());
  std::vector<double> cost(static_cast<size_t>(n * C));
  std::vector<uint32_t> best_flips(static_cast<size_t>(n * C), 0u);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t q = faulty[static_cast<size_t>(k)];
    const uint32_t mask = m.slot_slices(q);
    for (int64_t j = 0; j < C; ++j) {
      double best = kInf;
      uint32_t best_f = 0;
      // Every subset of the slices with stuck cells here (flipping the others changes nothing).
      for (uint32_t f = mask;; f = (f - 1) & mask) {
        double sum = 0;
        for (int64_t r : m.slot_rows(q)) {
          const int64_t i = st.row_at[static_cast<size_t>(r)];
          const double d = m.Delta(i, j, r, q, f);
          sum += m.moment(i) * d * d;
        }
        if (sum < best || (sum == best && f < best_f)) {
          best = sum;
          best_f = f;
        }
        if (f == 0) break;
      }
      cost[static_cast<size_t>(k * C + j)] = best;
      best_flips[static_cast<size_t>(k * C + j)] = best_f;
    }
  }
  const std::vector<int64_t> pick = MinCostAssignment(cost, n, C);
  std::vector<bool> used(static_cast<size_t>(C), false), faulty_group(static_cast<size_t>(C), false);
  std::fill(st.flips.begin(), st.flips.end(), 0u);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t q = faulty[static_cast<size_t>(k)], j = pick[static_cast<size_t>(k)];
    st.output_at[static_cast<size_t>(q)] = j;
    st.flips[static_cast<size_t>(j)] = best_flips[static_cast<size_t>(k * C + j)];
    used[static_cast<size_t>(j)] = true;
    faulty_group[static_cast<size_t>(q)] = true;
  }
  // The other outputs keep their order on the clean groups.
  int64_t next = 0;
  for (int64_t q = 0; q < C; ++q) {
    if (faulty_group[static_cast<size_t>(q)]) continue;
    while (used[static_cast<size_t>(next)]) ++next;
    st.output_at[static_cast<size_t>(q)] = next++;
  }
}

// Faulty word lines get the inputs that cost least there, columns fixed; within each fragment.
void RowStep(const Model& m, State& st) {
  const int64_t R = m.R(), F = m.fragment();
  for (int64_t lo = 0; lo < R; lo += F) {
    const int64_t hi = std::min(R, lo + F), width = hi - lo;
    std::vector<int64_t> faulty;
    for (int64_t r : m.faulty_rows()) {
      if (r >= lo && r < hi) faulty.push_back(r);
    }
    if (faulty.empty()) continue;
    const int64_t n = static_cast<int64_t>(faulty.size());
    std::vector<double> cost(static_cast<size_t>(n * width));
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t i = lo; i < hi; ++i) {
        cost[static_cast<size_t>(k * width + (i - lo))] = m.RowCost(i, faulty[static_cast<size_t>(k)], st.output_at, st.flips);
      }
    }
    const std::vector<int64_t> pick = MinCostAssignment(cost, n, width);
    std::vector<bool> used(static_cast<size_t>(width), false), faulty_row(static_cast<size_t>(width), false);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t r = faulty[static_cast<size_t>(k)];
      st.row_at[static_cast<size_t>(r)] = lo + pick[static_cast<size_t>(k)];
      used[static_cast<size_t>(pick[static_cast<size_t>(k)])] = true;
      faulty_row[static_cast<size_t>(r - lo)] = true;
    }
    int64_t next = 0;
    for (int64_t r = lo; r < hi; ++r) {
      if (faulty_row[static_cast<size_t>(r - lo)]) continue;
      while (used[static_cast<size_t>(next)]) ++next;
      st.row_at[static_cast<size_t>(r)] = lo + next++;
    }
  }
}

State Identity(const Model& m) {
  State st;
  st.row_at.resize(static_cast<size_t>(m.R()));
  st.output_at.resize(static_cast<size_t>(m.C()));
  for (int64_t r = 0; r < m.R(); ++r) st.row_at[static_cast<size_t>(r)] = r;
  for (int64_t q = 0; q < m.C(); ++q) st.output_at[static_cast<size_t>(q)] = q;
  st.flips.assign(static_cast<size_t>(m.C()), 0u);
  return st;
}

// A State as the placement it describes (inverse permutations, flips per pair).
TilePlacement ToPlacement(const Model& m, const State& st) {
  TilePlacement pl;
  pl.row.resize(static_cast<size_t>(m.R()));
  pl.slot.resize(static_cast<size_t>(m.C()));
  for (int64_t r = 0; r < m.R(); ++r) pl.row[static_cast<size_t>(st.row_at[static_cast<size_t>(r)])] = r;
  for (int64_t q = 0; q < m.C(); ++q) pl.slot[static_cast<size_t>(st.output_at[static_cast<size_t>(q)])] = q;
  if (m.pairs()) {
    pl.flip.assign(static_cast<size_t>(m.C() * m.S()), 0);
    for (int64_t j = 0; j < m.C(); ++j) {
      for (int s = 0; s < m.S(); ++s) pl.flip[static_cast<size_t>(j * m.S() + s)] = (st.flips[static_cast<size_t>(j)] >> s) & 1u;
    }
  }
  return pl;
}

State FromPlacement(const Model& m, const TilePlacement& pl) {
  if (pl.empty()) return Identity(m);
  State st = Identity(m);
  for (int64_t i = 0; i < m.R(); ++i) st.row_at[static_cast<size_t>(pl.row[static_cast<size_t>(i)])] = i;
  for (int64_t j = 0; j < m.C(); ++j) st.output_at[static_cast<size_t>(pl.slot[static_cast<size_t>(j)])] = j;
  for (int64_t j = 0; j < m.C() && !pl.flip.empty(); ++j) {
    for (int s = 0; s < m.S(); ++s) {
      if (pl.flip[static_cast<size_t>(j * m.S() + s)]) st.flips[static_cast<size_t>(j)] |= 1u << s;
    }
  }
  return st;
}

}  // namespace

std::vector<int64_t> MinCostAssignment(const std::vector<double>& cost, int64_t n, int64_t m) {
  XBAR_CHECK(n <= m && static_cast<int64_t>(cost.size()) == n * m, "assignment of ", n, " rows to ", m, " columns");
  // Shortest augmenting paths with potentials (the Hungarian method), 1-based; column 0 is virtual.
  std::vector<double> u(static_cast<size_t>(n + 1), 0.0), v(static_cast<size_t>(m + 1), 0.0);
  std::vector<int64_t> owner(static_cast<size_t>(m + 1), 0), way(static_cast<size_t>(m + 1), 0);
  for (int64_t i = 1; i <= n; ++i) {
    owner[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(static_cast<size_t>(m + 1), kInf);
    std::vector<bool> used(static_cast<size_t>(m + 1), false);
    do {
      used[static_cast<size_t>(j0)] = true;
      const int64_t i0 = owner[static_cast<size_t>(j0)];
      double delta = kInf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[static_cast<size_t>(j)]) continue;
        const double cur = cost[static_cast<size_t>((i0 - 1) * m + (j - 1))] - u[static_cast<size_t>(i0)] - v[static_cast<size_t>(j)];
        if (cur < minv[static_cast<size_t>(j)]) {
          minv[static_cast<size_t>(j)] = cur;
          way[static_cast<size_t>(j)] = j0;
        }
        if (minv[static_cast<size_t>(j)] < delta) {
          delta = minv[static_cast<size_t>(j)];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[static_cast<size_t>(j)]) {
          u[static_cast<size_t>(owner[static_cast<size_t>(j)])] += delta;
          v[static_cast<size_t>(j)] -= delta;
        } else {
          minv[static_cast<size_t>(j)] -= delta;
        }
      }
      j0 = j1;
    } while (owner[static_cast<size_t>(j0)] != 0);
    do {
      const int64_t j1 = way[static_cast<size_t>(j0)];
      owner[static_cast<size_t>(j0)] = owner[static_cast<size_t>(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> result(static_cast<size_t>(n), -1);
  for (int64_t j = 1; j <= m; ++j) {
    if (owner[static_cast<size_t>(j)] != 0) result[static_cast<size_t>(owner[static_cast<size_t>(j)] - 1)] = j - 1;
  }
  return result;
}

double PlacementCost(const PlacementProblem& p, const TilePlacement& pl) {
  const Model m(p);
  return Cost(m, FromPlacement(m, pl));
}

TilePlacement PlaceTile(const PlacementProblem& p) {
  const Model m(p);
  State st = Identity(m);
  const double before = Cost(m, st);
  double cost = before;
  int rounds = 0;
  // Each step is an exact minimisation given the other, so the harm never rises; stop when a
  // round no longer lowers it (or after a few rounds: the later ones rarely move anything).
  for (; rounds < 8 && cost > 0; ++rounds) {
    State next = st;
    ColumnStep(m, next);
    RowStep(m, next);
    const double c = Cost(m, next);
    if (!(c < cost * (1 - 1e-12))) break;
    st = std::move(next);
    cost = c;
  }
  TilePlacement pl = ToPlacement(m, st);
  pl.cost_before = before;
  pl.cost_after = cost;
  pl.rounds = rounds;
  return pl;
}

torch::Tensor PlacedStates(const TilePlacement& pl, int slices, const torch::Tensor& states) {
  if (pl.empty()) return states;
  const int64_t C = static_cast<int64_t>(pl.slot.size());
  std::vector<int64_t> cols(static_cast<size_t>(C * slices));
  for (int64_t j = 0; j < C; ++j) {
    for (int s = 0; s < slices; ++s) cols[static_cast<size_t>(j * slices + s)] = pl.slot[static_cast<size_t>(j)] * slices + s;
  }
  const torch::Tensor rows = torch::tensor(pl.row, torch::kInt64);
  return states.index_select(1, rows).index_select(2, torch::tensor(cols, torch::kInt64));
}

torch::Tensor PlacedUnitStates(const TilePlacement& pl, const torch::Tensor& unit_states) {
  if (pl.empty() || !unit_states.defined()) return unit_states;
  return unit_states.index_select(0, torch::tensor(pl.row, torch::kInt64));
}

void ApplyFlips(const TilePlacement& pl, double top_level, torch::Tensor& levels) {
  if (pl.flip.empty()) return;
  XBAR_CHECK(levels.size(0) == 2 && levels.size(2) == static_cast<int64_t>(pl.flip.size()), "flips need [2, R, C*S] levels");
  std::vector<int64_t> idx;
  for (size_t c = 0; c < pl.flip.size(); ++c) {
    if (pl.flip[c]) idx.push_back(static_cast<int64_t>(c));
  }
  if (idx.empty()) return;
  const torch::Tensor cols = torch::tensor(idx, torch::kInt64);
  const torch::Tensor a = levels[0].index_select(1, cols), b = levels[1].index_select(1, cols);
  levels[0].index_copy_(1, cols, top_level - b);
  levels[1].index_copy_(1, cols, top_level - a);
}

}  // namespace xbar
