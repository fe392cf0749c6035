// heap_allocator.h — the allocator whose every byte of metadata lives inside the
// region it manages, so the whole-heap snapshot captures it and recovery needs no
// allocator-specific logic.
//
// Layout: the region starts with an AllocatorState header (magic, size-class free
// lists, the high-water mark), followed by a page map (one 32-bit entry per 4 KiB
// page saying which size class or large run owns it), followed by the pages that
// are handed out. Small sizes come from per-class free lists carved out of 64 KiB
// chunks; large sizes are page runs. Memory beyond the high-water mark has never
// been touched (so it costs nothing to track or checkpoint).
//
// Thread-safety: Allocate/Deallocate are thread-safe (an internal mutex that lives
// in process memory, not in the heap). The checkpointer holds mutex() while it
// captures so that it never snapshots the metadata half-updated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "amber/status.h"

namespace amber {

class HeapAllocator {
 public:
  // Formats a fresh region [start, start + len) (start 4 KiB aligned, memory
  // zero-filled). Fails with kInvalidArgument if len is too small to hold the
  // metadata and at least one chunk.
  static Result<HeapAllocator*> Format(void* start, size_t len);
  // Attaches to a region formatted earlier (possibly by another process run).
  // Fails with kCorruption if the header's magic, version or sizes do not match.
  static Result<HeapAllocator*> Attach(void* start, size_t len);

  // Returns nullptr when the region is exhausted (never throws). `align` is a
  // power of two; sizes up to 16 bytes get 16-byte alignment at least.
  void* Allocate(size_t size, size_t align = 16);
  // p must come from Allocate on this region (or be null). Size is looked up.
  void Deallocate(void* p);
  // Usable size of an allocated block.
  size_t UsableSize(const void* p) const;

  // Bytes from start() to the end of the highest page ever handed out or used
  // by metadata: the part of the region a dirty-page scan needs to look at.
  size_t HighWater() const;
  // Bytes currently allocated to callers (sum of block sizes).
  size_t AllocatedBytes() const;
  void* start() const;
  size_t length() const;

  // Held by the checkpointer during capture.
  std::mutex& mutex();

  // Runs structural checks (free lists inside the region, page map consistent).
  // Used by tests and `amber verify`. kCorruption with a precise message if not.
  Status Check() const;

 private:
  HeapAllocator() = default;
};

}  // namespace amber
