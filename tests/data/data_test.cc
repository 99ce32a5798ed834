#include <gtest/gtest.h>

#include <cmath>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/data/dataset.h"
#include "xbar/data/idx.h"

namespace xbar {
namespace {

std::string Dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/xbar_data_test/" + name;
  MakeDirs(d);
  return d;
}

IdxArray Images(int64_t n, int64_t h, int64_t w, uint8_t seed) {
  IdxArray a;
  a.type_code = 0x08;
  a.dims = {n, h, w};
  for (int64_t i = 0; i < n * h * w; ++i) a.data.push_back(static_cast<uint8_t>((i * 31 + seed) % 251));
  return a;
}

IdxArray Labels(int64_t n, int64_t classes) {
  IdxArray a;
  a.type_code = 0x08;
  a.dims = {n};
  for (int64_t i = 0; i < n; ++i) a.data.push_back(static_cast<uint8_t>(i % classes));
  return a;
}

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    return e.what();
  }
  return "";
}

// Writes a small MNIST-layout folder (train 40, test 12 images of 28x28).
std::string WriteIdxDataset(const std::string& name, bool gzip) {
  const std::string d = Dir(name);
  const std::string ext = gzip ? ".gz" : "";
  WriteIdx(d + "/train-images-idx3-ubyte" + ext, Images(40, 28, 28, 1), gzip);
  WriteIdx(d + "/train-labels-idx1-ubyte" + ext, Labels(40, 10), gzip);
  WriteIdx(d + "/t10k-images-idx3-ubyte" + ext, Images(12, 28, 28, 2), gzip);
  WriteIdx(d + "/t10k-labels-idx1-ubyte" + ext, Labels(12, 10), gzip);
  return d;
}

TEST(Idx, RoundTripPlainGzipAndMultiByteTypes) {
  const std::string d = Dir("roundtrip");
  IdxArray img = Images(3, 4, 5, 9);
  WriteIdx(d + "/a.idx", img, false);
  WriteIdx(d + "/a.idx.gz", img, true);
  for (const std::string f : {"/a.idx", "/a.idx.gz"}) {
    IdxArray back = ReadIdx(d + f);
    EXPECT_EQ(back.dims, img.dims);
    EXPECT_EQ(back.data, img.data);
  }
  IdxArray ints;
  ints.type_code = 0x0C;
  ints.dims = {2};
  int32_t v[2] = {-5, 70000};
  ints.data.resize(8);
  std::memcpy(ints.data.data(), v, 8);
  WriteIdx(d + "/i.idx", ints, false);
  const std::string raw = ReadFile(d + "/i.idx");
  EXPECT_EQ(static_cast<uint8_t>(raw[8]), 0xff) << "IDX data is big-endian on disk";
  IdxArray back = ReadIdx(d + "/i.idx");
  int32_t w[2];
  std::memcpy(w, back.data.data(), 8);
  EXPECT_EQ(w[0], -5);
  EXPECT_EQ(w[1], 70000);
}

TEST(Idx, CorruptFilesNameTheFileAndTheProblem) {
  const std::string d = Dir("corrupt");
  const std::string good = d + "/good.idx";
  WriteIdx(good, Images(2, 3, 3, 0), false);
  const std::string bytes = ReadFile(good);

  WriteFileAtomic(d + "/magic.idx", "\x01\x02" + bytes.substr(2));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/magic.idx"); }).find("magic.idx: not an IDX file: bad magic 0x0102"),
            std::string::npos);
  WriteFileAtomic(d + "/short.idx", bytes.substr(0, bytes.size() - 5));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/short.idx"); }).find("short.idx: truncated IDX data: dimensions need 18 bytes, file has 13"),
            std::string::npos);
  WriteFileAtomic(d + "/long.idx", bytes + "xyz");
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/long.idx"); }).find("3 trailing bytes"), std::string::npos);
  WriteFileAtomic(d + "/hdr.idx", bytes.substr(0, 9));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/hdr.idx"); }).find("truncated IDX header"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/missing.idx"); }).find("missing.idx: file not found"), std::string::npos);

  // Found by fuzzing: dimensions whose product overflows 64 bits before a zero dimension (the
  // file holds 0 bytes of data, which the whole product matches) or wraps to the file's size.
  auto bytes_of = [](std::initializer_list<int> v) {
    std::string out;
    for (int x : v) out.push_back(static_cast<char>(x));
    return out;
  };
  WriteFileAtomic(d + "/zero.idx", bytes_of({0, 0, 8, 3, 0xfd, 0, 0, 0x5f, 0xff, 0xff, 0xf9, 0, 0, 0, 0, 0}));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/zero.idx"); }).find("zero.idx: IDX dimensions 4244635743x4294965504x0 describe more than 2^63"),
            std::string::npos) << ErrorOf([&] { ReadIdx(d + "/zero.idx"); });
  WriteFileAtomic(d + "/wrap.idx", bytes_of({0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/wrap.idx"); }).find("describe more than 2^63 bytes"), std::string::npos);

  WriteIdx(d + "/good.idx.gz", Images(50, 28, 28, 0), true);
  const std::string gz = ReadFile(d + "/good.idx.gz");
  WriteFileAtomic(d + "/trunc.idx.gz", gz.substr(0, gz.size() / 2));
  EXPECT_NE(ErrorOf([&] { ReadIdx(d + "/trunc.idx.gz"); }).find("trunc.idx.gz: corrupt or truncated gzip data"),
            std::string::npos);
}

TEST(Idx, ImageSetChecksCountsDimensionsAndLabels) {
  const std::string d = Dir("sets");
  WriteIdx(d + "/img", Images(5, 4, 4, 0), false);
  WriteIdx(d + "/lab", Labels(5, 3), false);
  WriteIdx(d + "/lab4", Labels(4, 3), false);
  ImageSet s = ReadIdxImageSet(d + "/img", d + "/lab", 10);
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.labels[4], 1);
  EXPECT_NE(ErrorOf([&] { ReadIdxImageSet(d + "/img", d + "/lab4", 10); }).find("lab4: has 4 labels but"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ReadIdxImageSet(d + "/img", d + "/lab", 2); }).find("label 2 at index 2 is out of range [0, 2)"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ReadIdxImageSet(d + "/lab", d + "/lab", 10); }).find("expected unsigned-byte images"),
            std::string::npos);
}

TEST(Cifar, ReadsBothFormatsAndRejectsBadSizesAndLabels) {
  const std::string d = Dir("cifar");
  std::string c10, c100;
  for (int r = 0; r < 3; ++r) {
    c10.push_back(static_cast<char>(r + 7));  // labels 7, 8, 9
    c100.push_back(static_cast<char>(r));     // coarse
    c100.push_back(static_cast<char>(90 + r));  // fine
    std::string px(3072, static_cast<char>(r * 10));
    px[0] = 1;  // first pixel of the red plane
    c10 += px;
    c100 += px;
  }
  WriteFileAtomic(d + "/c10.bin", c10);
  WriteFileAtomic(d + "/c100.bin", c100);
  ImageSet s = ReadCifarBinary({d + "/c10.bin", d + "/c10.bin"}, CifarKind::kCifar10);
  EXPECT_EQ(s.count, 6);
  EXPECT_EQ(s.labels, (std::vector<int64_t>{7, 8, 9, 7, 8, 9}));
  EXPECT_EQ(s.pixels.size(), 6u * 3072);
  EXPECT_EQ(s.pixels[3072 + 1], 10);
  ImageSet f = ReadCifarBinary({d + "/c100.bin"}, CifarKind::kCifar100);
  EXPECT_EQ(f.labels, (std::vector<int64_t>{90, 91, 92}));

  WriteFileAtomic(d + "/short.bin", c10.substr(0, 3000));
  EXPECT_NE(ErrorOf([&] { ReadCifarBinary({d + "/short.bin"}, CifarKind::kCifar10); })
                .find("short.bin: size 3000 is not a positive multiple of the 3073-byte CIFAR-10 record"),
            std::string::npos);
  std::string bad = c10;
  bad[3073] = 12;
  WriteFileAtomic(d + "/bad.bin", bad);
  EXPECT_NE(ErrorOf([&] { ReadCifarBinary({d + "/bad.bin"}, CifarKind::kCifar10); }).find("label 12 in record 1"),
            std::string::npos);
}

TEST(Dataset, IdxFolderLoadsSplitsAndNormalises) {
  DatasetSpec spec;
  spec.name = "mnist";
  spec.path = WriteIdxDataset("mnist_gz", true);
  spec.validation_split = 0.25;
  DataBundle b = LoadData(spec, 0);
  EXPECT_EQ(b.train.size(), 30);
  EXPECT_EQ(b.val.size(), 10);
  EXPECT_EQ(b.test.size(), 12);
  EXPECT_EQ(b.train.images.sizes(), (std::vector<int64_t>{30, 1, 28, 28}));
  EXPECT_EQ(b.num_classes, 10);
  // Train + val together are the normalised training file: mean 0, std 1.
  auto all = torch::cat({b.train.images, b.val.images});
  EXPECT_NEAR(all.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(all.std(false).item<double>(), 1.0, 1e-4);
  // Same seed, same split; another seed, another split.
  DataBundle again = LoadData(spec, 0), other = LoadData(spec, 1);
  EXPECT_TRUE(torch::equal(again.val.labels, b.val.labels));
  EXPECT_TRUE(torch::equal(again.train.images, b.train.images));
  EXPECT_FALSE(torch::equal(other.train.images, b.train.images));

  spec.train_subset = 20;
  spec.test_subset = 5;
  DataBundle sub = LoadData(spec, 0);
  EXPECT_EQ(sub.train.size() + sub.val.size(), 20);
  EXPECT_EQ(sub.test.size(), 5);

  spec.test_subset = 0;
  spec.path = WriteIdxDataset("mnist_plain", false);  // uncompressed files are found too
  EXPECT_EQ(LoadData(spec, 0).test.size(), 12);
}

TEST(Dataset, ProxyShapesResizeReplicateAndAreLabelled) {
  DatasetSpec spec;
  spec.name = "mnist";
  spec.path = WriteIdxDataset("mnist_proxy", true);
  spec.normalize = "false";
  const DataBundle raw = LoadData(spec, 0);
  spec.image_size = 32;
  spec.channels = 3;
  const DataBundle b = LoadData(spec, 0);
  EXPECT_EQ(b.name, "mnist@3x32x32 (proxy)");
  EXPECT_EQ(b.test.images.sizes(), (std::vector<int64_t>{12, 3, 32, 32}));
  EXPECT_EQ(b.train.images.sizes(), (std::vector<int64_t>{raw.train.size(), 3, 32, 32}));
  EXPECT_EQ(b.channels, 3);
  EXPECT_EQ(b.height, 32);
  // The three channels are copies, and the resize is PyTorch's bilinear interpolation of the pixels.
  EXPECT_TRUE(torch::equal(b.test.images.select(1, 0), b.test.images.select(1, 2)));
  namespace F = torch::nn::functional;
  const torch::Tensor want = F::interpolate(raw.test.images, F::InterpolateFuncOptions()
                                                                 .size(std::vector<int64_t>{32, 32})
                                                                 .mode(torch::kBilinear)
                                                                 .align_corners(false));
  EXPECT_TRUE(torch::allclose(b.test.images.select(1, 1), want.select(1, 0), 0, 1e-6));
  EXPECT_TRUE(torch::equal(b.test.labels, raw.test.labels));
  // Normalisation statistics are those of the proxy images, one per channel.
  spec.normalize = "auto";
  EXPECT_EQ(LoadData(spec, 0).norm.mean.size(), 3u);
  spec.channels = 2;
  spec.image_size = 0;
  EXPECT_EQ(LoadData(spec, 0).name, "mnist@2x28x28 (proxy)");
}

TEST(Dataset, MissingFilesAndMismatchedSetsAreInputErrors) {
  DatasetSpec spec;
  spec.name = "mnist";
  spec.path = Dir("empty_dir");
  EXPECT_NE(ErrorOf([&] { LoadData(spec, 0); }).find("train-images-idx3-ubyte[.gz]: file not found"), std::string::npos);
  const std::string d = WriteIdxDataset("mismatch", false);
  WriteIdx(d + "/t10k-images-idx3-ubyte", Images(12, 32, 32, 2), false);
  spec.path = d;
  EXPECT_NE(ErrorOf([&] { LoadData(spec, 0); }).find("training images are 1x28x28 but test images are 1x32x32"),
            std::string::npos);
  spec.name = "idx";
  spec.path = WriteIdxDataset("custom", false);
  spec.test_images = "nothere.idx";
  EXPECT_NE(ErrorOf([&] { LoadData(spec, 0); }).find("nothere.idx: file not found (dataset.test_images)"),
            std::string::npos);
}

TEST(Dataset, CifarFolderLoads) {
  const std::string d = Dir("cifar10_set") + "/cifar-10-batches-bin";
  MakeDirs(d);
  auto batch = [](int n, int label0) {
    std::string s;
    for (int r = 0; r < n; ++r) {
      s.push_back(static_cast<char>((label0 + r) % 10));
      for (int i = 0; i < 3072; ++i) s.push_back(static_cast<char>((i * 7 + r * 13) % 256));
    }
    return s;
  };
  for (int i = 1; i <= 5; ++i) WriteFileAtomic(d + "/data_batch_" + std::to_string(i) + ".bin", batch(4, i));
  WriteFileAtomic(d + "/test_batch.bin", batch(6, 0));
  DatasetSpec spec;
  spec.name = "cifar10";
  spec.path = Dir("cifar10_set");  // the parent folder is accepted too
  spec.validation_split = 0;
  DataBundle b = LoadData(spec, 3);
  EXPECT_EQ(b.train.size(), 20);
  EXPECT_EQ(b.test.size(), 6);
  EXPECT_EQ(b.channels, 3);
  EXPECT_EQ(b.num_classes, 10);
  EXPECT_EQ(b.norm.mean.size(), 3u);
  EXPECT_EQ(b.class_names[0], "airplane");
}

TEST(Dataset, RealFashionMnistFromTheDebianPackage) {
  if (!FileExists(std::string(kFashionMnistPath) + "/t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)";
  }
  DatasetSpec spec;  // defaults: fashion-mnist at its Debian location
  DataBundle b = LoadData(spec, 0);
  EXPECT_EQ(b.train.size() + b.val.size(), 60000);
  EXPECT_EQ(b.val.size(), 6000);
  EXPECT_EQ(b.test.size(), 10000);
  EXPECT_EQ(b.height, 28);
  // Published statistics of Fashion-MNIST's training set.
  EXPECT_NEAR(b.norm.mean[0], 0.2860, 1e-3);
  EXPECT_NEAR(b.norm.std[0], 0.3530, 1e-3);
  EXPECT_EQ(b.class_names[9], "Ankle boot");
  auto counts = torch::bincount(b.test.labels);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 1000);
}

TEST(Batching, EpochOrderIsSeededPerEpochAndBatchesSelectRows) {
  auto a = EpochOrder(100, 5, 0), b = EpochOrder(100, 5, 0), c = EpochOrder(100, 5, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  Dataset d{torch::arange(10, torch::kFloat32).view({10, 1, 1, 1}), torch::arange(10, torch::kInt64)};
  std::vector<int64_t> order = {3, 1, 4, 1, 5};
  auto [x, y] = GetBatch(d, order, 1, 3);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(y[0].item<int64_t>(), 1);
  EXPECT_EQ(y[2].item<int64_t>(), 1);
  EXPECT_EQ(x[1].item<float>(), 4.0f);
}

TEST(Batching, AugmentationIsDeterministicAndShapePreserving) {
  torch::manual_seed(0);
  auto x = torch::rand({8, 1, 28, 28});
  Rng r1(9), r2(9);
  auto a = Augment(x, "crop-flip", r1), b = Augment(x, "crop-flip", r2);
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, x));
  EXPECT_TRUE(torch::equal(Augment(x, "none", r1), x));
  Rng r3(1);
  auto f = Augment(x, "flip", r3);
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(torch::equal(f[i], x[i]) || torch::equal(f[i], x[i].flip({2})));
  }
}

}  // namespace
}  // namespace xbar
