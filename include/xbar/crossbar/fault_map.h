// xbar/crossbar/fault_map.h — the measured fault-map format (torch-free; docs/USER_GUIDE.md).
//
// CSV lines `crossbar,row,col,type` with type SA0 (stuck off) or SA1 (stuck on); `#` comments,
// blank lines and a header line `crossbar,...` are allowed. Every other deviation is an InputError
// naming `source:line`. Whether an entry lies on the chip is checked where the mapping is known
// (FaultInjector::Draw, CheckAllUsed).
//
//   FaultMap m = ParseFaultMap(ReadFile("chip7.csv"), "chip7.csv");
//   for (const FaultMapEntry& e : m[3]) ...   // crossbar 3's stuck cells
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xbar {

struct FaultMapEntry {
  int64_t row, col;
  int8_t state;  // 1 SA0, 2 SA1
  int64_t line;  // in the file, for messages
};
using FaultMap = std::map<int64_t, std::vector<FaultMapEntry>>;  // crossbar -> its entries

FaultMap ParseFaultMap(const std::string& text, const std::string& source);

}  // namespace xbar
