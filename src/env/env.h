// env.h — the one thin layer through which amber makes every system call that
// touches files, mappings or the kernel's dirty tracking (open, pread, pwrite,
// fdatasync, fallocate, flock, mmap, userfaultfd, ioctl on /proc/self/pagemap).
//
// Why: tests substitute an EnvWrapper subclass that overrides one call to inject
// faults (drop unsynced writes, ENOSPC, EIO), the way LevelDB's Env does.
//
// Thread-safety: Env::Default() is stateless and safe from any thread. A wrapper
// that records state (fault injection) must be thread-safe itself, because the
// checkpoint writer and migrator call it from background threads.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "amber/status.h"

namespace amber {

// The only place an errno value becomes a Status. `context` says what was being
// done, e.g. "pwrite /data/app.amber at 8192". ENOSPC→kNoSpace, ENOENT→kNotFound,
// EEXIST→kAlreadyExists, EACCES/EPERM/EROFS→kPermissionDenied, EWOULDBLOCK→kBusy,
// ENOMEM→kResourceExhausted, EINVAL→kInvalidArgument, ENOSYS/EOPNOTSUPP→kNotSupported,
// anything else→kIOError. The message includes strerror(err).
Status ErrnoToStatus(int err, std::string_view context);

struct FileInfo {
  uint64_t size = 0;
  uint32_t uid = 0;
  uint32_t mode = 0;  // st_mode
  bool is_regular = false;
};

class Env {
 public:
  virtual ~Env() = default;

  // The real operating system. Never null; lives for the whole process.
  static Env* Default();

  // open(2). `flags` are O_* flags; the result is a file descriptor.
  virtual Result<int> Open(const std::string& path, int flags, mode_t mode) = 0;
  virtual Status Close(int fd) = 0;
  // Reads exactly n bytes at off; a short read (end of file) is kCorruption
  // "unexpected end of file". Retries EINTR and partial reads.
  virtual Status PRead(int fd, void* buf, size_t n, uint64_t off) = 0;
  // Writes exactly n bytes at off (retries partial writes and EINTR).
  virtual Status PWrite(int fd, const void* buf, size_t n, uint64_t off) = 0;
  virtual Status DataSync(int fd) = 0;  // fdatasync(2)
  // sync_file_range(2) with SYNC_FILE_RANGE_WRITE: starts writeback of the
  // range and returns without waiting. Makes nothing durable; a hint that lets
  // the device work while the caller prepares the next writes.
  virtual Status StartWriteback(int fd, uint64_t off, uint64_t len) = 0;
  // posix_fadvise(2) with POSIX_FADV_DONTNEED: drops the clean cached pages
  // of the range from the page cache (dirty ones stay, and so do large folios
  // reaching past either end). A hint about memory: what reads return and
  // what is durable are unchanged.
  virtual Status DropCache(int fd, uint64_t off, uint64_t len) = 0;
  virtual Status Sync(int fd) = 0;                     // fsync(2); also used on directories
  virtual Status Truncate(int fd, uint64_t size) = 0;  // ftruncate(2)
  virtual Status Allocate(int fd, uint64_t off, uint64_t len) = 0;  // fallocate(2), mode 0
  virtual Result<FileInfo> Stat(int fd) = 0;                        // fstat(2)
  virtual Result<FileInfo> StatPath(const std::string& path) = 0;   // stat(2)
  // flock(2) with LOCK_NB; kBusy if another open file description holds it.
  virtual Status Lock(int fd, bool exclusive) = 0;
  virtual Status Unlink(const std::string& path) = 0;
  // rename(2); with no_replace, renameat2(RENAME_NOREPLACE): kAlreadyExists if `to` exists.
  virtual Status Rename(const std::string& from, const std::string& to, bool no_replace) = 0;

  // mmap(2). Returns the mapped address; MAP_FAILED becomes an error.
  virtual Result<void*> Map(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) = 0;
  virtual Status Unmap(void* addr, size_t len) = 0;
  virtual Status Protect(void* addr, size_t len, int prot) = 0;   // mprotect(2)
  virtual Status Advise(void* addr, size_t len, int advice) = 0;  // madvise(2)

  // userfaultfd(2) with the given flags (O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY).
  virtual Result<int> UserfaultFd(int flags) = 0;
  // ioctl(2); returns the ioctl's non-negative return value.
  virtual Result<long> Ioctl(int fd, unsigned long request, void* arg) = 0;
  // membarrier(2) with the given command (MEMBARRIER_CMD_*), flags 0.
  virtual Status Membarrier(int cmd) = 0;

  // CLOCK_MONOTONIC and CLOCK_REALTIME in microseconds.
  virtual uint64_t NowMicros() = 0;
  virtual uint64_t WallMicros() = 0;
};

// Forwards every call to a target Env. Subclass it and override one call to
// inject a fault. The target must outlive the wrapper.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    return target_->Open(path, flags, mode);
  }
  Status Close(int fd) override { return target_->Close(fd); }
  Status PRead(int fd, void* buf, size_t n, uint64_t off) override {
    return target_->PRead(fd, buf, n, off);
  }
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    return target_->PWrite(fd, buf, n, off);
  }
  Status DataSync(int fd) override { return target_->DataSync(fd); }
  Status Sync(int fd) override { return target_->Sync(fd); }
  Status Truncate(int fd, uint64_t size) override { return target_->Truncate(fd, size); }
  Status Allocate(int fd, uint64_t off, uint64_t len) override {
    return target_->Allocate(fd, off, len);
  }
  Result<FileInfo> Stat(int fd) override { return target_->Stat(fd); }
  Result<FileInfo> StatPath(const std::string& path) override { return target_->StatPath(path); }
  Status Lock(int fd, bool exclusive) override { return target_->Lock(fd, exclusive); }
  Status Unlink(const std::string& path) override { return target_->Unlink(path); }
  Status Rename(const std::string& from, const std::string& to, bool no_replace) override {
    return target_->Rename(from, to, no_replace);
  }
  Result<void*> Map(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) override {
    return target_->Map(addr, len, prot, flags, fd, off);
  }
  Status Unmap(void* addr, size_t len) override { return target_->Unmap(addr, len); }
  Status Protect(void* addr, size_t len, int prot) override {
    return target_->Protect(addr, len, prot);
  }
  Status Advise(void* addr, size_t len, int advice) override {
    return target_->Advise(addr, len, advice);
  }
  Result<int> UserfaultFd(int flags) override { return target_->UserfaultFd(flags); }
  Result<long> Ioctl(int fd, unsigned long request, void* arg) override {
    return target_->Ioctl(fd, request, arg);
  }
  Status Membarrier(int cmd) override { return target_->Membarrier(cmd); }
  Status StartWriteback(int fd, uint64_t off, uint64_t len) override {
    return target_->StartWriteback(fd, off, len);
  }
  Status DropCache(int fd, uint64_t off, uint64_t len) override {
    return target_->DropCache(fd, off, len);
  }
  uint64_t NowMicros() override { return target_->NowMicros(); }
  uint64_t WallMicros() override { return target_->WallMicros(); }

 private:
  Env* target_;
};

}  // namespace amber
