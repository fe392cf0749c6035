// heap_allocator.h — the allocator whose every byte of metadata lives inside the
// region it manages, so the whole-heap snapshot captures it and recovery needs no
// allocator-specific logic.
//
// Layout (byte offsets from start(); page = 4 KiB, P = len / 4096):
//   [0, 4096)                 State header: magic, version, geometry, frontier,
//                             high-water mark, per-class chunk lists, free-run bins
//   [4096, +4*P, page-rounded) page map: one uint32 per page of the region, written
//                             only for pages below the frontier
//   [.., +32*(P/16), rounded) chunk descriptors, written only when a chunk is used
//   [data, len)               pages handed out as 64 KiB chunks or page runs
// Small sizes (<= 16 KiB) come from per-chunk intrusive free lists plus a bump
// pointer (so a fresh chunk is touched block by block, not threaded at once);
// large sizes are page runs, coalesced with free neighbours when freed and kept in
// size-binned free lists. Pages at or above the frontier have never been handed
// out. Memory beyond HighWater() has never been touched (so it costs nothing to
// track or checkpoint). Raw pointers are stored in the region, so it must always
// be mapped at the address it was formatted at (Attach checks).
//
// Thread-safety: Allocate/Deallocate/Check are thread-safe (an internal mutex that
// lives in process memory, not in the heap). The checkpointer holds mutex() while
// it captures so that it never snapshots the metadata half-updated; HighWater(),
// AllocatedBytes(), UsableSize(), start() and length() do not take the mutex and
// may be called while holding it. Check() takes it: do not call it while holding
// mutex().
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "amber/status.h"

namespace amber {

class HeapAllocator {
 public:
  // Formats a fresh region [start, start + len) (start 4 KiB aligned, len a
  // multiple of 4 KiB, memory zero-filled). Fails with kInvalidArgument if len is
  // too small to hold the metadata and at least one chunk. Writes only the first
  // page. The caller owns the returned object (delete it; the region is untouched).
  static Result<HeapAllocator*> Format(void* start, size_t len);
  // Attaches to a region formatted earlier (possibly by another process run).
  // Fails with kCorruption if the header's magic, version or sizes do not match.
  static Result<HeapAllocator*> Attach(void* start, size_t len);

  // Returns nullptr when the region is exhausted, or when align is not a power
  // of two (never throws). Any power-of-two align works (0 means 16); sizes get
  // 16-byte alignment at least. Size 0 is treated as 1.
  void* Allocate(size_t size, size_t align = 16);
  // p must come from Allocate on this region (or be null). Size is looked up.
  void Deallocate(void* p);
  // Usable size of an allocated block (its size class, or its run in whole pages).
  size_t UsableSize(const void* p) const;

  // Bytes from start() to the end of the highest page ever handed out or used
  // by metadata: the part of the region a dirty-page scan needs to look at.
  size_t HighWater() const;
  // Bytes currently allocated to callers (sum of usable block sizes).
  size_t AllocatedBytes() const;
  void* start() const;
  size_t length() const;

  // Held by the checkpointer during capture.
  std::mutex& mutex();

  // Runs structural checks (free lists inside the region, page map consistent).
  // Used by tests and `amber verify`. kCorruption with a precise message if not.
  // Takes mutex(); time linear in the metadata below the high-water mark.
  Status Check() const;

 private:
  struct State;    // the in-region header at start()
  struct Chunk;    // an in-region chunk descriptor
  struct FreeRun;  // the link node written at the start of a free page run

  HeapAllocator() = default;
  static Result<HeapAllocator*> Make(void* start, size_t len);
  // Magic, version, address, length and geometry of the header at start.
  static Status ValidateHeader(const void* start, size_t len);

  // All below require mu_ held.
  void* AllocateSmall(unsigned cls);
  void* AllocateLarge(size_t size, size_t align);
  Chunk* NewChunk(unsigned cls);
  void ReleaseChunk(Chunk* c);
  void LinkPartial(Chunk* c);
  void UnlinkPartial(Chunk* c);
  // Returns the first page of a run of n pages whose address is aligned to
  // `align` bytes (a power of two >= 4096), or 0 when the region is full.
  uint32_t AllocateRun(uint32_t n, size_t align);
  // Gives back pages [page, page + n), merging with free neighbours.
  void ReleaseRun(uint32_t page, uint32_t n);
  FreeRun* FindFreeRun(uint32_t need) const;
  void InsertFreeRun(uint32_t page, uint32_t n);
  void RemoveFreeRun(uint32_t page, uint32_t n);
  void AddAllocated(int64_t delta);
  Status CheckLocked() const;

  char* RunAddress(uint32_t page) const;
  uint32_t PageOf(const void* p) const;

  State* state_ = nullptr;  // in-region header (== start)
  char* base_ = nullptr;    // start of the region
  size_t len_ = 0;
  uint32_t* page_map_ = nullptr;  // in-region, derived from the header at Attach
  Chunk* chunks_ = nullptr;       // in-region, derived from the header at Attach
  mutable std::mutex mu_;
};

}  // namespace amber
