// tracker_internal.h — constructors of the two DirtyTracker implementations,
// shared between tracker.cc (which picks one, see CreateTracker) and the files
// that implement them. Not for use outside src/tracking.
//
// Thread-safety: as for CreateTracker (tracker.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "amber/status.h"
#include "env/env.h"
#include "tracking/tracker.h"

namespace amber::tracking_internal {

// How the uffd tracker splits a large Collect (see uffd_tracker.cc). The
// defaults are what the library uses; tests shrink them to run the two-pass
// path on small ranges.
struct UffdScanTuning {
  uint64_t parallel_scan_bytes = uint64_t{1} << 30;  // two passes from this long
  uint64_t chunk_bytes = uint64_t{64} << 20;         // pass 1's unit of work
  uint64_t merge_gap_bytes = uint64_t{2} << 20;      // pass 2 walks gaps shorter than this
};

// userfaultfd async write-protect + PAGEMAP_SCAN (uffd_tracker.cc). Fails if
// the kernel, the mapping or the process's privileges do not allow it; the
// message says which step failed and why. `base` and `len` are page aligned;
// so are the tuning's sizes (chunk_bytes > 0).
Result<std::unique_ptr<DirtyTracker>> NewUffdTracker(Env* env, void* base, size_t len,
                                                     const UffdScanTuning& tuning = {});

// Reports every page each time (full_tracker.cc). Never fails.
std::unique_ptr<DirtyTracker> NewFullTracker(size_t len);

}  // namespace amber::tracking_internal
