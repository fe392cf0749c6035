// tracker.h — finds the heap pages written since the previous capture.
//
// Two implementations:
//  * "uffd-wp-async": userfaultfd write-protect in asynchronous mode
//    (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED); the kernel clears the
//    protection on first write without a fault round trip, and the PAGEMAP_SCAN
//    ioctl (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, category PAGE_IS_WRITTEN)
//    reports the written pages and re-protects them in one call.
//  * "full": reports every page of the scanned range each time. Exact and
//    portable, but the checkpoint writes the whole used heap. Used when the kernel
//    lacks the features above (detected at run time), or when forced by Options.
//
// Thread-safety: Collect() must not run concurrently with itself (the
// checkpointer serialises captures). Mutator threads may write to the heap at
// any time; a write racing with Collect() is reported either by this Collect()
// or by the next one, never lost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "amber/options.h"
#include "amber/status.h"
#include "env/env.h"

namespace amber {

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;

  // "uffd-wp-async" or "full".
  virtual const char* name() const = 0;

  // Appends to *pages the indices (page number relative to base) of pages in
  // [base, base + scan_bytes) written since the previous Collect (or since
  // creation), in ascending order, and marks them clean again atomically with
  // respect to concurrent writes. scan_bytes is rounded up to whole pages and
  // must not exceed the tracked length. On error *pages may hold a prefix; the
  // caller must then treat the whole scanned range as dirty.
  virtual Status Collect(size_t scan_bytes, std::vector<uint64_t>* pages) = 0;

  // How many pages in [base, base + scan_bytes) are written since the last
  // Collect, without changing anything (no re-protection). Used to start a
  // checkpoint early, or hold mutators back, before the dirty set outgrows the
  // log. Same threading rule as Collect (not concurrently with it).
  virtual Result<uint64_t> CountDirty(size_t scan_bytes) = 0;
};

// Starts tracking [base, base + len) (page aligned, already mapped). After it
// returns, every page counts as clean. mode kAuto tries uffd-wp-async and falls
// back to full; kUffdAsync fails with kNotSupported if the kernel cannot.
// `env` must outlive the tracker.
Result<std::unique_ptr<DirtyTracker>> CreateTracker(Env* env, void* base, size_t len,
                                                    TrackingMode mode);

}  // namespace amber
