// gate.cc — per-thread slots and the closing handshake.
//
// Why the asymmetric handshake is safe. A mutator arriving does
//   store slot.depth = 1;  load closed
// and the closer does
//   store closed = 1;  membarrier();  load every slot.depth
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) returns only after every running
// thread of the process has executed a full memory barrier (a thread not running
// passes one when it is switched out). Take the point where the mutator's
// barrier falls. If its store came before that point, the closer's loads (after
// membarrier returns) see depth = 1 and it waits. If its load came after, it
// sees closed = 1 and parks. A store before and a load after would be both.
// Departing (store depth = 0; load closed; wake if closed) is the same
// argument: either the closer sees 0 or the mutator sees closed and wakes it,
// and the futex wait re-checks the value so the wake cannot be lost.
#include "checkpoint/gate.h"

#include <linux/membarrier.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "env/env.h"

#if defined(__SANITIZE_THREAD__)
#define AMBER_GATE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AMBER_GATE_TSAN 1
#endif
#endif

namespace amber {

namespace detail {
constinit thread_local GateCache t_gate_cache{0, nullptr};
}

namespace {

std::atomic<uint64_t> g_next_gate_id{1};

// Ids of the gates alive in the process, so that a thread exiting can tell
// whether the slots it holds still exist. Never destroyed: threads may exit
// after static destructors have run.
std::mutex& LiveMutex() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::unordered_set<uint64_t>& Live() {
  static auto* live = new std::unordered_set<uint64_t>;
  return *live;
}

// This thread's slots, one per gate it has entered; handed back at thread exit.
struct ThreadSlots {
  std::vector<std::pair<uint64_t, Gate::Slot*>> slots;  // (gate id, slot)
  ~ThreadSlots() {
    std::lock_guard<std::mutex> lock(LiveMutex());
    for (auto& [id, slot] : slots)
      if (Live().count(id) != 0) slot->owned.store(false, std::memory_order_release);
  }
  Gate::Slot* Find(uint64_t id) const {
    for (auto& [i, slot] : slots)
      if (i == id) return slot;
    return nullptr;
  }
};
thread_local ThreadSlots t_slots;

}  // namespace

Gate::Gate() {
  ref_.id = g_next_gate_id.fetch_add(1, std::memory_order_relaxed);
  ref_.closed = &closed_;
  std::lock_guard<std::mutex> lock(LiveMutex());
  Live().insert(ref_.id);
}

Gate::~Gate() {
  {
    std::lock_guard<std::mutex> lock(LiveMutex());
    Live().erase(ref_.id);
  }
  for (Slot* s = slots_.load(std::memory_order_acquire); s != nullptr;) {
    assert(s->depth.load(std::memory_order_relaxed) == 0 && "gate destroyed with a Section open");
    Slot* next = s->next;
    delete s;
    s = next;
  }
}

void Gate::Init(Env* env) {
  env_ = env;
#if defined(AMBER_GATE_TSAN)
  ref_.asymmetric = false;  // ThreadSanitizer does not model membarrier's ordering
#else
  ref_.asymmetric = env->Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED).ok();
#endif
}

Gate::Slot* Gate::SlowSlot(bool create) const {
  if (Slot* found = t_slots.Find(ref_.id)) {
    detail::t_gate_cache = {ref_.id, found};
    return found;
  }
  if (!create) return nullptr;
  auto* self = const_cast<Gate*>(this);
  Slot* slot = nullptr;
  // Reuse the slot of a thread that has exited, else make one.
  for (Slot* s = slots_.load(std::memory_order_acquire); s != nullptr; s = s->next) {
    bool expected = false;
    if (s->owned.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      slot = s;
      break;
    }
  }
  if (slot == nullptr) {
    slot = new Slot;
    slot->next = self->slots_.load(std::memory_order_relaxed);
    while (!self->slots_.compare_exchange_weak(slot->next, slot, std::memory_order_seq_cst)) {
    }
  }
  assert(slot->depth.load(std::memory_order_relaxed) == 0);
  {
    // Forget the slots of gates destroyed since, so that a thread that opens
    // and closes many heaps does not accumulate entries.
    std::lock_guard<std::mutex> lock(LiveMutex());
    std::erase_if(t_slots.slots, [](const auto& e) { return Live().count(e.first) == 0; });
  }
  t_slots.slots.emplace_back(ref_.id, slot);
  detail::t_gate_cache = {ref_.id, slot};
  return slot;
}

size_t Gate::slot_count() const {
  size_t n = 0;
  for (const Slot* s = slots_.load(std::memory_order_acquire); s != nullptr; s = s->next) ++n;
  return n;
}

bool Gate::Inside() const {
  const Slot* s = detail::t_gate_cache.gate_id == ref_.id ? detail::t_gate_cache.slot
                                                          : SlowSlot(/*create=*/false);
  return s != nullptr && s->depth.load(std::memory_order_relaxed) > 0;
}

void Gate::Park(Slot* s) {
  do {
    // Back out (depth 1 -> 0), so that the closer, perhaps waiting for this
    // slot, goes on; wait for Open(); arrive again.
    s->depth.store(0, std::memory_order_seq_cst);
    s->depth.notify_all();
    for (uint32_t c = closed_.load(std::memory_order_acquire); c != 0;
         c = closed_.load(std::memory_order_acquire))
      closed_.wait(c, std::memory_order_acquire);
  } while (detail::GateArrive(ref_, s));
}

void Gate::Barrier() {
  // Registration succeeded in Init(), after which the command cannot fail.
  Status st = env_->Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
  if (!st.ok()) {
    std::fprintf(stderr, "amber: membarrier failed after registration: %s\n",
                 st.ToString().c_str());
    std::abort();
  }
}

void Gate::Close() {
  closed_.fetch_add(1, std::memory_order_seq_cst);
  if (ref_.asymmetric) Barrier();
  for (Slot* s = slots_.load(std::memory_order_seq_cst); s != nullptr; s = s->next)
    for (uint32_t d = s->depth.load(std::memory_order_seq_cst); d != 0;
         d = s->depth.load(std::memory_order_seq_cst))
      s->depth.wait(d, std::memory_order_seq_cst);
}

void Gate::Open() {
  // The last of overlapping closers opens it.
  if (closed_.fetch_sub(1, std::memory_order_seq_cst) == 1) closed_.notify_all();
}

}  // namespace amber
