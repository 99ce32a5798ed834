// xbar/core/fs.h — file helpers: atomic writes, whole-file reads, directories.
//
// Every result file xbar writes goes through AtomicFile (or WriteFileAtomic): the bytes go to a
// temporary file in the same directory, are flushed to disk, and only then renamed over the
// destination. A crash or SIGKILL therefore leaves either the old file or the new one, never half.
//
//   AtomicFile f("runs/x/model.safetensors");
//   f.Write(header.data(), header.size());
//   f.Commit();                      // without Commit the temporary file is removed
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace xbar {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless Commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void Write(const void* data, std::size_t size);
  void Write(const std::string& s) { Write(s.data(), s.size()); }
  // Flushes, fsyncs and renames the temporary file over the destination.
  void Commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `content` to `path` atomically. Throws InternalError when the disk refuses.
void WriteFileAtomic(const std::string& path, const std::string& content);

// The most xbar reads from one file (a safetensors or ONNX model, a data set, decompressed): 8 GiB.
constexpr int64_t kMaxReadBytes = int64_t{8} << 30;

// Throws InputError naming the path unless it is a regular file or a pipe (a directory, a device
// such as /dev/zero or a terminal, a socket, a missing file).
void CheckReadablePath(const std::string& path);

// Reads a whole regular file or pipe. Throws InputError("<path>: ...") when it is unreadable, not a
// file (CheckReadablePath) or larger than max_bytes; InterruptedError on SIGINT/SIGTERM while it
// waits for or reads a pipe.
std::string ReadFile(const std::string& path, int64_t max_bytes = kMaxReadBytes);

bool FileExists(const std::string& path);
bool IsDirectory(const std::string& path);

// Creates a directory and its parents (like mkdir -p). Throws ConfigError naming the path.
// Returns the directories it created, outermost first.
std::vector<std::string> MakeDirs(const std::string& path);

// "a/b" + "c.json" -> "a/b/c.json".
std::string JoinPath(const std::string& dir, const std::string& name);

// "configs/lenet5.yaml" -> "lenet5".
std::string FileStem(const std::string& path);

}  // namespace xbar
