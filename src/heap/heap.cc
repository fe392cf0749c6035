// heap.cc — Heap: opening (store → recovery → mapping → tracking → allocator →
// checkpointer), roots, sections, and the registry that lets the stateless
// amber::allocator find its heap.
#include "amber/heap.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "alloc/heap_allocator.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/gate.h"
#include "checkpoint/rate_limiter.h"
#include "heap/heap_header.h"
#include "store/store.h"
#include "tracking/tracker.h"
#include "util/hex.h"

namespace amber {

using format::kPageSize;

class Heap::Impl {
 public:
  Env* env = nullptr;
  Options options;
  std::unique_ptr<Store> store;
  char* base = nullptr;
  size_t capacity = 0;
  bool mapped = false;
  std::unique_ptr<DirtyTracker> tracker;
  std::unique_ptr<HeapAllocator> allocator;  // the process-side handle; state is in the heap
  HeapHeader* header = nullptr;
  Gate gate;
  std::unique_ptr<Checkpointer> checkpointer;
  std::unique_ptr<RateLimiter> limiter;
  std::mutex root_mu;
  bool closed = false;
  Heap* owner = nullptr;
  std::string path;

  ~Impl() {
    checkpointer.reset();
    if (store) store->SetRateLimiter(nullptr);
    tracker.reset();
    if (mapped) env->Unmap(base, capacity).IgnoreError();
  }
};

namespace {

// Open heaps, for Heap::Containing/Current. Fixed slots so lookups are lock-free.
constexpr int kMaxHeaps = 16;
struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<Heap*> heap{nullptr};
};
std::array<Slot, kMaxHeaps> g_heaps;
std::atomic<Heap*> g_last{nullptr};
std::mutex g_registry_mu;

uint64_t Fnv(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

Status Register(Heap* heap, uintptr_t begin, uintptr_t end) {
  std::lock_guard<std::mutex> l(g_registry_mu);
  for (auto& s : g_heaps) {
    if (s.heap.load() == nullptr) {
      s.begin.store(begin);
      s.end.store(end);
      s.heap.store(heap);
      g_last.store(heap);
      return Status::OK();
    }
  }
  return ResourceExhausted("too many heaps open in this process (16)");
}

void Unregister(Heap* heap) {
  std::lock_guard<std::mutex> l(g_registry_mu);
  Heap* newest = nullptr;
  for (auto& s : g_heaps) {
    if (s.heap.load() == heap) {
      s.heap.store(nullptr);
      s.begin.store(0);
      s.end.store(0);
    } else if (s.heap.load() != nullptr) {
      newest = s.heap.load();
    }
  }
  Heap* expected = heap;
  g_last.compare_exchange_strong(expected, newest);
}

}  // namespace

Heap* Heap::Containing(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (auto& s : g_heaps) {
    if (a >= s.begin.load(std::memory_order_acquire) && a < s.end.load(std::memory_order_acquire))
      return s.heap.load(std::memory_order_acquire);
  }
  return nullptr;
}

Heap* Heap::Current() {
  if (Section::t_current != nullptr) return Section::t_current;
  return g_last.load(std::memory_order_acquire);
}

Heap::Heap(std::unique_ptr<Impl> impl) : impl_(std::move(impl)), gate_(impl_->gate.ref()) {}

Result<std::unique_ptr<Heap>> Heap::Open(const std::string& path, const Options& options) {
  auto impl = std::make_unique<Impl>();
  impl->env = options.env != nullptr ? options.env : Env::Default();
  impl->gate.Init(impl->env);
  impl->options = options;
  impl->path = path;
  Env* env = impl->env;

  AMBER_ASSIGN_OR_RETURN(impl->store, Store::Open(env, path, options, Store::Mode::kReadWrite));
  Store& store = *impl->store;
  // Committed generations still in the log are copied home through the page
  // cache but not synced or published here (a full migration would make the
  // program wait for the disk before it could start); they are migrated in the
  // background right after open (by the migrator thread, or by the writer
  // with background_migration = false).
  AMBER_RETURN_IF_ERROR(store.RecoverInPlace(options.verify_on_open).WithContext(path));
  const format::Superblock sb = store.superblock();

  // Map the home image privately at its recorded address: reads come from the
  // file (lazily, so opening does not grow with the heap), writes stay private
  // until a checkpoint writes them out.
  impl->capacity = sb.capacity;
  auto want = reinterpret_cast<void*>(sb.base_address);
  auto mapped =
      env->Map(want, sb.capacity, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_FIXED_NOREPLACE | MAP_NORESERVE, store.fd(), sb.home_offset);
  if (!mapped.ok() || *mapped != want) {
    if (mapped.ok()) env->Unmap(*mapped, sb.capacity).IgnoreError();  // old kernel: hint only
    Code code = mapped.ok() || mapped.status().code() == Code::kAlreadyExists
                    ? Code::kAddressInUse
                    : mapped.status().code();
    return Status(code, "cannot map the heap of " + path + " at its address " +
                            Hex(sb.base_address) + "-" + Hex(sb.base_address + sb.capacity) +
                            ": the range is already in use in this process" +
                            (mapped.ok() ? "" : " (" + mapped.status().message() + ")"));
  }
  impl->base = static_cast<char*>(want);
  impl->mapped = true;

  // Track writes from here on: everything mapped now equals the durable state.
  AMBER_ASSIGN_OR_RETURN(impl->tracker,
                         CreateTracker(env, impl->base, sb.capacity, options.tracking));

  store.SetTrackingFlag(std::string_view(impl->tracker->name()) == "full" ? 2 : 1);

  auto* header = reinterpret_cast<HeapHeader*>(impl->base);
  impl->header = header;
  const size_t alloc_len = sb.capacity - kAllocatorOffset;
  if (std::memcmp(header->magic, kHeapMagic, sizeof(kHeapMagic)) == 0) {
    if (header->version != kHeapVersion || header->allocator_offset != kAllocatorOffset ||
        header->root_count > kMaxRoots)
      return Corruption(path + ": heap header has an unknown version or layout");
    AMBER_ASSIGN_OR_RETURN(HeapAllocator * a,
                           HeapAllocator::Attach(impl->base + kAllocatorOffset, alloc_len));
    impl->allocator.reset(a);
  } else {
    // A new heap (or one never checkpointed): it must be all zeros to be formatted.
    const char* p = impl->base;
    if (!std::all_of(p, p + sizeof(HeapHeader), [](char c) { return c == 0; }))
      return Corruption(path + ": heap header is damaged (bad magic)");
    AMBER_ASSIGN_OR_RETURN(HeapAllocator * a,
                           HeapAllocator::Format(impl->base + kAllocatorOffset, alloc_len));
    impl->allocator.reset(a);
    header->version = kHeapVersion;
    header->allocator_offset = kAllocatorOffset;
    std::memcpy(header->magic, kHeapMagic, sizeof(kHeapMagic));
  }

  // Recovery ran at full speed; from here on the writer keeps to the limit.
  impl->limiter = std::make_unique<RateLimiter>(options.write_bandwidth_limit);
  store.SetRateLimiter(impl->limiter.get());

  HeapAllocator* alloc = impl->allocator.get();
  Checkpointer::Deps deps{&store,
                          impl->tracker.get(),
                          &impl->gate,
                          &alloc->mutex(),
                          [alloc] { return kAllocatorOffset + alloc->HighWater(); },
                          impl->base};
  impl->checkpointer = std::make_unique<Checkpointer>(deps, options);
  impl->checkpointer->Start();

  std::unique_ptr<Heap> heap(new Heap(std::move(impl)));
  heap->impl_->owner = heap.get();
  AMBER_RETURN_IF_ERROR(Register(heap.get(), reinterpret_cast<uintptr_t>(heap->impl_->base),
                                 reinterpret_cast<uintptr_t>(heap->impl_->base) + sb.capacity));
  if (sb.committed_gen == 0) {
    // Make the freshly formatted heap durable at once, so the store is complete.
    Status s = heap->impl_->checkpointer->Checkpoint();
    if (!s.ok()) {
      Unregister(heap.get());
      return s.WithContext("first checkpoint of " + path);
    }
  }
  return heap;
}

Status Heap::Close() {
  Impl& im = *impl_;
  if (im.closed) return Status::OK();
  Status s;
  if (im.options.checkpoint_on_close) s = im.checkpointer->Checkpoint();
  im.checkpointer->Stop();
  // The last generation is durable; its superblock is not yet (see store.h).
  // Synced, so that a closed store's superblock names all of it.
  Status synced = im.store->Sync();
  if (s.ok()) s = synced;
  Unregister(this);
  im.closed = true;
  im.checkpointer.reset();
  im.tracker.reset();
  im.allocator.reset();  // its state lives in the mapping about to go away
  im.header = nullptr;
  if (im.mapped) {
    Status u = im.env->Unmap(im.base, im.capacity);
    if (s.ok()) s = u;
    im.mapped = false;
  }
  im.store.reset();
  return s;
}

Heap::~Heap() { Close().IgnoreError(); }

void* Heap::Allocate(size_t size, size_t align) {
  if (impl_->closed) return nullptr;
  return impl_->allocator->Allocate(size, align);
}

void Heap::Deallocate(void* p) {
  if (p == nullptr || impl_->closed) return;
  impl_->allocator->Deallocate(p);
}

bool Heap::InSection() const { return impl_->gate.Inside(); }

Status Heap::Checkpoint() {
  if (impl_->closed) return FailedPrecondition("heap is closed");
  if (InSection())
    return FailedPrecondition("Checkpoint() called inside a Section would wait for itself");
  return impl_->checkpointer->Checkpoint();
}

Status Heap::Commit() {
  if (impl_->closed) return FailedPrecondition("heap is closed");
  if (InSection())
    return FailedPrecondition("Commit() called inside a Section would wait for itself");
  return impl_->checkpointer->Commit();
}

constinit thread_local Heap* Section::t_current = nullptr;

detail::GateSlot* Heap::GateThreadSlot() { return impl_->gate.ThisThreadSlot(); }
void Heap::GateWait(detail::GateSlot* s) { impl_->gate.Park(s); }
void Heap::GateWake(detail::GateSlot* s) { impl_->gate.Wake(s); }

Result<void*> Heap::RootSlot(std::string_view name, size_t size, size_t align, uint64_t type_tag,
                             bool* created) {
  if (impl_->closed) return FailedPrecondition("heap is closed");
  if (name.empty()) return InvalidArgument("root name is empty");
  HeapHeader* h = impl_->header;
  const uint64_t hash = Fnv(name);
  for (uint32_t i = 0; i < h->root_count; ++i) {
    RootEntry& e = h->roots[i];
    if (e.name_hash != hash) continue;
    if (e.size != size || e.type_tag != type_tag)
      return InvalidArgument("root '" + std::string(name) + "' exists with another type or size (" +
                             std::to_string(e.size) + " bytes, asked for " + std::to_string(size) +
                             ")");
    if (e.offset + size > impl_->capacity) return Corruption("root table entry out of range");
    *created = e.state != RootState::kConstructed;
    return static_cast<void*>(impl_->base + e.offset);
  }
  if (h->root_count >= kMaxRoots) return ResourceExhausted("root table is full (64 roots)");
  void* p = impl_->allocator->Allocate(size == 0 ? 1 : size, std::max<size_t>(align, 16));
  if (p == nullptr)
    return ResourceExhausted("heap is full: cannot allocate root '" + std::string(name) + "'");
  RootEntry& e = h->roots[h->root_count];
  e.name_hash = hash;
  std::memset(e.name, 0, sizeof(e.name));
  std::memcpy(e.name, name.data(), std::min(name.size(), sizeof(e.name) - 1));
  e.offset = static_cast<uint64_t>(static_cast<char*>(p) - impl_->base);
  e.size = size;
  e.type_tag = type_tag;
  e.state = RootState::kReserved;
  ++h->root_count;
  *created = true;
  return p;
}

void Heap::RootConstructed(std::string_view name) {
  HeapHeader* h = impl_->header;
  const uint64_t hash = Fnv(name);
  for (uint32_t i = 0; i < h->root_count; ++i)
    if (h->roots[i].name_hash == hash) h->roots[i].state = RootState::kConstructed;
}

std::mutex& Heap::RootMutex() { return impl_->root_mu; }

Stats Heap::GetStats() const {
  Stats st;
  const Impl& im = *impl_;
  if (im.checkpointer) im.checkpointer->FillStats(&st);
  st.heap_capacity = im.capacity;
  if (im.allocator) {
    st.heap_used = kAllocatorOffset + im.allocator->HighWater();
    st.heap_allocated = im.allocator->AllocatedBytes();
  }
  if (im.store) {
    format::Superblock sb = im.store->superblock();
    st.log_size = sb.log_size;
    st.log_used = im.store->LogUsed();
    st.bytes_written = im.store->bytes_written();
  }
  st.tracking = im.tracker ? im.tracker->name() : "";
  return st;
}

void* Heap::base() const { return impl_->base; }
size_t Heap::capacity() const { return impl_->capacity; }
bool Heap::Contains(const void* p) const {
  auto a = static_cast<const char*>(p);
  return a >= impl_->base && a < impl_->base + impl_->capacity;
}
const std::string& Heap::path() const { return impl_->path; }

}  // namespace amber
