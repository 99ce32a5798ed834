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

// One pass over w[0, n): returns how many magnitudes (values, when kMagnitude is false) exceed hi
// and appends those in [lo, hi] to `inside`. Blocks of 256 are first tested as a whole (this
// vectorises), and only those with an entry in the window are compacted, without branches.
template <bool kMagnitude = true>
int64_t Bracket(const float* w, int64_t n, float lo, float hi, std::vector<float>* inside) {
  constexpr int64_t kBlock = 256;
  float out[kBlock];
  int64_t above = 0;
  auto compact = [&](const float* x, int64_t len) {
    int64_t k = 0;
    for (int64_t i = 0; i < len; ++i) {
      const float a = kMagnitude ? std::fabs(x[i]) : x[i];
      out[k] = a;
      k += static_cast<int64_t>(a <= hi) & static_cast<int64_t>(a >= lo);  // no branch: a && would be one
    }
    inside->insert(inside->end(), out, out + k);
  };
  int64_t b0 = 0;
  for (; b0 + kBlock <= n; b0 += kBlock) {
    const float* x = w + b0;
    int32_t count = 0, hits = 0;
    for (int64_t i = 0; i < kBlock; ++i) {
      const float a = kMagnitude ? std::fabs(x[i]) : x[i];
      count += a > hi ? 1 : 0;
      hits += static_cast<int32_t>(a <= hi) & static_cast<int32_t>(a >= lo);
    }
    above += count;
    if (hits > 0) compact(x, kBlock);
  }
  for (int64_t i = b0; i < n; ++i) above += (kMagnitude ? std::fabs(w[i]) : w[i]) > hi ? 1 : 0;
  compact(w + b0, n - b0);
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

namespace {

// Sum of x[r]^2 (times mask[r] when kMasked) over r < len, in sixteen interleaved partial sums so
// that it vectorises, reduced in a fixed order.
template <bool kMasked>
float SquareSum(const float* x, const float* mask, int64_t len) {
  float lane[16] = {};
  int64_t r = 0;
  for (; r + 16 <= len; r += 16)
    for (int64_t l = 0; l < 16; ++l) lane[l] += x[r + l] * x[r + l] * (kMasked ? mask[r + l] : 1.0f);
  for (; r < len; ++r) lane[r % 16] += x[r] * x[r] * (kMasked ? mask[r] : 1.0f);
  for (int64_t width = 8; width > 0; width /= 2)
    for (int64_t l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

// Adds the squares of the column segments x[0], x[1], ... (len rows each; times sign[q] when
// kSigned) to out, column after column -- the same order as one segment at a time -- loading and
// storing out once per four columns.
template <bool kSigned>
void AddSquares(float* out, const float* const* x, const float* sign, int64_t count, int64_t len) {
  auto s = [&](int64_t q) { return kSigned ? sign[q] : 1.0f; };
  int64_t q = 0;
  for (; q + 4 <= count; q += 4) {
    const float *x0 = x[q], *x1 = x[q + 1], *x2 = x[q + 2], *x3 = x[q + 3];
    const float s0 = s(q), s1 = s(q + 1), s2 = s(q + 2), s3 = s(q + 3);
    for (int64_t r = 0; r < len; ++r) {
      float v = out[r];
      v += s0 * x0[r] * x0[r];
      v += s1 * x1[r] * x1[r];
      v += s2 * x2[r] * x2[r];
      v += s3 * x3[r] * x3[r];
      out[r] = v;
    }
  }
  for (; q < count; ++q) {
    const float sq = s(q);
    for (int64_t r = 0; r < len; ++r) out[r] += sq * x[q][r] * x[q][r];
  }
}

// The keep-th largest of s (1 <= keep < size). A window [lo, hi] holding it is found by counting
// passes alone (it starts narrow around `guess` -- when positive, the previous selection's
// threshold, else the same rank in a fixed pseudo-random sample -- moves towards the answer
// widening fourfold, then is bisected while it holds many entries); then the entries inside are
// collected in one pass and selected among. *above_out: how many entries exceed the result.
float KthLargest(const std::vector<float>& s, int64_t keep, float guess, int64_t* above_out) {
  const auto n = static_cast<int64_t>(s.size());
  const float* x = s.data();
  constexpr int64_t kSample = 2048, kFew = 4096;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  auto count = [&](float a, float b, int64_t* gt_b) {  // entries >= a, and (*gt_b) entries > b
    int64_t ge = 0, gt = 0;
    for (int64_t i = 0; i < n; ++i) {
      ge += x[i] >= a ? 1 : 0;
      gt += x[i] > b ? 1 : 0;
    }
    *gt_b = gt;
    return ge;
  };
  if (!(guess > 0) && n > 8 * kSample) {
    std::vector<float> sample(static_cast<size_t>(kSample));
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (float& v : sample) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      v = x[(state >> 33) % static_cast<uint64_t>(n)];
      if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();  // keeps the ordering strict
    }
    const auto it = sample.begin() + keep * kSample / n;
    std::nth_element(sample.begin(), it, sample.end(), std::greater<float>());
    guess = *it;
  }
  if (guess > 0 && n > 8 * kSample) {
    float a = guess * (1 - 1.0f / 1024), b = guess * (1 + 1.0f / 1024);
    int64_t gt_b = 0, ge_a = count(a, b, &gt_b);
    for (int tries = 0; tries < 16 && (gt_b >= keep || ge_a < keep); ++tries) {
      const float width = 4 * (b - a);
      if (gt_b >= keep) {  // the answer is above b
        a = b;
        b += width;
      } else {  // below a
        b = a;
        a -= width;
      }
      ge_a = count(a, b, &gt_b);
    }
    if (gt_b < keep && ge_a >= keep) {
      for (int halvings = 0; halvings < 16 && ge_a - gt_b > kFew; ++halvings) {
        const float mid = a + (b - a) / 2;
        if (!(mid > a && mid < b)) break;
        int64_t gt_mid = 0;
        const int64_t ge_mid = count(mid, mid, &gt_mid);
        if (gt_mid >= keep) {
          a = mid;
          ge_a = ge_mid;
        } else {
          b = mid;
          gt_b = gt_mid;
        }
      }
      lo = a;
      hi = b;
    }
  }
  std::vector<float> inside;
  const int64_t above = Bracket<false>(x, n, lo, hi, &inside);
  const int64_t need = keep - above;
  if (need < 1 || need > static_cast<int64_t>(inside.size()))  // only NaN scores leave the full window
    throw InputError("crossbar-block projection: the weights contain NaN (did training diverge?)");
  std::nth_element(inside.begin(), inside.begin() + (need - 1), inside.end(), std::greater<float>());
  const float t = inside[static_cast<size_t>(need - 1)];
  *above_out = above;
  for (float v : inside) *above_out += v > t ? 1 : 0;
  return t;
}

// The segments of one kind (rows or columns) of ProjectCrossbarBlock: their scores, which are
// kept, and which flipped in the last selection.
struct SegmentSelection {
  std::vector<float> score;
  std::vector<char> kept, fresh;  // fresh: scratch for the next flags
  std::vector<int64_t> changed;  // changed[0, flipped): indices whose flag flipped in the last Select
  int64_t flipped = 0;
  float threshold = 0;  // of the last selection: the next one starts looking near it

  explicit SegmentSelection(int64_t n)
      : score(static_cast<size_t>(n), 0.0f),
        kept(static_cast<size_t>(n), 1),
        fresh(static_cast<size_t>(n)),
        changed(static_cast<size_t>(n)) {}

  // Keeps the `keep` largest scores (ties towards the lower index, as TopGroups) and records the
  // flipped flags.
  void Select(int64_t keep) {
    const auto n = static_cast<int64_t>(score.size());
    int64_t above = 0;
    const float t = keep >= n ? -std::numeric_limits<float>::infinity()
                    : keep <= 0 ? std::numeric_limits<float>::infinity()
                                : KthLargest(score, keep, threshold, &above);
    if (keep > 0 && keep < n) threshold = t;
    // New flags: everything above t, then the first entries equal to t (ties to the lower index).
    const float* sc = score.data();
    char* fr = fresh.data();  // through locals: a char store could otherwise alias the vectors
    for (int64_t g = 0; g < n; ++g) fr[g] = sc[g] > t ? 1 : 0;
    auto it = score.begin();
    for (int64_t ties = keep - above; ties > 0 && keep < n; --ties) {
      it = std::find(it, score.end(), t);
      if (it == score.end()) break;
      fresh[static_cast<size_t>(it - score.begin())] = 1;
      ++it;
    }
    // Flipped flags, 64 at a time (few flip after the first rounds).
    int64_t count = 0;
    const char* old = kept.data();
    for (int64_t g0 = 0; g0 < n; g0 += 64) {
      const int64_t end = std::min<int64_t>(n, g0 + 64);
      int differ = 0;
      for (int64_t g = g0; g < end; ++g) differ |= old[g] ^ fr[g];
      if (differ == 0) continue;
      for (int64_t g = g0; g < end; ++g) {
        changed[static_cast<size_t>(count)] = g;
        count += old[g] != fr[g] ? 1 : 0;
      }
    }
    kept.swap(fresh);
    flipped = count;
  }
};

}  // namespace

CrossbarBlockSelection SelectCrossbarBlock(const CrossbarMatrix& matrix, const Tiling& t, int64_t keep_rows,
                                           int64_t keep_cols) {
  const CrossbarMatrix m = matrix;  // a local copy: the char stores below cannot alias it
  const int64_t K = m.rows, N = m.cols, R = t.rows, C = t.cols;
  const int64_t tiles_r = CeilDiv(K, R), tiles_c = CeilDiv(N, C);
  // Row segment (r, block j) has index j*K + r; column segment (c, block i) has index i*N + c.
  SegmentSelection rows(K * tiles_c), cols(tiles_r * N);
  // Every segment lies inside one tile, so after the first round only the tiles in which the other
  // kind of segment changed need new scores (few do).
  std::vector<char> redo(static_cast<size_t>(tiles_r * tiles_c), 1);
  std::vector<int64_t> changes(redo.size(), 0);
  auto tile_of_row = [&](int64_t g) { return (g % K) / R * tiles_c + g / K; };
  auto tile_of_col = [&](int64_t g) { return g / N * tiles_c + (g % N) / C; };
  // Squared norms of the row segments of the tiles marked in `redo`, over the kept column segments,
  // tile by tile, which reads only the kept segments.
  std::vector<const float*> segs(static_cast<size_t>(C));
  auto row_norms = [&]() {
    for (int64_t j = 0; j < tiles_c; ++j) {
      for (int64_t i = 0; i < tiles_r; ++i) {
        if (!redo[static_cast<size_t>(i * tiles_c + j)]) continue;
        const int64_t r0 = i * R, len = std::min(K, r0 + R) - r0;
        int64_t count = 0;
        for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c)
          if (cols.kept[static_cast<size_t>(i * N + c)]) segs[static_cast<size_t>(count++)] = m.data + c * K + r0;
        float* out = rows.score.data() + j * K + r0;
        std::fill(out, out + len, 0.0f);
        AddSquares<false>(out, segs.data(), nullptr, count, len);
      }
    }
  };
  // Squared norms of the column segments of the tiles marked in `redo`, over the kept row segments,
  // in memory order (all tiles of a column in turn), which streams the matrix.
  std::vector<float> rmask(static_cast<size_t>(K));
  auto col_norms = [&]() {
    for (int64_t j = 0; j < tiles_c; ++j) {
      bool any = false;
      for (int64_t i = 0; i < tiles_r; ++i) any = any || redo[static_cast<size_t>(i * tiles_c + j)];
      if (!any) continue;
      for (int64_t r = 0; r < K; ++r) rmask[static_cast<size_t>(r)] = rows.kept[static_cast<size_t>(j * K + r)];
      for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c) {
        const float* w = m.data + c * K;
        for (int64_t i = 0; i < tiles_r; ++i) {
          if (!redo[static_cast<size_t>(i * tiles_c + j)]) continue;
          const int64_t r0 = i * R, len = std::min(K, r0 + R) - r0;
          cols.score[static_cast<size_t>(i * N + c)] = SquareSum<true>(w + r0, rmask.data() + r0, len);
        }
      }
    }
  };
  // With everything kept: the squared norms of both kinds of segment in one streaming pass.
  auto first_norms = [&]() {
    std::fill(rows.score.begin(), rows.score.end(), 0.0f);
    for (int64_t j = 0; j < tiles_c; ++j) {
      const int64_t c1 = std::min(N, (j + 1) * C);
      for (int64_t c = j * C; c < c1; c += 4) {
        const int64_t width = std::min<int64_t>(4, c1 - c);
        for (int64_t i = 0; i < tiles_r; ++i) {
          const int64_t r0 = i * R, len = std::min(K, r0 + R) - r0;
          const float* x0 = m.data + c * K + r0;
          const float* x[4] = {x0, x0 + K, x0 + 2 * K, x0 + 3 * K};
          AddSquares<false>(rows.score.data() + j * K + r0, x, nullptr, width, len);
          for (int64_t q = 0; q < width; ++q)
            cols.score[static_cast<size_t>(i * N + c + q)] = SquareSum<false>(x0 + q * K, nullptr, len);
        }
      }
    }
  };
  // A tile with few changed segments is updated by adding or subtracting their squares instead:
  // column segments are contiguous (cheap up to about half a tile), row segments are strided.
  // Changed segments come sorted, so those of one tile are a run changed[k0, k1).
  auto row_deltas = [&](const int64_t* changed, int64_t k0, int64_t k1) {  // column segments i*N + c
    const int64_t i = changed[k0] / N, j = changed[k0] % N / C, r0 = i * R, len = std::min(K, r0 + R) - r0;
    float* out = rows.score.data() + j * K + r0;
    for (int64_t k = k0; k < k1; k += 4) {
      const int64_t count = std::min<int64_t>(4, k1 - k);
      const float* x[4];
      float sign[4];
      for (int64_t q = 0; q < count; ++q) {
        const int64_t g = changed[k + q];
        x[q] = m.data + (g % N) * K + r0;
        sign[q] = cols.kept[static_cast<size_t>(g)] ? 1.0f : -1.0f;
        // The segments are scattered: fetch the ones of the next batch while these are added.
        if (k + q + 4 < k1)
          for (int64_t r = 0; r < len; r += 16) __builtin_prefetch(m.data + (changed[k + q + 4] % N) * K + r0 + r);
      }
      AddSquares<true>(out, x, sign, count, len);
    }
  };
  auto col_deltas = [&](const int64_t* changed, int64_t k0, int64_t k1) {  // row segments j*K + r
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t g = changed[k], j = g / K, r = g % K, i = r / R;
      const float sign = rows.kept[static_cast<size_t>(g)] ? 1.0f : -1.0f;
      for (int64_t c = j * C; c < std::min(N, (j + 1) * C); ++c) {
        const float x = m.data[c * K + r];
        cols.score[static_cast<size_t>(i * N + c)] += sign * x * x;
      }
    }
  };
  // Marks for recomputation the tiles with more than limit changed segments; the others get deltas.
  auto plan = [&](const SegmentSelection& s, auto tile_of, int64_t limit, auto deltas) {
    const int64_t* changed = s.changed.data();
    std::fill(changes.begin(), changes.end(), 0);
    for (int64_t k = 0; k < s.flipped; ++k) ++changes[static_cast<size_t>(tile_of(changed[k]))];
    for (size_t k = 0; k < redo.size(); ++k) redo[k] = changes[k] > limit ? 1 : 0;
    for (int64_t k0 = 0, k1 = 0; k0 < s.flipped; k0 = k1) {
      const int64_t tile = tile_of(changed[k0]);
      for (k1 = k0 + 1; k1 < s.flipped && tile_of(changed[k1]) == tile;) ++k1;
      if (!redo[static_cast<size_t>(tile)]) deltas(changed, k0, k1);
    }
  };
  // Start from the column segments chosen on their full norms, then alternate.
  first_norms();
  // Each step keeps at least as much energy as the one before, so this converges (in 7 rounds on the
  // 4096×4096 benchmark, 39 on a 1024×512 matrix with 16×16 tiles); the cap is a safeguard.
  for (int iter = 0; iter < 100; ++iter) {
    cols.Select(keep_cols);
    // Rows only change in response to columns: with the columns fixed, the next row step repeats.
    if (cols.flipped == 0 && iter > 0) break;
    plan(cols, tile_of_col, C / 2, row_deltas);
    row_norms();
    rows.Select(keep_rows);
    plan(rows, tile_of_row, R / 16, col_deltas);
    col_norms();
  }
  return {std::move(rows.kept), std::move(cols.kept)};
}

void ProjectCrossbarBlock(CrossbarMatrix m, const Tiling& t, int64_t keep_rows, int64_t keep_cols) {
  const int64_t K = m.rows, N = m.cols, R = t.rows, C = t.cols, tiles_r = CeilDiv(K, R);
  const CrossbarBlockSelection kept = SelectCrossbarBlock(m, t, keep_rows, keep_cols);
  // Zero the removed segments in one pass: dropped column segments whole, dropped rows by mask.
  const std::vector<float> row_scale(kept.rows.begin(), kept.rows.end());
  for (int64_t c = 0; c < N; ++c) {
    float* w = m.data + c * K;
    const float* scale = row_scale.data() + (c / C) * K;
    for (int64_t i = 0; i < tiles_r; ++i) {
      const int64_t r0 = i * R, r1 = std::min(K, r0 + R);
      if (!kept.cols[static_cast<size_t>(i * N + c)]) {
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
