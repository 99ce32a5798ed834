#include "xbar/core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "xbar/core/error.h"
#include "xbar/core/platform.h"

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

void CheckReadablePath(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw InputError(StrCat(path, ": file not found"));
    throw InputError(StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) throw InputError(StrCat(path, ": is a directory; expected a file"));
  // A device (/dev/zero, a terminal) or a socket never ends or never starts: refused. A pipe
  // (`-c <(...)`, /dev/stdin fed by a pipe) is read to its end, interruptibly.
  if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
    throw InputError(StrCat(path, ": is a ", S_ISCHR(st.st_mode) ? "character device" : S_ISBLK(st.st_mode) ? "block device"
                                                                                       : "socket or special file",
                            "; expected a regular file or a pipe"));
  }
}

std::string ReadFile(const std::string& path, int64_t max_bytes) {
  CheckReadablePath(path);
  int fd = -1;
  for (;;) {  // opening a pipe waits for its writer; SIGINT/SIGTERM end the wait
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) break;
    if (errno != EINTR) throw InputError(StrCat(path, ": cannot open: ", std::strerror(errno)));
    if (InterruptRequested()) throw InterruptedError(StrCat(path, ": interrupted while waiting for the pipe's writer"));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw InputError(StrCat(path, ": cannot read: ", std::strerror(errno)));
  auto too_large = [&](int64_t n) {
    return InputError(StrCat(path, ": ", n, " bytes", S_ISREG(st.st_mode) ? "" : " or more",
                             " is over the limit of ", max_bytes, " bytes xbar reads from one file"));
  };
  std::string out;
  if (S_ISREG(st.st_mode)) {
    // A file of known size is read in one go (a stream copy of a 45 MB model took 100 ms).
    if (st.st_size > max_bytes) throw too_large(st.st_size);
    out.resize(static_cast<size_t>(st.st_size));
  }
  size_t have = 0;
  for (;;) {
    if (have == out.size()) {
      if (S_ISREG(st.st_mode)) break;  // its size, as fstat gave it
      if (static_cast<int64_t>(out.size()) >= max_bytes) throw too_large(static_cast<int64_t>(out.size()));
      out.resize(std::min<size_t>(std::max<size_t>(out.size() * 2, size_t{1} << 16), static_cast<size_t>(max_bytes)));
    }
    const ssize_t n = ::read(fd, out.data() + have, out.size() - have);
    if (n == 0) break;
    if (n < 0) {
      if (errno != EINTR) throw InputError(StrCat(path, ": read error: ", std::strerror(errno)));
      if (InterruptRequested()) throw InterruptedError(StrCat(path, ": interrupted while reading"));
      continue;
    }
    have += static_cast<size_t>(n);
    if (InterruptRequested()) throw InterruptedError(StrCat(path, ": interrupted while reading"));
  }
  if (S_ISREG(st.st_mode) && have != out.size()) {
    throw InputError(StrCat(path, ": read error (", have, " of ", out.size(), " bytes; did the file shrink?)"));
  }
  out.resize(have);
  return out;
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> MakeDirs(const std::string& path) {
  std::vector<std::string> created;
  if (path.empty()) return created;
  std::string partial;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0777) == 0) {
      created.push_back(partial);
    } else if (errno != EEXIST) {
      throw ConfigError(StrCat(partial, ": cannot create directory: ", std::strerror(errno)));
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw ConfigError(StrCat(path, ": not a directory"));
  }
  return created;
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
