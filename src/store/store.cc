// store.cc — opening, creating and locking the store file; superblock publication.
// The log ring is in log.cc, migration and home checksums in home.cc.
#include "store/store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "checkpoint/rate_limiter.h"
#include "util/crc32c.h"

namespace amber {

using format::kPageSize;
using format::Superblock;

Status ResolveCreateOptions(const Options& in, uint64_t* capacity, uint64_t* base,
                            uint64_t* log_size) {
  if (in.capacity < (uint64_t{1} << 20))
    return InvalidArgument("capacity must be at least 1 MiB, got " + std::to_string(in.capacity));
  if (in.capacity > (uint64_t{1} << 46))
    return InvalidArgument("capacity above 64 TiB is not supported");
  *capacity = format::RoundUp(in.capacity, kPageSize);
  *base = in.base_address == 0 ? kDefaultBaseAddress : in.base_address;
  if (*base % kPageSize != 0) return InvalidArgument("base_address must be 4 KiB aligned");
  if (*base < (uint64_t{1} << 24) || *base > (uint64_t{1} << 47) - *capacity)
    return InvalidArgument("base_address range outside the user address space");
  uint64_t ls = in.log_size;
  if (ls == 0) ls = std::clamp<uint64_t>(*capacity / 4, uint64_t{16} << 20, uint64_t{1} << 30);
  ls = format::RoundUp(ls, kPageSize);
  if (ls < 16 * kPageSize) return InvalidArgument("log_size must be at least 64 KiB");
  *log_size = ls;
  return Status::OK();
}

Store::Store(Env* env, std::string path, int fd, Mode mode)
    : env_(env), path_(std::move(path)), fd_(fd), mode_(mode) {}

Store::~Store() {
  if (direct_fd_ >= 0) env_->Close(direct_fd_).IgnoreError();
  if (fd_ >= 0) env_->Close(fd_).IgnoreError();
}

bool PageBuffer::Assign(size_t n) {
  if (n > capacity) {
    void* p = std::aligned_alloc(kPageSize, n);
    if (p == nullptr) return false;
    std::free(data);
    data = static_cast<char*>(p);
    capacity = n;
  }
  size = n;
  std::memset(data, 0, n);
  return true;
}

Result<int> OpenDirect(Env* env, const std::string& path, int flags) {
  Result<int> fd = env->Open(path, flags | O_DIRECT, 0);
  if (fd.ok()) return fd;
  const Code code = fd.status().code();
  if (code == Code::kInvalidArgument || code == Code::kNotSupported) return -1;
  return fd.status();
}

format::Superblock Store::superblock() const {
  std::lock_guard<std::mutex> l(mu_);
  return sb_;
}

Status Store::Write(const void* buf, size_t n, uint64_t off) { return WriteTo(fd_, buf, n, off); }

Status Store::WriteLog(const void* buf, size_t n, uint64_t off, bool direct) {
  const bool aligned = reinterpret_cast<uintptr_t>(buf) % kPageSize == 0 && n % kPageSize == 0 &&
                       off % kPageSize == 0;
  if (!direct || direct_fd_ < 0 || !aligned || direct_refused_.load(std::memory_order_relaxed))
    return WriteTo(fd_, buf, n, off);
  Status s = WriteTo(direct_fd_, buf, n, off);
  if (s.code() != Code::kInvalidArgument) return s;
  // EINVAL from an aligned direct write: the file system opened the file with
  // O_DIRECT but does not do direct writes to it (or not with this alignment).
  // The page cache from now on; rewriting the whole range is harmless (nothing
  // of a generation counts before its sync).
  direct_refused_.store(true, std::memory_order_relaxed);
  return WriteTo(fd_, buf, n, off);
}

Status Store::WriteTo(int fd, const void* buf, size_t n, uint64_t off) {
  if (limiter_ == nullptr || limiter_->unlimited()) {
    AMBER_RETURN_IF_ERROR(env_->PWrite(fd, buf, n, off));
    bytes_written_ += n;
    return Status::OK();
  }
  // Throttled: write in chunks, each paid for before it is written (whole
  // pages, so that O_DIRECT writes stay aligned).
  const char* p = static_cast<const char*>(buf);
  const uint64_t chunk = std::max<uint64_t>(kPageSize, limiter_->chunk() / kPageSize * kPageSize);
  while (n > 0) {
    size_t c = static_cast<size_t>(std::min<uint64_t>(n, chunk));
    limiter_->Acquire(c);
    AMBER_RETURN_IF_ERROR(env_->PWrite(fd, p, c, off));
    bytes_written_ += c;
    p += c;
    off += c;
    n -= c;
  }
  return Status::OK();
}

Status Store::ZeroLogPage(const Superblock& sb, uint64_t pos) {
  static const char kZeros[kPageSize] = {};
  return Write(kZeros, kPageSize, sb.log_offset + pos);
}

Status Store::DataSync() {
  uint64_t unused;
  return DataSyncCounted(&unused);
}

Status Store::DataSyncCounted(uint64_t* failures_after) {
  // One sync at a time: a writeback error is reported to one of them, and it
  // must be counted before any other sync can return and be checked.
  std::lock_guard<std::mutex> l(sync_mu_);
  Status s = env_->DataSync(fd_);
  if (!s.ok()) {
    ++sync_failures_;
    // Pages recovered at open are home only in the page cache until a
    // migration syncs them; lost now, they may be evicted and read back stale
    // through the heap's mapping, and nothing could tell.
    if (recovered_unsynced_.load()) poisoned_ = true;
  } else {
    ++syncs_;
  }
  *failures_after = sync_failures_.load();
  return s;
}

Status Store::DataSyncSince(uint64_t before) {
  uint64_t after = 0;
  AMBER_RETURN_IF_ERROR(DataSyncCounted(&after));
  if (after != before)
    return IOError("a sync of the store failed while these writes were in flight (" +
                   std::to_string(after - before) + " since); they may not have reached the disk");
  return Status::OK();
}

Status Store::CheckNotPoisoned() const {
  if (!poisoned_.load()) return Status::OK();
  return IOError(
      "a sync of the store failed before the pages recovered at open were durable; they may "
      "read back stale: close the heap and open the store again (recovery replays them)");
}

namespace {

std::string DirOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status SyncDir(Env* env, const std::string& path) {
  AMBER_ASSIGN_OR_RETURN(int dfd, env->Open(DirOf(path), O_RDONLY | O_DIRECTORY, 0));
  Status s = env->Sync(dfd);
  env->Close(dfd).IgnoreError();
  return s;
}

// Writes `len` zero bytes at `off` so later syncs do not pay for converting
// unwritten extents (DESIGN.md: 3-6x slower to sync). Through a second
// descriptor opened with O_DIRECT where the file system allows it: a log of
// gigabytes sent through the page cache cost a copy of every byte and then
// seconds of background writeback competing with the first checkpoints (a
// 6 GiB log took 17-33 s to create that way). The caller's Sync covers both.
Status WriteZeros(Env* env, int fd, const std::string& path, uint64_t off, uint64_t len) {
  constexpr size_t kChunk = size_t{8} << 20;
  int direct = -1;
  if (off % kPageSize == 0 && len % kPageSize == 0) {
    AMBER_ASSIGN_OR_RETURN(direct, OpenDirect(env, path, O_WRONLY));
  }
  int wfd = direct >= 0 ? direct : fd;
  PageBuffer zeros;
  Status s =
      zeros.Assign(kChunk) ? Status::OK() : ResourceExhausted("no memory for a buffer of zeros");
  while (s.ok() && len > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, kChunk));
    s = env->PWrite(wfd, zeros.data, n, off);
    if (!s.ok() && wfd != fd && s.code() == Code::kInvalidArgument) {
      wfd = fd;  // O_DIRECT opened but refused: the page cache it is
      s = env->PWrite(wfd, zeros.data, n, off);
    }
    off += n;
    len -= n;
  }
  if (direct >= 0) {
    Status c = env->Close(direct);
    if (s.ok()) s = c;
  }
  return s;
}

}  // namespace

Status Store::Create(Env* env, const std::string& path, const Options& options) {
  uint64_t capacity, base, log_size;
  AMBER_RETURN_IF_ERROR(ResolveCreateOptions(options, &capacity, &base, &log_size));
  // A temporary name of our own: a crash or power cut before the rename leaves the
  // file behind, and a later process may have the same pid, so skip names in use.
  std::string tmp;
  Result<int> opened = Status(Code::kAlreadyExists, "");
  for (int attempt = 0;
       attempt < 100 && !opened.ok() && opened.status().code() == Code::kAlreadyExists; ++attempt) {
    tmp = path + ".creating." + std::to_string(::getpid()) +
          (attempt == 0 ? "" : "." + std::to_string(attempt));
    opened = env->Open(tmp, O_RDWR | O_CREAT | O_EXCL, 0600);
  }
  AMBER_ASSIGN_OR_RETURN(int fd, std::move(opened));
  auto fail = [&](Status s) {
    env->Close(fd).IgnoreError();
    env->Unlink(tmp).IgnoreError();
    return s.WithContext("creating store " + path);
  };
  Superblock sb{};
  std::memcpy(sb.magic, format::kSuperMagic, sizeof(sb.magic));
  sb.format_version = format::kFormatVersion;
  sb.page_size = kPageSize;
  sb.arch = format::kArchX86_64;
  sb.sequence = 1;
  sb.base_address = base;
  sb.capacity = capacity;
  sb.log_offset = format::LogOffset(capacity);
  sb.log_size = log_size;
  sb.home_offset = format::HomeOffset(capacity, log_size);
  sb.created_us = env->WallMicros();
  format::SealSuperblock(&sb);

  Status s = env->Truncate(fd, sb.home_offset + capacity);
  if (s.ok())
    s = WriteZeros(env, fd, tmp, format::kTableOffset, sb.home_offset - format::kTableOffset);
  std::vector<char> page(kPageSize, 0);
  std::memcpy(page.data(), &sb, sizeof(sb));
  if (s.ok()) s = env->PWrite(fd, page.data(), kPageSize, 1 * kPageSize);  // slot sequence % 2
  if (s.ok()) s = env->Sync(fd);
  if (!s.ok()) return fail(s);
  s = env->Rename(tmp, path, /*no_replace=*/true);
  if (!s.ok()) return fail(s);
  env->Close(fd).IgnoreError();
  return SyncDir(env, path);
}

Result<std::unique_ptr<Store>> Store::Open(Env* env, const std::string& path,
                                           const Options& options, Mode mode) {
  if (path.empty()) return InvalidArgument("store path is empty");
  bool created = false;
  auto info = env->StatPath(path);
  if (!info.ok()) {
    if (info.status().code() != Code::kNotFound) return info.status();
    if (mode == Mode::kReadOnly || !options.create_if_missing)
      return NotFound("no store at " + path);
    Status s = Create(env, path, options);
    if (!s.ok() && s.code() != Code::kAlreadyExists) return s;  // lost a race: open theirs
    created = s.ok();
    info = env->StatPath(path);
    if (!info.ok()) return info.status();
  } else if (options.error_if_exists && mode == Mode::kReadWrite) {
    return Status(Code::kAlreadyExists, "store " + path + " already exists");
  }
  if (!info->is_regular) return InvalidArgument(path + " is not a regular file");
  if (info->uid != ::geteuid() && !options.allow_foreign_owner)
    return Status(Code::kPermissionDenied,
                  "store " + path + " is owned by uid " + std::to_string(info->uid) +
                      ", not by this user; set Options::allow_foreign_owner to open it");

  AMBER_ASSIGN_OR_RETURN(int fd, env->Open(path, mode == Mode::kReadOnly ? O_RDONLY : O_RDWR, 0));
  std::unique_ptr<Store> store(new Store(env, path, fd, mode));
  store->created_ = created;
  if (mode == Mode::kReadWrite) {
    Status s = env->Lock(fd, /*exclusive=*/true);
    if (!s.ok()) {
      if (s.code() == Code::kBusy)
        return Status(Code::kBusy, "store " + path + " is already open in another process");
      return s;
    }
    // Large log appends bypass the page cache where the file system allows it.
    AMBER_ASSIGN_OR_RETURN(store->direct_fd_, OpenDirect(env, path, O_RDWR));
  }
  AMBER_RETURN_IF_ERROR(store->LoadSuperblock().WithContext(path));
  if (mode == Mode::kReadWrite) {
    // One sync per generation relies on adoption reading the device (ReadLog);
    // where O_DIRECT reads are refused, every superblock is synced instead,
    // as in format version 1 (and flagged so: kFlagUnnamedCount clear).
    std::vector<char> probe(kPageSize);
    AMBER_RETURN_IF_ERROR(store->ReadLog(probe.data(), kPageSize, 0, /*from_device=*/true));
    store->sync_publishes_ = store->direct_fd_ < 0 || store->direct_reads_refused_.load();
  }
  format::Superblock sb = store->superblock();
  uint64_t adopted = 0;
  // Only where the last writer did not sync its superblocks: one that did
  // (version 1, or a file system without O_DIRECT reads) named everything it
  // reported, and what lies past its head may be stale (a version-1 writer
  // never zeroed the head).
  if (sb.format_version >= 2 && (sb.flags & format::kFlagUnnamedCount) != 0)
    AMBER_RETURN_IF_ERROR(store->AdoptCompleteGenerations(&sb, &adopted).WithContext(path));
  store->adopted_at_open_ = adopted;
  if (mode == Mode::kReadOnly) {
    std::lock_guard<std::mutex> l(store->mu_);
    store->sb_ = sb;
    return store;
  }
  AMBER_RETURN_IF_ERROR(store->BeginWriting(sb, adopted).WithContext(path));
  return store;
}

Status Store::BeginWriting(const Superblock& sb, uint64_t adopted) {
  // The adopted generations were read from the device, but may still be in
  // its volatile cache: sync before a superblock names them.
  if (adopted > 0) AMBER_RETURN_IF_ERROR(DataSync());
  // 1. Publish, synced, what this open builds on, even when nothing changed:
  // the superblock was read through the page cache, where an earlier process
  // may have left one that never reached the disk (killed before its sync, or
  // its writeback failed), and this process must not write into log space
  // that only that superblock frees before it is durable. Without
  // kFlagUnnamedCount yet (unnamed_count_ is false): nothing past its head may
  // count until step 2 is durable. Also upgrades a version-1 store (a
  // version-1 build must then refuse it).
  auto publish = [&](format::Superblock* next) {
    const uint64_t seq = next->sequence;
    *next = sb;
    next->sequence = seq;
    next->format_version = format::kFormatVersion;
  };
  AMBER_RETURN_IF_ERROR(PublishChange(/*sync=*/true, publish));
  // 2. Zero the pages where a later open would look for unnamed generations
  // (the head, and 0 where it is free), and sync: what an earlier process left
  // there (an attempt whose sync failed, numbered above what it committed, or
  // a version-1 writer's leftover) must never be taken for one of this
  // process's generations. Each append keeps this true for its new head.
  AMBER_RETURN_IF_ERROR(ZeroLogPage(sb, sb.log_head));
  if (sb.log_head != 0 && (sb.log_head == sb.log_tail || format::FreeInLog(sb, 0, kPageSize)))
    AMBER_RETURN_IF_ERROR(ZeroLogPage(sb, 0));
  AMBER_RETURN_IF_ERROR(DataSync());
  // 3. From here complete generations past the head count (one sync per
  // generation), unless every superblock is synced. Synced too: left to the
  // first generation's sync, a writeback error there (reported to that sync
  // only, the page then clean but not on disk) would lose this superblock
  // for good, and a power cut before the next sync would leave the unflagged
  // one of step 1 naming none of what was reported since.
  if (!sync_publishes_) {
    {
      std::lock_guard<std::mutex> p(publish_mu_);
      unnamed_count_ = true;
    }
    AMBER_RETURN_IF_ERROR(PublishChange(/*sync=*/true, [](format::Superblock*) {}));
  }
  return Status::OK();
}

Status Store::LoadSuperblock() {
  AMBER_ASSIGN_OR_RETURN(FileInfo info, env_->Stat(fd_));
  if (info.size < format::kTableOffset)
    return Corruption("file of " + std::to_string(info.size) +
                      " bytes is too short to be an amber store");
  // A slot is valid, never written (all zeros: a new store), or damaged. The
  // superblock fits in one 512-byte sector and sector writes are atomic, so a
  // crash during a publish leaves the slot old or new, never damaged: a damaged
  // slot is corruption and is reported, not silently replaced by the older one.
  Superblock slots[2];
  Status st[2];
  bool empty[2];
  for (int i = 0; i < 2; ++i) {
    std::memset(&slots[i], 0, sizeof(Superblock));
    st[i] = env_->PRead(fd_, &slots[i], sizeof(Superblock), uint64_t(i) * kPageSize);
    if (!st[i].ok()) return st[i];
    const char* raw = reinterpret_cast<const char*>(&slots[i]);
    empty[i] = std::all_of(raw, raw + sizeof(Superblock), [](char c) { return c == 0; });
    if (empty[i]) continue;
    st[i] = format::ValidateSuperblock(slots[i], info.size);
    if (st[i].ok() && slots[i].sequence % 2 != static_cast<uint64_t>(i))
      st[i] = Corruption("holds sequence " + std::to_string(slots[i].sequence));
    if (!st[i].ok()) {
      if (st[i].code() == Code::kNotSupported) return st[i];
      return Corruption("superblock slot " + std::to_string(i) + " is damaged: " + st[i].message());
    }
  }
  if (empty[0] && empty[1]) return Corruption("no superblock (not an amber store, or wiped)");
  const int pick = empty[0] ? 1 : empty[1] ? 0 : (slots[1].sequence > slots[0].sequence ? 1 : 0);
  // The other slot, if valid, must be older and describe the same store geometry.
  int other = 1 - pick;
  if (!empty[other] && (slots[other].base_address != slots[pick].base_address ||
                        slots[other].capacity != slots[pick].capacity ||
                        slots[other].log_size != slots[pick].log_size))
    return Corruption("the two superblocks describe different stores");
  std::lock_guard<std::mutex> l(mu_);
  sb_ = slots[pick];
  return Status::OK();
}

Status Store::WriteSuperblock(Superblock next, bool sync) {
  const uint64_t failures = sync_failures_.load();
  const uint32_t tag = tracking_flag_.load();
  if (tag != 0) next.flags = (next.flags & ~format::kFlagTrackingMask) | tag;
  next.flags =
      (next.flags & ~format::kFlagUnnamedCount) | (unnamed_count_ ? format::kFlagUnnamedCount : 0);
  format::SealSuperblock(&next);
  std::vector<char> page(kPageSize, 0);
  std::memcpy(page.data(), &next, sizeof(next));
  AMBER_RETURN_IF_ERROR(Write(page.data(), kPageSize, (next.sequence % 2) * kPageSize));
  if (sync) {
    AMBER_RETURN_IF_ERROR(DataSyncSince(failures));
    unsynced_publish_ = false;
  } else {
    unsynced_publish_ = true;
    unsynced_failures_ = failures;
  }
  std::lock_guard<std::mutex> l(mu_);
  sb_ = next;
  return Status::OK();
}

Status Store::FlushPendingLocked() {
  if (!pending_publish_) return Status::OK();
  AMBER_RETURN_IF_ERROR(
      WriteSuperblock(pending_, /*sync=*/true).WithContext("re-publishing superblock"));
  pending_publish_ = false;
  return Status::OK();
}

Status Store::Sync() {
  if (mode_ != Mode::kReadWrite) return Status::OK();
  std::lock_guard<std::mutex> p(publish_mu_);
  AMBER_RETURN_IF_ERROR(FlushPendingLocked());
  if (!unsynced_publish_) return Status::OK();
  // A sync failed since that superblock was written: it may be lost although
  // the page cache still shows it. Write it again (its slot, its sequence).
  if (sync_failures_.load() != unsynced_failures_)
    return WriteSuperblock(superblock(), /*sync=*/true);
  AMBER_RETURN_IF_ERROR(DataSyncSince(unsynced_failures_));
  unsynced_publish_ = false;
  return Status::OK();
}

Status Store::PublishChange(bool sync, const std::function<void(Superblock*)>& change) {
  std::lock_guard<std::mutex> p(publish_mu_);
  AMBER_RETURN_IF_ERROR(FlushPendingLocked());
  Superblock next = superblock();
  change(&next);
  next.sequence += 1;
  Status s = WriteSuperblock(next, sync);
  if (!s.ok()) {
    pending_ = next;
    pending_publish_ = true;
  }
  return s;
}

uint64_t Store::LogUsed() const {
  Superblock sb = superblock();
  if (sb.log_head >= sb.log_tail) return sb.log_head - sb.log_tail;
  return sb.log_size - sb.log_tail + sb.log_head;
}

}  // namespace amber
