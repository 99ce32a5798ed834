#include "xbar/crossbar/tile.h"

#include <cmath>

#include "xbar/core/error.h"

namespace xbar {

std::vector<ReadSpec> ReadsOf(const MappingSpec& map) {
  const Scheme& scheme = *map.scheme;
  const Encoding enc = map.encoding();
  const int components = scheme.Components();
  std::vector<ReadSpec> reads;
  for (int s = 0; s < map.slices(); ++s) {
    const double shift = std::ldexp(1.0, map.cell_bits * s);
    if (components == 2 && map.analog_subtract) {
      reads.push_back({0, s, true, shift});
    } else {
      for (int a = 0; a < components; ++a) reads.push_back({a, s, false, scheme.ComponentSign(a) * shift});
    }
  }
  if (scheme.UnitColumn(enc)) reads.push_back({0, -1, false, -static_cast<double>(scheme.Bias(enc))});
  return reads;
}

torch::Tensor IndexTensor(const std::vector<int64_t>& v) {
  return torch::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, torch::kInt64).clone();
}

torch::Tensor AssembleReads(const CrossbarTile& t, const std::vector<ReadSpec>& reads, const torch::Tensor& levels,
                            const torch::Tensor& unit, int slices) {
  const int64_t R = t.num_rows(), C = t.num_cols();
  std::vector<torch::Tensor> cols;
  for (const ReadSpec& r : reads) {
    if (r.slice < 0) {
      cols.push_back(unit.view({R, 1}));
      continue;
    }
    auto comp = [&](int a) { return levels[a].view({R, C, slices}).select(2, r.slice); };
    cols.push_back(r.difference ? comp(0) - comp(1) : comp(r.component));
  }
  torch::Tensor m = torch::cat(cols, 1);  // [R, NR]
  const int64_t NR = m.size(1);
  torch::Tensor padded = torch::zeros({t.groups * t.group_rows, NR}, m.options());
  padded.narrow(0, 0, R).copy_(m);
  return padded.view({t.groups, t.group_rows, NR}).contiguous();
}

std::vector<torch::Tensor> ToPhysical(const torch::Tensor& levels, const torch::Tensor& unit, const Scheme& scheme) {
  if (scheme.SeparateArrays()) return {levels[0].clone(), levels[1].clone()};
  if (scheme.Components() == 2) {
    const int64_t R = levels.size(1), CS = levels.size(2);
    return {torch::stack({levels[0], levels[1]}, 2).reshape({R, 2 * CS})};
  }
  if (unit.defined()) return {torch::cat({levels[0], unit.view({-1, 1})}, 1)};
  return {levels[0].clone()};
}

void FromPhysical(const std::vector<torch::Tensor>& arrays, const Scheme& scheme, torch::Tensor& levels,
                  torch::Tensor& unit) {
  const int64_t R = levels.size(1), CS = levels.size(2);
  if (scheme.SeparateArrays()) {
    XBAR_CHECK(arrays.size() == 2, "two-crossbar tiles have two arrays");
    levels[0].copy_(arrays[0]);
    levels[1].copy_(arrays[1]);
  } else if (scheme.Components() == 2) {
    auto pair = arrays.at(0).view({R, CS, 2});
    levels[0].copy_(pair.select(2, 0));
    levels[1].copy_(pair.select(2, 1));
  } else {
    levels[0].copy_(arrays.at(0).narrow(1, 0, CS));
    if (unit.defined()) unit.copy_(arrays[0].select(1, CS));
  }
}

}  // namespace xbar
