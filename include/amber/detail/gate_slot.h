// detail/gate_slot.h — the inline fast path of amber::Section (not public API).
//
// A Section entered and left in the caller's own code, with no call and only
// two stores to memory the thread owns: a call and a few more stores per
// Section measured 1.5-2x slower on a random-update loop over a 1M-key map,
// because they limit how far the CPU can run ahead to overlap one update's
// cache misses with the next one's. The slow paths (first use of a heap on a
// thread, a closed gate) are out of line in src/checkpoint/gate.cc, which also
// explains why the handshake is safe.
//
// Thread-safety: a GateSlot's depth is written only by its owner thread and
// read by the checkpointer; see src/checkpoint/gate.h.
#pragma once

#include <atomic>
#include <cstdint>

namespace amber::detail {

// One thread's presence at one heap's gate: the thread's Section nesting depth
// there. The checkpointer waits until every slot's depth is 0.
struct alignas(64) GateSlot {
  std::atomic<uint32_t> depth{0};
  std::atomic<bool> owned{true};  // false once the owner thread has exited
  GateSlot* next = nullptr;       // the gate's list; immutable once published
};

// What a Section needs to know about a heap's gate.
struct GateRef {
  uint64_t id = 0;  // unique in the process, never reused
  const std::atomic<uint32_t>* closed = nullptr;
  bool asymmetric = false;  // closer uses membarrier(2): no fence needed here
};

// This thread's most recently used slot.
struct GateCache {
  uint64_t gate_id;
  GateSlot* slot;
};
extern constinit thread_local GateCache t_gate_cache;

// Raises the depth; returns true if the caller must wait (outermost entry and
// the gate is closed).
inline bool GateArrive(const GateRef& g, GateSlot* s) {
  const uint32_t d = s->depth.load(std::memory_order_relaxed);
  if (d != 0) {
    s->depth.store(d + 1, std::memory_order_relaxed);
    return false;
  }
  if (g.asymmetric) {
    s->depth.store(1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return g.closed->load(std::memory_order_acquire) != 0;
  }
  s->depth.store(1, std::memory_order_seq_cst);
  return g.closed->load(std::memory_order_seq_cst) != 0;
}

// Lowers the depth; returns true if a closer may be waiting for this slot.
inline bool GateDepart(const GateRef& g, GateSlot* s) {
  const uint32_t d = s->depth.load(std::memory_order_relaxed);
  if (d != 1) {
    s->depth.store(d - 1, std::memory_order_relaxed);
    return false;
  }
  if (g.asymmetric) {
    s->depth.store(0, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return g.closed->load(std::memory_order_relaxed) != 0;
  }
  s->depth.store(0, std::memory_order_seq_cst);
  return g.closed->load(std::memory_order_seq_cst) != 0;
}

}  // namespace amber::detail
