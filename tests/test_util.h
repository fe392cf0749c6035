// test_util.h — helpers shared by amber's tests: temporary directories, a heap
// base address that suits the current (sanitizer) build, file byte flipping.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "amber/options.h"

namespace amber::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* t = getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/amber-test-XXXXXX";
    char* p = mkdtemp(tmpl.data());
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A base address for test heaps: the default, shifted by `slot` x 64 GiB so
// that tests holding several heaps at once do not collide.
inline uintptr_t TestBase(int slot = 0) {
  return kDefaultBaseAddress + static_cast<uintptr_t>(slot) * (uintptr_t{64} << 30);
}

// Small, fast options for tests: 64 MiB heap, 16 MiB log, no timer.
inline Options TestOptions(int slot = 0) {
  Options o;
  o.capacity = uint64_t{64} << 20;
  o.log_size = uint64_t{16} << 20;
  o.base_address = TestBase(slot);
  o.checkpoint_interval_ms = 0;
  return o;
}

// XORs the byte at `offset` of `path` with `mask`.
inline bool FlipByte(const std::string& path, uint64_t offset, unsigned char mask = 0x01) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return false;
  unsigned char b = 0;
  bool ok = ::pread(fd, &b, 1, static_cast<off_t>(offset)) == 1;
  b ^= mask;
  ok = ok && ::pwrite(fd, &b, 1, static_cast<off_t>(offset)) == 1;
  ::close(fd);
  return ok;
}

inline uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace amber::testing
