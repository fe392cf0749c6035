// full_tracker.cc — the "full" DirtyTracker: claims every page of the scanned
// range is dirty, every time.
//
// Why it exists: it is exact on any kernel (it can never miss a write), so it
// is the fallback when userfaultfd async write-protect is unavailable, and a
// reference the uffd tracker can be compared against. The price is paid by the
// checkpoint, which then copies and writes the whole used heap.
//
// Thread-safety: stateless apart from the length; Collect() may even run
// concurrently with itself, although the contract does not require it.
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tracking/tracker.h"
#include "tracking/tracker_internal.h"

namespace amber::tracking_internal {
namespace {

class FullTracker final : public DirtyTracker {
 public:
  explicit FullTracker(size_t len)
      : len_(len), page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
    assert((page_size_ & (page_size_ - 1)) == 0);
  }

  const char* name() const override { return "full"; }

  Status Collect(size_t scan_bytes, std::vector<uint64_t>* pages) override {
    assert(pages != nullptr);
    if (scan_bytes > len_) {
      return InvalidArgument("Collect: scan of " + std::to_string(scan_bytes) +
                             " bytes exceeds the tracked " + std::to_string(len_));
    }
    const uint64_t n = (uint64_t{scan_bytes} + page_size_ - 1) / page_size_;
    const size_t old_size = pages->size();
    pages->resize(old_size + n);
    uint64_t* out = pages->data() + old_size;
    for (uint64_t i = 0; i < n; ++i) out[i] = i;
    return Status::OK();
  }

  Result<uint64_t> CountDirty(size_t scan_bytes) override {
    if (scan_bytes > len_) return InvalidArgument("CountDirty: scan beyond the tracked range");
    return (uint64_t{scan_bytes} + page_size_ - 1) / page_size_;
  }

 private:
  const size_t len_;
  const size_t page_size_;
};

}  // namespace

std::unique_ptr<DirtyTracker> NewFullTracker(size_t len) {
  return std::make_unique<FullTracker>(len);
}

}  // namespace amber::tracking_internal
