// fault_injection_env.cc — FaultInjectionEnv: pending-write recording, simulated
// power cuts (drop / keep subset / tear / garble), crash points and errno injection.
// Thread-safety: all state is guarded by one mutex (see the header).
#include "env/fault_injection_env.h"

#include <errno.h>
#include <fcntl.h>

#include <algorithm>
#include <cassert>
#include <utility>

namespace amber {

namespace {

constexpr uint64_t kSectorSize = 512;

// SplitMix64: a tiny PRNG whose output is the same on every platform and standard
// library, so a seed names one crash state forever.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0. (Modulo bias is irrelevant at these sizes.)
  uint64_t Uniform(uint64_t n) {
    assert(n > 0);
    return Next() % n;
  }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Bernoulli(double p) { return Unit() < p; }

 private:
  uint64_t state_;
};

// The seed of the random bytes that garble pending operation `index`.
uint64_t GarbleSeed(uint64_t plan_seed, size_t index) {
  return Rng(plan_seed ^ (0xA5A5A5A5A5A5A5A5ull + static_cast<uint64_t>(index))).Next();
}

// Brings a fate into the range the operation allows: tear/garble of a non-write (or of
// an empty write) means "kept"; tear counts are clamped, garble indexes wrapped.
WriteFate Normalize(const PendingWrite& w, WriteFate f) {
  uint64_t n = w.SectorCount();
  if ((f.action == WriteFate::kTear || f.action == WriteFate::kGarble) && n == 0) {
    return WriteFate{WriteFate::kKeep, 0};
  }
  if (f.action == WriteFate::kTear) f.sector = std::min(f.sector, n);
  if (f.action == WriteFate::kGarble) f.sector %= n;
  if (f.action == WriteFate::kKeep || f.action == WriteFate::kDrop) f.sector = 0;
  return f;
}

// Decides the fate of every pending operation. Pure function of its arguments.
Status ResolveFates(const CrashPlan& plan, const std::vector<PendingWrite>& pending,
                    std::vector<WriteFate>* out) {
  const size_t n = pending.size();
  std::vector<WriteFate> fates(n);
  Rng rng(plan.seed);
  switch (plan.mode) {
    case CrashPlan::kDropAll:
      for (auto& f : fates) f.action = WriteFate::kDrop;
      break;
    case CrashPlan::kKeepAll:
      break;
    case CrashPlan::kKeepPrefix:
      for (size_t i = plan.prefix; i < n; ++i) fates[i].action = WriteFate::kDrop;
      break;
    case CrashPlan::kKeepRandomSubset:
      for (auto& f : fates) {
        f.action = rng.Bernoulli(plan.keep_probability) ? WriteFate::kKeep : WriteFate::kDrop;
      }
      break;
    case CrashPlan::kTearLast:
      for (size_t i = n; i-- > 0;) {
        if (pending[i].kind != PendingWrite::kWrite || pending[i].lost) continue;
        uint64_t sectors = pending[i].SectorCount();
        uint64_t keep =
            plan.tear_sectors < 0 ? rng.Uniform(sectors) : static_cast<uint64_t>(plan.tear_sectors);
        fates[i] = WriteFate{WriteFate::kTear, keep};
        break;
      }
      break;
    case CrashPlan::kGarble:
      for (size_t i = 0; i < n; ++i) {
        bool garble = rng.Bernoulli(plan.garble_probability);
        uint64_t sector = rng.Next();  // always drawn: the sequence does not depend on kinds
        bool keep = rng.Bernoulli(plan.keep_probability);
        if (garble) {
          fates[i] = WriteFate{WriteFate::kGarble, sector};
        } else {
          fates[i].action = keep ? WriteFate::kKeep : WriteFate::kDrop;
        }
      }
      break;
    case CrashPlan::kExplicit:
      if (plan.fates.size() != n) {
        return InvalidArgument("crash plan has " + std::to_string(plan.fates.size()) +
                               " fates for " + std::to_string(n) + " pending operations");
      }
      fates = plan.fates;
      break;
  }
  for (size_t i = 0; i < n; ++i) fates[i] = Normalize(pending[i], fates[i]);
  *out = std::move(fates);
  return Status::OK();
}

// Clears the bytes of `mask` (which covers file bytes [mask_off, mask_off +
// mask.size())) that lie in [b, e).
void ClearOverlap(std::string* mask, uint64_t mask_off, uint64_t b, uint64_t e) {
  const uint64_t lo = std::max(b, mask_off), hi = std::min(e, mask_off + mask->size());
  for (uint64_t i = lo; i < hi; ++i) (*mask)[static_cast<size_t>(i - mask_off)] = 0;
}

}  // namespace

// ---------------------------------------------------------------------------
// PendingWrite, CrashPlan

bool PendingWrite::ExtendsFile() const {
  switch (kind) {
    case kWrite:
    case kAllocate:
      return offset + length > old_size;
    case kTruncate:
      return offset > old_size;
  }
  return false;
}

uint64_t PendingWrite::SectorCount() const {
  if (kind != kWrite || length == 0) return 0;
  return (offset + length - 1) / kSectorSize - offset / kSectorSize + 1;
}

CrashPlan CrashPlan::DropAll() { return CrashPlan{}; }

CrashPlan CrashPlan::KeepAll() {
  CrashPlan p;
  p.mode = kKeepAll;
  return p;
}

CrashPlan CrashPlan::KeepPrefix(size_t n) {
  CrashPlan p;
  p.mode = kKeepPrefix;
  p.prefix = n;
  return p;
}

CrashPlan CrashPlan::KeepRandomSubset(uint64_t seed, double keep_probability) {
  CrashPlan p;
  p.mode = kKeepRandomSubset;
  p.seed = seed;
  p.keep_probability = keep_probability;
  return p;
}

CrashPlan CrashPlan::TearLast(uint64_t seed, int64_t tear_sectors) {
  CrashPlan p;
  p.mode = kTearLast;
  p.seed = seed;
  p.tear_sectors = tear_sectors;
  return p;
}

CrashPlan CrashPlan::Garble(uint64_t seed, double garble_probability, double keep_probability) {
  CrashPlan p;
  p.mode = kGarble;
  p.seed = seed;
  p.garble_probability = garble_probability;
  p.keep_probability = keep_probability;
  return p;
}

CrashPlan CrashPlan::Explicit(std::vector<WriteFate> fates, uint64_t seed) {
  CrashPlan p;
  p.mode = kExplicit;
  p.seed = seed;
  p.fates = std::move(fates);
  return p;
}

// ---------------------------------------------------------------------------
// FaultInjectionEnv: bookkeeping

FaultInjectionEnv::FaultInjectionEnv(Env* target) : EnvWrapper(target) {}

FaultInjectionEnv::~FaultInjectionEnv() {
  for (const auto& [path, fd] : private_fds_) target()->Close(fd).IgnoreError();
}

const char* FaultInjectionEnv::OpName(Op op) {
  switch (op) {
    case kOpen:
      return "open";
    case kPRead:
      return "pread";
    case kPWrite:
      return "pwrite";
    case kDataSync:
      return "fdatasync";
    case kSync:
      return "fsync";
    case kTruncate:
      return "ftruncate";
    case kAllocate:
      return "fallocate";
    case kMap:
      return "mmap";
    case kLock:
      return "flock";
    case kUserfaultFd:
      return "userfaultfd";
    case kIoctl:
      return "ioctl";
    case kStat:
      return "stat";
    case kUnlink:
      return "unlink";
    case kNumOps:
      break;
  }
  return "unknown";
}

FaultInjectionEnv::Gate FaultInjectionEnv::Enter(Op op, bool mutation, const std::string& what,
                                                 Status* status) {
  assert(op >= 0 && op < kNumOps);
  const uint64_t call = ++calls_[op];
  if (mutation && powered_off_) return Gate::kPowerOff;
  for (const ErrorRule& r : rules_) {
    if (r.op != op || call < r.first) continue;
    if (r.count >= 0 && call >= r.first + static_cast<uint64_t>(r.count)) continue;
    ++injected_[op];
    *status = ErrnoToStatus(r.err, std::string("injected fault: ") + OpName(op) + " " + what +
                                       " (call " + std::to_string(call) + ")");
    return Gate::kFail;
  }
  return Gate::kProceed;
}

std::string FaultInjectionEnv::PathOf(int fd) const {
  auto it = fd_paths_.find(fd);
  return it == fd_paths_.end() ? std::string() : it->second;
}

Result<int> FaultInjectionEnv::PrivateFd(const std::string& path) {
  auto it = private_fds_.find(path);
  if (it != private_fds_.end()) return it->second;
  Result<int> fd = target()->Open(path, O_RDWR, 0);
  if (!fd.ok()) return fd.status().WithContext("fault injection: private fd");
  private_fds_.emplace(path, *fd);
  return fd;
}

Result<uint64_t> FaultInjectionEnv::SizeOf(int private_fd) {
  Result<FileInfo> info = target()->Stat(private_fd);
  if (!info.ok()) return info.status();
  return info->size;
}

void FaultInjectionEnv::AfterSyncLocked() {
  if (syncs_until_crash_ > 0 && --syncs_until_crash_ == 0) {
    syncs_until_crash_ = -1;
    powered_off_ = true;
  }
}

void FaultInjectionEnv::LoseWritesLocked(const std::string& path, uint64_t last_seq) {
  if (!lose_on_sync_failure_ || path.empty()) return;
  for (PendingWrite& w : pending_) {
    if (w.seq > last_seq || w.path != path || w.kind != PendingWrite::kWrite || w.lost ||
        w.ExtendsFile())
      continue;
    w.lost = true;
    w.revert_mask.assign(w.old_data.size(), 1);
  }
}

void FaultInjectionEnv::AfterWriteLocked() {
  if (writes_until_crash_ > 0 && --writes_until_crash_ == 0) {
    writes_until_crash_ = -1;
    powered_off_ = true;
  }
}

// ---------------------------------------------------------------------------
// Env overrides

Result<int> FaultInjectionEnv::Open(const std::string& path, int flags, mode_t mode) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kOpen, /*mutation=*/false, path, &s) == Gate::kFail) return s;
  }
  Result<int> fd = target()->Open(path, flags, mode);
  if (fd.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    fd_paths_[*fd] = path;
    direct_fds_[*fd] = (flags & O_DIRECT) != 0;
  }
  return fd;
}

Status FaultInjectionEnv::Close(int fd) {
  {
    // Forget the fd before it is released, so a concurrent Open that gets the same
    // number back cannot have its mapping erased.
    std::lock_guard<std::mutex> lock(mu_);
    fd_paths_.erase(fd);
    direct_fds_.erase(fd);
  }
  return target()->Close(fd);
}

Status FaultInjectionEnv::PRead(int fd, void* buf, size_t n, uint64_t off) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kPRead, false, "fd " + std::to_string(fd), &s) == Gate::kFail) return s;
  }
  AMBER_RETURN_IF_ERROR(target()->PRead(fd, buf, n, off));
  // A direct read sees the disk (a pending write is flushed before it, a lost one
  // never reaches it): each byte holds the value of its newest write that is not
  // lost, found by undoing the lost writes above it, newest first.
  std::lock_guard<std::mutex> lock(mu_);
  if (auto d = direct_fds_.find(fd); d == direct_fds_.end() || !d->second) return Status::OK();
  const std::string path = PathOf(fd);
  std::vector<const PendingWrite*> over;  // writes on these bytes, newest first
  bool any_lost = false;
  for (auto w = pending_.rbegin(); w != pending_.rend(); ++w) {
    if (w->path != path || w->kind != PendingWrite::kWrite) continue;
    if (w->offset >= off + n || w->offset + w->length <= off) continue;
    over.push_back(&*w);
    any_lost |= w->lost;
  }
  if (!any_lost) return Status::OK();
  char* out = static_cast<char*>(buf);
  for (uint64_t i = off; i < off + n; ++i) {
    for (const PendingWrite* w : over) {
      if (i < w->offset || i >= w->offset + w->length) continue;
      const size_t k = static_cast<size_t>(i - w->offset);
      if (!w->lost || !w->revert_mask[k]) break;  // the disk has this write's byte
      out[i - off] = w->old_data[k];
    }
  }
  return Status::OK();
}

Status FaultInjectionEnv::PWrite(int fd, const void* buf, size_t n, uint64_t off) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = PathOf(fd);
  Status s;
  switch (Enter(kPWrite, true, path.empty() ? "fd " + std::to_string(fd) : path, &s)) {
    case Gate::kPowerOff:
      return Status::OK();
    case Gate::kFail:
      return s;
    case Gate::kProceed:
      break;
  }
  if (path.empty()) {  // not opened through this Env: forwarded, not recorded
    s = target()->PWrite(fd, buf, n, off);
    if (s.ok()) AfterWriteLocked();
    return s;
  }
  AMBER_ASSIGN_OR_RETURN(int pfd, PrivateFd(path));
  AMBER_ASSIGN_OR_RETURN(uint64_t size, SizeOf(pfd));
  const uint64_t end = off + n;
  if (size_limit_ != 0 && end > size_limit_ && end > size) {
    ++injected_[kPWrite];
    return ErrnoToStatus(ENOSPC, "injected fault: pwrite " + path + " to " + std::to_string(end) +
                                     " past the size limit " + std::to_string(size_limit_));
  }
  PendingWrite w;
  w.kind = PendingWrite::kWrite;
  w.path = path;
  w.offset = off;
  w.length = n;
  w.old_size = size;
  if (off < size) {
    w.old_data.resize(static_cast<size_t>(std::min<uint64_t>(n, size - off)));
    AMBER_RETURN_IF_ERROR(target()->PRead(pfd, w.old_data.data(), w.old_data.size(), off));
  }
  s = target()->PWrite(fd, buf, n, off);
  if (n > 0) {
    // Recorded even on failure: the write may have been partial, and reverting it
    // restores the old bytes either way.
    w.data.assign(static_cast<const char*>(buf), n);
    w.seq = next_seq_++;
    pending_.push_back(std::move(w));
  }
  if (s.ok()) AfterWriteLocked();
  return s;
}

Status FaultInjectionEnv::SyncImpl(Op op, int fd) {
  std::string path;
  uint64_t last_seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    path = PathOf(fd);
    Status s;
    switch (Enter(op, true, path.empty() ? "fd " + std::to_string(fd) : path, &s)) {
      case Gate::kPowerOff:
        return Status::OK();
      case Gate::kFail:
        LoseWritesLocked(path, next_seq_ - 1);
        return s;
      case Gate::kProceed:
        break;
    }
    last_seq = next_seq_ - 1;  // every operation up to here has completed (they hold mu_)
  }
  Status s = op == kSync ? target()->Sync(fd) : target()->DataSync(fd);
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.ok()) {
    LoseWritesLocked(path, last_seq);
  } else if (!path.empty()) {
    auto durable = [&](const PendingWrite& w) {
      return w.seq <= last_seq && w.path == path && !w.lost;
    };
    // A lost write's old bytes stay on the disk only where no later write that
    // is now durable covers them.
    for (PendingWrite& l : pending_) {
      if (!l.lost || l.path != path) continue;
      for (const PendingWrite& d : pending_) {
        if (d.seq > l.seq && durable(d) && d.kind == PendingWrite::kWrite)
          ClearOverlap(&l.revert_mask, l.offset, d.offset, d.offset + d.length);
      }
    }
    std::erase_if(pending_, durable);
  }
  AfterSyncLocked();
  return s;
}

Status FaultInjectionEnv::DataSync(int fd) { return SyncImpl(kDataSync, fd); }

Status FaultInjectionEnv::Sync(int fd) { return SyncImpl(kSync, fd); }

Status FaultInjectionEnv::Truncate(int fd, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = PathOf(fd);
  Status s;
  switch (Enter(kTruncate, true, path.empty() ? "fd " + std::to_string(fd) : path, &s)) {
    case Gate::kPowerOff:
      return Status::OK();
    case Gate::kFail:
      return s;
    case Gate::kProceed:
      break;
  }
  if (path.empty()) return target()->Truncate(fd, size);
  AMBER_ASSIGN_OR_RETURN(int pfd, PrivateFd(path));
  AMBER_ASSIGN_OR_RETURN(uint64_t old_size, SizeOf(pfd));
  PendingWrite w;
  w.kind = PendingWrite::kTruncate;
  w.path = path;
  w.offset = size;
  w.old_size = old_size;
  if (size < old_size) {
    w.old_data.resize(static_cast<size_t>(old_size - size));
    AMBER_RETURN_IF_ERROR(target()->PRead(pfd, w.old_data.data(), w.old_data.size(), size));
  }
  s = target()->Truncate(fd, size);
  if (size != old_size) {
    w.seq = next_seq_++;
    pending_.push_back(std::move(w));
  }
  return s;
}

Status FaultInjectionEnv::Allocate(int fd, uint64_t off, uint64_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = PathOf(fd);
  Status s;
  switch (Enter(kAllocate, true, path.empty() ? "fd " + std::to_string(fd) : path, &s)) {
    case Gate::kPowerOff:
      return Status::OK();
    case Gate::kFail:
      return s;
    case Gate::kProceed:
      break;
  }
  if (path.empty()) return target()->Allocate(fd, off, len);
  AMBER_ASSIGN_OR_RETURN(int pfd, PrivateFd(path));
  AMBER_ASSIGN_OR_RETURN(uint64_t size, SizeOf(pfd));
  const uint64_t end = off + len;
  if (size_limit_ != 0 && end > size_limit_ && end > size) {
    ++injected_[kAllocate];
    return ErrnoToStatus(ENOSPC, "injected fault: fallocate " + path + " to " +
                                     std::to_string(end) + " past the size limit " +
                                     std::to_string(size_limit_));
  }
  s = target()->Allocate(fd, off, len);
  if (end > size) {  // recorded even on failure: fallocate may have grown the file
    PendingWrite w;
    w.kind = PendingWrite::kAllocate;
    w.path = path;
    w.offset = off;
    w.length = len;
    w.old_size = size;
    w.seq = next_seq_++;
    pending_.push_back(std::move(w));
  }
  return s;
}

Result<FileInfo> FaultInjectionEnv::Stat(int fd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kStat, false, "fd " + std::to_string(fd), &s) == Gate::kFail) return s;
  }
  return target()->Stat(fd);
}

Result<FileInfo> FaultInjectionEnv::StatPath(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kStat, false, path, &s) == Gate::kFail) return s;
  }
  return target()->StatPath(path);
}

Status FaultInjectionEnv::Lock(int fd, bool exclusive) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kLock, false, "fd " + std::to_string(fd), &s) == Gate::kFail) return s;
  }
  return target()->Lock(fd, exclusive);
}

Status FaultInjectionEnv::Unlink(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s;
  switch (Enter(kUnlink, true, path, &s)) {
    case Gate::kPowerOff:
      return Status::OK();
    case Gate::kFail:
      return s;
    case Gate::kProceed:
      break;
  }
  s = target()->Unlink(path);
  if (s.ok()) {
    std::erase_if(pending_, [&](const PendingWrite& w) { return w.path == path; });
    auto it = private_fds_.find(path);
    if (it != private_fds_.end()) {
      target()->Close(it->second).IgnoreError();
      private_fds_.erase(it);
    }
  }
  return s;
}

Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to, bool no_replace) {
  std::lock_guard<std::mutex> lock(mu_);
  // A machine without power renames nothing (Store::Create renames its temporary
  // file only after syncing it: that rename must not happen after the cut).
  if (powered_off_) return Status::OK();
  Status s = target()->Rename(from, to, no_replace);
  if (!s.ok()) return s;
  // The file is now known by `to`: its pending operations, private fd and the
  // user fds opened under `from` follow it. A file `to` replaced is gone.
  std::erase_if(pending_, [&](const PendingWrite& w) { return w.path == to; });
  for (PendingWrite& w : pending_)
    if (w.path == from) w.path = to;
  if (auto it = private_fds_.find(to); it != private_fds_.end()) {
    target()->Close(it->second).IgnoreError();
    private_fds_.erase(it);
  }
  if (auto it = private_fds_.find(from); it != private_fds_.end()) {
    private_fds_.emplace(to, it->second);
    private_fds_.erase(it);
  }
  for (auto& [fd, path] : fd_paths_)
    if (path == from) path = to;
  return Status::OK();
}

Result<void*> FaultInjectionEnv::Map(void* addr, size_t len, int prot, int flags, int fd,
                                     uint64_t off) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kMap, false, std::to_string(len) + " bytes", &s) == Gate::kFail) return s;
  }
  return target()->Map(addr, len, prot, flags, fd, off);
}

Result<int> FaultInjectionEnv::UserfaultFd(int flags) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kUserfaultFd, false, "", &s) == Gate::kFail) return s;
  }
  return target()->UserfaultFd(flags);
}

Result<long> FaultInjectionEnv::Ioctl(int fd, unsigned long request, void* arg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status s;
    if (Enter(kIoctl, false, "fd " + std::to_string(fd) + " request " + std::to_string(request),
              &s) == Gate::kFail) {
      return s;
    }
  }
  return target()->Ioctl(fd, request, arg);
}

// ---------------------------------------------------------------------------
// Crash simulation

size_t FaultInjectionEnv::PendingWriteCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

std::vector<PendingWrite> FaultInjectionEnv::PendingWrites(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (path.empty()) return pending_;
  std::vector<PendingWrite> out;
  for (const PendingWrite& w : pending_) {
    if (w.path == path) out.push_back(w);
  }
  return out;
}

void FaultInjectionEnv::ResetPending() {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.clear();
}

// Undoes `w`, assuming the file is in the state just after `w`. Requires mu_.
Status FaultInjectionEnv::Revert(const PendingWrite& w) {
  AMBER_ASSIGN_OR_RETURN(int pfd, PrivateFd(w.path));
  switch (w.kind) {
    case PendingWrite::kWrite:
      if (w.lost) {  // only where the disk still holds the old bytes
        for (size_t i = 0; i < w.revert_mask.size();) {
          if (!w.revert_mask[i]) {
            ++i;
            continue;
          }
          size_t e = i;
          while (e < w.revert_mask.size() && w.revert_mask[e]) ++e;
          AMBER_RETURN_IF_ERROR(target()->PWrite(pfd, w.old_data.data() + i, e - i, w.offset + i));
          i = e;
        }
        return Status::OK();  // never extends the file (LoseWritesLocked)
      }
      if (!w.old_data.empty()) {
        AMBER_RETURN_IF_ERROR(
            target()->PWrite(pfd, w.old_data.data(), w.old_data.size(), w.offset));
      }
      if (w.ExtendsFile()) AMBER_RETURN_IF_ERROR(target()->Truncate(pfd, w.old_size));
      return Status::OK();
    case PendingWrite::kTruncate:
      AMBER_RETURN_IF_ERROR(target()->Truncate(pfd, w.old_size));
      if (!w.old_data.empty()) {
        AMBER_RETURN_IF_ERROR(
            target()->PWrite(pfd, w.old_data.data(), w.old_data.size(), w.offset));
      }
      return Status::OK();
    case PendingWrite::kAllocate:
      if (w.ExtendsFile()) AMBER_RETURN_IF_ERROR(target()->Truncate(pfd, w.old_size));
      return Status::OK();
  }
  return Internal("unknown pending operation kind");
}

// Re-applies what survives of `w` on top of the durable state. Requires mu_.
Status FaultInjectionEnv::Apply(const PendingWrite& w, const WriteFate& fate,
                                uint64_t garble_seed) {
  if (fate.action == WriteFate::kDrop) return Status::OK();
  AMBER_ASSIGN_OR_RETURN(int pfd, PrivateFd(w.path));
  switch (w.kind) {
    case PendingWrite::kTruncate:
      return target()->Truncate(pfd, w.offset);
    case PendingWrite::kAllocate:
      return target()->Allocate(pfd, w.offset, w.length);
    case PendingWrite::kWrite:
      break;
  }
  const uint64_t first_sector = w.offset / kSectorSize;
  const uint64_t end = w.offset + w.length;
  switch (fate.action) {
    case WriteFate::kKeep:
      return target()->PWrite(pfd, w.data.data(), w.data.size(), w.offset);
    case WriteFate::kTear: {
      uint64_t cut = std::min(end, (first_sector + fate.sector) * kSectorSize);
      if (cut <= w.offset) return Status::OK();
      return target()->PWrite(pfd, w.data.data(), static_cast<size_t>(cut - w.offset), w.offset);
    }
    case WriteFate::kGarble: {
      uint64_t lo = std::max(w.offset, (first_sector + fate.sector) * kSectorSize);
      uint64_t hi = std::min(end, (first_sector + fate.sector + 1) * kSectorSize);
      assert(lo < hi);
      std::string bytes = w.data;
      Rng rng(garble_seed);
      for (uint64_t i = lo; i < hi; ++i) {
        bytes[static_cast<size_t>(i - w.offset)] = static_cast<char>(rng.Next() & 0xFF);
      }
      return target()->PWrite(pfd, bytes.data(), bytes.size(), w.offset);
    }
    case WriteFate::kDrop:
      break;
  }
  return Status::OK();
}

Status FaultInjectionEnv::SimulateCrash(const CrashPlan& plan, std::vector<WriteFate>* fates) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WriteFate> resolved;
  AMBER_RETURN_IF_ERROR(ResolveFates(plan, pending_, &resolved));
  for (size_t i = 0; i < pending_.size(); ++i)
    if (pending_[i].lost) resolved[i] = WriteFate{WriteFate::kDrop, 0};
  for (size_t i = pending_.size(); i-- > 0;) {
    AMBER_RETURN_IF_ERROR(Revert(pending_[i]).WithContext("simulated crash: revert"));
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    AMBER_RETURN_IF_ERROR(Apply(pending_[i], resolved[i], GarbleSeed(plan.seed, i))
                              .WithContext("simulated crash: re-apply"));
  }
  pending_.clear();
  powered_off_ = false;
  syncs_until_crash_ = -1;
  writes_until_crash_ = -1;
  if (fates != nullptr) *fates = std::move(resolved);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Crash points and error injection

void FaultInjectionEnv::SetCrashAfterSyncs(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n == 0) {
    powered_off_ = true;
    syncs_until_crash_ = -1;
  } else {
    syncs_until_crash_ = n < 0 ? -1 : n;
  }
}

void FaultInjectionEnv::SetCrashAfterWrites(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n == 0) {
    powered_off_ = true;
    writes_until_crash_ = -1;
  } else {
    writes_until_crash_ = n < 0 ? -1 : n;
  }
}

void FaultInjectionEnv::PowerOff() {
  std::lock_guard<std::mutex> lock(mu_);
  powered_off_ = true;
}

void FaultInjectionEnv::PowerOn() {
  std::lock_guard<std::mutex> lock(mu_);
  powered_off_ = false;
  syncs_until_crash_ = -1;
  writes_until_crash_ = -1;
}

bool FaultInjectionEnv::IsPoweredOff() const {
  std::lock_guard<std::mutex> lock(mu_);
  return powered_off_;
}

void FaultInjectionEnv::InjectError(Op op, int err, int nth, int count) {
  assert(op >= 0 && op < kNumOps);
  assert(nth >= 1 && err > 0 && (count >= 1 || count == -1));
  if (op < 0 || op >= kNumOps) return;
  std::lock_guard<std::mutex> lock(mu_);
  ErrorRule r;
  r.op = op;
  r.err = err > 0 ? err : EIO;
  r.first = calls_[op] + static_cast<uint64_t>(std::max(nth, 1));
  r.count = count < 0 ? -1 : std::max(count, 1);
  rules_.push_back(r);
}

void FaultInjectionEnv::ClearErrors() {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.clear();
  size_limit_ = 0;
}

void FaultInjectionEnv::SetSyncFailureLosesWrites(bool lose) {
  std::lock_guard<std::mutex> lock(mu_);
  lose_on_sync_failure_ = lose;
}

void FaultInjectionEnv::SetFileSizeLimit(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  size_limit_ = bytes;
}

uint64_t FaultInjectionEnv::CallCount(Op op) const {
  assert(op >= 0 && op < kNumOps);
  std::lock_guard<std::mutex> lock(mu_);
  return calls_[op];
}

uint64_t FaultInjectionEnv::InjectedErrorCount(Op op) const {
  assert(op >= 0 && op < kNumOps);
  std::lock_guard<std::mutex> lock(mu_);
  return injected_[op];
}

uint64_t FaultInjectionEnv::InjectedErrorCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (uint64_t n : injected_) total += n;
  return total;
}

}  // namespace amber
