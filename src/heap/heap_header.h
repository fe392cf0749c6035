// heap_header.h — the first pages of every heap: a header with the root table.
// It lives inside the heap, so checkpoints capture it like any other object.
// The allocator's region starts right after it (kAllocatorOffset).
//
// Thread-safety: guarded by Heap::Impl's root mutex.
#pragma once

#include <cstdint>

namespace amber {

inline constexpr char kHeapMagic[8] = {'A', 'M', 'B', 'E', 'R', 'H', 'P', '1'};
inline constexpr uint32_t kHeapVersion = 1;
inline constexpr uint32_t kMaxRoots = 64;

enum class RootState : uint64_t { kFree = 0, kReserved = 1, kConstructed = 2 };

struct RootEntry {
  uint64_t name_hash;  // FNV-1a of the full name
  char name[40];       // the name, truncated, NUL-terminated (for display)
  uint64_t offset;     // object's offset from the heap base
  uint64_t size;
  uint64_t type_tag;
  RootState state;
};
static_assert(sizeof(RootEntry) == 80);

struct HeapHeader {
  char magic[8];
  uint32_t version;
  uint32_t root_count;
  uint64_t allocator_offset;
  uint64_t reserved[5];
  RootEntry roots[kMaxRoots];
};
static_assert(sizeof(HeapHeader) == 64 + kMaxRoots * sizeof(RootEntry));

inline constexpr uint64_t kAllocatorOffset = 8192;  // two pages: header + root table
static_assert(sizeof(HeapHeader) <= kAllocatorOffset);

}  // namespace amber
