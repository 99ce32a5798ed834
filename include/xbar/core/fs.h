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
#include <cstdio>
#include <string>

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

// Reads a whole file. Throws InputError("<path>: cannot open: <reason>") when unreadable.
std::string ReadFile(const std::string& path);

bool FileExists(const std::string& path);
bool IsDirectory(const std::string& path);

// Creates a directory and its parents (like mkdir -p). Throws ConfigError naming the path.
void MakeDirs(const std::string& path);

// "a/b" + "c.json" -> "a/b/c.json".
std::string JoinPath(const std::string& dir, const std::string& name);

// "configs/lenet5.yaml" -> "lenet5".
std::string FileStem(const std::string& path);

}  // namespace xbar
