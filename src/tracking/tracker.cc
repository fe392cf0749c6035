// tracker.cc — CreateTracker: validates the range and picks the implementation
// the TrackingMode asks for (see tracker.h).
//
// kAuto prefers "uffd-wp-async" and silently falls back to "full" when the
// kernel, the mapping or the process's privileges rule it out; the heap still
// works, checkpoints are just proportional to the heap rather than to what
// changed. kUffdAsync turns the same failure into kNotSupported, carrying the
// step that failed and the kernel's error, so a user who demanded fast
// tracking learns why they cannot have it.
//
// Thread-safety: CreateTracker is safe to call from any thread; the trackers
// it returns follow tracker.h.
#include "tracking/tracker.h"

#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "tracking/tracker_internal.h"

namespace amber {

Result<std::unique_ptr<DirtyTracker>> CreateTracker(Env* env, void* base, size_t len,
                                                    TrackingMode mode) {
  const uintptr_t page_size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t addr = reinterpret_cast<uintptr_t>(base);
  if (env == nullptr || base == nullptr || len == 0 || addr % page_size != 0 ||
      len % page_size != 0) {
    return InvalidArgument("CreateTracker: range must be non-empty and page aligned (base " +
                           std::to_string(addr) + ", length " + std::to_string(len) + ")");
  }

  switch (mode) {
    case TrackingMode::kFull:
      return tracking_internal::NewFullTracker(len);

    case TrackingMode::kUffdAsync: {
      Result<std::unique_ptr<DirtyTracker>> t = tracking_internal::NewUffdTracker(env, base, len);
      if (t.ok()) return t;
      return NotSupported(
          "tracking mode uffd-wp-async (userfaultfd asynchronous write-protect + PAGEMAP_SCAN) "
          "is unavailable: " +
          t.status().ToString());
    }

    case TrackingMode::kAuto: {
      Result<std::unique_ptr<DirtyTracker>> t = tracking_internal::NewUffdTracker(env, base, len);
      if (t.ok()) return t;
      // The failed attempt has already closed its descriptors, which also
      // undid any registration; the range is plain memory again.
      return tracking_internal::NewFullTracker(len);
    }
  }
  return InvalidArgument("CreateTracker: unknown tracking mode " +
                         std::to_string(static_cast<int>(mode)));
}

}  // namespace amber
