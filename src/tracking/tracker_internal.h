// tracker_internal.h — constructors of the two DirtyTracker implementations,
// shared between tracker.cc (which picks one, see CreateTracker) and the files
// that implement them. Not for use outside src/tracking.
//
// Thread-safety: as for CreateTracker (tracker.h).
#pragma once

#include <cstddef>
#include <memory>

#include "amber/status.h"
#include "env/env.h"
#include "tracking/tracker.h"

namespace amber::tracking_internal {

// userfaultfd async write-protect + PAGEMAP_SCAN (uffd_tracker.cc). Fails if
// the kernel, the mapping or the process's privileges do not allow it; the
// message says which step failed and why. `base` and `len` are page aligned.
Result<std::unique_ptr<DirtyTracker>> NewUffdTracker(Env* env, void* base, size_t len);

// Reports every page each time (full_tracker.cc). Never fails.
std::unique_ptr<DirtyTracker> NewFullTracker(size_t len);

}  // namespace amber::tracking_internal
