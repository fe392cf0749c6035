// store.h — the store file: superblocks, the checkpoint log ring, the home image
// and its checksum table (layout in format.h and docs/format.md).
//
// How a generation becomes durable (AppendGeneration):
//   descriptor + page images + commit record written at the log head (or at 0),
//   and a page of zeros after them → fdatasync: from here the generation
//   counts → superblock naming it written to the other slot, not synced (the
//   next sync, a generation's or a migration's, makes it durable). Open adopts
//   complete generations that the durable superblock does not name yet
//   (AdoptCompleteGenerations), so one device sync per generation suffices;
//   the zeroed pages keep leftovers of earlier processes from being adopted.
// Migration copies committed generations to their home pages (newest image of
// each page wins), writes their checksums into the table, syncs, and publishes a
// superblock whose log tail has moved past them. Recovery is the same migration
// run at open time, so a crash at any point of it is repaired by running it again.
//
// Thread-safety: AppendGeneration from one thread at a time (the checkpointer's
// writer); Migrate may run concurrently with it from another thread (the
// checkpointer's migrator; migrations themselves are serialised): a migration
// moves only the generations committed when it started, appends go to the free
// part of the ring meanwhile, and superblock publishes are serialised, each
// changing only its own fields. Recover and RecoverInPlace run alone, before
// any of that. superblock() and the const inspection calls may be used from any
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "amber/options.h"
#include "amber/status.h"
#include "env/env.h"
#include "store/format.h"

namespace amber {

class RateLimiter;

// Page-aligned memory it owns, for I/O that may go through an O_DIRECT
// descriptor (which needs aligned buffers).
struct PageBuffer {
  char* data = nullptr;
  size_t size = 0, capacity = 0;
  PageBuffer() = default;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  ~PageBuffer() { std::free(data); }
  // Zero-filled, `n` (a multiple of 4 KiB) bytes; false without memory.
  bool Assign(size_t n);
};

// Opens `path` once more with O_DIRECT added to `flags`: the descriptor, or -1
// when the file system has no O_DIRECT (EINVAL, e.g. tmpfs: the caller stays
// with buffered I/O). Any other error is returned.
Result<int> OpenDirect(Env* env, const std::string& path, int flags);

// Consecutive page images in memory: `pages` images of 4 KiB starting at data.
struct ImageRun {
  const char* data;
  uint64_t pages;
};

// One generation found in the log.
struct GenInfo {
  uint64_t gen = 0;
  uint64_t log_pos = 0;  // log-relative byte offset
  uint64_t page_count = 0;
  uint64_t total_pages = 0;  // pages it occupies in the log
  uint64_t heap_used = 0;
  uint64_t capture_us = 0;
  std::vector<format::GenEntry> entries;
};

class Store {
 public:
  enum class Mode { kReadWrite, kReadOnly };

  // Opens the store at `path`, creating it when missing and options allow
  // (atomically: built under a temporary name, then renamed into place).
  // kReadWrite takes an exclusive lock (kBusy if another process holds it).
  // kReadOnly never writes or locks. Complete generations that follow the one
  // the superblock names are adopted (kReadWrite: synced and published, which
  // also upgrades a version-1 store; kReadOnly: in memory only). Does not
  // replay the log: call Recover().
  static Result<std::unique_ptr<Store>> Open(Env* env, const std::string& path,
                                             const Options& options, Mode mode);
  ~Store();

  const std::string& path() const { return path_; }
  bool created() const { return created_; }
  bool read_only() const { return mode_ == Mode::kReadOnly; }
  int fd() const { return fd_; }
  Env* env() const { return env_; }
  // Copy of the current superblock.
  format::Superblock superblock() const;
  // Bytes of the log holding unmigrated generations.
  uint64_t LogUsed() const;

  // Calls fn for each committed, unmigrated generation, oldest first. With
  // verify_pages, also reads every page image and checks its checksum.
  // kCorruption (with the generation and log offset) on any inconsistency.
  Status ForEachGeneration(bool verify_pages,
                           const std::function<Status(const GenInfo&)>& fn) const;
  // The same over the generations that superblock `sb` (a copy taken earlier)
  // names: its [log_tail, log_head) up to its committed_gen.
  Status ForEachGeneration(const format::Superblock& sb, bool verify_pages,
                           const std::function<Status(const GenInfo&)>& fn) const;

  // Writes generation `gen` (> committed) holding `pages` (distinct heap page
  // numbers) whose images are the concatenation of `images`, in the same order,
  // and publishes it. If the log lacks room, waits for a running migration and
  // migrates what is still needed (back-pressure). kNoSpace if the
  // generation can never fit in the log. On error nothing is published: the
  // previous generation stays current.
  Status AppendGeneration(uint64_t gen, std::span<const uint64_t> pages,
                          std::span<const ImageRun> images, uint64_t heap_used,
                          uint64_t capture_us);
  // Convenience: all images contiguous at `images`.
  Status AppendGeneration(uint64_t gen, std::span<const uint64_t> pages, const char* images,
                          uint64_t heap_used, uint64_t capture_us) {
    ImageRun run{images, pages.size()};
    return AppendGeneration(gen, pages, std::span<const ImageRun>(&run, 1), heap_used, capture_us);
  }
  // Throttles every later write of AppendGeneration and Migrate (null = none).
  // The limiter must outlive the store or be reset first.
  void SetRateLimiter(RateLimiter* limiter) { limiter_ = limiter; }

  // Copies every generation committed when it starts home, syncs, and moves the
  // log tail past them (see above). Generations appended meanwhile stay in the
  // log. Waits for a migration already running in another thread first.
  Status Migrate();
  // Recovery at open: Migrate(), then optionally VerifyHome(heap_used).
  Status Recover(bool verify_home);
  // Recovery without syncing: copies the newest image of every page in the
  // unmigrated generations home through the page cache, checking each image's
  // checksum, but neither syncs nor updates the checksum table or the
  // superblock, so the log stays authoritative (exactly the state a crash in
  // the middle of Migrate leaves) and a later Migrate makes it durable. Then,
  // if verify_home, VerifyHome. Work grows with the distinct pages in the log,
  // not with the heap. kCorruption naming the page on a bad checksum.
  Status RecoverInPlace(bool verify_home);
  // Checks the checksum of every home page below used_bytes, except pages that an
  // unmigrated generation in the log supersedes (their log images count; a read-only
  // open does not migrate). progress(done, total) is called now and then if given.
  // kCorruption naming the first bad page.
  Status VerifyHome(uint64_t used_bytes,
                    const std::function<void(uint64_t, uint64_t)>& progress = nullptr) const;

  // Recorded in the superblock's flags at each publish (see format.h).
  void SetTrackingFlag(uint32_t tag) { tracking_flag_ = tag & format::kFlagTrackingMask; }

  // Makes the last superblock durable (AppendGeneration does not sync its
  // own; the generations it names are durable already). Heap::Close calls it
  // so that a closed store needs no adoption at the next open. An error is
  // the sync's.
  Status Sync();

  // Complete generations Open found past the head the superblock names (a
  // power cut lost their superblock) and adopted; read-write opens have
  // published them since.
  uint64_t adopted_at_open() const { return adopted_at_open_; }

  // Writes moved since open: bytes to the file, and how many syncs.
  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t syncs() const { return syncs_; }
  uint64_t migrations() const { return migrations_; }

 private:
  Store(Env* env, std::string path, int fd, Mode mode);
  static Status Create(Env* env, const std::string& path, const Options& options);
  Status LoadSuperblock();
  // The read-write part of Open, once `sb` (the loaded superblock with
  // `adopted` generations adopted) is known: publishes it, zeroes the pages
  // where a later open looks for unnamed generations, and from then on lets
  // unnamed ones count (docs/format.md gives the order and why).
  Status BeginWriting(const format::Superblock& sb, uint64_t adopted);
  // Publishes the current superblock changed by `change` (sequence + 1): writes
  // it to its slot and, if `sync`, syncs. Serialised, so an append and a
  // migration never publish over each other's fields. A superblock whose write
  // failed may or may not be on disk: it is published again (same sequence,
  // synced) before anything else.
  Status PublishChange(bool sync, const std::function<void(format::Superblock*)>& change);
  Status FlushPendingLocked();  // publish_mu_ held
  Status WriteSuperblock(format::Superblock next, bool sync);
  // Open: advances *sb past each complete generation (every checksum valid,
  // number above sb's committed_gen) found where the writer would have put the
  // next one (head, else 0) inside the free part of the ring; *adopted says
  // how many. Read errors are returned; invalid data just ends the walk.
  Status AdoptCompleteGenerations(format::Superblock* sb, uint64_t* adopted) const;
  Status MigrateLocked();  // migrate_mu_ held
  // Where a generation of `bytes` goes, and whether the ring must be restarted
  // at 0 (log empty). kNoSpace when it does not fit now.
  Result<uint64_t> PlaceGeneration(const format::Superblock& sb, uint64_t bytes) const;
  // Reads and validates the generation at log offset pos (kCorruption if there
  // is none, or it is torn, older than min_gen or inconsistent). from_device:
  // read around the page cache (see ReadLog).
  Status ReadGeneration(uint64_t pos, uint64_t min_gen, bool verify_pages, GenInfo* info,
                        bool from_device = false) const;
  // Reads the generation's page images and checks each against its entry's
  // checksum; kCorruption naming the first bad one.
  Status CheckImages(const GenInfo& info, bool from_device) const;
  // Reads n bytes of the file at off (page aligned). from_device: through
  // direct_fd_ when there is one, so the bytes come from the device, not from
  // the page cache (which after a failed writeback may hold contents the disk
  // does not: Linux marks such pages clean, and the error is reported to one
  // sync only); falls back to the page cache where O_DIRECT reads are refused.
  Status ReadLog(void* buf, size_t n, uint64_t off, bool from_device) const;
  // Newest image of each page in the unmigrated generations: heap page ->
  // (file offset of the image, checksum), sorted by page.
  using NewestList = std::vector<std::pair<uint64_t, std::pair<uint64_t, uint32_t>>>;
  Result<NewestList> NewestImages(const format::Superblock& sb) const;
  // Copies those images home (buffered writes), optionally checking checksums.
  // `sb` is the superblock `newest` was read under: its free part of the log
  // (where appends may be under way) is never read.
  Status CopyImagesHome(const format::Superblock& sb, const NewestList& newest, bool check_crc);
  // Buffered write through fd_ (superblocks, the checksum table, home pages).
  Status Write(const void* buf, size_t n, uint64_t off);
  // A log write: through direct_fd_ (O_DIRECT) when there is one and buf, n
  // and off are page aligned, else like Write. Log images are read back only
  // by migration and recovery, so keeping them out of the page cache saves a
  // copy of every byte and the memory for it.
  // direct = false forces the buffered path: a small generation is cheaper as
  // a few page-cache copies and one fdatasync than as synchronous device writes.
  // A direct write that fails with EINVAL is redone through fd_, and every
  // later one goes there too (direct_refused_).
  Status WriteLog(const void* buf, size_t n, uint64_t off, bool direct);
  Status WriteTo(int fd, const void* buf, size_t n, uint64_t off);
  Status DataSync();
  // fdatasync of the store for writes made after sync_failures_ read `before`:
  // fails (kIOError) if any sync of the file failed since, whichever thread
  // called it. Linux reports a writeback error to the first fdatasync of the
  // file after it and then drops the pages' new contents, so another thread's
  // failed sync may have been the loss of these writes, and this sync would
  // succeed without them.
  Status DataSyncSince(uint64_t before);
  // fdatasync under sync_mu_; *failures_after: sync_failures_ once it is counted.
  Status DataSyncCounted(uint64_t* failures_after);
  // kIOError once a sync failed while recovered pages were not yet durable.
  Status CheckNotPoisoned() const;
  // Writes a page of zeros at log offset pos (a free page), buffered.
  Status ZeroLogPage(const format::Superblock& sb, uint64_t pos);

  Env* env_;
  std::string path_;
  int fd_;
  int direct_fd_ = -1;  // the same file opened O_DIRECT (read-write mode), or -1
  std::atomic<bool> direct_refused_{false};  // direct_fd_ writes failed with EINVAL
  Mode mode_;
  bool created_ = false;
  mutable std::mutex mu_;  // guards sb_ (held briefly)
  format::Superblock sb_{};
  std::mutex migrate_mu_;  // one migration at a time
  std::mutex publish_mu_;  // serialises publishes; guards pending_*, appended_
  // (generation, log position) of each generation appended since open, oldest
  // first, until a migration moves past it: where the log tail goes next.
  std::vector<std::pair<uint64_t, uint64_t>> appended_;
  // Atomic: written by the writer thread, read by Heap::GetStats() from any thread.
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> sync_failures_{0};  // failed fdatasyncs since open, any thread
  std::mutex sync_mu_;                      // serializes fdatasyncs (DataSyncCounted)
  // RecoverInPlace copied images home that no migration has synced yet.
  std::atomic<bool> recovered_unsynced_{false};
  // A sync failed while recovered_unsynced_: appends and migrations refuse.
  std::atomic<bool> poisoned_{false};
  std::atomic<uint64_t> migrations_{0};
  // Reused I/O buffer (writer thread only): descriptor and commit pages.
  PageBuffer scratch_;
  std::atomic<uint32_t> tracking_flag_{0};
  RateLimiter* limiter_ = nullptr;
  // A superblock whose data is durable but whose own write failed: it may or may
  // not be on disk, so it is published again (same sequence) before anything else.
  bool pending_publish_ = false;
  format::Superblock pending_{};
  uint64_t adopted_at_open_ = 0;
  // A superblock was written since the last sync (guarded by publish_mu_); the
  // latest such write was made when sync_failures_ stood at unsynced_failures_.
  bool unsynced_publish_ = false;
  uint64_t unsynced_failures_ = 0;
  // Read-write on a file system without O_DIRECT reads: every superblock is
  // synced, with kFlagUnnamedCount clear (set by Open).
  bool sync_publishes_ = false;
  // Superblocks carry kFlagUnnamedCount: set by Open once the candidate
  // positions are zeroed and synced, unless sync_publishes_ (publish_mu_).
  bool unnamed_count_ = false;
  // ReadLog's O_DIRECT reads were refused (EINVAL or not supported).
  mutable std::atomic<bool> direct_reads_refused_{false};
};

// Resolves the effective creation parameters (defaults, rounding) and checks them.
Status ResolveCreateOptions(const Options& in, uint64_t* capacity, uint64_t* base,
                            uint64_t* log_size);

}  // namespace amber
