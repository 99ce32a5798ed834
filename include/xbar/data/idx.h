// xbar/data/idx.h — readers for the IDX format (MNIST, Fashion-MNIST, EMNIST) and CIFAR binaries.
//
// IDX: 2 zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64), the
// number of dimensions, that many big-endian u32 sizes, then the big-endian data. Files may be
// gzipped (detected from the content, not the name). CIFAR-10 binary: records of 1 label byte +
// 3072 pixel bytes (3x32x32, channel-major); CIFAR-100: 2 label bytes (coarse, fine) + 3072.
//
// Every problem (missing file, bad magic, truncated data, trailing bytes, dimension or count
// mismatch, label out of range) throws InputError naming the file.
//
//   IdxArray images = ReadIdx("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
//   // images.dims == {60000, 28, 28}, images.data holds 47,040,000 bytes
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xbar/core/fs.h"

namespace xbar {

struct IdxArray {
  uint8_t type_code = 0x08;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // host byte order; numel * element size bytes

  int64_t numel() const;  // parsed arrays only: ParseIdx checks the product fits
};

// Element size in bytes of an IDX type code; 0 when the code is not a valid IDX type.
int IdxElementSize(uint8_t type_code);

// Reads a (possibly gzipped) file whole; throws InputError when it cannot be read or unzipped.
std::string ReadMaybeGzip(const std::string& path, int64_t max_bytes = kMaxReadBytes);

// `raw` itself when it is not gzip data; otherwise its inflated content (every member of a
// concatenated file), refused past `max_bytes`. `source` names it in messages.
std::string InflateIfGzip(std::string raw, const std::string& source, int64_t max_bytes = kMaxReadBytes);

// Parses an IDX file. `source` names it in messages.
IdxArray ParseIdx(const std::string& bytes, const std::string& source);
IdxArray ReadIdx(const std::string& path);

// Writes an IDX file (uncompressed, or gzipped when `gzip`): used by tests and export tools.
void WriteIdx(const std::string& path, const IdxArray& array, bool gzip);

struct ImageSet {
  int64_t count = 0, channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // count * channels * height * width, NCHW
  std::vector<int64_t> labels;  // count entries
};

// An IDX image file (u8, [N, H, W] or [N, C, H, W]) with its IDX label file (u8, [N]); checks that
// the counts agree and every label is < max_classes.
ImageSet ReadIdxImageSet(const std::string& images_path, const std::string& labels_path, int64_t max_classes);

enum class CifarKind { kCifar10, kCifar100 };
// Reads and concatenates CIFAR binary files; labels are the (fine) class.
ImageSet ReadCifarBinary(const std::vector<std::string>& paths, CifarKind kind);
// Appends the records of one CIFAR binary file's content (`source` names it in messages).
void AppendCifarRecords(const std::string& bytes, const std::string& source, CifarKind kind, ImageSet& set);

}  // namespace xbar
