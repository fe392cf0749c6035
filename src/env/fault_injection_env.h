// fault_injection_env.h — an Env for power-loss and I/O-error testing.
//
// FaultInjectionEnv wraps another Env (normally Env::Default()) and
//   1. records every mutation of a file made since that file's last Sync/DataSync
//      (PWrite, Truncate, and Allocate calls that grow the file) as a *pending* operation,
//      together with the bytes and file size it replaced. Mutations still reach the
//      real file at once, so the live process reads its own writes;
//   2. simulates a power cut afterwards (SimulateCrash): each pending operation is
//      kept, dropped, torn at a 512-byte sector boundary or garbled, as a CrashPlan
//      says — the models of LevelDB's fault_injection_test (drop everything unsynced)
//      and SQLite's test6.c (each pending write is written, dropped or garbled);
//   3. can "switch the power off" after the Nth sync or write: every later mutation
//      returns OK but is silently not applied;
//   4. injects errno failures (ENOSPC, EIO, ...) into the Nth call of an operation,
//      converted through ErrnoToStatus, and can emulate a filesystem size limit.
//
// Model and its limits:
//   - Files are identified by the path given to Open. Two different spellings of one
//     file's path are two files to this Env. Writes through an fd that was not opened
//     through this Env are forwarded but not recorded.
//   - A Sync or DataSync of an fd makes durable every pending operation on its path
//     that completed before the sync started (fdatasync also persists the file size).
//   - File creation, O_TRUNC at Open, Rename and Unlink are durable immediately (no
//     directory model); Unlink forgets the file's pending operations, Rename moves them
//     (and the fds opened under the old name) to the new name. Once the power is off,
//     Rename and Unlink are no-ops like every other mutation.
//   - Allocate inside the current file size changes no bytes and is not recorded.
//   - Writes through shared file mappings are not seen (amber writes with PWrite).
//   - The Env keeps its own O_RDWR fd (never O_DIRECT) per written path to read the
//     bytes a write replaces and to revert at a crash; it is closed by Unlink or the
//     destructor.
//   - A failed Sync/DataSync (injected or real) leaves the path's writes pending by
//     default: a later successful sync makes them durable, as if the file system
//     retried. SetSyncFailureLosesWrites(true) models Linux instead (writeback errors
//     since 4.13): the writes that completed before the failed sync are *lost*. The
//     process still reads them (the page cache keeps the pages, marked clean), but
//     no later sync makes them durable, a simulated crash always drops them, and a
//     read through an fd opened with O_DIRECT sees the bytes the disk holds (the old
//     ones, unless a later write covers them). Only writes inside the file's old size
//     are lost this way (size changes are journaled metadata; an extending write
//     stays pending); no separate model for O_DIRECT writes (they are lost too).
//
// Thread-safety: every public member function is thread-safe; the store's writer and
// migrator threads may call it concurrently with the main thread. PWrite, Truncate and
// Allocate are serialized (the capture of the old bytes and the real write are one
// atomic step); real syncs run unlocked. SimulateCrash and ResetPending must be called
// when no other thread is doing I/O through this Env (typically after the store was
// closed); they are still memory-safe if that is violated, only the crash model is not.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "amber/status.h"
#include "env/env.h"

namespace amber {

// One mutation of a file not yet made durable by a sync.
struct PendingWrite {
  enum Kind { kWrite, kTruncate, kAllocate };

  Kind kind = kWrite;
  uint64_t seq = 0;  // global order of the operation, increasing across all files
  std::string path;
  // kWrite: where `data` was written. kTruncate: the new size. kAllocate: start.
  uint64_t offset = 0;
  // kWrite: data.size(). kTruncate: 0. kAllocate: length.
  uint64_t length = 0;
  std::string data;  // kWrite: the new bytes
  // The bytes the operation replaced that existed before it: kWrite: the file's
  // bytes in [offset, min(offset + length, old_size)) (anything past old_size "was
  // beyond end of file"); kTruncate that shrinks: the bytes in [offset, old_size).
  std::string old_data;
  uint64_t old_size = 0;  // the file size just before the operation
  // kWrite lost to a failed sync (SetSyncFailureLosesWrites): never durable, always
  // dropped at a crash. revert_mask runs parallel to old_data: 1 where the disk
  // still holds old_data (no later write made durable covers the byte), which a
  // crash then restores.
  bool lost = false;
  std::string revert_mask;

  // True when the operation made the file larger than old_size.
  bool ExtendsFile() const;
  // kWrite: the number of 512-byte sectors (aligned to absolute file offsets) the
  // write touches, e.g. 2 for 10 bytes at offset 508. Other kinds: 0.
  uint64_t SectorCount() const;
};

// What a simulated crash does to one pending operation.
struct WriteFate {
  enum Action {
    kKeep,    // the operation reached the disk completely
    kDrop,    // it never reached the disk
    kTear,    // kWrite only: the first `sector` sectors reached the disk, the rest not
    kGarble,  // kWrite only: written, but sector number `sector` holds random bytes
  };
  Action action = kKeep;
  // kTear: sectors kept, 0..SectorCount() (larger values are clamped).
  // kGarble: index of the garbled sector, 0..SectorCount()-1 (taken modulo).
  uint64_t sector = 0;

  bool operator==(const WriteFate&) const = default;
};

// How SimulateCrash treats the pending operations (in their global order). Every mode
// is a pure function of the plan and the pending list: the same seed gives the same
// disk contents on every platform (own PRNG, no std:: distributions).
struct CrashPlan {
  enum Mode {
    kDropAll,           // LevelDB: nothing unsynced survives
    kKeepAll,           // everything pending reached the disk
    kKeepPrefix,        // the first `prefix` operations reached the disk, later ones did not
    kKeepRandomSubset,  // each operation survives with probability keep_probability
    kTearLast,          // all survive, but the last kWrite (not lost) is torn after
                        // `tear_sectors` sectors
    kGarble,            // SQLite test6: each operation is garbled with garble_probability,
                        // else kept with keep_probability, else dropped (a garbled non-write
                        // is kept)
    kExplicit,          // `fates[i]` is applied to pending operation i
  };

  Mode mode = kDropAll;
  uint64_t seed = 0;
  double keep_probability = 0.5;    // kKeepRandomSubset, kGarble
  double garble_probability = 0.5;  // kGarble
  int64_t tear_sectors = -1;        // kTearLast: sectors kept; -1 = seeded random in [0, n-1]
  size_t prefix = 0;                // kKeepPrefix
  std::vector<WriteFate> fates;     // kExplicit: one per pending operation

  static CrashPlan DropAll();
  static CrashPlan KeepAll();
  static CrashPlan KeepPrefix(size_t n);
  static CrashPlan KeepRandomSubset(uint64_t seed, double keep_probability = 0.5);
  static CrashPlan TearLast(uint64_t seed, int64_t tear_sectors = -1);
  static CrashPlan Garble(uint64_t seed, double garble_probability = 0.5,
                          double keep_probability = 0.5);
  static CrashPlan Explicit(std::vector<WriteFate> fates, uint64_t seed = 0);
};

class FaultInjectionEnv : public EnvWrapper {
 public:
  // Operations that can be counted and made to fail.
  enum Op {
    kOpen,
    kPRead,
    kPWrite,
    kDataSync,
    kSync,
    kTruncate,
    kAllocate,
    kMap,
    kLock,
    kUserfaultFd,
    kIoctl,
    kStat,  // Stat and StatPath
    kUnlink,
    kNumOps,  // not an operation: the number of them
  };

  // `target` (usually Env::Default()) must outlive this Env.
  explicit FaultInjectionEnv(Env* target);
  // Closes the private fds. Pending operations are forgotten, not reverted.
  ~FaultInjectionEnv() override;

  FaultInjectionEnv(const FaultInjectionEnv&) = delete;
  FaultInjectionEnv& operator=(const FaultInjectionEnv&) = delete;

  // ---- Env overrides (see Env for the success contract of each) ----
  // Every call of an Op is counted (CallCount). Mutations (PWrite, Truncate, Allocate, Sync,
  // DataSync, Unlink) return OK without effect once the power is off. Otherwise an injected error
  // is returned before the call has any effect. Open records fd -> path.
  Result<int> Open(const std::string& path, int flags, mode_t mode) override;
  Status Close(int fd) override;  // forgets fd -> path; pending operations stay
  Status PRead(int fd, void* buf, size_t n, uint64_t off) override;
  // Captures the bytes being replaced, writes, records a pending kWrite. Fails with
  // kNoSpace (nothing written) if the write would grow the file past the size limit.
  // If the real write fails the operation is still recorded (it may be partial).
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override;
  // On success, the path's operations that completed before the call are durable.
  // On failure (real or injected) nothing becomes durable.
  Status DataSync(int fd) override;
  Status Sync(int fd) override;
  Status Truncate(int fd, uint64_t size) override;  // recorded as pending kTruncate
  // Recorded as pending kAllocate when it grows the file; kNoSpace past the size limit.
  Status Allocate(int fd, uint64_t off, uint64_t len) override;
  Result<FileInfo> Stat(int fd) override;
  Result<FileInfo> StatPath(const std::string& path) override;
  Status Lock(int fd, bool exclusive) override;
  Status Unlink(const std::string& path) override;  // also forgets the path's pending ops
  // Not counted and no errors injected; a no-op returning OK once the power is off.
  Status Rename(const std::string& from, const std::string& to, bool no_replace) override;
  Result<void*> Map(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) override;
  Result<int> UserfaultFd(int flags) override;
  Result<long> Ioctl(int fd, unsigned long request, void* arg) override;

  // ---- Crash simulation ----

  // Number of pending operations (all files).
  size_t PendingWriteCount() const;
  // Copies of the pending operations in global order (seq increasing); `path` empty =
  // all files, otherwise only that path's.
  std::vector<PendingWrite> PendingWrites(const std::string& path = "") const;
  // Declares the current contents of every file durable: forgets all pending
  // operations. Never fails.
  void ResetPending();

  // Simulates the power cut: reverts every pending operation (newest first: writes
  // back the replaced bytes, truncates files back to their old size), then re-applies
  // the surviving ones oldest first as `plan` decides (a torn write keeps its first
  // sectors and the old bytes after them; the file grows only as far as the bytes that
  // survive). If `fates` is not null it receives the fate given to each pending
  // operation (in PendingWrites() order; for tests and reproducible reports).
  // On success: no operations are pending, the power is on again and the crash points
  // are cleared (the result is the new durable state; injected errors stay).
  // On failure: kInvalidArgument (kExplicit with fates.size() != PendingWriteCount(),
  // nothing changed) or the I/O error that stopped the revert (files may then be in a
  // mixed state; the pending list is kept).
  Status SimulateCrash(const CrashPlan& plan, std::vector<WriteFate>* fates = nullptr);

  // ---- Crash points ("the power is already off") ----

  // After n more Sync/DataSync calls (the nth one is still applied) the power goes
  // off: every later PWrite, Truncate, Allocate, Sync, DataSync, Rename and Unlink returns OK
  // without doing anything. n == 0 switches it off now; n < 0 disarms the crash point.
  void SetCrashAfterSyncs(int n);
  // The same, counting successful PWrite calls (the nth write is still applied).
  void SetCrashAfterWrites(int n);
  void PowerOff();  // switch the power off now
  void PowerOn();   // switch it back on and disarm both crash points
  bool IsPoweredOff() const;

  // ---- Error injection ----

  // Counting from this call, the nth (1-based) later call of `op` and the count-1
  // calls after it (count == -1: every call until ClearErrors) fail with
  // ErrnoToStatus(err, ...) without any effect. Several rules may be active; the
  // first one that matches applies. Precondition: nth >= 1, err > 0, count >= 1 or -1.
  void InjectError(Op op, int err, int nth, int count = 1);
  void ClearErrors();  // removes every rule and the size limit

  // false (default): a failed Sync/DataSync leaves every pending operation pending.
  // true: it loses the path's pending writes that completed before it (see the model
  // at the top of this file).
  void SetSyncFailureLosesWrites(bool lose);

  // PWrite and Allocate that would make a file larger than `bytes` (and larger than
  // it is) fail with ENOSPC (kNoSpace), counted as injected errors. 0 = no limit.
  void SetFileSizeLimit(uint64_t bytes);

  uint64_t CallCount(Op op) const;           // calls of op so far
  uint64_t InjectedErrorCount(Op op) const;  // errors injected into op so far
  uint64_t InjectedErrorCount() const;       // over all ops

  static const char* OpName(Op op);

 private:
  struct ErrorRule {
    Op op;
    int err;
    uint64_t first;  // absolute call number (1-based) of the first failing call
    int64_t count;   // -1 = unlimited
  };
  enum class Gate { kProceed, kPowerOff, kFail };

  // Counts the call; decides whether it proceeds. On kFail, *status is the error.
  Gate Enter(Op op, bool mutation, const std::string& what, Status* status);
  std::string PathOf(int fd) const;  // "" if unknown; requires mu_
  // The private fd of `path`, opening it on first use. Requires mu_.
  Result<int> PrivateFd(const std::string& path);
  Result<uint64_t> SizeOf(int private_fd);  // requires mu_
  Status SyncImpl(Op op, int fd);
  void AfterSyncLocked();
  void AfterWriteLocked();
  // A failed sync of `path` at sequence number `last_seq`: marks its writes lost
  // if the model says so. Requires mu_.
  void LoseWritesLocked(const std::string& path, uint64_t last_seq);
  Status Revert(const PendingWrite& w);
  Status Apply(const PendingWrite& w, const WriteFate& fate, uint64_t garble_seed);

  mutable std::mutex mu_;
  std::unordered_map<int, std::string> fd_paths_;  // user fd -> path
  std::unordered_map<int, bool> direct_fds_;       // user fds opened with O_DIRECT
  bool lose_on_sync_failure_ = false;
  std::map<std::string, int> private_fds_;  // path -> own O_RDWR fd
  std::vector<PendingWrite> pending_;       // seq increasing
  uint64_t next_seq_ = 1;
  bool powered_off_ = false;
  int64_t syncs_until_crash_ = -1;   // -1 = disarmed
  int64_t writes_until_crash_ = -1;  // -1 = disarmed
  std::vector<ErrorRule> rules_;
  uint64_t size_limit_ = 0;
  std::array<uint64_t, kNumOps> calls_{};
  std::array<uint64_t, kNumOps> injected_{};
};

}  // namespace amber
