// Snapshot-engine tests: snapshot isolation while the writer is still writing,
// many threads mutating in Sections under frequent checkpoints (run under TSan
// in CI), throttled write-out, and back-pressure that never loses data.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "amber/amber.h"
#include "test_util.h"

namespace amber {
namespace {

using testing::TempDir;
using testing::TestOptions;

constexpr int kPages = 64;

struct Pages {
  uint64_t words[kPages][512];  // 64 pages, each filled with one version number
};

// The writer is throttled to 2 MiB/s so a generation is still being written
// while the mutator overwrites the same pages many times. The recovered heap
// must hold one consistent version (never a mix) no older than the newest
// version a successful Checkpoint() had captured.
TEST(Engine, SnapshotIsolationWhileWriting) {
  TempDir dir;
  auto path = dir.File("iso.amber");
  Options o = TestOptions();
  o.write_bandwidth_limit = 2 << 20;
  o.checkpoint_on_close = false;
  uint64_t durable_at_least = 0;
  {
    auto heap = Heap::Open(path, o);
    ASSERT_TRUE(heap.ok()) << heap.status().ToString();
    auto pages = (*heap)->Root<Pages>("pages");
    ASSERT_TRUE(pages.ok());
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> version{0};
    std::thread mutator([&] {
      for (uint64_t v = 1; !stop.load(); ++v) {
        Section s(**heap);
        for (auto& page : (*pages)->words)
          for (auto& w : page) w = v;
        version.store(v);
      }
    });
    for (int i = 0; i < 8; ++i) {
      const uint64_t before = version.load();  // all of these were written before the call
      ASSERT_TRUE((*heap)->Checkpoint().ok());
      durable_at_least = before;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop.store(true);
    mutator.join();
  }
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  auto pages = (*heap)->Root<Pages>("pages");
  ASSERT_TRUE(pages.ok());
  const uint64_t v = (*pages)->words[0][0];
  for (auto& page : (*pages)->words)
    for (auto w : page) ASSERT_EQ(w, v) << "the recovered state mixes two versions";
  EXPECT_GE(v, durable_at_least);
  EXPECT_GT(v, 0u);
}

// Accounts moved between by many threads; the total is invariant inside every
// Section, so every checkpoint must see the same total.
struct Bank {
  int64_t balance[256];
  uint64_t transfers;
  amber::vector<uint32_t> log;  // grows: exercises the allocator under checkpoints
};

// The engine's threads are named, so a user's top -H, gdb or perf shows what
// they are.
std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream f(e.path() / "comm");
    std::string name;
    if (std::getline(f, name)) names.push_back(name);
  }
  return names;
}

TEST(Engine, BackgroundThreadsAreNamed) {
  TempDir dir;
  Options o = TestOptions();
  o.checkpoint_interval_ms = 1000;
  o.background_migration = true;
  auto heap = Heap::Open(dir.File("s.amber"), o);
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  const std::vector<std::string> names = ThreadNames();
  for (const char* want : {"amber-writer", "amber-migrate", "amber-timer"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end())
        << want << " not among this process's threads";
  }
  ASSERT_TRUE((*heap)->Close().ok());
}

TEST(Engine, ManyThreadsUnderFrequentCheckpoints) {
  TempDir dir;
  auto path = dir.File("bank.amber");
  Options o = TestOptions();
  o.checkpoint_interval_ms = 2;
  o.checkpoint_on_close = false;
  constexpr int64_t kInitial = 1000;
  {
    auto heap = Heap::Open(path, o);
    ASSERT_TRUE(heap.ok());
    auto bank = (*heap)->Root<Bank>("bank");
    ASSERT_TRUE(bank.ok());
    {
      Section s(**heap);
      for (auto& b : (*bank)->balance) b = kInitial;
    }
    std::vector<std::thread> threads;
    std::atomic<bool> stop{false};
    std::mutex log_mu;  // std containers are not thread-safe; the heap's allocator is
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        while (!stop.load()) {
          Section s(**heap);
          int a = static_cast<int>(rng() % 256), b = static_cast<int>(rng() % 256);
          int64_t amount = rng() % 10;
          // Per-account atomics would be needed for true concurrency on the
          // same account; use the mutex for the whole transfer.
          std::lock_guard<std::mutex> l(log_mu);
          (*bank)->balance[a] -= amount;
          (*bank)->balance[b] += amount;
          (*bank)->transfers++;
          if ((*bank)->log.size() > 5000) (*bank)->log.clear();
          (*bank)->log.push_back(static_cast<uint32_t>(a));
        }
      });
    }
    // Run until at least 10 checkpoints are durable (whatever the machine's
    // speed), committing from another thread meanwhile.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((*heap)->GetStats().checkpoints < 10 && std::chrono::steady_clock::now() < deadline) {
      EXPECT_TRUE((*heap)->Commit().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    stop.store(true);
    for (auto& th : threads) th.join();
    Stats st = (*heap)->GetStats();
    EXPECT_GE(st.checkpoints, 10u);
    EXPECT_EQ(st.checkpoint_errors, 0u);
  }
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok());
  auto bank = (*heap)->Root<Bank>("bank");
  ASSERT_TRUE(bank.ok());
  int64_t total = 0;
  for (auto b : (*bank)->balance) total += b;
  EXPECT_EQ(total, kInitial * 256);
  EXPECT_GT((*bank)->transfers, 0u);
  EXPECT_LE((*bank)->log.size(), 5001u);
}

TEST(Engine, ThrottledWriteOutKeepsTheRate) {
  TempDir dir;
  Options o = TestOptions();
  o.write_bandwidth_limit = 8 << 20;  // 8 MiB/s
  auto heap = Heap::Open(dir.File("t.amber"), o);
  ASSERT_TRUE(heap.ok());
  char* block = static_cast<char*>((*heap)->Allocate(4 << 20, 4096));
  ASSERT_NE(block, nullptr);
  ASSERT_TRUE((*heap)->Checkpoint().ok());
  {
    Section s(**heap);
    std::memset(block, 7, 4 << 20);
  }
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*heap)->Checkpoint().ok());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // 4 MiB at 8 MiB/s cannot take less than ~0.5 s (the bucket allows a 1 MiB
  // burst). An upper bound would make the test flaky on a loaded machine.
  EXPECT_GT(secs, 0.3);
}

// With a 60 s interval, a mutator that dirties more than a quarter of the log
// must still get checkpoints (early ones, triggered by the dirty count) so no
// checkpoint ever outgrows the log; nothing may be lost or fail.
TEST(Engine, DirtySetTriggersEarlyCheckpoints) {
  TempDir dir;
  auto path = dir.File("early.amber");
  Options o = TestOptions();
  o.log_size = 4 << 20;
  o.checkpoint_interval_ms = 60000;
  constexpr size_t kBytes = 24 << 20;  // six times the log
  {
    auto heap = Heap::Open(path, o);
    ASSERT_TRUE(heap.ok());
    auto block = (*heap)->Root<uint64_t*>("block");
    ASSERT_TRUE(block.ok());
    auto* data = static_cast<uint64_t*>((*heap)->Allocate(kBytes, 4096));
    ASSERT_NE(data, nullptr);
    {
      Section s(**heap);
      **block = data;
    }
    // Dirty 64 KiB per Section, pausing 1 ms between, so the timer's 50 ms
    // polls see the dirty set grow past a quarter of the log many times.
    for (size_t off = 0; off < kBytes / 8; off += 8192) {
      {
        Section s(**heap);
        for (size_t i = off; i < off + 8192; i += 512) data[i] = i + 1;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(1000));
    }
    Stats st = (*heap)->GetStats();
    EXPECT_GT(st.checkpoints, 3u) << "no early checkpoints with a 60 s interval";
    EXPECT_EQ(st.checkpoint_errors, 0u) << st.last_error;
    ASSERT_TRUE((*heap)->Close().ok());
  }
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok());
  uint64_t* data = **(*heap)->Root<uint64_t*>("block");
  for (size_t i = 0; i < kBytes / 8; i += 512) ASSERT_EQ(data[i], i + 1) << i;
}

// Each checkpoint rewrites the same 16 pages. With max_replay_bytes at one byte,
// every durable generation is migrated (inline: before the writer appends the
// next one; background: by the migrator, waited for), so the log never holds
// more than the newest generation and a reopen replays at most that. Without
// the option the log keeps every generation until it is half full.
void CheckReplayBound(bool background) {
  SCOPED_TRACE(background ? "background migration" : "inline migration");
  constexpr int kRounds = 8, kDirty = 16;
  // One generation: its 16 pages, a descriptor page and a commit page.
  constexpr uint64_t kGenBytes = (kDirty + 2) * 4096;
  auto run = [&](uint64_t max_replay, const std::string& path, std::vector<uint64_t>* used) {
    Options o = TestOptions();
    o.background_migration = background;
    o.max_replay_bytes = max_replay;
    auto heap = Heap::Open(path, o);
    ASSERT_TRUE(heap.ok()) << heap.status().ToString();
    auto root = (*heap)->Root<Pages>("pages");
    ASSERT_TRUE(root.ok());
    for (int r = 1; r <= kRounds; ++r) {
      {
        Section s(**heap);
        for (int p = 0; p < kDirty; ++p) (*root)->words[p][0] = r;
      }
      ASSERT_TRUE((*heap)->Checkpoint().ok());
      Stats st = (*heap)->GetStats();
      // Background: the migrator runs after the generation is durable; give it time.
      for (int i = 0; i < 2000 && background && max_replay != 0 && st.log_used > kGenBytes; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        st = (*heap)->GetStats();
      }
      used->push_back(st.log_used);
    }
    ASSERT_TRUE((*heap)->Close().ok());
    auto again = Heap::Open(path, o);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    auto back = (*again)->Root<Pages>("pages");
    ASSERT_TRUE(back.ok());
    for (int p = 0; p < kDirty; ++p) EXPECT_EQ((*back)->words[p][0], uint64_t{kRounds}) << p;
    ASSERT_TRUE((*again)->Close().ok());
  };
  TempDir dir;
  std::vector<uint64_t> bounded, unbounded;
  run(1, dir.File("bounded.amber"), &bounded);
  run(0, dir.File("unbounded.amber"), &unbounded);
  ASSERT_EQ(bounded.size(), size_t{kRounds});
  ASSERT_EQ(unbounded.size(), size_t{kRounds});
  for (int r = 1; r < kRounds; ++r) {  // round 0 may still hold the root's creation
    EXPECT_LE(bounded[r], kGenBytes) << "round " << r << ": the log was not migrated";
  }
  EXPECT_GE(unbounded.back(), (kRounds - 1) * kGenBytes) << "the default migrated early";
}

TEST(Engine, MaxReplayBytesBoundsTheLogInline) { CheckReplayBound(false); }
TEST(Engine, MaxReplayBytesBoundsTheLogInBackground) { CheckReplayBound(true); }

}  // namespace
}  // namespace amber
