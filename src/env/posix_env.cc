// posix_env.cc — Env::Default(): the real system calls, and ErrnoToStatus.
// Stateless; thread-safe.
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "env/env.h"

namespace amber {

Status ErrnoToStatus(int err, std::string_view context) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  Code code = Code::kIOError;
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      code = Code::kNoSpace;
      break;
    case ENOENT:
      code = Code::kNotFound;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case EACCES:
    case EPERM:
    case EROFS:
      code = Code::kPermissionDenied;
      break;
    case EWOULDBLOCK:
      code = Code::kBusy;
      break;
    case ENOMEM:
      code = Code::kResourceExhausted;
      break;
    case EINVAL:
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
      code = Code::kInvalidArgument;
      break;
    case ENOSYS:
    case EOPNOTSUPP:
      code = Code::kNotSupported;
      break;
    default:
      break;
  }
  return Status(code, std::move(msg));
}

namespace {

std::string FdContext(const char* op, int fd, uint64_t off) {
  return std::string(op) + " fd " + std::to_string(fd) + " at offset " + std::to_string(off);
}

uint64_t ClockMicros(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

FileInfo ToInfo(const struct stat& st) {
  FileInfo info;
  info.size = static_cast<uint64_t>(st.st_size);
  info.uid = st.st_uid;
  info.mode = st.st_mode;
  info.is_regular = S_ISREG(st.st_mode);
  return info;
}

class PosixEnv final : public Env {
 public:
  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    int fd;
    do {
      fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return ErrnoToStatus(errno, "open " + path);
    return fd;
  }
  Status Close(int fd) override {
    if (::close(fd) != 0 && errno != EINTR) return ErrnoToStatus(errno, "close");
    return Status::OK();
  }
  Status PRead(int fd, void* buf, size_t n, uint64_t off) override {
    char* p = static_cast<char*>(buf);
    while (n > 0) {
      ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, FdContext("pread", fd, off));
      }
      if (r == 0) return Corruption("unexpected end of file: " + FdContext("pread", fd, off));
      p += r;
      n -= static_cast<size_t>(r);
      off += static_cast<uint64_t>(r);
    }
    return Status::OK();
  }
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    const char* p = static_cast<const char*>(buf);
    while (n > 0) {
      ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, FdContext("pwrite", fd, off));
      }
      p += r;
      n -= static_cast<size_t>(r);
      off += static_cast<uint64_t>(r);
    }
    return Status::OK();
  }
  Status DataSync(int fd) override {
    if (::fdatasync(fd) != 0) return ErrnoToStatus(errno, "fdatasync fd " + std::to_string(fd));
    return Status::OK();
  }
  Status Sync(int fd) override {
    if (::fsync(fd) != 0) return ErrnoToStatus(errno, "fsync fd " + std::to_string(fd));
    return Status::OK();
  }
  Status Truncate(int fd, uint64_t size) override {
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0)
      return ErrnoToStatus(errno, "ftruncate to " + std::to_string(size));
    return Status::OK();
  }
  Status Allocate(int fd, uint64_t off, uint64_t len) override {
    int r = ::posix_fallocate(fd, static_cast<off_t>(off), static_cast<off_t>(len));
    if (r != 0) return ErrnoToStatus(r, FdContext("fallocate", fd, off));
    return Status::OK();
  }
  Result<FileInfo> Stat(int fd) override {
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "fstat");
    return ToInfo(st);
  }
  Result<FileInfo> StatPath(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat " + path);
    return ToInfo(st);
  }
  Status Lock(int fd, bool exclusive) override {
    if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      int err = errno;
      if (err == EWOULDBLOCK) return Status(Code::kBusy, "store is locked by another process");
      return ErrnoToStatus(err, "flock");
    }
    return Status::OK();
  }
  Status Unlink(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoToStatus(errno, "unlink " + path);
    return Status::OK();
  }
  Status Rename(const std::string& from, const std::string& to, bool no_replace) override {
    int r = no_replace ? ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE)
                       : ::rename(from.c_str(), to.c_str());
    if (r != 0) return ErrnoToStatus(errno, "rename " + from + " to " + to);
    return Status::OK();
  }
  Result<void*> Map(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) override {
    void* p = ::mmap(addr, len, prot, flags, fd, static_cast<off_t>(off));
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap of " + std::to_string(len) + " bytes");
    return p;
  }
  Status Unmap(void* addr, size_t len) override {
    if (::munmap(addr, len) != 0) return ErrnoToStatus(errno, "munmap");
    return Status::OK();
  }
  Status Protect(void* addr, size_t len, int prot) override {
    if (::mprotect(addr, len, prot) != 0) return ErrnoToStatus(errno, "mprotect");
    return Status::OK();
  }
  Status Advise(void* addr, size_t len, int advice) override {
    if (::madvise(addr, len, advice) != 0) return ErrnoToStatus(errno, "madvise");
    return Status::OK();
  }
  Result<int> UserfaultFd(int flags) override {
    long fd = ::syscall(SYS_userfaultfd, flags);
    if (fd < 0) return ErrnoToStatus(errno, "userfaultfd");
    return static_cast<int>(fd);
  }
  Result<long> Ioctl(int fd, unsigned long request, void* arg) override {
    long r;
    do {
      r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return ErrnoToStatus(errno, "ioctl " + std::to_string(request));
    return r;
  }
  Status StartWriteback(int fd, uint64_t off, uint64_t len) override {
    if (::sync_file_range(fd, static_cast<off64_t>(off), static_cast<off64_t>(len),
                          SYNC_FILE_RANGE_WRITE) != 0)
      return ErrnoToStatus(errno, "sync_file_range");
    return Status::OK();
  }
  Status DropCache(int fd, uint64_t off, uint64_t len) override {
    // Returns the error number instead of setting errno.
    const int err =
        ::posix_fadvise(fd, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
    if (err != 0) return ErrnoToStatus(err, "posix_fadvise");
    return Status::OK();
  }
  Status Membarrier(int cmd) override {
    if (::syscall(SYS_membarrier, cmd, 0u, 0) < 0) return ErrnoToStatus(errno, "membarrier");
    return Status::OK();
  }
  uint64_t NowMicros() override { return ClockMicros(CLOCK_MONOTONIC); }
  uint64_t WallMicros() override { return ClockMicros(CLOCK_REALTIME); }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();  // never destroyed: usable from atexit/threads
  return env;
}

}  // namespace amber
