#include "xbar/core/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"

namespace xbar {
namespace {

RawTensor F32(std::vector<int64_t> shape, std::vector<float> values) {
  RawTensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * 4);
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());  // memcpy(nullptr, ...) is UB
  return t;
}

// Builds a file from a header object and a data block, as another writer might.
std::string Build(const nlohmann::json& header, const std::string& data, int pad = -1) {
  std::string h = header.dump();
  if (pad < 0) h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  return out + h + data;
}

std::string ErrorOf(const std::string& bytes) {
  try {
    ParseSafeTensors(bytes, "m.safetensors");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(SafeTensors, RoundTripAllDtypesAndMetadata) {
  SafeTensors st;
  st.metadata = {{"architecture", "lenet5"}, {"format", "pt"}};
  st.tensors["a.weight"] = F32({2, 3}, {1, -2, 3, 0, 5.5f, -6});
  const std::vector<DType> all = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                                  DType::kI32, DType::kI16, DType::kI8,  DType::kU8,   DType::kBool};
  for (DType d : all) {
    RawTensor t;
    t.dtype = d;
    t.shape = {3};
    t.bytes.resize(3 * static_cast<size_t>(DTypeSize(d)));
    for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
    st.tensors[std::string("t_") + DTypeName(d)] = t;
  }
  st.tensors["scalar"] = F32({}, {42});
  st.tensors["empty"] = F32({0, 4}, {});

  const std::string bytes = SerializeSafeTensors(st);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header must be padded so the data block is 8-byte aligned";

  SafeTensors back = ParseSafeTensors(bytes, "mem");
  EXPECT_EQ(back.metadata, st.metadata);
  ASSERT_EQ(back.tensors.size(), st.tensors.size());
  for (const auto& [name, t] : st.tensors) {
    const RawTensor& b = back.tensors.at(name);
    EXPECT_EQ(b.dtype, t.dtype) << name;
    EXPECT_EQ(b.shape, t.shape) << name;
    EXPECT_EQ(b.bytes, t.bytes) << name;
  }
  EXPECT_EQ(back.tensors.at("a.weight").ToDoubles(), (std::vector<double>{1, -2, 3, 0, 5.5, -6}));
}

TEST(SafeTensors, HeaderFollowsTheSpec) {
  SafeTensors st;
  st.tensors["w"] = F32({2}, {1, 2});
  st.tensors["b"] = F32({1}, {3});
  const std::string bytes = SerializeSafeTensors(st);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["w"]["dtype"], "F32");
  EXPECT_EQ(header["w"]["shape"], nlohmann::json({2}));
  const auto b = header["b"]["data_offsets"], w = header["w"]["data_offsets"];
  EXPECT_EQ(b[1].get<int>() - b[0].get<int>(), 4);
  EXPECT_EQ(w[1].get<int>() - w[0].get<int>(), 8);
  EXPECT_EQ(bytes.size(), 8 + n + 12);
}

TEST(SafeTensors, ReadsFilesFromOtherWritersWithUnsortedOffsets) {
  // Tensors listed in one order, stored in another, header not padded: all legal.
  nlohmann::json h = {{"z", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
                      {"a", {{"dtype", "U8"}, {"shape", {2}}, {"data_offsets", {4, 6}}}}};
  float one = 1.0f;
  std::string data(reinterpret_cast<char*>(&one), 4);
  data += "\x07\x09";
  SafeTensors st = ParseSafeTensors(Build(h, data, 0), "x");
  EXPECT_EQ(st.tensors.at("z").ToDoubles()[0], 1.0);
  EXPECT_EQ(st.tensors.at("a").bytes, (std::vector<uint8_t>{7, 9}));
}

TEST(SafeTensors, CorruptFilesGiveOneLineErrorsNamingTheFile) {
  const nlohmann::json good = {{"w", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}};
  const std::string data(8, '\0');
  ASSERT_EQ(ErrorOf(Build(good, data)), "");

  EXPECT_NE(ErrorOf("abc").find("too short"), std::string::npos);
  std::string huge(16, '\0');
  huge[0] = '\x7f';
  huge[3] = '\x7f';
  EXPECT_NE(ErrorOf(huge).find("exceeds the file size"), std::string::npos);
  std::string bad_json = Build(good, data);
  bad_json[9] = '#';
  EXPECT_NE(ErrorOf(bad_json).find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf(Build(good, data.substr(0, 6))).find("outside the data block"), std::string::npos);
  EXPECT_NE(ErrorOf(Build(good, data + "xx")).find("data block has 10 bytes"), std::string::npos);

  auto with = [&](const nlohmann::json& entry) { return Build({{"w", entry}}, data); };
  EXPECT_NE(ErrorOf(with({{"dtype", "F33"}, {"shape", {2}}, {"data_offsets", {0, 8}}})).find("unsupported dtype"),
            std::string::npos);
  EXPECT_NE(ErrorOf(with({{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 8}}})).find("need 12"),
            std::string::npos);
  EXPECT_NE(ErrorOf(with({{"dtype", "F32"}, {"shape", {-2}}, {"data_offsets", {0, 8}}})).find("negative"),
            std::string::npos);
  EXPECT_NE(ErrorOf(with({{"dtype", "F32"}, {"shape", {2}}})).find("lacks"), std::string::npos);

  nlohmann::json overlap = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                            {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 8}}}}};
  EXPECT_NE(ErrorOf(Build(overlap, data)).find("overlaps or leaves a gap"), std::string::npos);
  nlohmann::json meta = good;
  meta["__metadata__"] = {{"epochs", 3}};
  EXPECT_NE(ErrorOf(Build(meta, data)).find("not a string"), std::string::npos);

  for (const std::string& msg : {ErrorOf("abc"), ErrorOf(bad_json)}) {
    EXPECT_EQ(msg.rfind("m.safetensors: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(SafeTensors, FileRoundTripIsAtomicAndMissingFileIsInputError) {
  const std::string path = ::testing::TempDir() + "/st_roundtrip.safetensors";
  SafeTensors st;
  st.tensors["w"] = F32({1}, {2});
  WriteSafeTensors(path, st);
  EXPECT_EQ(ReadSafeTensors(path).tensors.at("w").ToDoubles()[0], 2.0);
  EXPECT_FALSE(FileExists(path + ".tmp." + std::to_string(::getpid())));
  EXPECT_THROW(ReadSafeTensors(path + ".missing"), InputError);
}

TEST(SafeTensors, HalfPrecisionConversion) {
  RawTensor t;
  t.dtype = DType::kF16;
  t.shape = {4};
  const uint16_t vals[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};  // 1, -2, smallest subnormal, 65504
  t.bytes.resize(8);
  std::memcpy(t.bytes.data(), vals, 8);
  auto d = t.ToDoubles();
  EXPECT_EQ(d[0], 1.0);
  EXPECT_EQ(d[1], -2.0);
  EXPECT_DOUBLE_EQ(d[2], std::ldexp(1.0, -24));
  EXPECT_EQ(d[3], 65504.0);
  t.dtype = DType::kBF16;
  const uint16_t bf[4] = {0x3f80, 0xc040, 0, 0x4049};  // 1, -3, 0, 3.140625
  std::memcpy(t.bytes.data(), bf, 8);
  d = t.ToDoubles();
  EXPECT_EQ(d[0], 1.0);
  EXPECT_EQ(d[1], -3.0);
  EXPECT_EQ(d[3], 3.140625);
}

}  // namespace
}  // namespace xbar
