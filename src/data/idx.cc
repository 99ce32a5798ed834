#include "xbar/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"

namespace xbar {

int64_t IdxArray::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

int IdxElementSize(uint8_t type_code) {
  switch (type_code) {
    case 0x08:
    case 0x09:
      return 1;
    case 0x0B:
      return 2;
    case 0x0C:
    case 0x0D:
      return 4;
    case 0x0E:
      return 8;
    default:
      return 0;
  }
}

std::string ReadMaybeGzip(const std::string& path, int64_t max_bytes) {
  return InflateIfGzip(ReadFile(path, max_bytes), path, max_bytes);
}

std::string InflateIfGzip(std::string raw, const std::string& path, int64_t max_bytes) {
  if (raw.size() < 2 || static_cast<uint8_t>(raw[0]) != 0x1f || static_cast<uint8_t>(raw[1]) != 0x8b) return raw;
  // gzip, inflated in memory (every member of a concatenated file), never past max_bytes.
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) throw InternalError(StrCat(path, ": zlib inflateInit2 failed"));
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&zs};
  std::string out;
  size_t in_pos = 0, have = 0;
  for (;;) {
    if (have == out.size()) {
      if (static_cast<int64_t>(have) >= max_bytes) {
        throw InputError(StrCat(path, ": inflates to more than ", max_bytes, " bytes, the limit xbar reads from one file"));
      }
      out.resize(std::min<size_t>(std::max<size_t>(out.size() * 2, raw.size() * 4), static_cast<size_t>(max_bytes)));
    }
    const size_t in_chunk = std::min<size_t>(raw.size() - in_pos, 1u << 30);
    const size_t out_chunk = std::min<size_t>(out.size() - have, 1u << 30);
    zs.next_in = reinterpret_cast<Bytef*>(raw.data() + in_pos);
    zs.avail_in = static_cast<uInt>(in_chunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + have);
    zs.avail_out = static_cast<uInt>(out_chunk);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += in_chunk - zs.avail_in;
    have += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) {
      if (in_pos == raw.size()) break;
      if (inflateReset(&zs) != Z_OK) throw InternalError(StrCat(path, ": zlib inflateReset failed"));
      continue;
    }
    if (rc == Z_BUF_ERROR && in_pos == raw.size()) {
      throw InputError(StrCat(path, ": corrupt or truncated gzip data (unexpected end of file)"));
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      throw InputError(StrCat(path, ": corrupt or truncated gzip data (", zs.msg != nullptr ? zs.msg : "zlib error", ", code ", rc, ")"));
    }
    if (InterruptRequested()) throw InterruptedError(StrCat(path, ": interrupted while decompressing"));
  }
  out.resize(have);
  return out;
}

IdxArray ParseIdx(const std::string& bytes, const std::string& source) {
  auto u8 = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  if (bytes.size() < 4) throw InputError(StrCat(source, ": not an IDX file: only ", bytes.size(), " bytes"));
  if (u8(0) != 0 || u8(1) != 0 || IdxElementSize(u8(2)) == 0 || u8(3) == 0) {
    char magic[16];
    std::snprintf(magic, sizeof(magic), "%02x%02x%02x%02x", u8(0), u8(1), u8(2), u8(3));
    throw InputError(StrCat(source, ": not an IDX file: bad magic 0x", magic,
                            " (expected 0x0000TTDD with a type TT in 08/09/0B/0C/0D/0E)"));
  }
  IdxArray a;
  a.type_code = u8(2);
  const int ndims = u8(3);
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header) {
    throw InputError(StrCat(source, ": truncated IDX header: ", ndims, " dimensions need ", header, " bytes"));
  }
  for (int d = 0; d < ndims; ++d) {
    const size_t o = 4 + 4 * static_cast<size_t>(d);
    a.dims.push_back((int64_t{u8(o)} << 24) | (int64_t{u8(o + 1)} << 16) | (int64_t{u8(o + 2)} << 8) | u8(o + 3));
  }
  const int esize = IdxElementSize(a.type_code);
  // The size the dimensions describe, checked for overflow (dimensions are up to 2^32 - 1 each):
  // a product that wraps must not pass for the file's size.
  const size_t have = bytes.size() - header;
  uint64_t expected = static_cast<uint64_t>(esize);
  bool overflow = false;
  for (int64_t d : a.dims) {  // every partial product too: a later zero dimension must not hide one
    overflow = overflow || __builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected) ||
               expected > static_cast<uint64_t>(INT64_MAX);
  }
  if (overflow) {
    std::string shape;
    for (int64_t d : a.dims) shape += StrCat(shape.empty() ? "" : "x", d);
    throw InputError(StrCat(source, ": IDX dimensions ", shape, " describe more than 2^63 bytes; the file has ", have));
  }
  if (expected > have) {
    throw InputError(StrCat(source, ": truncated IDX data: dimensions need ", expected, " bytes, file has ", have));
  }
  if (expected < have) {
    throw InputError(StrCat(source, ": IDX file has ", have - expected,
                            " trailing bytes after the data its dimensions describe"));
  }
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  if (esize > 1) {  // big-endian to host order
    for (size_t i = 0; i < a.data.size(); i += static_cast<size_t>(esize)) {
      std::reverse(a.data.begin() + static_cast<std::ptrdiff_t>(i), a.data.begin() + static_cast<std::ptrdiff_t>(i + esize));
    }
  }
  return a;
}

IdxArray ReadIdx(const std::string& path) { return ParseIdx(ReadMaybeGzip(path), path); }

void WriteIdx(const std::string& path, const IdxArray& array, bool gzip) {
  const int esize = IdxElementSize(array.type_code);
  XBAR_CHECK(esize > 0, "invalid IDX type code");
  XBAR_CHECK(static_cast<int64_t>(array.data.size()) == array.numel() * esize, "IDX data size mismatch");
  std::string bytes = {0, 0, static_cast<char>(array.type_code), static_cast<char>(array.dims.size())};
  for (int64_t d : array.dims) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xff));
  }
  size_t start = bytes.size();
  bytes.append(array.data.begin(), array.data.end());
  if (esize > 1) {
    for (size_t i = start; i < bytes.size(); i += static_cast<size_t>(esize)) {
      std::reverse(bytes.begin() + static_cast<std::ptrdiff_t>(i), bytes.begin() + static_cast<std::ptrdiff_t>(i + esize));
    }
  }
  if (!gzip) {
    WriteFileAtomic(path, bytes);
    return;
  }
  uLongf bound = compressBound(static_cast<uLong>(bytes.size())) + 64;
  std::string out(bound, '\0');
  z_stream zs{};
  XBAR_CHECK(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
  zs.next_in = reinterpret_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  XBAR_CHECK(rc == Z_STREAM_END, "gzip compression failed");
  out.resize(zs.total_out);
  WriteFileAtomic(path, out);
}

ImageSet ReadIdxImageSet(const std::string& images_path, const std::string& labels_path, int64_t max_classes) {
  IdxArray img = ReadIdx(images_path);
  IdxArray lab = ReadIdx(labels_path);
  if (img.type_code != 0x08 || (img.dims.size() != 3 && img.dims.size() != 4)) {
    throw InputError(StrCat(images_path, ": expected unsigned-byte images of shape [N, H, W] or [N, C, H, W], got ",
                            img.dims.size(), " dimensions of type 0x", std::hex, int{img.type_code}));
  }
  if (lab.type_code != 0x08 || lab.dims.size() != 1) {
    throw InputError(StrCat(labels_path, ": expected unsigned-byte labels of shape [N], got ", lab.dims.size(),
                            " dimensions"));
  }
  ImageSet s;
  s.count = img.dims[0];
  s.channels = img.dims.size() == 4 ? img.dims[1] : 1;
  s.height = img.dims[img.dims.size() - 2];
  s.width = img.dims.back();
  if (s.count == 0 || s.height == 0 || s.width == 0 || s.channels == 0) {
    throw InputError(StrCat(images_path, ": empty image set"));
  }
  if (lab.dims[0] != s.count) {
    throw InputError(StrCat(labels_path, ": has ", lab.dims[0], " labels but ", images_path, " has ", s.count,
                            " images"));
  }
  s.pixels = std::move(img.data);
  s.labels.reserve(static_cast<size_t>(s.count));
  for (int64_t i = 0; i < s.count; ++i) {
    int64_t l = lab.data[static_cast<size_t>(i)];
    if (l >= max_classes) {
      throw InputError(StrCat(labels_path, ": label ", l, " at index ", i, " is out of range [0, ", max_classes, ")"));
    }
    s.labels.push_back(l);
  }
  return s;
}

void AppendCifarRecords(const std::string& bytes, const std::string& source, CifarKind kind, ImageSet& s) {
  const size_t label_bytes = kind == CifarKind::kCifar10 ? 1 : 2;
  const int64_t classes = kind == CifarKind::kCifar10 ? 10 : 100;
  constexpr size_t kPixels = 3 * 32 * 32;
  const size_t record = label_bytes + kPixels;
  s.channels = 3;
  s.height = 32;
  s.width = 32;
  if (bytes.empty() || bytes.size() % record != 0) {
    throw InputError(StrCat(source, ": size ", bytes.size(), " is not a positive multiple of the ", record, "-byte ",
                            kind == CifarKind::kCifar10 ? "CIFAR-10" : "CIFAR-100", " record (truncated or wrong format?)"));
  }
  const size_t n = bytes.size() / record;
  s.labels.reserve(s.labels.size() + n);
  s.pixels.reserve(s.pixels.size() + n * kPixels);
  for (size_t r = 0; r < n; ++r) {
    const char* rec = bytes.data() + r * record;
    const int64_t label = static_cast<uint8_t>(rec[label_bytes - 1]);  // CIFAR-100: the fine label
    if (label >= classes) {
      throw InputError(StrCat(source, ": label ", label, " in record ", r, " is out of range [0, ", classes, ")"));
    }
    s.labels.push_back(label);
    s.pixels.insert(s.pixels.end(), rec + label_bytes, rec + record);
  }
  s.count += static_cast<int64_t>(n);
}

ImageSet ReadCifarBinary(const std::vector<std::string>& paths, CifarKind kind) {
  ImageSet s;
  for (const auto& path : paths) AppendCifarRecords(ReadMaybeGzip(path), path, kind, s);
  return s;
}

}  // namespace xbar
