// test_util.h — helpers shared by amber's tests: temporary directories, a heap
// base address that suits the current (sanitizer) build, file byte flipping,
// and a latch for holding a thread at an Env call until the test releases it.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

#include "amber/options.h"
#include "amber/status.h"

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

// Holds threads at a point of the test's choosing: Hold() marks the latch held
// and blocks until Release() (at once once released); WaitHeld() waits until
// some thread is held.
class Latch {
 public:
  void Hold() {
    std::unique_lock<std::mutex> l(mu_);
    held_ = true;
    cv_.notify_all();
    cv_.wait(l, [&] { return released_; });
  }
  void WaitHeld() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return held_; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, released_ = false;
};

// An Env (a `Base` built on another Env, such as EnvWrapper or
// FaultInjectionEnv) that holds the first DataSync after HoldNext() until
// Release().
template <class Base>
class HoldNextSyncEnv : public Base {
 public:
  using Base::Base;
  void HoldNext() { armed_ = true; }
  void WaitHeld() { latch_.WaitHeld(); }
  void Release() { latch_.Release(); }
  Status DataSync(int fd) override {
    if (armed_.exchange(false)) latch_.Hold();
    return Base::DataSync(fd);
  }

 private:
  std::atomic<bool> armed_{false};
  Latch latch_;
};

}  // namespace amber::testing
