// uffd_tracker.cc — the "uffd-wp-async" DirtyTracker: the kernel records which
// pages were written, and one ioctl reports and re-protects them.
//
// Setup (NewUffdTracker):
//   1. userfaultfd(O_CLOEXEC | O_NONBLOCK); on EPERM (unprivileged and
//      vm.unprivileged_userfaultfd = 0) again with UFFD_USER_MODE_ONLY, which
//      async write-protect is content with: it never delivers a fault message.
//   2. UFFDIO_API asking for UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED.
//      With WP_ASYNC the kernel resolves a write to a protected page itself
//      (it drops the protection and the page reads as "written"); nobody ever
//      reads the descriptor. WP_UNPOPULATED lets step 4 protect pages that have
//      no page table entry yet, so a never-touched page's first write counts.
//   3. UFFDIO_REGISTER the range with UFFDIO_REGISTER_MODE_WP. Async mode
//      accepts any VMA, including the heap's MAP_PRIVATE ext4 file mapping
//      (synchronous uffd-wp refuses that one with EINVAL).
//   4. UFFDIO_WRITEPROTECT the whole range: every page starts clean. This
//      installs page tables for the whole range (≈2 MiB per GiB).
//   5. Open /proc/self/pagemap and probe PAGEMAP_SCAN once, so a kernel
//      without it (or a VMA without async WP) fails here rather than in the
//      first checkpoint.
//
// Collect: PAGEMAP_SCAN with PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC and
// category_mask = return_mask = PAGE_IS_WRITTEN — the kernel's fast path that
// only tests each PTE's uffd-wp bit. For every written page it reports the page
// and re-protects it under the page table lock, so a concurrent write either
// lands before (reported now) or faults after (reported next time). One
// subtlety: the kernel flushes TLBs after re-protecting a batch of PTEs, so a
// thread holding a stale writable TLB entry can still store to a page in that
// window without the page counting as written again. Such a page was written
// before (that is why it was re-protected), so THIS Collect reports it, and
// the store is in memory before the ioctl returns: a caller that copies the
// reported pages after Collect returns captures it. Copying them before, or
// concurrently, would not be safe.
//
// A large Collect (1 GiB or more) runs in two passes, so that it can use a
// second core without paying for it in TLB shootdowns:
//   1. report-only PAGEMAP_SCAN (no PM_SCAN_WP_MATCHING: nothing is changed,
//      nothing flushed) over chunks (64 MiB), taken from a shared counter by the
//      caller and a helper thread, so the caller never waits for a helper that
//      is slow to be scheduled: it takes the helper's chunks itself;
//   2. on the caller alone, the reporting and re-protecting scan above, over
//      only the spans where pass 1 found written pages (neighbours closer than
//      2 MiB merged into one span).
// Re-protecting in parallel (two halves, each reporting and re-protecting) was
// slower than one thread on a 2-vCPU VM whenever pages had been written: 1.4-
// 2.4 ms for 1 GiB with 0.1% written, against 0.4 ms for one thread on
// 1000 MiB (amber-tracker-bench). The likely reason: each re-protected page
// table is followed by a TLB flush, which becomes an IPI to the other CPU
// while another thread of the process runs there. Pass 2 is what reports: a
// page written after pass 1 looked at it is either inside a span (reported
// now) or not re-protected (reported next time), so the two passes lose
// nothing.
//
// Thread-safety: Collect() is not reentrant (it reuses its buffers); the
// checkpointer serialises it. Mutator threads need no coordination with it.
// The helper thread is owned by the tracker and parked on a condition
// variable between calls; its CPU affinity is the caller's CPU set minus the
// caller's current CPU, set again when a large Collect runs on another CPU.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cassert>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "env/env.h"
#include "tracking/tracker.h"
#include "tracking/tracker_internal.h"
#include "tracking/uffd_defs.h"
#include "util/hex.h"

namespace amber::tracking_internal {
namespace {

constexpr uint64_t kRequiredFeatures = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;

// page_region entries handed to one PAGEMAP_SCAN call (24 KiB, reused). The
// kernel itself copies out at most 512 regions per internal walk and restarts
// on its own; a larger user buffer only saves system calls when the dirty set
// is badly fragmented.
constexpr size_t kRegionBatch = 1024;

// The tuning's defaults (tracker_internal.h), and why:
// - parallel_scan_bytes, 1 GiB: a Collect at least this long takes the
//   two-pass path (see the top). The scan walks every page-table entry of the
//   range with the mutators held, so on a large heap it is most of the pause,
//   and two walks of different chunks (under mmap_lock held for reading,
//   different page-table locks) run in parallel. Below it, waking the helper
//   costs more than it saves.
// - chunk_bytes, 64 MiB: pass 1's unit of work, 16384 page-table entries.
// - merge_gap_bytes, 2 MiB: pass 2 walks the gap between two written pages
//   rather than making another system call when the gap is shorter than one
//   page table (512 entries), whose walk should cost about what the extra
//   ioctl would (an estimate; the fast path walks a GiB, 262144 entries, in
//   0.3-0.8 ms here).

std::string RangeText(uintptr_t start, uint64_t len) {
  return "[" + Hex(start) + ", " + Hex(start + len) + ")";
}

class UffdTracker final : public DirtyTracker {
 public:
  UffdTracker(Env* env, void* base, size_t len, const UffdScanTuning& tuning)
      : env_(env),
        tuning_(tuning),
        base_(reinterpret_cast<uintptr_t>(base)),
        len_(len),
        page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))),
        page_shift_(static_cast<unsigned>(__builtin_ctzll(page_size_))),
        regions_(kRegionBatch) {
    assert((page_size_ & (page_size_ - 1)) == 0);
    assert(tuning_.chunk_bytes > 0 && tuning_.chunk_bytes % page_size_ == 0);
  }

  ~UffdTracker() override {
    if (helper_.joinable()) {
      {
        std::lock_guard<std::mutex> l(helper_mu_);
        helper_stop_ = true;
      }
      helper_cv_.notify_all();
      helper_.join();
    }
    // Closing the userfaultfd unregisters the range; the kernel then drops
    // the write protection, so the memory behaves as plain memory again.
    if (pagemap_fd_ >= 0) env_->Close(pagemap_fd_).IgnoreError();
    if (uffd_ >= 0) env_->Close(uffd_).IgnoreError();
  }

  UffdTracker(const UffdTracker&) = delete;
  UffdTracker& operator=(const UffdTracker&) = delete;

  const char* name() const override { return "uffd-wp-async"; }

  Status Init();
  Status Collect(size_t scan_bytes, std::vector<uint64_t>* pages) override;
  Result<uint64_t> CountDirty(size_t scan_bytes) override;

 private:
  Status OpenUserfaultFd();
  // One PAGEMAP_SCAN call over [start, end) into `regions`; returns the number
  // of entries filled.
  Result<size_t> Scan(uint64_t start, uint64_t end, uint64_t flags,
                      std::vector<page_region>& regions);
  // Scans [start, end) with PAGEMAP_SCAN `flags`, as many calls as it takes,
  // handing each written region to on_region in address order.
  template <class OnRegion>
  Status WalkRange(uint64_t start, uint64_t end, uint64_t flags, std::vector<page_region>& regions,
                   OnRegion&& on_region);
  // Collect over [start, end), appending page numbers in ascending order.
  Status CollectRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                      std::vector<uint64_t>* pages);
  // Report-only scan of [start, end), appending the written regions to *out.
  Status ReportRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                     std::vector<page_region>* out);
  // The two-pass Collect of [base_, end).
  Status CollectParallel(uint64_t end, std::vector<uint64_t>* pages);
  // Pass 1's job: one per large Collect. chunk c is
  // [start + c * chunk_bytes, ...), cut at end.
  struct Job {
    uint32_t epoch = 0;
    uint64_t start = 0, end = 0;
    uint32_t chunks = 0;
  };
  // Pass 1 on the calling thread (worker 0) or the helper (worker 1): takes
  // chunks of `job` until none is left or a later job has begun.
  void ReportChunks(int worker, const Job& job, std::vector<page_region>& regions);
  void HelperLoop();
  // Restricts the helper to the CPUs the caller may use other than the one it
  // runs on: woken without this, the scheduler often put the helper on the
  // caller's CPU, where it only took turns with the caller.
  void PlaceHelperElsewhere();

  Env* const env_;
  const UffdScanTuning tuning_;
  const uintptr_t base_;
  const size_t len_;
  const size_t page_size_;
  const unsigned page_shift_;
  int uffd_ = -1;
  int pagemap_fd_ = -1;
  std::vector<page_region> regions_;  // reused by every Collect: no allocation in the pause

  // Pass 1's shared state. One job per large Collect; `claim_` holds the job's
  // epoch (high 32 bits) and its next unclaimed chunk (low 32 bits), so a
  // helper that wakes after its job is over cannot take a chunk of the next.
  // A worker touches its found_ and a chunk's result only while it holds a
  // claimed chunk of the current job, which the caller waits for.
  struct ChunkResult {
    int worker = 0;             // whose found_ holds the chunk's regions
    size_t begin = 0, end = 0;  // [begin, end) in that vector
    Status status;
  };
  std::thread helper_;
  std::mutex helper_mu_;
  std::condition_variable helper_cv_;
  bool helper_stop_ = false;
  Job job_;  // guarded by helper_mu_; a new epoch wakes the helper
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint32_t> chunks_done_{0};  // chunks of the current job finished
  std::vector<ChunkResult> chunk_results_;
  std::vector<page_region> found_[2];        // pass 1 results, per worker (reused)
  uint32_t found_epoch_[2] = {0, 0};         // the job found_[w] belongs to
  std::vector<page_region> helper_regions_;  // the helper's PAGEMAP_SCAN buffer
  int helper_placed_for_ = -1;               // the caller's CPU the helper was last kept off
};

Status UffdTracker::OpenUserfaultFd() {
  Result<int> fd = env_->UserfaultFd(O_CLOEXEC | O_NONBLOCK);
  if (!fd.ok() && fd.status().code() == Code::kPermissionDenied) {
    // Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd = 0 only a
    // user-mode-only descriptor is allowed. Async write-protect never hands a
    // fault to user space, so it loses nothing by that restriction.
    Result<int> user_only = env_->UserfaultFd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (!user_only.ok()) {
      return user_only.status().WithContext("userfaultfd(UFFD_USER_MODE_ONLY) after " +
                                            fd.status().ToString());
    }
    fd = user_only;
  }
  if (!fd.ok()) return fd.status();
  uffd_ = *fd;
  return Status::OK();
}

Status UffdTracker::Init() {
  AMBER_RETURN_IF_ERROR(OpenUserfaultFd());

  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = kRequiredFeatures;
  if (Result<long> r = env_->Ioctl(uffd_, UFFDIO_API, &api); !r.ok()) {
    // EINVAL here means the kernel does not know a requested feature bit:
    // WP_ASYNC arrived in Linux 6.7, WP_UNPOPULATED in 6.4.
    return r.status().WithContext(
        "UFFDIO_API with UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED (needs Linux >= 6.7 "
        "with CONFIG_PTE_MARKER_UFFD_WP)");
  }
  if ((api.features & kRequiredFeatures) != kRequiredFeatures) {
    return NotSupported("UFFDIO_API: kernel features " + Hex(api.features) + " lack " +
                        Hex(kRequiredFeatures & ~api.features) +
                        " (UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED)");
  }

  uffdio_register reg = {};
  reg.range.start = base_;
  reg.range.len = len_;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (Result<long> r = env_->Ioctl(uffd_, UFFDIO_REGISTER, &reg); !r.ok()) {
    return r.status().WithContext("UFFDIO_REGISTER mode WP " + RangeText(base_, len_));
  }
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0) {
    return NotSupported("UFFDIO_REGISTER " + RangeText(base_, len_) +
                        ": UFFDIO_WRITEPROTECT not offered for this mapping");
  }

  uffdio_writeprotect wp = {};
  wp.range.start = base_;
  wp.range.len = len_;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (Result<long> r = env_->Ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp); !r.ok()) {
    return r.status().WithContext("UFFDIO_WRITEPROTECT " + RangeText(base_, len_));
  }

  Result<int> pm = env_->Open("/proc/self/pagemap", O_RDONLY, 0);
  if (!pm.ok()) return pm.status();
  pagemap_fd_ = *pm;

  // Probe: report-only (no PM_SCAN_WP_MATCHING), so it changes nothing. It
  // proves the ioctl exists and, through PM_SCAN_CHECK_WPASYNC, that every VMA
  // in the range really has async write-protect. Everything was just
  // protected, so it finds nothing and walks the whole range once.
  Result<size_t> probe = Scan(base_, base_ + len_, PM_SCAN_CHECK_WPASYNC, regions_);
  if (!probe.ok()) return probe.status().WithContext("PAGEMAP_SCAN probe");
  return Status::OK();
}

Result<size_t> UffdTracker::Scan(uint64_t start, uint64_t end, uint64_t flags,
                                 std::vector<page_region>& regions) {
  pm_scan_arg arg = {};
  arg.size = sizeof(arg);
  arg.flags = flags;
  arg.start = start;
  arg.end = end;
  arg.vec = reinterpret_cast<uintptr_t>(regions.data());
  arg.vec_len = regions.size();
  // Only category_mask == return_mask == PAGE_IS_WRITTEN (nothing inverted,
  // no any-of) takes the kernel's fast per-PTE path.
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  Result<long> r = env_->Ioctl(pagemap_fd_, PAGEMAP_SCAN, &arg);
  if (!r.ok()) return r.status().WithContext("PAGEMAP_SCAN " + RangeText(start, end - start));
  if (*r < 0 || static_cast<uint64_t>(*r) > regions.size()) {
    return Internal("PAGEMAP_SCAN returned " + std::to_string(*r) + " regions for a buffer of " +
                    std::to_string(regions.size()));
  }
  return static_cast<size_t>(*r);
}

Status UffdTracker::Collect(size_t scan_bytes, std::vector<uint64_t>* pages) {
  assert(pages != nullptr);
  if (scan_bytes > len_) {
    return InvalidArgument("Collect: scan of " + std::to_string(scan_bytes) +
                           " bytes exceeds the tracked " + std::to_string(len_));
  }
  // len_ is page aligned, so rounding up cannot pass it.
  const uint64_t scan_len = (uint64_t{scan_bytes} + page_size_ - 1) & ~uint64_t{page_size_ - 1};
  const uint64_t end = base_ + scan_len;
  if (scan_len < tuning_.parallel_scan_bytes) return CollectRange(base_, end, regions_, pages);
  return CollectParallel(end, pages);
}

Status UffdTracker::CollectParallel(uint64_t end, std::vector<uint64_t>* pages) {
  const uint64_t chunks = (end - base_ + tuning_.chunk_bytes - 1) / tuning_.chunk_bytes;
  assert(chunks < (uint64_t{1} << 32));
  if (chunk_results_.size() < chunks) chunk_results_.resize(chunks);
  Job job;
  {
    std::lock_guard<std::mutex> l(helper_mu_);
    job_.epoch = job_.epoch + 1 == 0 ? 1 : job_.epoch + 1;  // 0: "no job yet"
    job_.start = base_;
    job_.end = end;
    job_.chunks = static_cast<uint32_t>(chunks);
    job = job_;
    chunks_done_.store(0, std::memory_order_relaxed);
    claim_.store(uint64_t{job.epoch} << 32, std::memory_order_release);
    if (!helper_.joinable()) {
      helper_regions_.resize(kRegionBatch);
      helper_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "amber-scan");
        HelperLoop();
      });
    }
  }
  PlaceHelperElsewhere();
  helper_cv_.notify_one();
  ReportChunks(0, job, regions_);
  // Chunks the helper took are being scanned now: wait for those only.
  for (uint32_t d = chunks_done_.load(std::memory_order_acquire); d != chunks;
       d = chunks_done_.load(std::memory_order_acquire)) {
    chunks_done_.wait(d, std::memory_order_acquire);
  }
  for (uint64_t c = 0; c < chunks; ++c)
    if (!chunk_results_[c].status.ok()) return chunk_results_[c].status;

  // Pass 2: report and re-protect the spans where pass 1 found written pages.
  uint64_t span_start = 0, span_end = 0;  // empty
  for (uint64_t c = 0; c < chunks; ++c) {
    const ChunkResult& cr = chunk_results_[c];
    const std::vector<page_region>& found = found_[cr.worker];
    for (size_t i = cr.begin; i < cr.end; ++i) {
      if (span_end != 0 && found[i].start < span_end + tuning_.merge_gap_bytes) {
        span_end = found[i].end;
        continue;
      }
      if (span_end != 0) AMBER_RETURN_IF_ERROR(CollectRange(span_start, span_end, regions_, pages));
      span_start = found[i].start;
      span_end = found[i].end;
    }
  }
  if (span_end != 0) AMBER_RETURN_IF_ERROR(CollectRange(span_start, span_end, regions_, pages));
  return Status::OK();
}

void UffdTracker::PlaceHelperElsewhere() {
  // The caller's own CPU set, minus the CPU it is on now (it may move later;
  // then the two merely share a CPU for a while). With a single CPU allowed
  // the helper keeps it. Best effort: on failure the helper stays where it is.
  // Only when the caller's CPU changed: it is in the pause, and the two
  // system calls are wasted while the caller stays where it was.
  const int cpu = sched_getcpu();  // vDSO: no system call
  if (cpu >= 0 && cpu == helper_placed_for_) return;
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return;
  if (cpu >= 0 && CPU_COUNT(&mask) > 1) CPU_CLR(cpu, &mask);
  if (pthread_setaffinity_np(helper_.native_handle(), sizeof(mask), &mask) == 0)
    helper_placed_for_ = cpu;
}

void UffdTracker::ReportChunks(int worker, const Job& job, std::vector<page_region>& regions) {
  std::vector<page_region>& out = found_[worker];
  for (;;) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    uint32_t chunk;
    do {
      if ((c >> 32) != job.epoch) return;  // a later job: this one is over
      chunk = static_cast<uint32_t>(c);
      if (chunk >= job.chunks) return;  // all taken
    } while (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel));
    if (found_epoch_[worker] != job.epoch) {  // first chunk of this job
      out.clear();
      found_epoch_[worker] = job.epoch;
    }
    const uint64_t start = job.start + uint64_t{chunk} * tuning_.chunk_bytes;
    const uint64_t end = std::min(job.end, start + tuning_.chunk_bytes);
    ChunkResult& cr = chunk_results_[chunk];
    cr.worker = worker;
    cr.begin = out.size();
    cr.status = ReportRange(start, end, regions, &out);
    cr.end = out.size();
    if (chunks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks)
      chunks_done_.notify_all();
  }
}

void UffdTracker::HelperLoop() {
  uint32_t seen = 0;
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> l(helper_mu_);
      helper_cv_.wait(l, [&] { return job_.epoch != seen || helper_stop_; });
      if (helper_stop_) return;
      job = job_;
      seen = job.epoch;
    }
    ReportChunks(1, job, helper_regions_);
  }
}

template <class OnRegion>
Status UffdTracker::WalkRange(uint64_t start, uint64_t end, uint64_t flags,
                              std::vector<page_region>& regions, OnRegion&& on_region) {
  uint64_t cursor = start;
  while (cursor < end) {
    Result<size_t> n = Scan(cursor, end, flags, regions);
    if (!n.ok()) return n.status();
    for (size_t i = 0; i < *n; ++i) {
      const page_region& r = regions[i];
      // Regions come back in address order, inside the request, page aligned.
      if (r.start < cursor || r.end > end || r.start >= r.end ||
          ((r.start | r.end) & (page_size_ - 1)) != 0) {
        assert(false && "PAGEMAP_SCAN region outside the scanned range");
        return Internal("PAGEMAP_SCAN returned region " + RangeText(r.start, r.end - r.start) +
                        " outside " + RangeText(cursor, end - cursor));
      }
      on_region(r);
      cursor = r.end;
    }
    // A partly filled buffer means the walk reached `end`. A full one means it
    // stopped early, at the first written page that did not fit, and that page
    // is still unreported (and, with PM_SCAN_WP_MATCHING, unprotected); resume
    // at the end of the last region. The kernel's own walk_end is not used: it
    // is stale whenever the kernel restarted its walk internally (more than
    // 512 regions in one call).
    if (*n < regions.size()) break;
  }
  return Status::OK();
}

Status UffdTracker::CollectRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                                 std::vector<uint64_t>* pages) {
  return WalkRange(start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, regions,
                   [&](const page_region& r) {
                     for (uint64_t page = (r.start - base_) >> page_shift_,
                                   last = (r.end - base_) >> page_shift_;
                          page < last; ++page) {
                       pages->push_back(page);
                     }
                   });
}

Status UffdTracker::ReportRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                                std::vector<page_region>* out) {
  return WalkRange(start, end, PM_SCAN_CHECK_WPASYNC, regions,
                   [&](const page_region& r) { out->push_back(r); });
}

Result<uint64_t> UffdTracker::CountDirty(size_t scan_bytes) {
  if (scan_bytes > len_) return InvalidArgument("CountDirty: scan beyond the tracked range");
  const uint64_t end =
      base_ + ((uint64_t{scan_bytes} + page_size_ - 1) & ~uint64_t{page_size_ - 1});
  uint64_t count = 0;
  // Report-only: without PM_SCAN_WP_MATCHING nothing is re-protected.
  AMBER_RETURN_IF_ERROR(
      WalkRange(base_, end, PM_SCAN_CHECK_WPASYNC, regions_,
                [&](const page_region& r) { count += (r.end - r.start) >> page_shift_; }));
  return count;
}

}  // namespace

Result<std::unique_ptr<DirtyTracker>> NewUffdTracker(Env* env, void* base, size_t len,
                                                     const UffdScanTuning& tuning) {
  auto tracker = std::make_unique<UffdTracker>(env, base, len, tuning);
  // On failure the destructor closes whatever descriptors Init opened, which
  // also undoes a registration that got that far.
  AMBER_RETURN_IF_ERROR(tracker->Init());
  return std::unique_ptr<DirtyTracker>(std::move(tracker));
}

}  // namespace amber::tracking_internal
