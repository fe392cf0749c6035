// gate.h — the gate that Sections pass through and a checkpoint closes.
//
// Mutators Enter()/Leave() around each logical mutation; the checkpointer
// Close()s the gate (new Enters park on a futex, never spin: spinning threads
// slow the dirty-page scan through TLB-flush IPIs), waits until no mutator is
// inside, captures, then Open()s it.
//
// Each thread has its own slot per gate (detail::GateSlot, its Section depth),
// so Enter/Leave touch only memory the thread owns. Where membarrier(2)'s
// private expedited command works, they use plain stores and loads, no locked
// instruction and no fence: Close() pays instead, with one membarrier that
// orders every running thread of the process (an asymmetric Dekker handshake,
// see gate.cc). A locked instruction per Section measured about 2x slower on a
// random-update loop over a 1M-key map (bench kv). Without membarrier (or
// under ThreadSanitizer, which does not model it) both sides use sequentially
// consistent atomics. amber::Section runs the same fast path inline
// (include/amber/detail/gate_slot.h) and calls here only for the slow paths.
//
// Thread-safety: Enter/Leave/Inside from any number of threads. Close/Open
// pairs from any number of threads, overlapping too (a capture and the
// timer's back-pressure hold): the gate is closed from the first Close() until
// every Close() has had its Open(). Enter and Leave nest per thread; only the
// outermost pair is seen by Close().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "amber/detail/gate_slot.h"

namespace amber {

class Env;

class Gate {
 public:
  using Slot = detail::GateSlot;

  Gate();
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // Chooses the handshake: asymmetric if `env` can register for membarrier's
  // private expedited command. Call once, before any Enter().
  void Init(Env* env);
  bool asymmetric() const { return ref_.asymmetric; }
  // What an inline Section needs (valid after Init()).
  const detail::GateRef& ref() const { return ref_; }
  size_t slot_count() const;  // slots made so far (for tests)

  void Enter() {
    Slot* s = ThisThreadSlot();
    if (detail::GateArrive(ref_, s)) Park(s);
  }
  void Leave() {
    Slot* s = ThisThreadSlot();
    if (detail::GateDepart(ref_, s)) Wake(s);
  }
  // True if this thread is between Enter() and Leave().
  bool Inside() const;

  // Returns once no mutator is inside; new ones wait until every Close() has
  // been matched by an Open().
  void Close();
  void Open();

  // This thread's slot, made (or taken over from an exited thread) on first use.
  Slot* ThisThreadSlot() {
    if (detail::t_gate_cache.gate_id == ref_.id) return detail::t_gate_cache.slot;
    return SlowSlot(/*create=*/true);
  }
  // Slow paths of Enter and Leave: the gate was closed at an outermost entry
  // (backs out, waits for Open(), arrives again), or at an outermost exit
  // (wakes the closer).
  void Park(Slot* s);
  void Wake(Slot* s) { s->depth.notify_all(); }

 private:
  Slot* SlowSlot(bool create) const;
  void Barrier();

  detail::GateRef ref_;
  Env* env_ = nullptr;
  std::atomic<Slot*> slots_{nullptr};            // every slot ever made, newest first
  alignas(64) std::atomic<uint32_t> closed_{0};  // Close()s not yet Open()ed
};

}  // namespace amber
