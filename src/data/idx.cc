#include "xbar/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"

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

std::string ReadMaybeGzip(const std::string& path) {
  if (!FileExists(path)) throw InputError(StrCat(path, ": file not found"));
  // gzread passes plain files through unchanged, so one path serves both.
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw InputError(StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::string out;
  std::vector<char> buf(1 << 20);
  for (;;) {
    int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      throw InputError(StrCat(path, ": corrupt or truncated gzip data (", msg, ")"));
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  int code = 0;
  const char* msg = gzerror(f, &code);
  if (code != Z_OK && code != Z_STREAM_END) {
    std::string m = msg;
    gzclose(f);
    throw InputError(StrCat(path, ": corrupt or truncated gzip data (", m, ")"));
  }
  gzclose(f);
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
  const long double expected = static_cast<long double>(a.numel()) * esize;
  const size_t have = bytes.size() - header;
  if (expected > static_cast<long double>(have)) {
    throw InputError(StrCat(source, ": truncated IDX data: dimensions need ", static_cast<double>(expected),
                            " bytes, file has ", have));
  }
  if (expected < static_cast<long double>(have)) {
    throw InputError(StrCat(source, ": IDX file has ", have - static_cast<size_t>(expected),
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

ImageSet ReadCifarBinary(const std::vector<std::string>& paths, CifarKind kind) {
  const size_t label_bytes = kind == CifarKind::kCifar10 ? 1 : 2;
  const int64_t classes = kind == CifarKind::kCifar10 ? 10 : 100;
  constexpr size_t kPixels = 3 * 32 * 32;
  const size_t record = label_bytes + kPixels;
  ImageSet s;
  s.channels = 3;
  s.height = 32;
  s.width = 32;
  for (const auto& path : paths) {
    std::string bytes = ReadMaybeGzip(path);
    if (bytes.empty() || bytes.size() % record != 0) {
      throw InputError(StrCat(path, ": size ", bytes.size(), " is not a positive multiple of the ", record,
                              "-byte ", kind == CifarKind::kCifar10 ? "CIFAR-10" : "CIFAR-100",
                              " record (truncated or wrong format?)"));
    }
    const size_t n = bytes.size() / record;
    for (size_t r = 0; r < n; ++r) {
      const char* rec = bytes.data() + r * record;
      const int64_t label = static_cast<uint8_t>(rec[label_bytes - 1]);  // CIFAR-100: the fine label
      if (label >= classes) {
        throw InputError(StrCat(path, ": label ", label, " in record ", r, " is out of range [0, ", classes, ")"));
      }
      s.labels.push_back(label);
      s.pixels.insert(s.pixels.end(), rec + label_bytes, rec + record);
    }
    s.count += static_cast<int64_t>(n);
  }
  return s;
}

}  // namespace xbar
