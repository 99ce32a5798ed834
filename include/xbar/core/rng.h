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
