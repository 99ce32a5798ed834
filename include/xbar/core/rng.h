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

#include <cstdint>
#include <string_view>
#include <vector>

namespace xbar {

// 64-bit FNV-1a hash of bytes: stable across platforms and builds (fingerprints of files).
uint64_t HashBytes(std::string_view bytes);

// Mixes a seed with a purpose name and an index into an independent stream seed.
uint64_t DeriveSeed(uint64_t seed, std::string_view stream, uint64_t index = 0);

// SplitMix64's finaliser: a bijective 64-bit mix (counter-based draws).
uint64_t Mix64(uint64_t x);
// A standard normal draw that is a pure function of `key` (Box-Muller on two mixed uniforms): for
// noise indexed by what it models (image, position, read), whatever order the work runs in.
double KeyedNormal(uint64_t key);
// Keys for KeyedNormal from a stream seed and up to four indices.
inline uint64_t DrawKey(uint64_t stream, uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  uint64_t h = Mix64(stream ^ 0x9e3779b97f4a7c15ULL);
  h = Mix64(h ^ a);
  h = Mix64(h ^ (b + 0x632be59bd9b4e019ULL));
  h = Mix64(h ^ (c + 0x85157af5ULL));
  return Mix64(h ^ (d + 0x2545f4914f6cdd1dULL));
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
