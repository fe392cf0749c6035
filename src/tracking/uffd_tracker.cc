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
// Thread-safety: Collect() is not reentrant (it reuses one buffer); the
// checkpointer serialises it. Mutator threads need no coordination with it.
// A Collect over 1 GiB or more scans its upper half on a helper thread (owned by
// the tracker, parked on a condition variable between calls).
#include <fcntl.h>
#include <unistd.h>

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

// Collect splits a scan at least this long in two and hands the upper half to
// a helper thread: the scan walks every page-table entry of the range with the
// mutators held, so on a large heap it is most of the pause, and the walks of
// two halves (under mmap_lock held for reading, different page-table locks)
// run in parallel. Below it the hand-off costs more than it saves.
constexpr uint64_t kParallelScanBytes = uint64_t{1} << 30;

std::string RangeText(uintptr_t start, uint64_t len) {
  return "[" + Hex(start) + ", " + Hex(start + len) + ")";
}

class UffdTracker final : public DirtyTracker {
 public:
  UffdTracker(Env* env, void* base, size_t len)
      : env_(env),
        base_(reinterpret_cast<uintptr_t>(base)),
        len_(len),
        page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))),
        page_shift_(static_cast<unsigned>(__builtin_ctzll(page_size_))),
        regions_(kRegionBatch) {
    assert((page_size_ & (page_size_ - 1)) == 0);
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
  // Collect over [start, end), appending page numbers in ascending order.
  Status CollectRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                      std::vector<uint64_t>* pages);
  void HelperLoop();

  Env* const env_;
  const uintptr_t base_;
  const size_t len_;
  const size_t page_size_;
  const unsigned page_shift_;
  int uffd_ = -1;
  int pagemap_fd_ = -1;
  std::vector<page_region> regions_;  // reused by every Collect: no allocation in the pause

  // The helper that scans the upper half of a large Collect (started on first use).
  std::thread helper_;
  std::mutex helper_mu_;
  std::condition_variable helper_cv_;
  bool helper_stop_ = false;
  bool helper_has_work_ = false;
  uint64_t helper_start_ = 0, helper_end_ = 0;
  Status helper_status_;
  std::vector<page_region> helper_regions_;
  std::vector<uint64_t> helper_pages_;  // reserved once, reused
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
  if (scan_len < kParallelScanBytes) return CollectRange(base_, end, regions_, pages);

  // Split at a 2 MiB boundary, so that the two walks never share a page table.
  const uint64_t mid = (base_ + scan_len / 2) & ~((uint64_t{2} << 20) - 1);
  if (!helper_.joinable()) {
    helper_regions_.resize(kRegionBatch);
    helper_ = std::thread([this] { HelperLoop(); });
  }
  {
    std::lock_guard<std::mutex> l(helper_mu_);
    helper_start_ = mid;
    helper_end_ = end;
    helper_has_work_ = true;
  }
  helper_cv_.notify_one();
  Status lower = CollectRange(base_, mid, regions_, pages);
  {
    std::unique_lock<std::mutex> l(helper_mu_);
    helper_cv_.wait(l, [&] { return !helper_has_work_; });
  }
  if (!lower.ok()) return lower;
  if (!helper_status_.ok()) return helper_status_;
  pages->insert(pages->end(), helper_pages_.begin(), helper_pages_.end());
  return Status::OK();
}

void UffdTracker::HelperLoop() {
  std::unique_lock<std::mutex> l(helper_mu_);
  for (;;) {
    helper_cv_.wait(l, [&] { return helper_has_work_ || helper_stop_; });
    if (helper_stop_) return;
    const uint64_t start = helper_start_, end = helper_end_;
    l.unlock();
    helper_pages_.clear();
    Status s = CollectRange(start, end, helper_regions_, &helper_pages_);
    l.lock();
    helper_status_ = std::move(s);
    helper_has_work_ = false;
    helper_cv_.notify_all();
  }
}

Status UffdTracker::CollectRange(uint64_t start, uint64_t end, std::vector<page_region>& regions,
                                 std::vector<uint64_t>* pages) {
  uint64_t cursor = start;
  while (cursor < end) {
    Result<size_t> n = Scan(cursor, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, regions);
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
      for (uint64_t page = (r.start - base_) >> page_shift_, last = (r.end - base_) >> page_shift_;
           page < last; ++page) {
        pages->push_back(page);
      }
      cursor = r.end;
    }
    // A partly filled buffer means the walk reached `end`. A full one means it
    // stopped early, at the first written page that did not fit, and that page
    // is still unreported and unprotected; resume at the end of the last
    // region. The kernel's own walk_end is not used: it is stale whenever the
    // kernel restarted its walk internally (more than 512 regions in one call).
    if (*n < regions.size()) break;
  }
  return Status::OK();
}

Result<uint64_t> UffdTracker::CountDirty(size_t scan_bytes) {
  if (scan_bytes > len_) return InvalidArgument("CountDirty: scan beyond the tracked range");
  const uint64_t end =
      base_ + ((uint64_t{scan_bytes} + page_size_ - 1) & ~uint64_t{page_size_ - 1});
  uint64_t cursor = base_, count = 0;
  while (cursor < end) {
    // Report-only: without PM_SCAN_WP_MATCHING nothing is re-protected.
    Result<size_t> n = Scan(cursor, end, PM_SCAN_CHECK_WPASYNC, regions_);
    if (!n.ok()) return n.status();
    for (size_t i = 0; i < *n; ++i) {
      count += (regions_[i].end - regions_[i].start) >> page_shift_;
      cursor = regions_[i].end;
    }
    if (*n < regions_.size()) break;
  }
  return count;
}

}  // namespace

Result<std::unique_ptr<DirtyTracker>> NewUffdTracker(Env* env, void* base, size_t len) {
  auto tracker = std::make_unique<UffdTracker>(env, base, len);
  // On failure the destructor closes whatever descriptors Init opened, which
  // also undoes a registration that got that far.
  AMBER_RETURN_IF_ERROR(tracker->Init());
  return std::unique_ptr<DirtyTracker>(std::move(tracker));
}

}  // namespace amber::tracking_internal
