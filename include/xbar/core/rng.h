// xbar/core/rng.h — explicit, portable random numbers.
//
// Every random draw in xbar comes from an Rng owned by the caller and seeded from the experiment
// seed, never from the clock. The algorithms are spelled out here (xoshiro256** seeded through
// SplitMix64, Lemire's unbiased bounded draw, Fisher-Yates) instead of using <random>'s
// distributions, whose output differs between standard libraries.
//
//   Rng rng(DeriveSeed(seed, "shuffle", epoch));   // an independent stream per purpose and epoch
//   std::vector<int64_t> order = rng.Permutation(60000);
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

namespace xbar {

// 64-bit FNV-1a hash of bytes: stable across platforms and builds (fingerprints of files).
uint64_t HashBytes(std::string_view bytes);

// Mixes a seed with a purpose name and an index into an independent stream seed.
uint64_t DeriveSeed(uint64_t seed, std::string_view stream, uint64_t index = 0);

// SplitMix64's finaliser: a bijective 64-bit mix (counter-based draws). Inline, with KeyedNormal
// and the keys below: read noise draws one normal per read, and the calls were a fifth of a noisy
// simulation's time.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
// A standard normal draw that is a pure function of `key` (Box-Muller on two mixed uniforms): for
// noise indexed by what it models (image, position, read), whatever order the work runs in.
inline double KeyedNormal(uint64_t key) {
  const uint64_t a = Mix64(key), b = Mix64(key ^ 0xd1b54a32d192ed03ULL);
  const double u1 = (static_cast<double>(a >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
// Keys for KeyedNormal from a stream seed and up to four indices. DrawKey(stream, a, b, c, d) ==
// DrawKeyTail(DrawKeyHead(stream, a, b), c, d): a loop over c computes the head once.
inline uint64_t DrawKeyHead(uint64_t stream, uint64_t a, uint64_t b = 0) {
  const uint64_t h = Mix64(Mix64(stream ^ 0x9e3779b97f4a7c15ULL) ^ a);
  return Mix64(h ^ (b + 0x632be59bd9b4e019ULL));
}
inline uint64_t DrawKeyTail(uint64_t head, uint64_t c = 0, uint64_t d = 0) {
  return Mix64(Mix64(head ^ (c + 0x85157af5ULL)) ^ (d + 0x2545f4914f6cdd1dULL));
}
inline uint64_t DrawKey(uint64_t stream, uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  return DrawKeyTail(DrawKeyHead(stream, a, b), c, d);
}

class Rng {
 public:
  using result_type = uint64_t;
  explicit Rng(uint64_t seed);

  uint64_t NextU64();
  result_type operator()() { return NextU64(); }
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return ~result_type{0}; }

  // Uniform integer in [0, n), unbiased; n > 0.
  uint64_t UniformInt(uint64_t n);
  // Uniform double in [0, 1) with 53 random bits.
  double Uniform01();
  // Standard normal draw (Box-Muller; the spare value is kept for the next call).
  double Normal();
  // A uniformly random permutation of 0..n-1 (Fisher-Yates).
  std::vector<int64_t> Permutation(int64_t n);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace xbar
