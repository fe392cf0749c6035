// Heap-level tests: roots, containers across reopen, sections, errors a user
// meets (address in use, store busy, foreign owner), statistics.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "amber/amber.h"
#include "test_util.h"

namespace amber {
namespace {

using testing::TempDir;
using testing::TestOptions;

struct Root {
  amber::unordered_map<uint64_t, amber::string> users;
  amber::vector<int> numbers;
  amber::map<amber::string, amber::vector<double>> series;
  uint64_t visits = 0;
  Root* self = nullptr;  // a raw pointer into the heap survives restarts
};

std::unique_ptr<Heap> MustOpen(const std::string& path, const Options& o = TestOptions()) {
  auto h = Heap::Open(path, o);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? std::move(*h) : nullptr;
}

TEST(Heap, ContainersAndPointersSurviveReopen) {
  TempDir dir;
  auto path = dir.File("h.amber");
  void* base;
  {
    auto heap = MustOpen(path);
    ASSERT_TRUE(heap);
    base = heap->base();
    auto root = heap->Root<Root>();
    ASSERT_TRUE(root.ok());
    Section s(*heap);
    Root* r = *root;
    for (uint64_t i = 0; i < 1000; ++i)
      r->users[i] = amber::string("user-") + std::to_string(i).c_str();
    for (int i = 0; i < 5000; ++i) r->numbers.push_back(i * 3);
    r->series["temperature"] = {1.5, 2.5, 3.5};
    r->visits = 7;
    r->self = r;
  }
  auto heap = MustOpen(path);
  ASSERT_TRUE(heap);
  EXPECT_EQ(heap->base(), base);
  auto root = heap->Root<Root>();
  ASSERT_TRUE(root.ok());
  Root* r = *root;
  EXPECT_EQ(r->self, r);
  EXPECT_EQ(r->visits, 7u);
  ASSERT_EQ(r->users.size(), 1000u);
  EXPECT_EQ(r->users[999], "user-999");
  ASSERT_EQ(r->numbers.size(), 5000u);
  EXPECT_EQ(r->numbers[4999], 4999 * 3);
  EXPECT_EQ(r->series["temperature"].at(2), 3.5);
}

TEST(Heap, RootsByNameAndTypeMismatch) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  auto a = heap->Root<uint64_t>("counter", 41u);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(**a, 41u);
  auto again = heap->Root<uint64_t>("counter", 99u);  // found, not constructed again
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *a);
  EXPECT_EQ(**again, 41u);
  auto wrong = heap->Root<double>("counter");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(heap->Root<int>("").status().code(), Code::kInvalidArgument);
}

TEST(Heap, RootTableFull) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(heap->Root<int>("r" + std::to_string(i)).ok()) << i;
  EXPECT_EQ(heap->Root<int>("one-too-many").status().code(), Code::kResourceExhausted);
}

TEST(Heap, CheckpointInsideSectionIsRefused) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  Section s(*heap);
  EXPECT_EQ(heap->Checkpoint().code(), Code::kFailedPrecondition);
  EXPECT_EQ(heap->Commit().code(), Code::kFailedPrecondition);
  Section nested(*heap);  // nesting does not deadlock
}

TEST(Heap, AddressInUseNamesTheAddress) {
  TempDir dir;
  Options o = TestOptions();
  void* taken = mmap(reinterpret_cast<void*>(o.base_address + (1 << 20)), 4096, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  auto h = Heap::Open(dir.File("h.amber"), o);
  munmap(taken, 4096);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Code::kAddressInUse);
  char hex[32];
  snprintf(hex, sizeof(hex), "0x%lx", static_cast<unsigned long>(o.base_address));
  EXPECT_NE(h.status().message().find(hex), std::string::npos) << h.status().message();
}

TEST(Heap, TwoHeapsAtOnceAndAllocatorFollowsSections) {
  TempDir dir;
  auto a = MustOpen(dir.File("a.amber"), TestOptions(0));
  auto b = MustOpen(dir.File("b.amber"), TestOptions(2));
  ASSERT_TRUE(a && b);
  auto ra = a->Root<Root>();
  auto rb = b->Root<Root>();
  ASSERT_TRUE(ra.ok() && rb.ok());
  {
    Section s(*a);
    (*ra)->numbers.assign(100, 1);
    EXPECT_TRUE(a->Contains((*ra)->numbers.data()));
  }
  {
    Section s(*b);
    (*rb)->numbers.assign(100, 2);
    EXPECT_TRUE(b->Contains((*rb)->numbers.data()));
  }
  EXPECT_EQ(Heap::Containing((*rb)->numbers.data()), b.get());
  EXPECT_EQ(Heap::Containing(&dir), nullptr);
}

TEST(Heap, SecondProcessGetsBusy) {
  TempDir dir;
  auto path = dir.File("h.amber");
  auto heap = MustOpen(path);
  pid_t pid = fork();
  if (pid == 0) {
    Options o = TestOptions(3);  // another address: the lock, not the mapping, must refuse
    auto h = Heap::Open(path, o);
    _exit(!h.ok() && h.status().code() == Code::kBusy ? 0 : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(Heap, ForeignOwnerRefusedUnlessAllowed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the store to another user";
  TempDir dir;
  auto path = dir.File("h.amber");
  { MustOpen(path); }
  ASSERT_EQ(chown(path.c_str(), 12345, 12345), 0);
  auto h = Heap::Open(path, TestOptions());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Code::kPermissionDenied);
  Options o = TestOptions();
  o.allow_foreign_owner = true;
  EXPECT_TRUE(Heap::Open(path, o).ok());
}

TEST(Heap, ErrorIfExistsAndMissing) {
  TempDir dir;
  auto path = dir.File("h.amber");
  Options o = TestOptions();
  o.create_if_missing = false;
  EXPECT_EQ(Heap::Open(path, o).status().code(), Code::kNotFound);
  { MustOpen(path); }
  o = TestOptions();
  o.error_if_exists = true;
  EXPECT_EQ(Heap::Open(path, o).status().code(), Code::kAlreadyExists);
}

TEST(Heap, CheckpointWritesOnlyDirtyPagesAndStatsCount) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  auto big = static_cast<char*>(heap->Allocate(4 << 20, 4096));
  ASSERT_NE(big, nullptr);
  {
    Section s(*heap);
    memset(big, 1, 4 << 20);
  }
  ASSERT_TRUE(heap->Checkpoint().ok());
  Stats before = heap->GetStats();
  {
    Section s(*heap);
    big[0] = 2;             // page 0 of the block
    big[3 * 4096 + 7] = 2;  // page 3
  }
  ASSERT_TRUE(heap->Checkpoint().ok());
  Stats after = heap->GetStats();
  EXPECT_EQ(after.checkpoints, before.checkpoints + 1);
  // Exactly the two written pages (and nothing else, no allocator activity since).
  EXPECT_EQ(after.pages_written - before.pages_written, 2u);
  EXPECT_GT(after.last_generation, before.last_generation);
  EXPECT_GE(after.pause_ms_max, after.pause_ms_min);
  EXPECT_FALSE(after.tracking.empty());
  // Nothing dirty: no new generation.
  ASSERT_TRUE(heap->Checkpoint().ok());
  EXPECT_EQ(heap->GetStats().checkpoints, after.checkpoints);
}

TEST(Heap, FullTrackingFallbackIsCorrect) {
  TempDir dir;
  auto path = dir.File("h.amber");
  Options o = TestOptions();
  o.tracking = TrackingMode::kFull;
  {
    auto heap = MustOpen(path, o);
    EXPECT_EQ(heap->GetStats().tracking, "full");
    auto r = heap->Root<Root>();
    ASSERT_TRUE(r.ok());
    Section s(*heap);
    (*r)->visits = 99;
  }
  auto heap = MustOpen(path, o);
  EXPECT_EQ((*heap->Root<Root>())->visits, 99u);
}

TEST(Heap, ConcurrentCommitsShareCheckpoints) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  auto counters = heap->Root<std::array<uint64_t, 8>>("counters");
  ASSERT_TRUE(counters.ok());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        {
          Section s(*heap);
          (**counters)[t]++;
        }
        if (!heap->Commit().ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  // 200 commits; group commit makes it fewer checkpoints.
  EXPECT_LT(heap->GetStats().checkpoints, 200u);
  EXPECT_EQ((**counters)[7], 25u);
}

TEST(Heap, UseAfterCloseFailsCleanly) {
  TempDir dir;
  auto heap = MustOpen(dir.File("h.amber"));
  ASSERT_TRUE(heap->Root<int>("x").ok());
  ASSERT_TRUE(heap->Close().ok());
  EXPECT_TRUE(heap->Close().ok());  // idempotent
  EXPECT_EQ(heap->Checkpoint().code(), Code::kFailedPrecondition);
  EXPECT_EQ(heap->Commit().code(), Code::kFailedPrecondition);
  EXPECT_EQ(heap->Root<int>("x").status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(heap->Allocate(16), nullptr);
  EXPECT_EQ(heap->GetStats().heap_used, 0u);
  EXPECT_EQ(heap->path(), dir.File("h.amber"));
}

}  // namespace
}  // namespace amber
