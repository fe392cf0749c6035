// gate_test.cc — the gate holds mutators out while closed, in both handshakes.
#include "checkpoint/gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "env/env.h"

namespace amber {
namespace {

// An Env without membarrier(2): the gate must fall back to seq_cst atomics.
class NoMembarrierEnv : public EnvWrapper {
 public:
  NoMembarrierEnv() : EnvWrapper(Env::Default()) {}
  Status Membarrier(int) override { return NotSupported("membarrier disabled by the test"); }
};

// Each mutator increments its `begun` counter, then its `ended` counter, inside
// one Enter/Leave. While the gate is closed no mutator is between the two, so
// every pair must be equal; a handshake that let a mutator slip past Close()
// would show a pair that differs.
void HoldsMutatorsOut(Gate& gate) {
  constexpr int kThreads = 3;
  struct alignas(64) Pair {
    std::atomic<uint64_t> begun{0}, ended{0};
  };
  std::vector<Pair> pairs(kThreads);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      Pair& p = pairs[t];
      while (!stop.load(std::memory_order_relaxed)) {
        gate.Enter();
        p.begun.store(p.begun.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        gate.Enter();  // nested: must not wait at the gate or be counted twice
        EXPECT_TRUE(gate.Inside());
        gate.Leave();
        p.ended.store(p.ended.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        gate.Leave();
      }
      EXPECT_FALSE(gate.Inside());
    });
  uint64_t progressed = 0;
  // At least 2000 rounds, and on until the mutators got through a few times: on
  // a loaded machine the rounds can all pass before a mutator thread has run.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int round = 0;
       round < 2000 || (progressed < 100 && std::chrono::steady_clock::now() < deadline); ++round) {
    gate.Close();
    uint64_t total = 0;
    for (Pair& p : pairs) {
      const uint64_t b = p.begun.load(std::memory_order_relaxed);
      const uint64_t e = p.ended.load(std::memory_order_relaxed);
      ASSERT_EQ(b, e) << "a mutator was inside a closed gate (round " << round << ")";
      total += b;
    }
    gate.Open();
    progressed = total;
    std::this_thread::yield();
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GT(progressed, 0u) << "mutators never got through an open gate";
}

TEST(Gate, AsymmetricHandshakeHoldsMutatorsOut) {
  Gate gate;
  gate.Init(Env::Default());
  if (!gate.asymmetric()) GTEST_SKIP() << "membarrier(2) private expedited is not available here";
  HoldsMutatorsOut(gate);
}

TEST(Gate, SeqCstFallbackHoldsMutatorsOut) {
  NoMembarrierEnv env;
  Gate gate;
  gate.Init(&env);
  EXPECT_FALSE(gate.asymmetric());
  HoldsMutatorsOut(gate);
}

TEST(Gate, SlotsOfExitedThreadsAreReused) {
  Gate gate;
  gate.Init(Env::Default());
  // Many short-lived threads: each takes a slot and hands it back on exit; the
  // gate still closes promptly (no slot left marked active).
  for (int i = 0; i < 50; ++i) {
    std::thread([&] {
      gate.Enter();
      gate.Leave();
    }).join();
  }
  EXPECT_EQ(gate.slot_count(), 1u);
  gate.Close();
  gate.Open();
  EXPECT_FALSE(gate.Inside());
}

TEST(Gate, ThreadUsesTwoGates) {
  auto a = std::make_unique<Gate>(), b = std::make_unique<Gate>();
  a->Init(Env::Default());
  b->Init(Env::Default());
  a->Enter();
  EXPECT_TRUE(a->Inside());
  EXPECT_FALSE(b->Inside());
  b->Enter();
  a->Leave();
  EXPECT_FALSE(a->Inside());
  EXPECT_TRUE(b->Inside());
  b->Leave();
  // A gate made after another is destroyed never sees the old one's slot.
  a.reset();
  auto c = std::make_unique<Gate>();
  c->Init(Env::Default());
  EXPECT_FALSE(c->Inside());
  c->Enter();
  EXPECT_TRUE(c->Inside());
  c->Leave();
}

// Two closers that overlap (a capture and the timer's back-pressure hold): the
// first Open() must not let mutators in while the other still holds the gate;
// that would let them write during a capture's pause.
void OverlappingClosersKeepItClosed(Gate& gate) {
  gate.Close();
  gate.Close();
  gate.Open();
  std::atomic<bool> entered{false};
  std::thread mutator([&] {
    gate.Enter();
    entered = true;
    gate.Leave();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(entered.load()) << "a mutator passed a gate one closer still held";
  gate.Open();
  mutator.join();
  EXPECT_TRUE(entered.load());
}

TEST(Gate, OverlappingClosersAsymmetric) {
  Gate gate;
  gate.Init(Env::Default());
  if (!gate.asymmetric()) GTEST_SKIP() << "membarrier(2) private expedited is not available here";
  OverlappingClosersKeepItClosed(gate);
}

TEST(Gate, OverlappingClosersSeqCst) {
  NoMembarrierEnv env;
  Gate gate;
  gate.Init(&env);
  ASSERT_FALSE(gate.asymmetric());
  OverlappingClosersKeepItClosed(gate);
}

}  // namespace
}  // namespace amber
