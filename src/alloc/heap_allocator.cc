// heap_allocator.cc — the persistent-heap allocator: small blocks from 64 KiB
// chunks with per-chunk free lists and bump pointers, large blocks as page runs
// with boundary-tagged coalescing. Every piece of metadata lives inside the
// managed region; see heap_allocator.h for the layout.
//
// Thread-safety: everything that reads or writes mutable metadata runs under mu_.
// HighWater() and AllocatedBytes() read single in-region words with relaxed atomic
// loads (written with atomic stores under mu_), so the checkpointer can call them
// while it holds mutex(). UsableSize() reads only metadata that cannot change
// while the block it is asked about stays allocated.
#include "alloc/heap_allocator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cassert>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace amber {
namespace {

constexpr uint32_t kPageShift = 12;
constexpr size_t kPageSize = size_t{1} << kPageShift;
constexpr uint32_t kChunkPages = 16;
constexpr size_t kChunkBytes = kChunkPages * kPageSize;  // 64 KiB
constexpr size_t kMaxSmall = 16384;
constexpr unsigned kNumClasses = 36;

// "AMBRALC1" read as a little-endian uint64.
constexpr uint64_t kMagic = 0x31434c4152424d41ull;
constexpr uint32_t kVersion = 1;

// Page map entries: 2 bits of kind, 30 bits of value. A chunk's 16 pages all hold
// kChunk | descriptor index (so any interior pointer finds its chunk); a page run
// (used or free) holds kind | length in its first and last page only, which is all
// that coalescing and the page-map walk need. Interior entries of runs are stale.
constexpr uint32_t kKindShift = 30;
constexpr uint32_t kValueMask = (uint32_t{1} << kKindShift) - 1;
constexpr uint32_t kKindNone = 0u << kKindShift;  // never written
constexpr uint32_t kKindChunk = 1u << kKindShift;
constexpr uint32_t kKindUsed = 2u << kKindShift;
constexpr uint32_t kKindFree = 3u << kKindShift;
constexpr uint32_t kKindMask = 3u << kKindShift;
// Page numbers and run lengths must fit the 30-bit value: regions up to ~4 TiB.
constexpr uint64_t kMaxPages = kValueMask;

// Size classes: 16..128 step 16, then 4 per doubling up to 16 KiB. Four classes
// per doubling bounds internal waste at 25% while keeping the table small.
constexpr std::array<uint32_t, kNumClasses> kClassSize = [] {
  std::array<uint32_t, kNumClasses> sizes{};
  for (unsigned i = 0; i < 8; ++i) sizes[i] = 16 * (i + 1);
  for (unsigned i = 8; i < kNumClasses; ++i) {
    unsigned lg = 7 + (i - 8) / 4;
    unsigned sub = (i - 8) % 4;
    sizes[i] = (1u << lg) + (sub + 1) * (1u << (lg - 2));
  }
  return sizes;
}();
static_assert(kClassSize[7] == 128 && kClassSize[8] == 160 && kClassSize[11] == 256);
static_assert(kClassSize[kNumClasses - 1] == kMaxSmall);

constexpr uint32_t ClassCapacity(unsigned cls) { return kChunkBytes / kClassSize[cls]; }

// size in [1, kMaxSmall].
inline unsigned ClassFor(size_t size) {
  if (size <= 128) return static_cast<unsigned>((size + 15) >> 4) - 1;
  size_t s = size - 1;
  unsigned lg = static_cast<unsigned>(std::bit_width(s)) - 1;  // s in [2^lg, 2^(lg+1))
  unsigned sub = static_cast<unsigned>((s - (size_t{1} << lg)) >> (lg - 2));
  return 8 + (lg - 7) * 4 + sub;
}

// Free-run bins: one per length for 1..32 pages, then 4 per doubling.
constexpr uint32_t kExactBins = 32;
constexpr uint32_t kNumBins = kExactBins + (30 - 5) * 4;
constexpr uint32_t kBitmapWords = (kNumBins + 63) / 64;

inline uint32_t BinFor(uint32_t pages) {
  assert(pages >= 1);
  if (pages <= kExactBins) return pages - 1;
  uint32_t lg = static_cast<uint32_t>(std::bit_width(pages)) - 1;  // >= 5
  uint32_t sub = (pages >> (lg - 2)) & 3;
  return kExactBins + (lg - 5) * 4 + sub;
}

std::string Fmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Fmt(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// Where the metadata goes for a region of `len` bytes (page numbers from start).
struct Geometry {
  uint64_t total_pages;
  uint32_t page_map_page;
  uint32_t chunk_page;
  uint32_t first_data_page;
  uint32_t max_chunks;
};

constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

Geometry Layout(size_t len) {
  Geometry g{};
  g.total_pages = len >> kPageShift;
  uint64_t pm_pages = DivRoundUp(g.total_pages * sizeof(uint32_t), kPageSize);
  // A chunk takes 16 pages, so there can never be more chunks than this.
  uint64_t max_chunks = g.total_pages / kChunkPages;
  uint64_t chunk_pages = DivRoundUp(max_chunks * 32, kPageSize);
  g.page_map_page = 1;
  g.chunk_page = static_cast<uint32_t>(1 + pm_pages);
  g.first_data_page = static_cast<uint32_t>(1 + pm_pages + chunk_pages);
  g.max_chunks = static_cast<uint32_t>(max_chunks);
  return g;
}

inline uint64_t LoadRelaxed(const uint64_t& v) {
  return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(v)).load(std::memory_order_relaxed);
}
inline uint32_t LoadRelaxed(const uint32_t& v) {
  return std::atomic_ref<uint32_t>(const_cast<uint32_t&>(v)).load(std::memory_order_relaxed);
}
template <class T>
inline void StoreRelaxed(T& v, T x) {
  std::atomic_ref<T>(v).store(x, std::memory_order_relaxed);
}

inline void* LoadLink(const void* block) {
  void* next;
  std::memcpy(&next, block, sizeof(next));
  return next;
}
inline void StoreLink(void* block, void* next) { std::memcpy(block, &next, sizeof(next)); }

}  // namespace

// The header at offset 0 of the region. Field offsets are part of the on-disk
// format (docs/format.md); only append, and bump kVersion on any change.
struct HeapAllocator::State {
  uint64_t magic;                     // 0: kMagic
  uint32_t version;                   // 8: kVersion
  uint32_t state_bytes;               // 12: sizeof(State)
  uint64_t base_address;              // 16: the address the region was formatted at
  uint64_t length;                    // 24: region bytes
  uint32_t total_pages;               // 32: length / 4096
  uint32_t page_map_page;             // 36: first page of the page map (1)
  uint32_t chunk_page;                // 40: first page of the chunk descriptor table
  uint32_t first_data_page;           // 44: first page that can be handed out
  uint32_t max_chunks;                // 48: descriptor slots in the table
  uint32_t frontier;                  // 52: pages >= frontier have never been handed out
                                      //     (or were given back to the top)
  uint32_t high_water;                // 56: highest frontier ever (pages); atomic access
  uint32_t chunks_used;               // 60: descriptor slots ever used (bump)
  uint32_t chunk_free;                // 64: first free descriptor slot + 1 (0: none)
  uint32_t reserved0;                 // 68
  uint64_t allocated_bytes;           // 72: sum of usable sizes handed out; atomic access
  uint64_t bin_bitmap[kBitmapWords];  // 80: bit b set iff bins[b] is non-empty
  uint32_t partial[kNumClasses];      // 104: per class, first chunk with room + 1
  FreeRun* bins[kNumBins];            // 248: per bin, first free run
};

// One 64 KiB chunk of equal-size blocks. Blocks [0, carved) have been handed out
// at least once; those not live are on free_list (a list threaded through the
// blocks' first 8 bytes). Blocks >= carved have never been touched.
struct HeapAllocator::Chunk {
  void* free_list;      // 0
  uint32_t start_page;  // 8: first page; 0 when the descriptor slot is free
  uint32_t next;        // 12: next chunk on the class list (or free slot) + 1
  uint32_t prev;        // 16: previous chunk on the class list + 1
  uint16_t carved;      // 20
  uint16_t live;        // 22
  uint8_t cls;          // 24
  uint8_t in_list;      // 25: on partial[cls] (has room), else full
  uint8_t reserved[6];  // 26
};

// Written at the start of the first page of every free run (not at the top:
// the frontier needs no node).
struct HeapAllocator::FreeRun {
  FreeRun* next;
  FreeRun* prev;
};

// ---------------------------------------------------------------------------
// Format / Attach

Result<HeapAllocator*> HeapAllocator::Make(void* start, size_t len) {
  // The in-region layout is part of the store format (docs/format.md).
  static_assert(offsetof(State, frontier) == 52 && offsetof(State, high_water) == 56);
  static_assert(offsetof(State, allocated_bytes) == 72);
  static_assert(offsetof(State, bin_bitmap) == 80);
  static_assert(offsetof(State, partial) == 104);
  static_assert(offsetof(State, bins) == 248);
  static_assert(sizeof(State) == 248 + 8 * kNumBins && sizeof(State) <= kPageSize);
  static_assert(sizeof(Chunk) == 32 && offsetof(Chunk, carved) == 20);
  auto* a = new (std::nothrow) HeapAllocator();
  if (a == nullptr) return ResourceExhausted("heap allocator: out of process memory");
  a->base_ = static_cast<char*>(start);
  a->len_ = len;
  a->state_ = static_cast<State*>(start);
  a->page_map_ =
      reinterpret_cast<uint32_t*>(a->base_ + (size_t{a->state_->page_map_page} << kPageShift));
  a->chunks_ = reinterpret_cast<Chunk*>(a->base_ + (size_t{a->state_->chunk_page} << kPageShift));
  return a;
}

Result<HeapAllocator*> HeapAllocator::Format(void* start, size_t len) {
  auto addr = reinterpret_cast<uintptr_t>(start);
  if (start == nullptr || addr % kPageSize != 0) {
    return InvalidArgument(Fmt("heap allocator: region start %p is not 4 KiB aligned", start));
  }
  if (len % kPageSize != 0) {
    return InvalidArgument(
        Fmt("heap allocator: region length %zu is not a multiple of 4 KiB", len));
  }
  if ((len >> kPageShift) > kMaxPages) {
    return InvalidArgument(Fmt("heap allocator: region length %zu exceeds the maximum %" PRIu64,
                               len, kMaxPages << kPageShift));
  }
  Geometry g = Layout(len);
  if (uint64_t{g.first_data_page} + kChunkPages > g.total_pages) {
    return InvalidArgument(
        Fmt("heap allocator: region of %zu bytes is too small: metadata takes "
            "%zu bytes and at least one 64 KiB chunk must fit",
            len, size_t{g.first_data_page} << kPageShift));
  }
  // Only the header page is written: the page map and chunk table are written
  // lazily, entry by entry, as pages and chunks come into use.
  auto* s = new (start) State();
  s->magic = kMagic;
  s->version = kVersion;
  s->state_bytes = sizeof(State);
  s->base_address = addr;
  s->length = len;
  s->total_pages = static_cast<uint32_t>(g.total_pages);
  s->page_map_page = g.page_map_page;
  s->chunk_page = g.chunk_page;
  s->first_data_page = g.first_data_page;
  s->max_chunks = g.max_chunks;
  s->frontier = g.first_data_page;
  s->high_water = g.first_data_page;
  return Make(start, len);
}

Status HeapAllocator::ValidateHeader(const void* start, size_t len) {
  const auto addr = reinterpret_cast<uintptr_t>(start);
  const State* s = static_cast<const State*>(start);
  if (s->magic != kMagic) {
    return Corruption(Fmt("heap allocator at %p: bad magic 0x%016" PRIx64 " (expected 0x%016" PRIx64
                          "): the region was never formatted or its header is damaged",
                          start, s->magic, kMagic));
  }
  if (s->version != kVersion) {
    return Corruption(Fmt("heap allocator at %p: header version %" PRIu32
                          ", this build understands version %" PRIu32,
                          start, s->version, kVersion));
  }
  if (s->state_bytes != sizeof(State)) {
    return Corruption(Fmt("heap allocator at %p: header size %" PRIu32 ", expected %zu", start,
                          s->state_bytes, sizeof(State)));
  }
  if (s->base_address != addr) {
    return Corruption(Fmt("heap allocator at %p: region was formatted at 0x%" PRIx64
                          "; its internal pointers are only valid there",
                          start, s->base_address));
  }
  if (s->length != len) {
    return Corruption(Fmt("heap allocator at %p: header says the region is %" PRIu64
                          " bytes, attached with %zu",
                          start, s->length, len));
  }
  Geometry g = Layout(len);
  auto field = [&](const char* name, uint64_t got, uint64_t want) -> Status {
    if (got == want) return Status::OK();
    return Corruption(Fmt("heap allocator at %p: header field %s is %" PRIu64 ", expected %" PRIu64
                          " for a region of %zu bytes",
                          start, name, got, want, len));
  };
  AMBER_RETURN_IF_ERROR(field("total_pages", s->total_pages, g.total_pages));
  AMBER_RETURN_IF_ERROR(field("page_map_page", s->page_map_page, g.page_map_page));
  AMBER_RETURN_IF_ERROR(field("chunk_page", s->chunk_page, g.chunk_page));
  AMBER_RETURN_IF_ERROR(field("first_data_page", s->first_data_page, g.first_data_page));
  AMBER_RETURN_IF_ERROR(field("max_chunks", s->max_chunks, g.max_chunks));
  if (s->frontier < s->first_data_page || s->frontier > s->total_pages) {
    return Corruption(Fmt("heap allocator at %p: frontier page %" PRIu32
                          " outside the data pages [%" PRIu32 ", %" PRIu32 "]",
                          start, s->frontier, s->first_data_page, s->total_pages));
  }
  if (s->high_water < s->frontier || s->high_water > s->total_pages) {
    return Corruption(Fmt("heap allocator at %p: high-water page %" PRIu32
                          " below the frontier %" PRIu32 " or beyond the last page %" PRIu32,
                          start, s->high_water, s->frontier, s->total_pages));
  }
  if (s->chunks_used > s->max_chunks || s->chunk_free > s->chunks_used) {
    return Corruption(Fmt("heap allocator at %p: chunk slots used %" PRIu32 " (max %" PRIu32
                          "), first free slot %" PRIu32 " out of range",
                          start, s->chunks_used, s->max_chunks, s->chunk_free));
  }
  return Status::OK();
}

Result<HeapAllocator*> HeapAllocator::Attach(void* start, size_t len) {
  auto addr = reinterpret_cast<uintptr_t>(start);
  if (start == nullptr || addr % kPageSize != 0) {
    return InvalidArgument(Fmt("heap allocator: region start %p is not 4 KiB aligned", start));
  }
  if (len < kPageSize || len % kPageSize != 0 || (len >> kPageShift) > kMaxPages) {
    return InvalidArgument(
        Fmt("heap allocator: region length %zu is not a multiple of 4 KiB "
            "between 4 KiB and %" PRIu64 " bytes",
            len, kMaxPages << kPageShift));
  }
  AMBER_RETURN_IF_ERROR(ValidateHeader(start, len));
  return Make(start, len);
}

// ---------------------------------------------------------------------------
// Accessors

void* HeapAllocator::start() const { return base_; }
size_t HeapAllocator::length() const { return len_; }
std::mutex& HeapAllocator::mutex() { return mu_; }

size_t HeapAllocator::HighWater() const {
  return size_t{LoadRelaxed(state_->high_water)} << kPageShift;
}

size_t HeapAllocator::AllocatedBytes() const { return LoadRelaxed(state_->allocated_bytes); }

inline char* HeapAllocator::RunAddress(uint32_t page) const {
  return base_ + (size_t{page} << kPageShift);
}

inline uint32_t HeapAllocator::PageOf(const void* p) const {
  return static_cast<uint32_t>((static_cast<const char*>(p) - base_) >> kPageShift);
}

inline void HeapAllocator::AddAllocated(int64_t delta) {
  // Under mu_: a plain read-modify-write, published with an atomic store.
  StoreRelaxed(state_->allocated_bytes,
               static_cast<uint64_t>(static_cast<int64_t>(state_->allocated_bytes) + delta));
}

size_t HeapAllocator::UsableSize(const void* p) const {
  auto off = static_cast<size_t>(static_cast<const char*>(p) - base_);
  if (p == nullptr || p < base_ || off >= len_) return 0;
  uint32_t e = page_map_[off >> kPageShift];
  switch (e & kKindMask) {
    case kKindChunk:
      return kClassSize[chunks_[e & kValueMask].cls];
    case kKindUsed:
      return size_t{e & kValueMask} << kPageShift;
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------
// Allocate / Deallocate

void* HeapAllocator::Allocate(size_t size, size_t align) {
  if (align == 0) align = 16;
  if ((align & (align - 1)) != 0) return nullptr;
  if (size <= kMaxSmall && align <= kPageSize) {
    unsigned cls = ClassFor(size == 0 ? 1 : size);
    // Chunks are page aligned, so a block is aligned to `align` whenever its class
    // size is a multiple of it; every power of two up to 16 KiB is a class.
    while ((kClassSize[cls] & (align - 1)) != 0) ++cls;
    std::lock_guard<std::mutex> lock(mu_);
    return AllocateSmall(cls);
  }
  std::lock_guard<std::mutex> lock(mu_);
  return AllocateLarge(size, align);
}

inline void* HeapAllocator::AllocateSmall(unsigned cls) {
  uint32_t head = state_->partial[cls];
  Chunk* c;
  if (head != 0) {
    c = &chunks_[head - 1];
  } else {
    c = NewChunk(cls);
    if (c == nullptr) return nullptr;
  }
  const uint32_t size = kClassSize[cls];
  void* block = c->free_list;
  if (block != nullptr) {
    c->free_list = LoadLink(block);
  } else {
    // Bump: the next never-used block. Fresh chunk memory is touched only here.
    assert(c->carved < ClassCapacity(cls));
    block = RunAddress(c->start_page) + size_t{c->carved} * size;
    ++c->carved;
  }
  ++c->live;
  if (c->free_list == nullptr && c->carved == ClassCapacity(cls)) UnlinkPartial(c);
  AddAllocated(size);
  return block;
}

void* HeapAllocator::AllocateLarge(size_t size, size_t align) {
  if (size > len_ || align > len_) return nullptr;
  uint64_t pages = DivRoundUp(size == 0 ? 1 : size, kPageSize);
  uint32_t page = AllocateRun(static_cast<uint32_t>(pages), align < kPageSize ? kPageSize : align);
  if (page == 0) return nullptr;
  AddAllocated(static_cast<int64_t>(pages << kPageShift));
  return RunAddress(page);
}

void HeapAllocator::Deallocate(void* p) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  char* cp = static_cast<char*>(p);
  auto off = static_cast<size_t>(cp - base_);
  if (cp < base_ || off >= len_) {
    assert(!"HeapAllocator::Deallocate: pointer outside the region");
    return;
  }
  uint32_t page = static_cast<uint32_t>(off >> kPageShift);
  if (page < state_->first_data_page || page >= state_->frontier) {
    assert(!"HeapAllocator::Deallocate: pointer outside the handed-out pages");
    return;
  }
  uint32_t e = page_map_[page];
  switch (e & kKindMask) {
    case kKindChunk: {
      Chunk* c = &chunks_[e & kValueMask];
      const uint32_t size = kClassSize[c->cls];
      assert(c->live > 0);
      assert(static_cast<size_t>(cp - RunAddress(c->start_page)) % size == 0);
      StoreLink(p, c->free_list);
      c->free_list = p;
      --c->live;
      if (!c->in_list) LinkPartial(c);  // it was full: it has room again
      // Give an empty chunk back to the page runs unless it is the class's only
      // chunk with room (keeps a free/alloc ping-pong from churning chunks).
      if (c->live == 0 && (c->next != 0 || c->prev != 0)) {
        UnlinkPartial(c);
        ReleaseChunk(c);
      }
      AddAllocated(-static_cast<int64_t>(size));
      return;
    }
    case kKindUsed: {
      assert(off % kPageSize == 0);
      uint32_t n = e & kValueMask;
      ReleaseRun(page, n);
      AddAllocated(-static_cast<int64_t>(size_t{n} << kPageShift));
      return;
    }
    default:
      assert(!"HeapAllocator::Deallocate: pointer to a free page (double free?)");
      return;
  }
}

// ---------------------------------------------------------------------------
// Chunks

HeapAllocator::Chunk* HeapAllocator::NewChunk(unsigned cls) {
  uint32_t page = AllocateRun(kChunkPages, kPageSize);
  if (page == 0) return nullptr;
  uint32_t idx;
  if (state_->chunk_free != 0) {
    idx = state_->chunk_free - 1;
    state_->chunk_free = chunks_[idx].next;
  } else {
    // Cannot run out: every chunk holds 16 of the pages max_chunks was sized by.
    assert(state_->chunks_used < state_->max_chunks);
    idx = state_->chunks_used++;
  }
  for (uint32_t i = 0; i < kChunkPages; ++i) page_map_[page + i] = kKindChunk | idx;
  Chunk* c = new (&chunks_[idx]) Chunk();
  c->start_page = page;
  c->cls = static_cast<uint8_t>(cls);
  LinkPartial(c);
  return c;
}

void HeapAllocator::ReleaseChunk(Chunk* c) {
  uint32_t page = c->start_page;
  c->start_page = 0;
  c->free_list = nullptr;
  c->next = state_->chunk_free;
  state_->chunk_free = static_cast<uint32_t>(c - chunks_) + 1;
  ReleaseRun(page, kChunkPages);
}

inline void HeapAllocator::LinkPartial(Chunk* c) {
  uint32_t id = static_cast<uint32_t>(c - chunks_) + 1;
  uint32_t& head = state_->partial[c->cls];
  c->prev = 0;
  c->next = head;
  if (head != 0) chunks_[head - 1].prev = id;
  head = id;
  c->in_list = 1;
}

inline void HeapAllocator::UnlinkPartial(Chunk* c) {
  if (c->prev != 0) {
    chunks_[c->prev - 1].next = c->next;
  } else {
    state_->partial[c->cls] = c->next;
  }
  if (c->next != 0) chunks_[c->next - 1].prev = c->prev;
  c->next = c->prev = 0;
  c->in_list = 0;
}

// ---------------------------------------------------------------------------
// Page runs

void HeapAllocator::InsertFreeRun(uint32_t page, uint32_t n) {
  assert(n >= 1 && page + n <= state_->frontier);
  page_map_[page] = kKindFree | n;
  page_map_[page + n - 1] = kKindFree | n;
  uint32_t b = BinFor(n);
  auto* node = new (RunAddress(page)) FreeRun{state_->bins[b], nullptr};
  if (node->next != nullptr) node->next->prev = node;
  state_->bins[b] = node;
  state_->bin_bitmap[b / 64] |= uint64_t{1} << (b % 64);
}

void HeapAllocator::RemoveFreeRun(uint32_t page, uint32_t n) {
  auto* node = reinterpret_cast<FreeRun*>(RunAddress(page));
  uint32_t b = BinFor(n);
  if (node->prev != nullptr) {
    node->prev->next = node->next;
  } else {
    assert(state_->bins[b] == node);
    state_->bins[b] = node->next;
  }
  if (node->next != nullptr) node->next->prev = node->prev;
  if (state_->bins[b] == nullptr) state_->bin_bitmap[b / 64] &= ~(uint64_t{1} << (b % 64));
}

HeapAllocator::FreeRun* HeapAllocator::FindFreeRun(uint32_t need) const {
  auto length = [&](const FreeRun* r) { return page_map_[PageOf(r)] & kValueMask; };
  uint32_t b = BinFor(need);
  if (b < kExactBins) {
    if (state_->bins[b] != nullptr) return state_->bins[b];
  } else {
    // A range bin: first fit among its first few runs.
    int budget = 8;
    for (FreeRun* r = state_->bins[b]; r != nullptr && budget-- > 0; r = r->next) {
      if (length(r) >= need) return r;
    }
  }
  // Every run in a higher bin is long enough.
  for (uint32_t w = (b + 1) / 64; w < kBitmapWords; ++w) {
    uint64_t bits = state_->bin_bitmap[w];
    if (w == (b + 1) / 64) bits &= ~uint64_t{0} << ((b + 1) % 64);
    if (bits != 0) return state_->bins[w * 64 + static_cast<uint32_t>(std::countr_zero(bits))];
  }
  if (b >= kExactBins) {
    for (FreeRun* r = state_->bins[b]; r != nullptr; r = r->next) {
      if (length(r) >= need) return r;
    }
  }
  return nullptr;
}

uint32_t HeapAllocator::AllocateRun(uint32_t n, size_t align) {
  assert(n >= 1 && align >= kPageSize && (align & (align - 1)) == 0);
  const uint64_t align_pages = align >> kPageShift;
  if (n > kMaxPages || align_pages > kMaxPages) return 0;
  const uint64_t base_page = reinterpret_cast<uintptr_t>(base_) >> kPageShift;
  auto align_up = [&](uint64_t page) {
    return ((base_page + page + align_pages - 1) & ~(align_pages - 1)) - base_page;
  };
  uint64_t need = n + align_pages - 1;  // any run this long holds an aligned n pages
  uint64_t s;
  FreeRun* r = need <= kMaxPages ? FindFreeRun(static_cast<uint32_t>(need)) : nullptr;
  if (r != nullptr) {
    uint32_t rp = PageOf(r);
    uint32_t m = page_map_[rp] & kValueMask;
    RemoveFreeRun(rp, m);
    s = align_up(rp);
    if (s > rp) InsertFreeRun(rp, static_cast<uint32_t>(s - rp));
    uint64_t end = s + n;
    if (end < uint64_t{rp} + m)
      InsertFreeRun(static_cast<uint32_t>(end), rp + m - static_cast<uint32_t>(end));
  } else {
    // Grow into never-used pages at the frontier.
    uint64_t f = state_->frontier;
    s = align_up(f);
    if (s + n > state_->total_pages) return 0;
    state_->frontier = static_cast<uint32_t>(s + n);
    if (state_->frontier > state_->high_water) StoreRelaxed(state_->high_water, state_->frontier);
    if (s > f) InsertFreeRun(static_cast<uint32_t>(f), static_cast<uint32_t>(s - f));
  }
  uint32_t sp = static_cast<uint32_t>(s);
  page_map_[sp] = kKindUsed | n;
  page_map_[sp + n - 1] = kKindUsed | n;
  return sp;
}

void HeapAllocator::ReleaseRun(uint32_t page, uint32_t n) {
  // Boundary tags: the page before a run is the last page of its left neighbour,
  // the page after is the first page of its right neighbour.
  if (page > state_->first_data_page) {
    uint32_t e = page_map_[page - 1];
    if ((e & kKindMask) == kKindFree) {
      uint32_t left = e & kValueMask;
      RemoveFreeRun(page - left, left);
      page -= left;
      n += left;
    }
  }
  if (page + n < state_->frontier) {
    uint32_t e = page_map_[page + n];
    if ((e & kKindMask) == kKindFree) {
      uint32_t right = e & kValueMask;
      RemoveFreeRun(page + n, right);
      n += right;
    }
  }
  if (page + n == state_->frontier) {
    // Back to never-used space: no node to write, and the top can shrink.
    state_->frontier = page;
    return;
  }
  InsertFreeRun(page, n);
}

// ---------------------------------------------------------------------------
// Check

Status HeapAllocator::Check() const {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    return CheckLocked();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("heap allocator check: out of process memory");
  }
}

Status HeapAllocator::CheckLocked() const {
  AMBER_RETURN_IF_ERROR(ValidateHeader(base_, len_));
  const State& s = *state_;
  auto bad = [&](const std::string& m) { return Corruption("heap allocator check: " + m); };

  // Walk the page map: runs and chunks must tile [first_data_page, frontier).
  std::vector<uint32_t> free_heads;  // ascending
  uint64_t allocated = 0;
  uint32_t chunks_seen = 0, listed_seen = 0;
  bool prev_free = false;
  for (uint64_t p = s.first_data_page; p < s.frontier;) {
    const uint32_t e = page_map_[p];
    const uint32_t v = e & kValueMask;
    switch (e & kKindMask) {
      case kKindChunk: {
        if (v >= s.chunks_used) {
          return bad(Fmt("page %" PRIu64 " names chunk %" PRIu32 " but only %" PRIu32
                         " chunk slots were ever used",
                         p, v, s.chunks_used));
        }
        const Chunk& c = chunks_[v];
        if (c.start_page != p) {
          return bad(Fmt("page %" PRIu64 " starts chunk %" PRIu32 " whose descriptor says it "
                         "starts at page %" PRIu32,
                         p, v, c.start_page));
        }
        if (p + kChunkPages > s.frontier) {
          return bad(Fmt("chunk %" PRIu32 " at page %" PRIu64 " extends past the frontier %" PRIu32,
                         v, p, s.frontier));
        }
        for (uint32_t i = 1; i < kChunkPages; ++i) {
          if (page_map_[p + i] != e) {
            return bad(Fmt("page %" PRIu64 " inside chunk %" PRIu32
                           " has page-map entry 0x%08" PRIx32 ", expected 0x%08" PRIx32,
                           p + i, v, page_map_[p + i], e));
          }
        }
        if (c.cls >= kNumClasses) {
          return bad(
              Fmt("chunk %" PRIu32 " has size class %u (max %u)", v, c.cls, kNumClasses - 1));
        }
        const uint32_t size = kClassSize[c.cls];
        const uint32_t cap = ClassCapacity(c.cls);
        if (c.carved > cap || c.live > c.carved) {
          return bad(Fmt("chunk %" PRIu32 " (%" PRIu32 "-byte blocks): carved %u, live %u, "
                         "capacity %" PRIu32,
                         v, size, c.carved, c.live, cap));
        }
        const char* lo = RunAddress(c.start_page);
        const char* hi = lo + size_t{c.carved} * size;
        const uint32_t expect_free = c.carved - c.live;
        uint32_t count = 0;
        for (const void* f = c.free_list; f != nullptr; f = LoadLink(f)) {
          const char* fp = static_cast<const char*>(f);
          if (fp < lo || fp >= hi || (fp - lo) % size != 0) {
            return bad(Fmt(
                "chunk %" PRIu32 " (%" PRIu32 "-byte blocks at %p..%p): free-list entry #%" PRIu32
                " is %p, not a carved block of this chunk",
                v, size, static_cast<const void*>(lo), static_cast<const void*>(hi), count, f));
          }
          if (++count > expect_free) {
            return bad(Fmt("chunk %" PRIu32 " (%" PRIu32 "-byte blocks): free list longer than the "
                           "%" PRIu32 " free blocks (cycle or double free)",
                           v, size, expect_free));
          }
        }
        if (count != expect_free) {
          return bad(Fmt("chunk %" PRIu32 " (%" PRIu32 "-byte blocks): free list has %" PRIu32
                         " blocks, carved - live = %" PRIu32,
                         v, size, count, expect_free));
        }
        const bool full = c.free_list == nullptr && c.carved == cap;
        if (!c.in_list && !full) {
          return bad(Fmt("chunk %" PRIu32 " has room but is not on its class list", v));
        }
        if (c.in_list) ++listed_seen;
        ++chunks_seen;
        allocated += uint64_t{c.live} * size;
        prev_free = false;
        p += kChunkPages;
        break;
      }
      case kKindUsed:
      case kKindFree: {
        const bool is_free = (e & kKindMask) == kKindFree;
        if (v == 0 || p + v > s.frontier) {
          return bad(Fmt("%s run at page %" PRIu64 " has length %" PRIu32 " (frontier %" PRIu32 ")",
                         is_free ? "free" : "used", p, v, s.frontier));
        }
        if (page_map_[p + v - 1] != e) {
          return bad(Fmt("%s run at page %" PRIu64 " of %" PRIu32 " pages: last page's entry is "
                         "0x%08" PRIx32 ", expected 0x%08" PRIx32,
                         is_free ? "free" : "used", p, v, page_map_[p + v - 1], e));
        }
        if (is_free) {
          if (prev_free) {
            return bad(
                Fmt("free run at page %" PRIu64 " follows another free run (not coalesced)", p));
          }
          free_heads.push_back(static_cast<uint32_t>(p));
        } else {
          allocated += uint64_t{v} << kPageShift;
        }
        prev_free = is_free;
        p += v;
        break;
      }
      case kKindNone:
      default:
        return bad(Fmt("page %" PRIu64 " below the frontier %" PRIu32 " has no page-map entry", p,
                       s.frontier));
    }
  }
  if (prev_free) return bad("the last run below the frontier is free (should have been absorbed)");
  if (allocated != s.allocated_bytes) {
    return bad(Fmt("blocks in use add up to %" PRIu64 " bytes, header says %" PRIu64, allocated,
                   s.allocated_bytes));
  }

  // Chunk slots: those not holding a chunk are on the free-slot list.
  uint32_t free_slots = 0;
  for (uint32_t id = s.chunk_free; id != 0; id = chunks_[id - 1].next) {
    if (id > s.chunks_used) {
      return bad(Fmt("free chunk-slot list names slot %" PRIu32 " beyond the %" PRIu32 " used",
                     id - 1, s.chunks_used));
    }
    if (chunks_[id - 1].start_page != 0) {
      return bad(Fmt("chunk slot %" PRIu32
                     " is on the free-slot list but holds the chunk at page %" PRIu32,
                     id - 1, chunks_[id - 1].start_page));
    }
    if (++free_slots > s.chunks_used) return bad("free chunk-slot list has a cycle");
  }
  if (chunks_seen + free_slots != s.chunks_used) {
    return bad(Fmt("%" PRIu32 " chunks in the page map + %" PRIu32 " free slots != %" PRIu32
                   " slots used",
                   chunks_seen, free_slots, s.chunks_used));
  }

  // Class lists: exactly the chunks with room, each of the right class.
  uint32_t listed = 0;
  for (unsigned cls = 0; cls < kNumClasses; ++cls) {
    uint32_t prev = 0;
    for (uint32_t id = s.partial[cls]; id != 0; id = chunks_[id - 1].next) {
      if (id > s.chunks_used) {
        return bad(Fmt("class %u (%" PRIu32 " bytes) list names chunk slot %" PRIu32
                       " beyond the %" PRIu32 " used",
                       cls, kClassSize[cls], id - 1, s.chunks_used));
      }
      const Chunk& c = chunks_[id - 1];
      if (c.start_page < s.first_data_page || c.start_page >= s.frontier ||
          page_map_[c.start_page] != (kKindChunk | (id - 1))) {
        return bad(Fmt("class %u list names chunk slot %" PRIu32 " which holds no live chunk", cls,
                       id - 1));
      }
      if (c.cls != cls || !c.in_list || c.prev != prev) {
        return bad(Fmt("class %u list: chunk %" PRIu32 " has class %u, in_list %u, prev %" PRIu32
                       " (expected prev %" PRIu32 ")",
                       cls, id - 1, c.cls, c.in_list, c.prev, prev));
      }
      if (c.free_list == nullptr && c.carved == ClassCapacity(cls)) {
        return bad(Fmt("class %u list holds chunk %" PRIu32 " which is full", cls, id - 1));
      }
      if (++listed > listed_seen) return bad(Fmt("class %u list has a cycle", cls));
      prev = id;
    }
  }
  if (listed != listed_seen) {
    return bad(Fmt("%" PRIu32 " chunks are marked listed but the class lists hold %" PRIu32,
                   listed_seen, listed));
  }

  // Free-run bins: exactly the free runs of the page map, each in its bin.
  size_t binned = 0;
  const char* data_lo = RunAddress(s.first_data_page);
  const char* data_hi = RunAddress(s.frontier);
  for (uint32_t b = 0; b < kNumBins; ++b) {
    const bool bit = (s.bin_bitmap[b / 64] >> (b % 64)) & 1;
    if (bit != (s.bins[b] != nullptr)) {
      return bad(Fmt("bin %" PRIu32 " bitmap bit %d disagrees with its list", b, bit ? 1 : 0));
    }
    const FreeRun* prev = nullptr;
    for (const FreeRun* r = s.bins[b]; r != nullptr; r = r->next) {
      const char* rp = reinterpret_cast<const char*>(r);
      if (rp < data_lo || rp >= data_hi || (rp - base_) % kPageSize != 0) {
        return bad(Fmt("bin %" PRIu32 " holds %p, not a page below the frontier", b,
                       static_cast<const void*>(r)));
      }
      uint32_t page = PageOf(r);
      uint32_t e = page_map_[page];
      auto it = std::lower_bound(free_heads.begin(), free_heads.end(), page);
      if (it == free_heads.end() || *it != page || (e & kKindMask) != kKindFree) {
        return bad(
            Fmt("bin %" PRIu32 " holds page %" PRIu32 " which does not start a free run", b, page));
      }
      if (BinFor(e & kValueMask) != b) {
        return bad(Fmt("free run at page %" PRIu32 " of %" PRIu32 " pages is in bin %" PRIu32
                       ", belongs in %" PRIu32,
                       page, e & kValueMask, b, BinFor(e & kValueMask)));
      }
      if (r->prev != prev) {
        return bad(
            Fmt("bin %" PRIu32 ": free run at page %" PRIu32 " has a wrong back link", b, page));
      }
      if (++binned > free_heads.size()) return bad(Fmt("bin %" PRIu32 " has a cycle", b));
      prev = r;
    }
  }
  if (binned != free_heads.size()) {
    return bad(Fmt("%zu free runs in the page map but %zu in the bins", free_heads.size(), binned));
  }
  return Status::OK();
}

}  // namespace amber
