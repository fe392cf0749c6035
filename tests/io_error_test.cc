// I/O-error test: ENOSPC and EIO injected (through FaultInjectionEnv) at every
// PWrite, DataSync, Sync and PRead call of a checkpoint, a commit, a migration, the
// creation of a store and the recovery at reopen; then a real full filesystem (a
// loop-mounted ext4 image, else a size-limited tmpfs) under a store whose migration
// writes into the sparse home image.
//
// For every fault: the program keeps running; Checkpoint()/Commit() (or Open)
// return the error as kNoSpace / kIOError; Stats::checkpoint_errors counts it and
// Stats::last_error says it; the previous checkpoint stays intact (a read-only
// inspection accepts the store, and a simulated power cut right after the failure
// reopens to it); and once the fault clears, a later Checkpoint() succeeds and
// contains everything, including the pages of the failed attempt (they are
// carried to the next capture). The workload is tests/stamp_workload.h, whose
// state after step V is known exactly.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "env/fault_injection_env.h"
#include "stamp_workload.h"
#include "store/format.h"
#include "store/store.h"
#include "test_util.h"

namespace amber {
namespace {

using testing::ScratchDir;
using testing::StampCheck;
using testing::StampRoot;
using testing::StampStep;
using FI = FaultInjectionEnv;

constexpr uint64_t kCapacity = uint64_t{16} << 20;
constexpr uint64_t kLogSize = uint64_t{256} << 10;

Options IoOptions(Env* env) {
  Options o;
  o.capacity = kCapacity;
  o.log_size = kLogSize;
  o.base_address = testing::TestBase(3);
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.env = env;
  return o;
}

Code CodeFor(int err) { return err == ENOSPC ? Code::kNoSpace : Code::kIOError; }
const char* ErrName(int err) { return err == ENOSPC ? "ENOSPC" : "EIO"; }

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Waits until the writer has finished any migration the last checkpoint started
// (Checkpoint() returns before the migration that follows a durable append), or
// until that migration has failed with an error injected after `injected_before`.
void Quiesce(Heap& heap, FI& env, uint64_t injected_before) {
  for (int i = 0; i < 10000; ++i) {
    Stats st = heap.GetStats();
    if (st.log_used * 2 <= st.log_size) return;
    if (env.InjectedErrorCount() > injected_before && Contains(st.last_error, "migration")) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ADD_FAILURE() << "the writer did not finish its migration";
}

std::unique_ptr<Heap> MustOpen(const std::string& path, Env* env) {
  auto h = Heap::Open(path, IoOptions(env));
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? std::move(*h) : nullptr;
}

StampRoot* RootOf(Heap& heap) {
  auto r = heap.Root<StampRoot>(testing::kStampRootName);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : nullptr;
}

// Opens the store and checks it holds exactly version `want` (any of `want` if
// several are allowed). Returns "" or the failure.
std::string ReopenAndCheck(const std::string& path, Env* env, std::vector<uint64_t> want) {
  auto heap = Heap::Open(path, IoOptions(env));
  if (!heap.ok()) return "reopen: " + heap.status().ToString();
  auto r = (*heap)->Root<StampRoot>(testing::kStampRootName);
  if (!r.ok()) return "root: " + r.status().ToString();
  const uint64_t v = (*r)->version;
  if (std::find(want.begin(), want.end(), v) == want.end())
    return "reopened at version " + std::to_string(v) + ", expected " + std::to_string(want[0]) +
           (want.size() > 1 ? " or " + std::to_string(want[1]) : "");
  std::string bad = StampCheck(**heap, *r);
  if (!bad.empty()) return bad;
  Status c = (*heap)->Close();
  return c.ok() ? "" : "close: " + c.ToString();
}

// A read-only inspection (what `amber verify` does) while the store may be open.
std::string ReadOnlyVerify(const std::string& path) {
  Options o;
  o.create_if_missing = false;
  auto st = Store::Open(Env::Default(), path, o, Store::Mode::kReadOnly);
  if (!st.ok()) return "read-only open: " + st.status().ToString();
  Status s = (*st)->Recover(true);
  return s.ok() ? "" : "read-only verify: " + s.ToString();
}

// Runs steps 1..k, each followed by a checkpoint and its migration.
void Prefix(Heap& heap, StampRoot* r, FI& env, uint64_t k) {
  for (uint64_t v = 1; v <= k; ++v) {
    ASSERT_TRUE(StampStep(heap, r, v));
    ASSERT_TRUE(heap.Checkpoint().ok());
    Quiesce(heap, env, env.InjectedErrorCount());
  }
}

// Steps 1, 2, ... each followed by a checkpoint and its migration, until at
// least three were taken and the log holds generations a reopen must replay.
// *version receives the last step.
void StepsUntilTheLogNeedsReplay(Heap& heap, StampRoot* r, FI& env, uint64_t* version) {
  uint64_t v = 0;
  do {
    ++v;
    ASSERT_TRUE(StampStep(heap, r, v));
    ASSERT_TRUE(heap.Checkpoint().ok());
    Quiesce(heap, env, 0);
  } while (v < 3 || heap.GetStats().log_used == 0);
  *version = v;
}

constexpr FI::Op kIoOps[] = {FI::kPWrite, FI::kDataSync, FI::kSync, FI::kPRead};

struct OpCounts {
  uint64_t n[FI::kNumOps] = {};
};
OpCounts CountsOf(const FI& env) {
  OpCounts c;
  for (int op = 0; op < FI::kNumOps; ++op) c.n[op] = env.CallCount(static_cast<FI::Op>(op));
  return c;
}

// Calls of each op made by the checkpoint after step k+1 (with its migration).
struct CheckpointProfile {
  uint64_t k = 0;
  OpCounts calls;
  bool migrates = false;
};

std::vector<CheckpointProfile> ProfileCheckpoints(const ScratchDir& dir, uint64_t steps) {
  dir.Clear();
  FI env(Env::Default());
  auto heap = MustOpen(dir.File("io.amber"), &env);
  std::vector<CheckpointProfile> out;
  if (!heap) return out;
  StampRoot* r = RootOf(*heap);
  for (uint64_t v = 1; v <= steps; ++v) {
    EXPECT_TRUE(StampStep(*heap, r, v));
    const OpCounts before = CountsOf(env);
    EXPECT_TRUE(heap->Checkpoint().ok());
    Quiesce(*heap, env, 0);
    const OpCounts after = CountsOf(env);
    CheckpointProfile p;
    p.k = v - 1;
    for (int op = 0; op < FI::kNumOps; ++op) p.calls.n[op] = after.n[op] - before.n[op];
    // Only a migration reads the store (Stats::migrations is counted a moment after
    // the migration's last I/O, so it cannot tell).
    p.migrates = p.calls.n[FI::kPRead] > 0;
    out.push_back(p);
  }
  EXPECT_TRUE(heap->Close().ok());
  return out;
}

struct FaultTally {
  uint64_t faults = 0, returned = 0, in_migration = 0;
};

// One fault: steps 1..k, step k+1, the error at the idx-th call of `op` during the
// checkpoint (or commit) that follows; then either recover in place or cut power.
// `lose_writes`: a failed sync loses the writes before it (Linux's writeback
// errors, FaultInjectionEnv::SetSyncFailureLosesWrites).
void CheckpointFault(const ScratchDir& dir, uint64_t k, FI::Op op, int err, uint64_t idx,
                     bool use_commit, bool crash_after, FaultTally* tally,
                     bool lose_writes = false) {
  SCOPED_TRACE(std::string(use_commit ? "Commit" : "Checkpoint") + " after step " +
               std::to_string(k + 1) + ": " + ErrName(err) + " at " + FI::OpName(op) + " call " +
               std::to_string(idx) + (lose_writes ? " (writes before it lost)" : "") +
               (crash_after ? ", then power cut" : ", then fault cleared"));
  dir.Clear();
  const std::string path = dir.File("io.amber");
  FI env(Env::Default());
  env.SetSyncFailureLosesWrites(lose_writes);
  auto heap = MustOpen(path, &env);
  ASSERT_TRUE(heap);
  StampRoot* r = RootOf(*heap);
  Prefix(*heap, r, env, k);
  ASSERT_TRUE(StampStep(*heap, r, k + 1));
  const Stats before = heap->GetStats();
  const uint64_t injected = env.InjectedErrorCount();
  env.InjectError(op, err, static_cast<int>(idx), 1);
  const Status s = use_commit ? heap->Commit() : heap->Checkpoint();
  if (s.ok()) Quiesce(*heap, env, injected);
  const Stats after = heap->GetStats();
  ++tally->faults;
  ASSERT_EQ(env.InjectedErrorCount(), injected + 1) << "the fault was not reached";
  if (!s.ok()) {
    ++tally->returned;
    EXPECT_EQ(s.code(), CodeFor(err)) << s.ToString();
    EXPECT_EQ(after.checkpoint_errors, before.checkpoint_errors + 1);
    EXPECT_TRUE(Contains(after.last_error, "injected fault")) << after.last_error;
    EXPECT_EQ(after.last_generation, before.last_generation);
  } else {
    // The generation was durable; the migration after it failed and says so.
    ++tally->in_migration;
    EXPECT_TRUE(Contains(after.last_error, "migration") &&
                Contains(after.last_error, "injected fault"))
        << after.last_error;
    EXPECT_EQ(after.last_generation, before.last_generation + 1);
  }
  // The previous checkpoint is intact on disk, as a read-only inspection sees it.
  EXPECT_EQ(ReadOnlyVerify(path), "");
  if (crash_after) {
    ASSERT_TRUE(heap->Close().ok());
    heap.reset();
    ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
    // A failed checkpoint leaves either state: its generation counts if all of
    // it was written and a sync got it to the disk after all (Close syncs the
    // store), or when only its superblock's write failed.
    EXPECT_EQ(
        ReopenAndCheck(path, &env,
                       s.ok() ? std::vector<uint64_t>{k + 1} : std::vector<uint64_t>{k, k + 1}),
        "");
    return;
  }
  // The fault clears: the next checkpoint succeeds and holds step k+1's pages too.
  env.ClearErrors();
  ASSERT_TRUE(StampStep(*heap, r, k + 2));
  Status s2 = use_commit ? heap->Commit() : heap->Checkpoint();
  ASSERT_TRUE(s2.ok()) << s2.ToString();
  Quiesce(*heap, env, env.InjectedErrorCount());
  EXPECT_EQ(heap->GetStats().checkpoint_errors, after.checkpoint_errors);
  ASSERT_TRUE(heap->Close().ok());
  heap.reset();
  // Everything synced: a power cut now changes nothing.
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReopenAndCheck(path, &env, {k + 2}), "");
}

void FaultEveryCall(bool use_commit) {
  ScratchDir dir;
  std::vector<CheckpointProfile> profile = ProfileCheckpoints(dir, 8);
  // One checkpoint that only appends and one that also migrates.
  const CheckpointProfile* plain = nullptr;
  const CheckpointProfile* migrating = nullptr;
  for (const CheckpointProfile& p : profile) {
    if (p.k == 0) continue;  // the first step's checkpoint: also covered below
    if (!p.migrates && !plain) plain = &p;
    if (p.migrates && !migrating) migrating = &p;
  }
  ASSERT_TRUE(plain && migrating);
  FaultTally tally;
  const auto t0 = std::chrono::steady_clock::now();
  // Sanitizer builds: every call index once, alternating errno and aftermath.
  uint64_t n = 0;
  for (const CheckpointProfile* p : {plain, migrating}) {
    for (FI::Op op : kIoOps) {
      for (uint64_t idx = 1; idx <= p->calls.n[op]; ++idx) {
        for (int err : {ENOSPC, EIO}) {
          for (bool crash : {false, true}) {
            if (testing::kSanitizedBuild && n++ % 4 != idx % 4) continue;
            CheckpointFault(dir, p->k, op, err, idx, use_commit, crash, &tally);
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
    }
  }
  std::printf(
      "%s: %llu faults injected (%llu returned to the caller, %llu in the migration "
      "after a durable append), %.1f s\n",
      use_commit ? "commit" : "checkpoint", static_cast<unsigned long long>(tally.faults),
      static_cast<unsigned long long>(tally.returned),
      static_cast<unsigned long long>(tally.in_migration),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_GT(tally.returned, 0u);
  EXPECT_GT(tally.in_migration, 0u);
}

TEST(IoError, CheckpointFailsAtEveryIoCall) { FaultEveryCall(false); }
TEST(IoError, CommitFailsAtEveryIoCall) { FaultEveryCall(true); }

// Every sync of a checkpoint (and of the migration after it) fails the way Linux
// fails one: the writes before it are lost though the process still reads them,
// and the next sync succeeds. Whatever the engine reports durable afterwards
// must survive a power cut: it has to write again what the failed sync lost.
TEST(IoError, SyncFailureThatLosesTheWritesBeforeIt) {
  ScratchDir dir;
  std::vector<CheckpointProfile> profile = ProfileCheckpoints(dir, 8);
  FaultTally tally;
  uint64_t n = 0;  // sanitizer builds: every other case
  for (const CheckpointProfile& p : profile) {
    if (p.k == 0) continue;
    for (FI::Op op : {FI::kDataSync, FI::kSync}) {
      for (uint64_t idx = 1; idx <= p.calls.n[op]; ++idx) {
        for (bool use_commit : {false, true}) {
          for (bool crash : {false, true}) {
            if (testing::kSanitizedBuild && n++ % 2 != 0) continue;
            CheckpointFault(dir, p.k, op, EIO, idx, use_commit, crash, &tally,
                            /*lose_writes=*/true);
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
    }
  }
  std::printf("%llu sync failures injected (%llu returned to the caller)\n",
              static_cast<unsigned long long>(tally.faults),
              static_cast<unsigned long long>(tally.returned));
  EXPECT_GT(tally.returned, 0u);
  EXPECT_GT(tally.in_migration, 0u);
}

// An Open with an injected fault either fails with the fault's code, or — when the
// fault hit the dirty tracker's setup (opening /proc/self/pagemap) — succeeds with
// the "full" tracking fallback. Returns false (after reporting) otherwise.
// A failed mmap of a staging buffer is reported as kResourceExhausted (memory).
bool OpenFailedOrFellBack(Result<std::unique_ptr<Heap>>& heap, FI::Op op, int err,
                          uint64_t* fallbacks) {
  if (heap.ok()) {
    const std::string tracking = (*heap)->GetStats().tracking;
    EXPECT_EQ(tracking, "full") << "Open succeeded despite the fault";
    ++*fallbacks;
    return tracking == "full";
  }
  const Code code = heap.status().code();
  const bool ok = code == CodeFor(err) || (op == FI::kMap && code == Code::kResourceExhausted);
  EXPECT_TRUE(ok) << heap.status().ToString();
  return ok;
}

// Open of a new store: a fault at every call of the creation (file, zeroed log,
// superblock, syncs, rename, directory sync) and of the first checkpoint.
TEST(IoError, CreateFailsAtEveryCall) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  OpCounts ref;
  {
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    ref = CountsOf(env);
    ASSERT_TRUE(heap->Close().ok());
  }
  uint64_t faults = 0, fallbacks = 0;
  const FI::Op ops[] = {FI::kOpen,     FI::kStat,  FI::kTruncate, FI::kPWrite, FI::kSync,
                        FI::kDataSync, FI::kPRead, FI::kLock,     FI::kMap};
  for (FI::Op op : ops) {
    for (uint64_t idx = 1; idx <= ref.n[op]; ++idx) {
      for (int err : {ENOSPC, EIO}) {
        SCOPED_TRACE(std::string("create: ") + ErrName(err) + " at " + FI::OpName(op) + " call " +
                     std::to_string(idx));
        dir.Clear();
        FI env(Env::Default());
        env.InjectError(op, err, static_cast<int>(idx), 1);
        {
          auto heap = Heap::Open(path, IoOptions(&env));
          ++faults;
          ASSERT_EQ(env.InjectedErrorCount(), 1u);
          if (!OpenFailedOrFellBack(heap, op, err, &fallbacks)) return;
        }
        // No temporary file is left behind.
        for (const std::string& f : dir.List()) EXPECT_EQ(f, "io.amber");
        env.ClearErrors();
        auto heap = MustOpen(path, &env);
        ASSERT_TRUE(heap);
        StampRoot* r = RootOf(*heap);
        ASSERT_EQ(r->version, 0u);
        ASSERT_TRUE(StampStep(*heap, r, 1));
        ASSERT_TRUE(heap->Checkpoint().ok());
        ASSERT_TRUE(heap->Close().ok());
        heap.reset();
        ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
        EXPECT_EQ(ReopenAndCheck(path, &env, {1}), "");
      }
    }
  }
  std::printf("create: %llu faults injected (%llu met by the tracker's fallback)\n",
              static_cast<unsigned long long>(faults), static_cast<unsigned long long>(fallbacks));
}

// Reopen of a store whose log holds unmigrated generations: a fault at every call
// of the open, the replay (reading the log images into the heap) and the
// verification of the home image.
TEST(IoError, ReopenFailsAtEveryCall) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  // Steps until the log holds generations the reopen must replay.
  auto build = [&](uint64_t* version) {
    dir.Clear();
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    StampRoot* r = RootOf(*heap);
    uint64_t v = 0;
    ASSERT_NO_FATAL_FAILURE(StepsUntilTheLogNeedsReplay(*heap, r, env, &v));
    *version = v;
    ASSERT_TRUE(heap->Close().ok());
  };
  uint64_t version = 0;
  build(&version);
  OpCounts ref;
  {
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    ref = CountsOf(env);
    // The reopen replays the log in place: it reads the images into the heap
    // and leaves the generations for the writer to migrate later.
    ASSERT_GT(ref.n[FI::kPRead], 0u) << "the reopen should read the log";
    ASSERT_GT(heap->GetStats().log_used, 0u) << "the reopen should not have migrated";
    ASSERT_TRUE(heap->Close().ok());
  }
  uint64_t faults = 0, fallbacks = 0;
  for (FI::Op op : {FI::kOpen, FI::kStat, FI::kLock, FI::kPRead, FI::kPWrite, FI::kDataSync,
                    FI::kSync, FI::kMap}) {
    for (uint64_t idx = 1; idx <= ref.n[op]; ++idx) {
      for (int err : {ENOSPC, EIO}) {
        // Sanitizer builds: one errno per call index, alternating.
        if (testing::kSanitizedBuild && (err == ENOSPC) != (idx % 2 == 0)) continue;
        SCOPED_TRACE(std::string("reopen: ") + ErrName(err) + " at " + FI::OpName(op) + " call " +
                     std::to_string(idx));
        uint64_t v;
        build(&v);
        ASSERT_EQ(v, version);
        FI env(Env::Default());
        env.InjectError(op, err, static_cast<int>(idx), 1);
        {
          auto heap = Heap::Open(path, IoOptions(&env));
          ++faults;
          ASSERT_EQ(env.InjectedErrorCount(), 1u);
          if (!OpenFailedOrFellBack(heap, op, err, &fallbacks)) return;
        }
        EXPECT_EQ(ReadOnlyVerify(path), "");
        env.ClearErrors();
        // A power cut after the failed recovery, then a good one.
        ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
        EXPECT_EQ(ReopenAndCheck(path, &env, {version}), "");
      }
    }
  }
  std::printf("reopen: %llu faults injected (%llu met by the tracker's fallback)\n",
              static_cast<unsigned long long>(faults), static_cast<unsigned long long>(fallbacks));
}

// ---------------------------------------------------------------------------
// A failed generation must not be skipped by one captured while it was written.

// The writer held inside the next DataSync (A's log sync) until released.
using HoldingEnv = testing::HoldNextSyncEnv<FaultInjectionEnv>;

// A reopen whose sync fails the way Linux fails one (the writes before it lost,
// though still read back from the page cache): the open fails; a power cut then
// leaves the state before it, and an open that succeeds afterwards must write
// again whatever it builds on, so that what it commits survives a power cut.
TEST(IoError, ReopenSyncFailureThatLosesTheWritesBeforeIt) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  auto build = [&](uint64_t* version) {
    dir.Clear();
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    StampRoot* r = RootOf(*heap);
    uint64_t v = 0;
    ASSERT_NO_FATAL_FAILURE(StepsUntilTheLogNeedsReplay(*heap, r, env, &v));
    // One more, left unnamed by a synced superblock (its own is not synced):
    // the reopen adopts it.
    ++v;
    ASSERT_TRUE(StampStep(*heap, r, v));
    ASSERT_TRUE(heap->Commit().ok());
    *version = v;
    env.PowerOff();  // kill -9 and a power cut: no Close
    heap.reset();
    ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  };
  uint64_t version = 0;
  build(&version);
  OpCounts ref;
  {
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    ref = CountsOf(env);
    ASSERT_TRUE(heap->Close().ok());
  }
  uint64_t faults = 0;
  for (FI::Op op : {FI::kDataSync, FI::kSync}) {
    for (uint64_t idx = 1; idx <= ref.n[op]; ++idx) {
      for (bool crash : {false, true}) {
        SCOPED_TRACE(std::string("reopen: EIO at ") + FI::OpName(op) + " call " +
                     std::to_string(idx) + ", writes before it lost" +
                     (crash ? ", then power cut" : ", then a good open"));
        uint64_t v;
        build(&v);
        ASSERT_EQ(v, version);
        FI env(Env::Default());
        env.SetSyncFailureLosesWrites(true);
        env.InjectError(op, EIO, static_cast<int>(idx), 1);
        {
          auto heap = Heap::Open(path, IoOptions(&env));
          ++faults;
          ASSERT_EQ(env.InjectedErrorCount(), 1u);
          ASSERT_FALSE(heap.ok()) << "the open succeeded despite a failed sync";
          EXPECT_EQ(heap.status().code(), Code::kIOError) << heap.status().ToString();
        }
        if (crash) {
          ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
          EXPECT_EQ(ReopenAndCheck(path, &env, {version}), "");
          continue;
        }
        {
          auto heap = MustOpen(path, &env);
          ASSERT_TRUE(heap);
          StampRoot* r = RootOf(*heap);
          ASSERT_TRUE(r);
          ASSERT_EQ(r->version, version);
          ASSERT_TRUE(StampStep(*heap, r, version + 1));
          Status c = heap->Commit();
          ASSERT_TRUE(c.ok()) << c.ToString();
          env.PowerOff();  // a kill -9 after the Commit: no Close
          heap.reset();
        }
        ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
        EXPECT_EQ(ReopenAndCheck(path, &env, {version + 1}), "");
      }
    }
  }
  std::printf("reopen: %llu sync failures injected\n", static_cast<unsigned long long>(faults));
  EXPECT_GT(faults, 0u);
}

// Pages recovered at open are home only in the page cache until the first
// migration syncs them. If a sync fails meanwhile, they may be lost, and a
// lost page may be evicted and read back stale through the heap's mapping
// (FaultInjectionEnv keeps lost pages readable, so the test checks the
// refusal, not the staleness): every later checkpoint and migration fails and
// asks for a reopen, which replays them again.
TEST(IoError, SyncFailureBeforeRecoveredPagesAreDurableRefusesFurtherCheckpoints) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  uint64_t version = 0;
  {
    FI env(Env::Default());
    auto heap = MustOpen(path, &env);
    ASSERT_TRUE(heap);
    StampRoot* r = RootOf(*heap);
    ASSERT_NO_FATAL_FAILURE(StepsUntilTheLogNeedsReplay(*heap, r, env, &version));
    ASSERT_TRUE(heap->Close().ok());
  }
  FI env(Env::Default());
  env.SetSyncFailureLosesWrites(true);
  {
    auto heap = MustOpen(path, &env);  // replays the log into the page cache
    ASSERT_TRUE(heap);
    ASSERT_GT(heap->GetStats().log_used, 0u);
    StampRoot* r = RootOf(*heap);
    ASSERT_TRUE(StampStep(*heap, r, version + 1));
    env.InjectError(FI::kDataSync, EIO, 1, 1);
    EXPECT_EQ(heap->Checkpoint().code(), Code::kIOError);
    Status again = heap->Checkpoint();
    EXPECT_EQ(again.code(), Code::kIOError) << again.ToString();
    EXPECT_TRUE(Contains(again.ToString(), "open the store again")) << again.ToString();
    EXPECT_TRUE(Contains(heap->GetStats().last_error, "open the store again"))
        << heap->GetStats().last_error;
  }
  EXPECT_EQ(ReopenAndCheck(path, &env, {version}), "");
}

TEST(IoError, FailedGenerationIsNotSkippedByTheNextOne) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  HoldingEnv env(Env::Default());
  auto heap = MustOpen(path, &env);
  ASSERT_TRUE(heap);
  StampRoot* r = RootOf(*heap);
  Prefix(*heap, r, env, 3);
  // Generation A (step 4) is being written when generation B (step 5) is captured.
  ASSERT_TRUE(StampStep(*heap, r, 4));
  env.HoldNext();
  Status sa;
  std::thread a([&] { sa = heap->Checkpoint(); });
  env.WaitHeld();
  ASSERT_TRUE(StampStep(*heap, r, 5));
  const uint64_t ioctls = env.CallCount(FI::kIoctl);
  Status sb;
  std::thread b([&] { sb = heap->Checkpoint(); });
  // B has been captured (its scans are ioctls) and queued behind A.
  for (int i = 0; i < 2000 && env.CallCount(FI::kIoctl) < ioctls + 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  env.InjectError(FI::kDataSync, EIO, 1, 1);  // A's log sync fails
  env.Release();
  a.join();
  b.join();
  EXPECT_EQ(sa.code(), Code::kIOError) << sa.ToString();
  // B may fail too, or succeed — but only if what it published is complete.
  ASSERT_TRUE(heap->Close().ok());
  heap.reset();
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReopenAndCheck(path, &env, {sb.ok() ? 5u : 3u}), "")
      << "B " << (sb.ok() ? "reported durable" : "failed: " + sb.ToString());
  // And with the fault gone, the next checkpoint holds both steps.
  env.ClearErrors();
  {
    auto h = MustOpen(path, &env);
    ASSERT_TRUE(h);
    StampRoot* rr = RootOf(*h);
    for (uint64_t v = rr->version + 1; v <= 6; ++v) ASSERT_TRUE(StampStep(*h, rr, v));
    ASSERT_TRUE(h->Checkpoint().ok());
    ASSERT_TRUE(h->Close().ok());
  }
  EXPECT_EQ(ReopenAndCheck(path, &env, {6}), "");
}

// ---------------------------------------------------------------------------
// A Commit() must not share a capture that failed after its gate closed: that
// capture wrote nothing (its pages wait for the next one), so sharing it would
// report a write durable that is not.

// An Env that fails the staging memory (anonymous maps placed by the kernel)
// asked for by one thread: each such call is held until Release().
class StagingFailEnv : public FaultInjectionEnv {
 public:
  StagingFailEnv() : FaultInjectionEnv(Env::Default()) {}
  void FailThisThreadsStaging() { thread_ = std::this_thread::get_id(); }
  void WaitHeld() { latch_.WaitHeld(); }
  void Release() { latch_.Release(); }
  Result<void*> Map(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) override {
    if (addr == nullptr && fd < 0 && thread_.load() == std::this_thread::get_id()) {
      latch_.Hold();
      return Status(Code::kResourceExhausted, "injected: no memory for staging");
    }
    return FaultInjectionEnv::Map(addr, len, prot, flags, fd, off);
  }

 private:
  std::atomic<std::thread::id> thread_{};
  testing::Latch latch_;
};

TEST(IoError, CommitDoesNotShareACaptureThatFailed) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  StagingFailEnv env;
  Options o = IoOptions(&env);
  o.capacity = uint64_t{64} << 20;
  o.log_size = uint64_t{32} << 20;
  struct Root {
    uint64_t marker = 0;
    char* big = nullptr;
  };
  constexpr size_t kBig = size_t{8} << 20;  // more than the staging pool holds
  {
    auto heap = Heap::Open(path, o);
    ASSERT_TRUE(heap.ok()) << heap.status().ToString();
    auto root = (*heap)->Root<Root>("commit-share");
    ASSERT_TRUE(root.ok());
    Root* r = *root;
    {
      Section s(**heap);
      r->big = static_cast<char*>((*heap)->Allocate(kBig));
      ASSERT_NE(r->big, nullptr);
    }
    ASSERT_TRUE((*heap)->Checkpoint().ok());
    {
      Section s(**heap);
      std::memset(r->big, 1, kBig);  // a dirty set that needs a new staging buffer
    }
    // A's capture takes the capture lock and waits in its staging allocation.
    Status sa;
    std::thread a([&] {
      env.FailThisThreadsStaging();
      sa = (*heap)->Checkpoint();
    });
    env.WaitHeld();
    {
      Section s(**heap);
      r->marker = 42;
    }
    // B commits while A's capture is under way: A's gate closes after B's call
    // began, so B may share A's generation, if A makes one. It does not.
    Status sb;
    std::thread b([&] { sb = (*heap)->Commit(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    env.Release();
    a.join();
    b.join();
    EXPECT_EQ(sa.code(), Code::kResourceExhausted) << sa.ToString();
    ASSERT_TRUE(sb.ok()) << sb.ToString();
    ASSERT_TRUE((*heap)->Close().ok());
  }
  // B's Commit() returned OK: the marker survives a power cut.
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  auto root = (*heap)->Root<Root>("commit-share");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ((*root)->marker, 42u);
}

// ---------------------------------------------------------------------------
// A full disk: through the Env (always), and a real small filesystem (if allowed).

// Holds a thread just before its sync, outside the store's sync lock: after
// HoldNext(kMigrate), the migration thread at its first checksum-table write
// (its home writes done, its sync to come); after HoldNext(kWriter), the writer
// thread at its second write (a small generation's images written, its
// descriptor, commit record and sync to come). Release(that one) lets it go.
class HoldThreadSyncEnv : public FaultInjectionEnv {
 public:
  enum Who { kWriter, kMigrate };
  using FaultInjectionEnv::FaultInjectionEnv;
  void HoldNext(Who w) {
    writes_[w] = 0;
    armed_[w] = true;
  }
  bool held(Who w) const { return held_[w]; }
  void Release(Who w) { latch_[w].Release(); }
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (std::strcmp(name, "amber-migrate") == 0 && armed_[kMigrate] &&
        off >= format::kTableOffset && off < format::LogOffset(kCapacity) &&
        armed_[kMigrate].exchange(false))
      Hold(kMigrate);
    if (std::strcmp(name, "amber-writer") == 0 && armed_[kWriter] && ++writes_[kWriter] == 2 &&
        armed_[kWriter].exchange(false))
      Hold(kWriter);
    return FaultInjectionEnv::PWrite(fd, buf, n, off);
  }

 private:
  void Hold(Who w) {
    held_[w] = true;
    latch_[w].Hold();
  }
  std::atomic<bool> armed_[2] = {false, false}, held_[2] = {false, false};
  std::atomic<int> writes_[2] = {0, 0};
  testing::Latch latch_[2];
};

// Takes steps, each with its checkpoint, until a migration is held at its sync
// (env.HoldNext(kMigrate) armed first). Returns the last step.
uint64_t StepsUntilAMigrationIsHeld(Heap& heap, StampRoot* r, HoldThreadSyncEnv& env) {
  uint64_t k = 0;
  while (!env.held(HoldThreadSyncEnv::kMigrate)) {
    EXPECT_LT(k, 64u) << "no migration started";
    if (k >= 64) return k;
    ++k;
    EXPECT_TRUE(StampStep(heap, r, k));
    EXPECT_TRUE(heap.Checkpoint().ok());
    // A log more than half full starts a migration: wait for it to be held.
    for (int i = 0; i < 10000 && !env.held(HoldThreadSyncEnv::kMigrate); ++i) {
      const Stats st = heap.GetStats();
      if (st.log_used * 2 <= st.log_size) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return k;
}

// The writer (each generation's log) and the migrator (home image, checksum
// table) sync the same file from two threads. Linux reports a writeback error
// to the first fdatasync of the file after it, whichever thread calls it, and
// drops the pages: a failed log sync may be the loss of the migration's home
// pages, and the migration's own sync then succeeds. That migration must fail
// rather than move the log's tail over generations whose home copy is lost.
TEST(IoError, FailedLogSyncVoidsAConcurrentMigration) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  HoldThreadSyncEnv env(Env::Default());
  env.SetSyncFailureLosesWrites(true);
  auto heap = MustOpen(path, &env);
  ASSERT_TRUE(heap);
  StampRoot* r = RootOf(*heap);
  env.HoldNext(HoldThreadSyncEnv::kMigrate);
  const uint64_t k = StepsUntilAMigrationIsHeld(*heap, r, env);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Step k is durable (its generation's sync came before the migration's).
  // The migration's home writes are in the page cache; the next log sync fails.
  const uint64_t migrations = heap->GetStats().migrations;
  ASSERT_TRUE(StampStep(*heap, r, k + 1));
  env.InjectError(FI::kDataSync, EIO, 1, 1);
  Status s = heap->Checkpoint();
  EXPECT_EQ(s.code(), Code::kIOError) << s.ToString();
  env.Release(HoldThreadSyncEnv::kMigrate);
  Stats st;
  for (int i = 0; i < 10000; ++i) {
    st = heap->GetStats();
    if (st.migrations > migrations || Contains(st.last_error, "migration")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(st.migrations, migrations) << "the migration moved the tail after a failed sync";
  EXPECT_TRUE(Contains(st.last_error, "migration")) << st.last_error;
  env.PowerOff();  // kill -9 here
  heap.reset();
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReopenAndCheck(path, &env, {k}), "");
}

// The other way round: the migration's sync fails while a generation's writes
// wait for the writer's sync, which then succeeds. The generation must not be
// reported durable.
TEST(IoError, FailedMigrationSyncVoidsAConcurrentGeneration) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  HoldThreadSyncEnv env(Env::Default());
  env.SetSyncFailureLosesWrites(true);
  auto heap = MustOpen(path, &env);
  ASSERT_TRUE(heap);
  StampRoot* r = RootOf(*heap);
  env.HoldNext(HoldThreadSyncEnv::kMigrate);
  const uint64_t k = StepsUntilAMigrationIsHeld(*heap, r, env);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Generation k+1: its images written, it is held before its sync.
  ASSERT_TRUE(StampStep(*heap, r, k + 1));
  env.HoldNext(HoldThreadSyncEnv::kWriter);
  Status s;
  std::thread t([&] { s = heap->Checkpoint(); });
  for (int i = 0; i < 10000 && !env.held(HoldThreadSyncEnv::kWriter); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(env.held(HoldThreadSyncEnv::kWriter));
  // The migration's sync fails (losing generation k+1's writes with its own)...
  env.InjectError(FI::kDataSync, EIO, 1, 1);
  env.Release(HoldThreadSyncEnv::kMigrate);
  for (int i = 0; i < 10000 && env.InjectedErrorCount() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(env.InjectedErrorCount(), 1u);
  // ...and the writer's own sync then succeeds.
  env.Release(HoldThreadSyncEnv::kWriter);
  t.join();
  EXPECT_EQ(s.code(), Code::kIOError) << "a generation was reported durable after a failed sync";
  env.PowerOff();  // kill -9 here
  heap.reset();
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(
      ReopenAndCheck(path, &env, s.ok() ? std::vector<uint64_t>{k + 1} : std::vector<uint64_t>{k}),
      "");
}

TEST(IoError, DiskFullThroughEnvThenSpaceFreed) {
  ScratchDir dir;
  const std::string path = dir.File("io.amber");
  FI env(Env::Default());
  auto heap = MustOpen(path, &env);
  ASSERT_TRUE(heap);
  StampRoot* r = RootOf(*heap);
  Prefix(*heap, r, env, 4);
  // The disk is full: every write fails until space is freed.
  env.InjectError(FI::kPWrite, ENOSPC, 1, -1);
  uint64_t v = 4;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(StampStep(*heap, r, ++v));
    Status s = heap->Checkpoint();
    EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
  }
  Stats st = heap->GetStats();
  EXPECT_EQ(st.checkpoint_errors, 3u);
  EXPECT_TRUE(Contains(st.last_error, "No space left")) << st.last_error;
  EXPECT_EQ(ReadOnlyVerify(path), "");
  env.ClearErrors();
  ASSERT_TRUE(StampStep(*heap, r, ++v));
  ASSERT_TRUE(heap->Checkpoint().ok());
  ASSERT_TRUE(heap->Close().ok());
  heap.reset();
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReopenAndCheck(path, &env, {v}), "");
}

// A small real filesystem, mounted for the test and unmounted after it.
class SmallFilesystem {
 public:
  // Tries a loop-mounted ext4 image, then a tmpfs; `why` says why neither worked.
  explicit SmallFilesystem(uint64_t mib) {
    if (::geteuid() != 0) {
      why_ = "mounting a filesystem needs root";
      return;
    }
    char tmpl[] = "/tmp/amber-smallfs-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      why_ = "mkdtemp failed";
      return;
    }
    root_ = tmpl;
    mnt_ = root_ + "/mnt";
    ::mkdir(mnt_.c_str(), 0700);
    const std::string img = root_ + "/fs.img";
    const std::string size = std::to_string(mib) + "M";
    std::string cmd = "truncate -s " + size + " " + img + " && mkfs.ext4 -q -F -m 0 " + img +
                      " >/dev/null 2>&1 && mount -o loop " + img + " " + mnt_ + " 2>/dev/null";
    if (std::system(cmd.c_str()) == 0) {
      kind_ = "ext4 on a " + size + " loop device";
      return;
    }
    ::unlink(img.c_str());
    if (::mount("tmpfs", mnt_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0) {
      kind_ = "tmpfs of " + size;
      return;
    }
    why_ = std::string("cannot mount a loop ext4 image or a tmpfs here: ") + std::strerror(errno);
  }
  ~SmallFilesystem() {
    if (!kind_.empty()) ::umount2(mnt_.c_str(), MNT_DETACH);
    if (!root_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(root_, ec);
    }
  }
  bool ok() const { return !kind_.empty(); }
  const std::string& why() const { return why_; }
  const std::string& kind() const { return kind_; }
  const std::string& dir() const { return mnt_; }

 private:
  std::string root_, mnt_, kind_, why_;
};

// Fills `path` until the filesystem is full, then frees `leave` bytes.
void FillFilesystem(const std::string& path, uint64_t leave) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  std::vector<char> buf(1 << 16, 'f');
  off_t size = 0;
  for (;;) {
    ssize_t n = ::write(fd, buf.data(), buf.size());
    if (n <= 0) break;
    size += n;
  }
  ASSERT_EQ(
      ::ftruncate(fd, size > static_cast<off_t>(leave) ? size - static_cast<off_t>(leave) : 0), 0);
  ::fsync(fd);
  ::close(fd);
}

// Blocks of 64 KiB, each filled with its index and a round number.
struct BigRoot {
  uint64_t count = 0;
  uint64_t* blocks[512] = {};
};
constexpr uint64_t kBlockBytes = 64 << 10;

TEST(IoError, RealFilesystemFullDuringMigration) {
  SmallFilesystem fs(16);
  if (!fs.ok()) GTEST_SKIP() << fs.why();
  std::printf("filesystem: %s\n", fs.kind().c_str());
  const std::string path = fs.dir() + "/full.amber";
  Options o;
  o.capacity = uint64_t{64} << 20;  // sparse: far more than the filesystem holds
  o.log_size = uint64_t{1} << 20;
  o.base_address = testing::TestBase(3);
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  auto root = (*heap)->Root<BigRoot>("big");
  ASSERT_TRUE(root.ok());
  BigRoot* r = *root;
  // Leave ~1.5 MiB free: the preallocated log still works, migration into the
  // sparse home image runs out of space.
  FillFilesystem(fs.dir() + "/filler", uint64_t{3} << 19);
  auto add_blocks = [&](int n) {
    Section s(**heap);
    for (int i = 0; i < n; ++i) {
      const uint64_t b = r->count;
      r->blocks[b] = static_cast<uint64_t*>((*heap)->Allocate(kBlockBytes));
      ASSERT_NE(r->blocks[b], nullptr);
      for (uint64_t j = 0; j < kBlockBytes / 8; ++j) r->blocks[b][j] = b * 1000003 + j;
      ++r->count;
    }
  };
  Status failed;
  uint64_t durable_count = 0;
  for (int round = 0; round < 60 && failed.ok(); ++round) {
    add_blocks(2);  // 128 KiB a checkpoint
    failed = (*heap)->Checkpoint();
    if (failed.ok()) durable_count = r->count;
  }
  ASSERT_FALSE(failed.ok()) << "the filesystem never filled up";
  EXPECT_EQ(failed.code(), Code::kNoSpace) << failed.ToString();
  Stats st = (*heap)->GetStats();
  EXPECT_GE(st.checkpoint_errors, 1u);
  EXPECT_TRUE(Contains(st.last_error, "No space left")) << st.last_error;
  std::printf("full after %llu blocks durable: %s\n",
              static_cast<unsigned long long>(durable_count), failed.ToString().c_str());
  // The program keeps running; a further attempt fails the same way.
  add_blocks(1);
  EXPECT_EQ((*heap)->Checkpoint().code(), Code::kNoSpace);
  // The last good checkpoint is intact.
  EXPECT_EQ(ReadOnlyVerify(path), "");
  // Space is freed: the next checkpoint succeeds and holds the failed attempts' pages.
  ASSERT_EQ(::unlink((fs.dir() + "/filler").c_str()), 0);
  add_blocks(1);
  Status ok = (*heap)->Checkpoint();
  ASSERT_TRUE(ok.ok()) << ok.ToString();
  const uint64_t count = r->count;
  ASSERT_TRUE((*heap)->Close().ok());
  heap->reset();
  auto again = Heap::Open(path, o);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto r2 = (*again)->Root<BigRoot>("big");
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ((*r2)->count, count);
  for (uint64_t b = 0; b < count; ++b)
    for (uint64_t j = 0; j < kBlockBytes / 8; j += 509)
      ASSERT_EQ((*r2)->blocks[b][j], b * 1000003 + j) << "block " << b;
  ASSERT_TRUE((*again)->Close().ok());
}

}  // namespace
}  // namespace amber
