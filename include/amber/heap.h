// amber/heap.h — a persistent heap with whole-heap copy-on-write checkpoints.
//
//   auto heap = amber::Heap::Open("app.amber", options);   // creates, or recovers
//   Root* root = *(*heap)->Root<Root>();                    // constructed once
//   { amber::Section s(**heap); root->visits++; }            // no checkpoint splits this
//   (*heap)->Checkpoint();                                  // durable when it returns
//
// The heap is mapped at a fixed virtual address recorded in the store, so raw
// pointers between heap objects stay valid across restarts and standard
// containers (with amber::allocator) work unchanged. Pointers to code (vtables,
// function pointers) or to memory outside the heap are NOT valid after a restart:
// keep only plain data, heap pointers and amber containers in the heap.
//
// Thread-safety: all Heap member functions are thread-safe. Mutations from several
// threads must sit inside Sections so that a checkpoint never captures half of
// one; a single-threaded program with automatic checkpoints off may instead call
// Checkpoint() at its own quiet points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "amber/detail/gate_slot.h"
#include "amber/options.h"
#include "amber/status.h"

namespace amber {

class Section;

struct Stats {
  uint64_t checkpoints = 0;        // checkpoints made durable since open
  uint64_t checkpoint_errors = 0;  // checkpoints that failed (I/O error, full log, ...)
  uint64_t last_generation = 0;    // newest durable generation number
  uint64_t pages_written = 0;      // heap pages written to the log since open
  uint64_t bytes_written = 0;      // all bytes written to the store file since open
  uint64_t migrations = 0;         // times committed generations were copied home
  double pause_ms_min = 0, pause_ms_median = 0, pause_ms_p99 = 0, pause_ms_max = 0,
         pause_ms_last = 0;
  // Times Sections were held back: the dirty set neared the log size.
  uint64_t backpressure_holds = 0;
  uint64_t heap_capacity = 0;
  uint64_t heap_used = 0;       // high-water mark of the heap
  uint64_t heap_allocated = 0;  // bytes currently allocated
  uint64_t log_size = 0;
  uint64_t log_used = 0;       // bytes of the log holding unmigrated generations
  uint64_t staging_bytes = 0;  // memory held for captured-but-unwritten pages
  std::string tracking;        // "uffd-wp-async" or "full"
  std::string last_error;      // last checkpoint error, empty if none
};

class Heap {
 public:
  // Opens the store at `path`, creating it if missing (and allowed), replaying any
  // committed but unmigrated checkpoints, and mapping the heap at its recorded
  // address. On failure returns kNotFound (no store, create not allowed),
  // kCorruption (checksums or structure wrong), kNotSupported (format version, page
  // size or architecture), kBusy (open in another process), kAddressInUse (the
  // address range is taken in this process), kPermissionDenied (owner), kNoSpace,
  // kIOError, or kInvalidArgument (bad options).
  [[nodiscard]] static Result<std::unique_ptr<Heap>> Open(const std::string& path,
                                                          const Options& options = {});

  // Stops background threads; if options.checkpoint_on_close, takes a final
  // checkpoint first (errors ignored: use Close() to see them).
  ~Heap();
  Heap(const Heap&) = delete;
  Heap& operator=(const Heap&) = delete;

  // Takes a final checkpoint (if checkpoint_on_close), stops background work and
  // unmaps the heap. Returns the first error. The Heap is unusable afterwards.
  [[nodiscard]] Status Close();

  // The root object called `name`, constructed with T(args...) on first use (inside
  // a Section) and found again on every later open. kInvalidArgument if a root of
  // that name exists with a different size or type tag; kResourceExhausted if the
  // heap is full or the root table (64 entries) is.
  template <class T, class... Args>
  [[nodiscard]] Result<T*> Root(std::string_view name, Args&&... args);
  // Same, named after the type.
  template <class T>
  [[nodiscard]] Result<T*> Root() {
    return Root<T>(TypeName<T>());
  }

  // Raw heap memory. nullptr when the heap is full. Thread-safe.
  void* Allocate(size_t size, size_t align = alignof(std::max_align_t));
  void Deallocate(void* p);

  // Captures a consistent snapshot (waiting for open Sections to close) and returns
  // once it is durable. Must not be called from inside a Section
  // (kFailedPrecondition). I/O failures are returned; the previous checkpoint stays
  // intact and the pages are retried by the next checkpoint.
  [[nodiscard]] Status Checkpoint();
  // Returns once everything written before the call is durable. Concurrent callers
  // share checkpoints (group commit). Same errors as Checkpoint().
  [[nodiscard]] Status Commit();

  Stats GetStats() const;
  void* base() const;
  size_t capacity() const;
  bool Contains(const void* p) const;
  const std::string& path() const;

  // The heap that amber::allocator uses on this thread: the heap of the innermost
  // Section on this thread, else the most recently opened heap still open.
  static Heap* Current();
  // The open heap whose address range contains p, or null.
  static Heap* Containing(const void* p);

  class Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  explicit Heap(std::unique_ptr<Impl> impl);
  friend class Section;

  // Finds or reserves the root slot. *created says whether it must be constructed.
  Result<void*> RootSlot(std::string_view name, size_t size, size_t align, uint64_t type_tag,
                         bool* created);
  void RootConstructed(std::string_view name);
  std::mutex& RootMutex();
  bool InSection() const;  // this thread has a Section of this heap open
  // Out-of-line parts of Section (see detail/gate_slot.h).
  detail::GateSlot* GateThreadSlot();
  void GateWait(detail::GateSlot* s);
  void GateWake(detail::GateSlot* s);

  template <class T>
  static std::string_view TypeName() {
    // Stable for a given compiler and source; used only as a default root name.
    std::string_view f = __PRETTY_FUNCTION__;
    auto b = f.find("T = ");
    if (b == std::string_view::npos) return f;
    b += 4;
    auto e = f.find_first_of(";]", b);
    return f.substr(b, e - b);
  }
  template <class T>
  static uint64_t TypeTag() {
    uint64_t h = 1469598103934665603ull;  // FNV-1a of the type name and size
    for (char c : TypeName<T>()) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h ^ sizeof(T);
  }

  std::unique_ptr<Impl> impl_;
  detail::GateRef gate_;  // copied from the Impl's gate, for the inline Section
};

// RAII marker: "this thread is mutating the heap". A checkpoint waits until no
// Section is open and holds new ones back while it captures (usually well under
// a millisecond). Sections nest. Cheap: a few plain loads and stores to memory
// the thread owns when no checkpoint is running (no locked instruction where
// membarrier(2) is available). Do not call Checkpoint()/Commit() from inside one.
class Section {
 public:
  explicit Section(Heap& heap) : heap_(&heap) {
    // Inline: see detail/gate_slot.h for why.
    const detail::GateCache& c = detail::t_gate_cache;
    slot_ = c.gate_id == heap.gate_.id ? c.slot : heap.GateThreadSlot();
    if (detail::GateArrive(heap.gate_, slot_)) heap.GateWait(slot_);
    outer_ = t_current;
    if (outer_ != &heap) t_current = &heap;
  }
  ~Section() {
    if (outer_ != heap_) t_current = outer_;
    if (detail::GateDepart(heap_->gate_, slot_)) heap_->GateWake(slot_);
  }
  Section(const Section&) = delete;
  Section& operator=(const Section&) = delete;

 private:
  friend class Heap;
  // The heap of this thread's innermost open Section (Heap::Current()).
  static constinit thread_local Heap* t_current;

  Heap* heap_;
  detail::GateSlot* slot_;
  Heap* outer_;  // t_current when this Section began
};

template <class T, class... Args>
Result<T*> Heap::Root(std::string_view name, Args&&... args) {
  static_assert(!std::is_polymorphic_v<T>,
                "heap objects must not have virtual functions: vtable pointers are not "
                "valid after a restart");
  Section section(*this);
  std::lock_guard<std::mutex> lock(RootMutex());
  bool created = false;
  Result<void*> slot = RootSlot(name, sizeof(T), alignof(T), TypeTag<T>(), &created);
  if (!slot.ok()) return slot.status();
  T* obj = static_cast<T*>(*slot);
  if (created) {
    new (obj) T(std::forward<Args>(args)...);
    RootConstructed(name);
  }
  return obj;
}

}  // namespace amber
