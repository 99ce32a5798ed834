#include "xbar/core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "xbar/core/error.h"

namespace xbar {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = StrCat(path_, ".tmp.", ::getpid());
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) {
    throw ConfigError(StrCat(path_, ": cannot write: ", std::strerror(errno)));
  }
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(tmp_path_.c_str());
}

void AtomicFile::Write(const void* data, std::size_t size) {
  XBAR_CHECK(file_ != nullptr, "write after commit to ", path_);
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    throw InternalError(StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
}

void AtomicFile::Commit() {
  XBAR_CHECK(file_ != nullptr, "double commit of ", path_);
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    throw InternalError(StrCat(path_, ": cannot finish writing: ", std::strerror(errno)));
  }
  committed_ = true;
}

void WriteFileAtomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.Write(content);
  f.Commit();
}

std::string ReadFile(const std::string& path) {
  if (IsDirectory(path)) throw InputError(StrCat(path, ": is a directory; expected a file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(StrCat(path, ": cannot open: ", std::strerror(errno)));
  // A file of known size is read in one go (a stream copy of a 45 MB model took 100 ms).
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size > 0) {
    std::string out(static_cast<size_t>(size), '\0');
    in.seekg(0);
    in.read(out.data(), size);
    if (in.gcount() != size) throw InputError(StrCat(path, ": read error (", in.gcount(), " of ", size, " bytes)"));
    return out;
  }
  in.clear();  // a pipe (no size; the failed seek moved nothing) or an empty file: read to the end
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InputError(StrCat(path, ": read error"));
  return ss.str();
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void MakeDirs(const std::string& path) {
  if (path.empty()) return;
  std::string partial;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0777) != 0 && errno != EEXIST) {
      throw ConfigError(StrCat(partial, ": cannot create directory: ", std::strerror(errno)));
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw ConfigError(StrCat(path, ": not a directory"));
  }
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (!name.empty() && name[0] == '/') return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string FileStem(const std::string& path) {
  std::size_t slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::size_t dot = base.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

}  // namespace xbar
