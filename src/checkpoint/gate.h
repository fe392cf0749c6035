// gate.h — the gate that Sections pass through and a checkpoint closes.
//
// Mutators Enter()/Leave() around each logical mutation; the checkpointer
// Close()s the gate (new Enters park on a futex, never spin: spinning threads
// slow the dirty-page scan through TLB-flush IPIs), waits until no mutator is
// inside, captures, then Open()s it.
//
// Thread-safety: Enter/Leave from any number of threads; Close/Open from one
// thread at a time (the checkpointer serialises captures).
#pragma once

#include <atomic>
#include <cstdint>

namespace amber {

class Gate {
 public:
  void Enter() {
    for (;;) {
      active_.fetch_add(1, std::memory_order_seq_cst);
      if (closed_.load(std::memory_order_seq_cst) == 0) return;
      // Closed: back out (waking the closer if we were the last) and park.
      if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1) active_.notify_all();
      closed_.wait(1, std::memory_order_seq_cst);
    }
  }
  void Leave() {
    if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        closed_.load(std::memory_order_seq_cst) != 0)
      active_.notify_all();
  }
  // Returns once no mutator is inside; new ones wait until Open().
  void Close() {
    closed_.store(1, std::memory_order_seq_cst);
    for (int32_t a = active_.load(std::memory_order_seq_cst); a != 0;
         a = active_.load(std::memory_order_seq_cst))
      active_.wait(a, std::memory_order_seq_cst);
  }
  void Open() {
    closed_.store(0, std::memory_order_seq_cst);
    closed_.notify_all();
  }
  int32_t active() const { return active_.load(std::memory_order_relaxed); }

 private:
  alignas(64) std::atomic<int32_t> active_{0};
  alignas(64) std::atomic<int32_t> closed_{0};
};

}  // namespace amber
