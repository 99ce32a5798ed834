// Projections onto crossbar constraint sets. Plain C++ on float buffers (no LibTorch): these run
// once per ADMM round on every layer, and on 4096×4096 matrices within the 50 ms budget of
// docs/BENCHMARKS.md.
#include "xbar/compress/projection.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

#include "xbar/core/error.h"

namespace xbar {
namespace {

constexpr int64_t kExactSelectLimit = 1 << 20;    // below this, top-k selects on a full copy
constexpr int64_t kScaleSample = 65536;           // magnitudes used to choose a quantisation scale
constexpr int64_t kExactSweepEvents = 1 << 18;   // scale search: exact sweep up to this many events

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Flags of the `keep` largest keys, ties towards the lower index, given the keep-th largest key.
template <typename T>
std::vector<char> KeepFromThreshold(const std::vector<T>& key, T threshold, int64_t keep) {
  const auto g = static_cast<int64_t>(key.size());
  std::vector<char> kept(static_cast<size_t>(g), 0);
  int64_t above = 0;
  for (int64_t i = 0; i < g; ++i) {
    const bool a = key[static_cast<size_t>(i)] > threshold;
    kept[static_cast<size_t>(i)] = a;
    above += a;
  }
  for (int64_t i = 0, left = keep - above; i < g && left > 0; ++i) {
    if (key[static_cast<size_t>(i)] == threshold) {
      kept[static_cast<size_t>(i)] = 1;
      --left;
    }
  }
  return kept;
}

// Indices of the `keep` largest scores, ties towards the lower index; returns a keep-flag vector.
std::vector<char> TopGroups(const std::vector<double>& score, int64_t keep) {
  const auto g = static_cast<int64_t>(score.size());
  if (keep >= g || keep <= 0) return std::vector<char>(static_cast<size_t>(g), keep > 0 ? 1 : 0);
  // Keep the `keep` largest scores, ties broken towards the lower index: select the threshold on
  // a contiguous copy of the scores, keep everything above it, then the first indices equal to it.
  std::vector<double> copy(score);
  std::nth_element(copy.begin(), copy.begin() + (keep - 1), copy.end(), std::greater<double>());
  return KeepFromThreshold(score, copy[static_cast<size_t>(keep - 1)], keep);
}

// Structures whose groups are runs of rows inside one column ("segments"): calls
// f(col, r0, r1, group) for each run. Returns false for the row-wise structures (kColumn,
// kCrossbarRow), whose group of element (r, col) is RowGroupBase(col) + r.
template <typename F>
bool ForEachSegment(const CrossbarMatrix& m, const LayerConstraints& c, F&& f) {
  const int64_t K = m.rows, N = m.cols, R = c.tile.rows, C = c.tile.cols;
  const int64_t tile_cols = CeilDiv(N, C);
  switch (c.structure) {
    case Structure::kFilter:
      for (int64_t col = 0; col < N; ++col) f(col, int64_t{0}, K, col);
      return true;
    case Structure::kChannel:
      for (int64_t col = 0; col < N; ++col) {
        for (int64_t r0 = 0, g = 0; r0 < K; r0 += c.kernel_area, ++g) f(col, r0, std::min(K, r0 + c.kernel_area), g);
      }
      return true;
    case Structure::kCrossbarColumn:
      for (int64_t col = 0; col < N; ++col) {
        for (int64_t r0 = 0, i = 0; r0 < K; r0 += R, ++i) f(col, r0, std::min(K, r0 + R), i * N + col);
      }
      return true;
    case Structure::kCrossbarTile:
      for (int64_t col = 0; col < N; ++col) {
        for (int64_t r0 = 0, i = 0; r0 < K; r0 += R, ++i) f(col, r0, std::min(K, r0 + R), i * tile_cols + col / C);
      }
      return true;
    default:
      return false;
  }
}

// Row-wise structures: the group of (r, col) is RowGroupBase(col) + r.
int64_t RowGroupBase(const CrossbarMatrix& m, const LayerConstraints& c, int64_t col) {
  return c.structure == Structure::kCrossbarRow ? (col / c.tile.cols) * m.rows : 0;
}

// Squared L2 norm of every group of a (non-block) structure.
std::vector<double> GroupNorms(const CrossbarMatrix& m, const LayerConstraints& c, int64_t groups) {
  std::vector<double> norm(static_cast<size_t>(groups), 0.0);
  const bool segments = ForEachSegment(m, c, [&](int64_t col, int64_t r0, int64_t r1, int64_t g) {
    const float* w = m.data + col * m.rows;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; ++r) acc += w[r] * w[r];
    norm[static_cast<size_t>(g)] += acc;
  });
  if (!segments) {
    std::vector<float> acc(static_cast<size_t>(groups), 0.0f);
    for (int64_t col = 0; col < m.cols; ++col) {
      const float* w = m.data + col * m.rows;
      float* a = acc.data() + RowGroupBase(m, c, col);
      for (int64_t r = 0; r < m.rows; ++r) a[r] += w[r] * w[r];
    }
    norm.assign(acc.begin(), acc.end());
  }
  return norm;
}

// Zeroes every group whose flag in `kept` is 0.
void ZeroGroups(CrossbarMatrix m, const LayerConstraints& c, const std::vector<char>& kept) {
  const bool segments = ForEachSegment(m, c, [&](int64_t col, int64_t r0, int64_t r1, int64_t g) {
    if (!kept[static_cast<size_t>(g)]) std::fill(m.data + col * m.rows + r0, m.data + col * m.rows + r1, 0.0f);
  });
  if (!segments) {
    std::vector<float> scale(kept.begin(), kept.end());
    for (int64_t col = 0; col < m.cols; ++col) {
      float* w = m.data + col * m.rows;
      const float* k = scale.data() + RowGroupBase(m, c, col);
      for (int64_t r = 0; r < m.rows; ++r) w[r] *= k[r];
    }
  }
}

// Flags of the groups holding a non-zero.
std::vector<char> NonzeroGroups(const CrossbarMatrix& m, const LayerConstraints& c, int64_t groups) {
  std::vector<char> nz(static_cast<size_t>(groups), 0);
  const bool segments = ForEachSegment(m, c, [&](int64_t col, int64_t r0, int64_t r1, int64_t g) {
    const float* w = m.data + col * m.rows;
    for (int64_t r = r0; r < r1 && !nz[static_cast<size_t>(g)]; ++r) nz[static_cast<size_t>(g)] = w[r] != 0.0f;
  });
  if (!segments) {
    for (int64_t col = 0; col < m.cols; ++col) {
      const float* w = m.data + col * m.rows;
      char* z = nz.data() + RowGroupBase(m, c, col);
      for (int64_t r = 0; r < m.rows; ++r) z[r] = static_cast<char>(z[r] | (w[r] != 0.0f));
    }
  }
  return nz;
}

// Keeps the `keep` largest magnitudes of w[0, n) given the keep-th largest magnitude t and how
// many entries lie strictly above it (`above`, < 0 = count them here): entries above t stay,
// entries equal to t stay lowest index first, the rest become 0. The main pass is branch-free;
// only when more entries tie at t than may stay does a second, predictable pass drop the excess.
void KeepLargest(float* w, int64_t n, int64_t keep, float t, int64_t above = -1) {
  if (above < 0) {
    above = 0;
    for (int64_t i = 0; i < n; ++i) above += std::fabs(w[i]) > t ? 1 : 0;
  }
  int64_t equal = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(w[i]);
    equal += a == t ? 1 : 0;
    w[i] = a >= t ? w[i] : 0.0f;
  }
  int64_t ties_left = keep - above;
  if (equal <= ties_left) return;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(w[i]) == t && ties_left-- <= 0) w[i] = 0.0f;
  }
}

// E(s) = sum (a - q(s) s)^2 with q(s) = min(n, round(a / s)).
double ScaleError(const std::vector<float>& a, int64_t n, double s) {
  const auto sf = static_cast<float>(s), inv = static_cast<float>(1.0 / s), top = static_cast<float>(n);
  double e = 0.0;
  constexpr size_t kChunk = 1024;  // float partial sums, double across chunks
  for (size_t c0 = 0; c0 < a.size(); c0 += kChunk) {
    float part = 0.0f;
    for (size_t i = c0; i < std::min(a.size(), c0 + kChunk); ++i) {
      const float q = std::min(top, std::floor(a[i] * inv + 0.5f));
      const float d = a[i] - q * sf;
      part += d * d;
    }
    e += part;
  }
  return e;
}

// Exact minimisation of E(s) over s in [lo, hi] (hi may be +inf) for sorted magnitudes `a`.
// Between consecutive events (s where some q_i drops by one) the assignment is fixed and
// E(s) = C - 2 s A + s^2 B is a parabola minimised at A / B, clamped into the interval.
std::pair<double, double> ExactSweep(const std::vector<float>& a, int64_t n, double lo, double hi) {
  struct Event {
    double s;
    float a;
    int64_t q;  // q_i drops from q to q-1 when s passes this point
  };
  std::vector<Event> events;
  double A = 0, B = 0, Csum = 0;
  for (float x : a) {
    Csum += static_cast<double>(x) * x;
    const int64_t q0 = lo > 0 ? std::min<int64_t>(n, static_cast<int64_t>(std::floor(x / lo + 0.5))) : n;
    A += static_cast<double>(x) * static_cast<double>(q0);
    B += static_cast<double>(q0) * static_cast<double>(q0);
    for (int64_t q = q0; q >= 1; --q) {
      const double s = x / (static_cast<double>(q) - 0.5);
      if (s > hi) break;
      if (s > lo) events.push_back({s, x, q});
    }
  }
  std::sort(events.begin(), events.end(), [](const Event& e1, const Event& e2) { return e1.s < e2.s; });
  double best_s = 0, best_e = Csum;  // s -> infinity: everything rounds to zero
  double prev = lo;
  auto consider = [&](double left, double right) {
    if (B <= 0) return;
    const double s = std::clamp(A / B, left, right);
    if (s <= 0) return;
    const double e = Csum - 2 * s * A + s * s * B;
    if (e < best_e) {
      best_e = e;
      best_s = s;
    }
  };
  for (const Event& ev : events) {
    consider(prev, ev.s);
    A -= ev.a;
    B -= static_cast<double>(2 * ev.q - 1);
    prev = ev.s;
  }
  consider(prev, hi);
  return {best_s, best_e};
}

// One pass over w[0, n): returns how many magnitudes exceed hi and appends those in [lo, hi] to
// `inside` (branch-free compaction by chunks; bounds passed by value so they stay in registers).
int64_t Bracket(const float* w, int64_t n, float lo, float hi, std::vector<float>* inside) {
  constexpr int64_t kChunk = 4096;
  std::vector<float> chunk(kChunk);
  float* out = chunk.data();
  int64_t above = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t end = std::min(n, c0 + kChunk);
    int64_t k = 0;
    for (int64_t i = c0; i < end; ++i) {
      const float a = std::fabs(w[i]);
      above += a > hi ? 1 : 0;
      out[k] = a;
      k += static_cast<int64_t>(a <= hi) & static_cast<int64_t>(a >= lo);  // no branch: a && would be one
    }
    inside->insert(inside->end(), out, out + k);
  }
  return above;
}

}  // namespace

const std::vector<std::string>& StructureNames() {
  static const std::vector<std::string> names = {"unstructured",    "filter",          "column",
                                                 "channel",         "crossbar-row",    "crossbar-column",
                                                 "crossbar-block",  "crossbar-tile"};
  return names;
}

const char* StructureName(Structure s) { return StructureNames()[static_cast<size_t>(s)].c_str(); }

bool ParseStructure(const std::string& name, Structure* out) {
  const auto& names = StructureNames();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) {
      *out = static_cast<Structure>(i);
      return true;
    }
  }
  return false;
}

std::vector<std::string> LayerConstraints::Names() const {
  std::vector<std::string> out;
  if (prunes()) out.push_back(StrCat("sparsity:", StructureName(structure), ":", sparsity));
  if (polarize_fragment > 0) out.push_back(StrCat("polarize:", polarize_fragment));
  if (column_budget > 0) out.push_back(StrCat("budget:", column_budget));
  if (quantize_bits > 0) out.push_back(StrCat("quantize:", quantize_bits));
  return out;
}

void ProjectTopK(CrossbarMatrix m, int64_t keep) {
  const int64_t n = m.size();
  if (keep >= n) return;
  if (keep <= 0) {
    std::fill(m.data, m.data + n, 0.0f);
    return;
  }
  // t = the keep-th largest magnitude.
  float t = 0;
  bool found = false;
  if (n > kExactSelectLimit) {
    // Bracket t with quantiles of an evenly strided sample, then select exactly among the
    // entries inside the bracket (one pass); a full selection follows if the bracket missed.
    // The sample is 256 evenly spaced runs of 256 entries (cache-friendly, unlike single strides).
    constexpr int64_t kRun = 256;
    const int64_t run_stride = CeilDiv(n, kScaleSample / kRun);
    std::vector<float> sample;
    sample.reserve(static_cast<size_t>(kScaleSample));
    for (int64_t r0 = 0; r0 < n; r0 += run_stride) {
      for (int64_t i = r0; i < std::min(n, r0 + kRun); ++i) sample.push_back(std::fabs(m.data[i]));
    }
    std::sort(sample.begin(), sample.end(), std::greater<float>());
    const double p = static_cast<double>(keep) / static_cast<double>(n);
    // Six standard deviations of a sample quantile, plus slack for ties and the runs' correlation.
    const double margin = 6.0 * std::sqrt(p * (1 - p) / static_cast<double>(sample.size()) * 2) + 2e-4;
    auto quantile = [&](double q) {  // q = share of the sample above the returned value
      auto i = static_cast<int64_t>(std::clamp(q, 0.0, 1.0) * static_cast<double>(sample.size() - 1));
      return sample[static_cast<size_t>(i)];
    };
    const float hi = p - margin <= 0 ? std::numeric_limits<float>::infinity() : quantile(p - margin);
    const float lo = p + margin >= 1 ? 0.0f : quantile(p + margin);
    std::vector<float> inside;
    const int64_t above = Bracket(m.data, n, lo, hi, &inside);
    const int64_t need = keep - above;
    if (need >= 1 && need <= static_cast<int64_t>(inside.size())) {
      std::nth_element(inside.begin(), inside.begin() + (need - 1), inside.end(), std::greater<float>());
      t = inside[static_cast<size_t>(need - 1)];
      found = true;
      // Every entry equal to t is inside the bracket, so counting above t needs no full pass.
      int64_t above_t = above;
      for (float a : inside) above_t += a > t ? 1 : 0;
      KeepLargest(m.data, n, keep, t, above_t);
      return;
    }
  }
  if (!found) {
    std::vector<float> mags(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) mags[static_cast<size_t>(i)] = std::fabs(m.data[i]);
    std::nth_element(mags.begin(), mags.begin() + (keep - 1), mags.end(), std::greater<float>());
    t = mags[static_cast<size_t>(keep - 1)];
  }
  KeepLargest(m.data, n, keep, t);
}

int64_t GroupCount(const CrossbarMatrix& m, const LayerConstraints& c) {
  const int64_t K = m.rows, N = m.cols, R = c.tile.rows, C = c.tile.cols;
  switch (c.structure) {
    case Structure::kUnstructured: return K * N;
    case Structure::kFilter: return N;
    case Structure::kColumn: return K;
    case Structure::kChannel: return CeilDiv(K, c.kernel_area);
    case Structure::kCrossbarRow: return K * CeilDiv(N, C);
    case Structure::kCrossbarColumn: return CeilDiv(K, R) * N;
    case Structure::kCrossbarBlock: return K * CeilDiv(N, C) + CeilDiv(K, R) * N;
    case Structure::kCrossbarTile: return CeilDiv(K, R) * CeilDiv(N, C);
  }
  return 0;
}

int64_t KeepCount(int64_t groups, double sparsity) {
  if (groups <= 0) return 0;
  const auto removed = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(groups)));
  return std::max<int64_t>(1, groups - removed);
}

void ProjectGroups(CrossbarMatrix m, const LayerConstraints& c, int64_t keep) {
  XBAR_CHECK(c.structure != Structure::kUnstructured && c.structure != Structure::kCrossbarBlock,
             "ProjectGroups needs a group structure");
  const int64_t groups = GroupCount(m, c);
  if (keep >= groups) return;
  ZeroGroups(m, c, TopGroups(GroupNorms(m, c, groups), keep));
}

// TopGroups for non-negative float scores (same order: larger first, ties to the lower index),
// by a two-digit radix selection on the scores' bits, which order like the values.
std::vector<char> TopGroupsRadix(const std::vector<float>& score, int64_t keep) {
  const auto g = static_cast<int64_t>(score.size());
  if (keep >= g || keep <= 0) return std::vector<char>(static_cast<size_t>(g), keep > 0 ? 1 : 0);
  std::vector<uint32_t> key(static_cast<size_t>(g));
  for (int64_t i = 0; i < g; ++i) {
    const float v = std::max(score[static_cast<size_t>(i)], 0.0f);  // rounding may leave -1e-12
    std::memcpy(&key[static_cast<size_t>(i)], &v, 4);
  }
  std::vector<uint32_t> hist(65536);
  uint32_t prefix = 0;
  int64_t rank = keep;  // 1-based rank, from the top, of the threshold within the current prefix
  for (int digit = 1; digit >= 0; --digit) {
    std::fill(hist.begin(), hist.end(), 0u);
    const int shift = 16 * digit;
    for (uint32_t k : key)
      if (digit == 1 || (k >> 16) == prefix) ++hist[(k >> shift) & 0xffffu];
    int64_t b = 65535;
    for (; b > 0 && rank > static_cast<int64_t>(hist[static_cast<size_t>(b)]); --b) rank -= hist[static_cast<size_t>(b)];
    prefix = digit == 1 ? static_cast<uint32_t>(b) : (prefix << 16) | static_cast<uint32_t>(b);
  }
  return KeepFromThreshold(key, prefix, keep);  // prefix: the keep-th largest key
}

void ProjectCrossbarBlock(CrossbarMatrix m, const Tiling& t, int64_t keep_rows, int64_t keep_cols) {
  LayerConstraints rows_c, cols_c;
  rows_c.structure = Structure::kCrossbarRow;
  cols_c.structure = Structure::kCrossbarColumn;
  rows_c.tile = cols_c.tile = t;
  const int64_t K = m.rows, N = m.cols, R = t.rows, C = t.cols;
  const int64_t n_rows = GroupCount(m, rows_c), n_cols = GroupCount(m, cols_c);
  const int64_t tiles_r = CeilDiv(K, R), tiles_c = CeilDiv(N, C);
  // Alternate exact projections: row segments given the kept column segments, then column
  // segments given the kept row segments, until neither changes. Every segment lies inside one
  // tile, so after the first round only the tiles in which the other kind of segment changed need
  // new norms (few do).
  std::vector<char> row_kept(static_cast<size_t>(n_rows), 1), col_kept(static_cast<size_t>(n_cols), 1);
  std::vector<float> rnorm(static_cast<size_t>(n_rows), 0.0f), cnorm(static_cast<size_t>(n_cols), 0.0f);
  std::vector<float> racc(static_cast<size_t>(R));
  // Row segment (r, block j) has index j*K + r; column segment (c, block i) has index i*N + c.
  auto row_norms = [&](int64_t i, int64_t j) {
    const int64_t r0 = i * R, r1 = std::min(K, r0 + R), len = r1 - r0;
    std::fill(racc.begin(), racc.begin() + len, 0.0f);
    for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c) {
      if (!col_kept[static_cast<size_t>(i * N + c)]) continue;
      const float* w = m.data + c * K + r0;
      for (int64_t r = 0; r < len; ++r) racc[static_cast<size_t>(r)] += w[r] * w[r];
    }
    for (int64_t r = 0; r < len; ++r) rnorm[static_cast<size_t>(j * K + r0 + r)] = racc[static_cast<size_t>(r)];
  };
  std::vector<float> rmask(static_cast<size_t>(R));
  auto col_norms = [&](int64_t i, int64_t j) {
    const int64_t r0 = i * R, r1 = std::min(K, r0 + R), len = r1 - r0;
    for (int64_t r = 0; r < len; ++r) rmask[static_cast<size_t>(r)] = row_kept[static_cast<size_t>(j * K + r0 + r)];
    for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c) {
      const float* w = m.data + c * K + r0;
      // Sixteen interleaved partial sums, so that the reduction vectorises (a fixed order).
      float lane[16] = {};
      int64_t r = 0;
      for (; r + 16 <= len; r += 16)
        for (int64_t l = 0; l < 16; ++l) lane[l] += w[r + l] * w[r + l] * rmask[static_cast<size_t>(r + l)];
      for (; r < len; ++r) lane[r % 16] += w[r] * w[r] * rmask[static_cast<size_t>(r)];
      for (int64_t width = 8; width > 0; width /= 2)
        for (int64_t l = 0; l < width; ++l) lane[l] += lane[l + width];
      cnorm[static_cast<size_t>(i * N + c)] = lane[0];
    }
  };
  // A tile with few changed segments is updated by adding or subtracting their squares instead:
  // column segments are contiguous (cheap up to about half a tile), row segments are strided.
  std::vector<int64_t> changes(static_cast<size_t>(tiles_r * tiles_c), 0);
  auto row_delta = [&](int64_t g) {  // column segment g = i*N + c changed
    const int64_t i = g / N, c = g % N, j = c / C, r0 = i * R, len = std::min(K, r0 + R) - r0;
    const float sign = col_kept[static_cast<size_t>(g)] ? 1.0f : -1.0f;
    const float* w = m.data + c * K + r0;
    float* out = rnorm.data() + j * K + r0;
    for (int64_t r = 0; r < len; ++r) out[r] += sign * w[r] * w[r];
  };
  auto col_delta = [&](int64_t g) {  // row segment g = j*K + r changed
    const int64_t j = g / K, r = g % K, i = r / R;
    const float sign = row_kept[static_cast<size_t>(g)] ? 1.0f : -1.0f;
    for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c) {
      const float x = m.data[c * K + r];
      cnorm[static_cast<size_t>(i * N + c)] += sign * x * x;
    }
  };
  std::vector<int64_t> changed_rows, changed_cols;
  for (int64_t j = 0; j < tiles_c; ++j)
    for (int64_t i = 0; i < tiles_r; ++i) row_norms(i, j);
  for (int iter = 0; iter < 10; ++iter) {
    std::vector<char> new_rows = TopGroupsRadix(rnorm, keep_rows);
    changed_rows.clear();
    std::fill(changes.begin(), changes.end(), 0);
    for (int64_t g = 0; g < n_rows; ++g) {
      if (new_rows[static_cast<size_t>(g)] != row_kept[static_cast<size_t>(g)]) {
        changed_rows.push_back(g);
        ++changes[static_cast<size_t>((g % K) / R * tiles_c + g / K)];
      }
    }
    row_kept.swap(new_rows);
    if (iter == 0) {
      for (int64_t j = 0; j < tiles_c; ++j)
        for (int64_t i = 0; i < tiles_r; ++i) col_norms(i, j);
    } else {
      for (int64_t g : changed_rows)
        if (changes[static_cast<size_t>((g % K) / R * tiles_c + g / K)] * 16 <= R) col_delta(g);
      for (int64_t j = 0; j < tiles_c; ++j)
        for (int64_t i = 0; i < tiles_r; ++i)
          if (changes[static_cast<size_t>(i * tiles_c + j)] * 16 > R) col_norms(i, j);
    }
    std::vector<char> new_cols = TopGroupsRadix(cnorm, keep_cols);
    changed_cols.clear();
    std::fill(changes.begin(), changes.end(), 0);
    for (int64_t g = 0; g < n_cols; ++g) {
      if (new_cols[static_cast<size_t>(g)] != col_kept[static_cast<size_t>(g)]) {
        changed_cols.push_back(g);
        ++changes[static_cast<size_t>(g / N * tiles_c + (g % N) / C)];
      }
    }
    col_kept.swap(new_cols);
    // Rows only change in response to columns: with the columns fixed, the next row step repeats.
    if (changed_cols.empty()) break;
    for (int64_t g : changed_cols)
      if (changes[static_cast<size_t>(g / N * tiles_c + (g % N) / C)] * 2 <= C) row_delta(g);
    for (int64_t j = 0; j < tiles_c; ++j)
      for (int64_t i = 0; i < tiles_r; ++i)
        if (changes[static_cast<size_t>(i * tiles_c + j)] * 2 > C) row_norms(i, j);
  }
  // Zero the removed segments in one pass: dropped column segments whole, dropped rows by mask.
  const std::vector<float> row_scale(row_kept.begin(), row_kept.end());
  for (int64_t c = 0; c < N; ++c) {
    float* w = m.data + c * K;
    const float* scale = row_scale.data() + (c / C) * K;
    for (int64_t i = 0; i < tiles_r; ++i) {
      const int64_t r0 = i * R, r1 = std::min(K, r0 + R);
      if (!col_kept[static_cast<size_t>(i * N + c)]) {
        std::fill(w + r0, w + r1, 0.0f);
      } else {
        for (int64_t r = r0; r < r1; ++r) w[r] *= scale[r];
      }
    }
  }
}

void ProjectPolarize(CrossbarMatrix m, int64_t fragment, int64_t tile_rows) {
  XBAR_CHECK(fragment >= 1 && tile_rows >= 1, "fragment and tile rows must be positive");
  for (int64_t c = 0; c < m.cols; ++c) {
    float* col = m.data + c * m.rows;
    for (int64_t tile = 0; tile < m.rows; tile += tile_rows) {
      const int64_t tile_end = std::min(m.rows, tile + tile_rows);
      for (int64_t f = tile; f < tile_end; f += fragment) {
        const int64_t end = std::min(tile_end, f + fragment);
        float pos = 0, neg = 0;
        for (int64_t r = f; r < end; ++r) {
          const float p = std::max(col[r], 0.0f), q = std::min(col[r], 0.0f);
          pos += p * p;
          neg += q * q;
        }
        if (pos >= neg) {
          for (int64_t r = f; r < end; ++r) col[r] = std::max(col[r], 0.0f);
        } else {
          for (int64_t r = f; r < end; ++r) col[r] = std::min(col[r], 0.0f);
        }
      }
    }
  }
}

void ProjectColumnBudget(CrossbarMatrix m, int64_t budget, int64_t tile_rows) {
  XBAR_CHECK(budget >= 1 && tile_rows >= 1, "budget and tile rows must be positive");
  // Segments of 16 neighbouring columns are processed together: their magnitudes' bit patterns are
  // transposed into rows of 16 lanes, and one binary search over the patterns (non-negative floats
  // order like their bits) finds every lane's budget-th largest magnitude at once.
  constexpr int64_t kLanes = 16;
  std::vector<int32_t> buf(static_cast<size_t>(tile_rows * kLanes));
  // Column blocks outside, row blocks inside: each of the 16 columns is then read front to back.
  for (int64_t c0 = 0; c0 < m.cols; c0 += kLanes) {
    const int64_t lanes = std::min(kLanes, m.cols - c0);
    for (int64_t start = 0; start < m.rows; start += tile_rows) {
      const int64_t len = std::min(m.rows, start + tile_rows) - start;
      if (len <= budget) continue;
      int32_t any = 0;
      int64_t nnz[kLanes] = {};
      for (int64_t l = 0; l < kLanes; ++l) {
        const float* seg = m.data + (c0 + std::min(l, lanes - 1)) * m.rows + start;
        for (int64_t r = 0; r < len; ++r) {
          int32_t u;
          std::memcpy(&u, seg + r, 4);
          u &= 0x7fffffff;
          buf[static_cast<size_t>(r * kLanes + l)] = u;
          any |= u;
          nnz[l] += u != 0 ? 1 : 0;
        }
      }
      // GCC/Clang vector extension: 16 int32 lanes in registers (one AVX-512 register), so the
      // counts carry no dependency through memory from row to row.
      using Lanes = int32_t __attribute__((vector_size(4 * kLanes)));
      Lanes t = {};
      const auto budget_lanes = static_cast<int32_t>(budget);
      for (int bit = any == 0 ? -1 : 31 - __builtin_clz(static_cast<uint32_t>(any)); bit >= 0; --bit) {
        const Lanes cand = t | (int32_t{1} << bit);
        Lanes count = {};
        for (int64_t r = 0; r < len; ++r) {
          Lanes row;
          std::memcpy(&row, buf.data() + r * kLanes, sizeof(row));
          count -= (row >= cand);  // a true comparison is -1 in every lane
        }
        t = (count >= budget_lanes) ? cand : t;
      }
      for (int64_t l = 0; l < lanes; ++l) {
        if (nnz[l] <= budget) continue;
        float thr;
        std::memcpy(&thr, &t[l], 4);
        KeepLargest(m.data + (c0 + l) * m.rows + start, len, budget, thr);
      }
    }
  }
}

double OptimalScale(std::vector<float> mags, int64_t n) {
  if (mags.empty()) return 0.0;
  std::sort(mags.begin(), mags.end());
  const double amax = mags.back();
  if (static_cast<double>(mags.size()) * static_cast<double>(n) <= kExactSweepEvents) {
    return ExactSweep(mags, n, 0.0, std::numeric_limits<double>::infinity()).first;
  }
  // Many levels on many values: scan a log grid from well below amax/n (clipping outliers) to
  // 2·amax (everything rounds to zero), scan the best cell's neighbourhood finer, then sweep
  // exactly inside the best fine cell.
  double lo = std::max(mags[mags.size() / 10], 1e-30f) / (static_cast<double>(n) + 0.5);
  double hi = 2.0 * amax;
  double best_s = lo, best_e = std::numeric_limits<double>::infinity();
  for (int level = 0; level < 2; ++level) {
    constexpr int kGrid = 48;
    const double ratio = std::pow(hi / lo, 1.0 / (kGrid - 1));
    int best = 0;
    for (int i = 0; i < kGrid; ++i) {
      const double s = lo * std::pow(ratio, i);
      const double e = ScaleError(mags, n, s);
      if (e < best_e) {
        best_e = e;
        best_s = s;
        best = i;
      }
    }
    const double new_lo = lo * std::pow(ratio, std::max(0, best - 1));
    hi = lo * std::pow(ratio, std::min(kGrid - 1, best + 1));
    lo = new_lo;
  }
  auto [s, e] = ExactSweep(mags, n, lo, hi);
  return e <= best_e ? s : best_s;
}

void QuantizeWithScale(CrossbarMatrix m, int bits, double scale) {
  const int64_t n = (int64_t{1} << (bits - 1)) - 1;
  const int64_t size = m.size();
  if (scale <= 0) {
    std::fill(m.data, m.data + size, 0.0f);
    return;
  }
  // Every weight on level q becomes the same float q·s_f (s_f = s rounded to float once).
  const auto s_f = static_cast<float>(scale);
  const float inv = static_cast<float>(1.0 / scale);
  const float top = static_cast<float>(n);
  for (int64_t i = 0; i < size; ++i) {
    const float w = m.data[i];
    const float l = std::min(top, std::floor(std::fabs(w) * inv + 0.5f)) * s_f;
    m.data[i] = std::copysign(l, w);
  }
}

double ProjectQuantize(CrossbarMatrix m, int bits) {
  XBAR_CHECK(bits >= 2 && bits <= 32, "quantisation needs 2..32 bits, got ", bits);
  const int64_t n = (int64_t{1} << (bits - 1)) - 1;
  const int64_t size = m.size();
  // Magnitudes of the non-zeros: all of them up to kScaleSample entries, else every stride-th
  // entry's (one pass); a sample left too small by sparsity is redone over the non-zeros alone.
  int64_t stride = std::max<int64_t>(1, CeilDiv(size, kScaleSample));
  std::vector<float> sample;
  auto gather = [&](bool nonzeros_only_stride) {
    sample.clear();
    if (!nonzeros_only_stride) {
      for (int64_t i = 0; i < size; i += stride) {
        if (m.data[i] != 0.0f) sample.push_back(std::fabs(m.data[i]));
      }
      return;
    }
    int64_t countdown = 0;
    for (int64_t i = 0; i < size; ++i) {
      if (m.data[i] == 0.0f) continue;
      if (countdown-- == 0) {
        sample.push_back(std::fabs(m.data[i]));
        countdown = stride - 1;
      }
    }
  };
  gather(false);
  if (stride > 1 && static_cast<int64_t>(sample.size()) < kScaleSample / 4) {
    int64_t nnz = 0;
    for (int64_t i = 0; i < size; ++i) nnz += m.data[i] != 0.0f ? 1 : 0;
    stride = std::max<int64_t>(1, CeilDiv(nnz, kScaleSample));
    gather(true);
  }
  double s = OptimalScale(sample, n);
  if (stride > 1 && s > 0) {
    // The scale came from a sample: one Lloyd step on all entries (s = sum a·q / sum q^2 for the
    // current rounding) moves it towards the full data's local optimum and never increases the error.
    const float inv = static_cast<float>(1.0 / s);
    const float top = static_cast<float>(n);
    double A = 0, B = 0;
    constexpr int64_t kChunk = 4096;  // float partial sums, double across chunks
    for (int64_t c0 = 0; c0 < size; c0 += kChunk) {
      float a_sum = 0, b_sum = 0;
      for (int64_t i = c0; i < std::min(size, c0 + kChunk); ++i) {
        const float a = std::fabs(m.data[i]);
        const float q = std::min(top, std::floor(a * inv + 0.5f));
        a_sum += a * q;
        b_sum += q * q;
      }
      A += a_sum;
      B += b_sum;
    }
    if (B > 0) s = A / B;
  }
  QuantizeWithScale(m, bits, s);
  return s;
}

ProjectionResult Project(CrossbarMatrix m, const LayerConstraints& c) {
  ProjectionResult r;
  if (c.prunes()) {
    if (c.structure == Structure::kUnstructured) {
      ProjectTopK(m, KeepCount(m.size(), c.sparsity));
    } else if (c.structure == Structure::kCrossbarBlock) {
      // Remove the same share of row and of column segments: (1 - s_r)(1 - s_c) = 1 - sparsity.
      const double each = 1.0 - std::sqrt(1.0 - c.sparsity);
      const int64_t rows = m.rows * CeilDiv(m.cols, c.tile.cols), cols = CeilDiv(m.rows, c.tile.rows) * m.cols;
      ProjectCrossbarBlock(m, c.tile, KeepCount(rows, each), KeepCount(cols, each));
    } else {
      ProjectGroups(m, c, KeepCount(GroupCount(m, c), c.sparsity));
    }
  }
  if (c.polarize_fragment > 0) ProjectPolarize(m, c.polarize_fragment, c.tile.rows);
  if (c.column_budget > 0) ProjectColumnBudget(m, c.column_budget, c.tile.rows);
  if (c.quantize_bits > 0) r.scale = ProjectQuantize(m, c.quantize_bits);
  return r;
}

ConstraintReport CheckConstraints(const CrossbarMatrix& m, const LayerConstraints& c, double scale) {
  ConstraintReport rep;
  const int64_t K = m.rows, N = m.cols, R = c.tile.rows;
  for (int64_t i = 0; i < m.size(); ++i) rep.nonzero += m.data[i] != 0.0f ? 1 : 0;
  auto fail = [&](const std::string& name, int64_t count) {
    if (count > 0) {
      rep.violations += count;
      rep.failed.push_back(name);
    }
  };
  if (c.prunes()) {
    if (c.structure == Structure::kUnstructured) {
      rep.groups_nonzero = rep.nonzero;
      rep.groups_allowed = KeepCount(m.size(), c.sparsity);
    } else if (c.structure == Structure::kCrossbarBlock) {
      const double each = 1.0 - std::sqrt(1.0 - c.sparsity);
      int64_t excess = 0;
      for (Structure s : {Structure::kCrossbarRow, Structure::kCrossbarColumn}) {
        LayerConstraints part = c;
        part.structure = s;
        const std::vector<char> nz = NonzeroGroups(m, part, GroupCount(m, part));
        const int64_t used = std::count(nz.begin(), nz.end(), 1);
        const int64_t allowed = KeepCount(GroupCount(m, part), each);
        rep.groups_nonzero += used;
        rep.groups_allowed += allowed;
        excess += std::max<int64_t>(0, used - allowed);
      }
      fail("sparsity", excess);
    } else {
      const std::vector<char> nz = NonzeroGroups(m, c, GroupCount(m, c));
      rep.groups_nonzero = std::count(nz.begin(), nz.end(), 1);
      rep.groups_allowed = KeepCount(GroupCount(m, c), c.sparsity);
    }
    if (c.structure != Structure::kCrossbarBlock) {
      fail("sparsity", std::max<int64_t>(0, rep.groups_nonzero - rep.groups_allowed));
    }
  }
  if (c.polarize_fragment > 0) {
    int64_t mixed = 0;
    for (int64_t col = 0; col < N; ++col) {
      for (int64_t tile = 0; tile < K; tile += R) {
        const int64_t tile_end = std::min(K, tile + R);
        for (int64_t f = tile; f < tile_end; f += c.polarize_fragment) {
          bool pos = false, neg = false;
          for (int64_t r = f; r < std::min(tile_end, f + c.polarize_fragment); ++r) {
            pos = pos || m.at(r, col) > 0;
            neg = neg || m.at(r, col) < 0;
          }
          mixed += pos && neg ? 1 : 0;
        }
      }
    }
    fail(StrCat("polarize:", c.polarize_fragment), mixed);
  }
  if (c.column_budget > 0) {
    int64_t over = 0;
    for (int64_t col = 0; col < N; ++col) {
      for (int64_t start = 0; start < K; start += R) {
        int64_t nnz = 0;
        for (int64_t r = start; r < std::min(K, start + R); ++r) nnz += m.at(r, col) != 0.0f ? 1 : 0;
        over += nnz > c.column_budget ? 1 : 0;
      }
    }
    fail(StrCat("budget:", c.column_budget), over);
  }
  std::vector<float> values(m.data, m.data + m.size());
  std::sort(values.begin(), values.end());
  rep.distinct_levels = std::unique(values.begin(), values.end()) - values.begin();
  if (c.quantize_bits > 0) {
    const int64_t n = (int64_t{1} << (c.quantize_bits - 1)) - 1;
    int64_t off = 0;
    for (int64_t i = 0; i < m.size(); ++i) {
      const double w = m.data[i];
      if (w == 0.0) continue;
      if (scale <= 0) {
        ++off;
        continue;
      }
      const double q = std::round(std::fabs(w) / scale);
      // On a level: within float rounding of q·s, and |q| within the range.
      off += (q < 1 || q > static_cast<double>(n) || std::fabs(std::fabs(w) - q * scale) > 1e-6 * q * scale) ? 1 : 0;
    }
    fail(StrCat("quantize:", c.quantize_bits), off);
  }
  return rep;
}

}  // namespace xbar
