// Power-loss test: crash-state exploration through FaultInjectionEnv.
//
// A deterministic heap workload (tests/stamp_workload.h: a root with a version
// counter, 40 blocks stamped with the step that last wrote them, frees and
// reallocations) runs with checkpoints on a store whose log is small (256 KiB for a
// 16 MiB heap), so the log wraps and migration runs every couple of checkpoints.
// The power is cut at a chosen point — after the Nth sync, or after the Wth write
// (just before a sync, so everything written since the previous sync is still
// unsynced) — and SimulateCrash then produces a crash state a real disk may leave:
// unsynced writes dropped, kept, a random subset of them (reordering between
// syncs), the last one torn at a 512-byte sector boundary, or sectors garbled. A
// fresh Heap is opened on what is left and must show exactly the state of some
// checkpoint (every stamp consistent, allocator sound), no older than the last
// Checkpoint() that was durable before the power went off. Before that, each crash
// state is inspected read-only the way `amber verify` does it, which must accept
// it without writing anything; and some recovered heaps are worked on, checkpointed
// and reopened again.
//
// Tests: every sync point (clean cut after sync N for every N, and a cut just
// before each sync with each plan), sampled write points, every write of sampled
// migrations, a second power cut at every write of the reopen that follows a crash
// (recovery reads the log into the heap; the first checkpoint then migrates what
// recovery left in the log), and garbled superblock / checksum-table sectors.
//
// The format assumes a 512-byte sector write is atomic (docs/format.md): the
// superblock lives in one sector, and the home checksum table is updated in place
// (read-modify-write of 4 KiB table pages whose other entries are durable data kept
// nowhere else). Garbling a sector of an unsynced write models a device that breaks
// that assumption: for log and home-image writes recovery must still succeed; when a
// superblock or table sector is garbled, Open may instead refuse the store with
// kCorruption — but it must never return wrong data.
//
// Reproducible: every failure prints the crash point, plan and seed, and
//   AMBER_POWERLOSS_SEED=<seed>        replays the same sample of crash states;
//   AMBER_POWERLOSS_ITERATIONS=<k>     explores k times more random states (soak).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "env/fault_injection_env.h"
#include "stamp_workload.h"
#include "store/format.h"
#include "store/store.h"
#include "test_util.h"

namespace amber {
namespace {

using testing::StampCheck;
using testing::StampRoot;
using testing::StampStep;

constexpr uint64_t kCapacity = uint64_t{16} << 20;
constexpr uint64_t kLogSize = uint64_t{256} << 10;
constexpr uint64_t kSteps = 36;

constexpr bool kSanitized = testing::kSanitizedBuild;

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// The seed of this run's sample (printed; AMBER_POWERLOSS_SEED replays it).
uint64_t Seed() {
  static const uint64_t seed = EnvU64("AMBER_POWERLOSS_SEED", std::random_device{}());
  return seed;
}
uint64_t Iterations() { return std::max<uint64_t>(1, EnvU64("AMBER_POWERLOSS_ITERATIONS", 1)); }

std::string Replay() {
  return "replay: AMBER_POWERLOSS_SEED=" + std::to_string(Seed()) +
         " AMBER_POWERLOSS_ITERATIONS=" + std::to_string(Iterations()) + " amber_tests " +
         "--gtest_filter=" +
         ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "." +
         ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

// ---------------------------------------------------------------------------
// An Env that labels every sync with the phase of the store protocol it ends,
// judged by the file regions written since the previous sync.

enum class Phase { kCreate, kAppend, kAppendPublish, kMigrate, kMigratePublish, kOther };

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kCreate:
      return "create";
    case Phase::kAppend:
      return "log append";
    case Phase::kAppendPublish:
      return "publish of a generation";
    case Phase::kMigrate:
      return "migration";
    case Phase::kMigratePublish:
      return "publish of a migration";
    case Phase::kOther:
      return "other";
  }
  return "?";
}

struct SyncPoint {
  uint64_t writes_before = 0;  // successful PWrite calls before this sync
  Phase phase = Phase::kOther;
  bool applied = false;  // the power was on when it was called
};

class TracingEnv : public FaultInjectionEnv {
 public:
  TracingEnv() : FaultInjectionEnv(Env::Default()) {
    log_offset_ = format::LogOffset(kCapacity);
    home_offset_ = format::HomeOffset(kCapacity, kLogSize);
  }

  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    Status s = FaultInjectionEnv::PWrite(fd, buf, n, off);
    std::lock_guard<std::mutex> l(mu_);
    if (s.ok()) {
      ++writes_;
      if (off < format::kTableOffset && n >= sizeof(format::Superblock)) {
        format::Superblock sb;
        std::memcpy(&sb, buf, sizeof(sb));
        if (std::memcmp(sb.magic, format::kSuperMagic, sizeof(sb.magic)) == 0)
          written_committed_ = std::max(written_committed_, sb.committed_gen);
      }
      // A generation's commit record is its last write (a page of its own):
      // once a sync follows, the generation counts, named by a superblock or not.
      if (off >= log_offset_ && off < home_offset_ && n >= sizeof(format::GenCommit)) {
        format::GenCommit c;
        std::memcpy(&c, buf, sizeof(c));
        if (std::memcmp(c.magic, format::kCommitMagic, sizeof(c.magic)) == 0)
          written_committed_ = std::max(written_committed_, c.gen);
      }
      if (off < format::kTableOffset) regions_ |= kSuper;
      if (off < log_offset_ && off + n > format::kTableOffset) regions_ |= kTable;
      if (off < home_offset_ && off + n > log_offset_) regions_ |= kLog;
      if (off + n > home_offset_) regions_ |= kHome;
    }
    return s;
  }
  Status Sync(int fd) override {
    Record(true);
    return FaultInjectionEnv::Sync(fd);
  }
  Status DataSync(int fd) override {
    Record(false);
    return FaultInjectionEnv::DataSync(fd);
  }

  std::vector<SyncPoint> syncs() const {
    std::lock_guard<std::mutex> l(mu_);
    return syncs_;
  }
  uint64_t writes() const {
    std::lock_guard<std::mutex> l(mu_);
    return writes_;
  }
  // The newest generation that counts on disk: every superblock and every
  // generation's commit record written before a sync made with the power on
  // is durable (a sync covers the whole file, whichever thread wrote). Read
  // from what was written, not from the order of phases, which a background
  // migration makes vary.
  uint64_t DurableCommittedGen() const {
    std::lock_guard<std::mutex> l(mu_);
    return durable_committed_;
  }

 private:
  enum : unsigned { kSuper = 1, kTable = 2, kLog = 4, kHome = 8 };

  void Record(bool fsync) {
    const bool on = !IsPoweredOff();
    std::lock_guard<std::mutex> l(mu_);
    SyncPoint p;
    p.writes_before = writes_;
    p.applied = on;
    if (fsync) {
      p.phase = Phase::kCreate;
    } else if (regions_ & (kHome | kTable)) {
      p.phase = Phase::kMigrate;
    } else if (regions_ & kLog) {
      p.phase = Phase::kAppend;
    } else if (regions_ & kSuper) {
      p.phase = last_data_ == Phase::kMigrate ? Phase::kMigratePublish : Phase::kAppendPublish;
    }
    if (p.phase == Phase::kMigrate || p.phase == Phase::kAppend) last_data_ = p.phase;
    if (on) durable_committed_ = written_committed_;
    regions_ = 0;
    syncs_.push_back(p);
  }

  mutable std::mutex mu_;
  uint64_t log_offset_, home_offset_;
  uint64_t writes_ = 0;
  unsigned regions_ = 0;
  Phase last_data_ = Phase::kOther;
  uint64_t written_committed_ = 0, durable_committed_ = 0;
  std::vector<SyncPoint> syncs_;
};

// Most tests migrate inline in the writer thread, so that the order of writes
// and syncs is the same in every run and a cut after write W or sync N means the
// same point each time (the exhaustive and sampled explorations rely on it).
// BackgroundMigrationRandomCuts turns the migrator thread on, as in production.
bool g_background_migration = false;

Options PowerLossOptions(Env* env) {
  Options o;
  o.background_migration = g_background_migration;
  o.capacity = kCapacity;
  o.log_size = kLogSize;
  o.base_address = testing::TestBase(2);
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.verify_on_open = true;
  o.env = env;
  return o;
}

// Two steps share a checkpoint now and then.
bool CheckpointAfter(uint64_t v) { return v == kSteps || testing::StampMix(v, 99) % 4 != 0; }

// ---------------------------------------------------------------------------
// The workload run up to the power cut.

struct RunLog {
  Status open_status;
  uint64_t durable = 0;                   // newest version whose generation reached the disk
  uint64_t attempted = 0;                 // newest version a Checkpoint() was asked for
  std::vector<uint64_t> checkpointed{0};  // versions Checkpoint() captured (0: the empty heap)
  uint64_t migrations = 0;
  uint64_t generations = 0;
};

// Runs the workload until its end or until the power is off; closes the heap.
RunLog RunWorkload(TracingEnv* env, const std::string& path) {
  RunLog log;
  auto heap = Heap::Open(path, PowerLossOptions(env));
  if (!heap.ok()) {
    log.open_status = heap.status();
    return log;
  }
  auto root = (*heap)->Root<StampRoot>(testing::kStampRootName);
  EXPECT_TRUE(root.ok()) << root.status().ToString();
  if (!root.ok()) return log;
  for (uint64_t v = 1; v <= kSteps && !env->IsPoweredOff(); ++v) {
    EXPECT_TRUE(StampStep(**heap, *root, v)) << "heap full at step " << v;
    if (!CheckpointAfter(v)) continue;
    log.attempted = v;
    log.checkpointed.push_back(v);
    Status s = (*heap)->Checkpoint();
    EXPECT_TRUE(s.ok()) << "checkpoint at step " << v << ": " << s.ToString();
    if (s.ok() && env->DurableCommittedGen() >= (*heap)->GetStats().last_generation)
      log.durable = v;
  }
  Stats st = (*heap)->GetStats();
  log.migrations = st.migrations;
  log.generations = st.last_generation;
  EXPECT_TRUE((*heap)->Close().ok());
  return log;
}

// Opens the store left by a crash and checks it. Returns "" if the state is exactly
// a checkpoint's, not older than log.durable; *corrupt is set (and "" returned) if
// Open reported kCorruption and corruption_ok.
std::string OpenAndCheck(Env* env, const std::string& path, const RunLog& log, bool corruption_ok,
                         uint64_t* version, bool* corrupt = nullptr, bool continue_work = false) {
  auto heap = Heap::Open(path, PowerLossOptions(env));
  if (!heap.ok()) {
    if (corruption_ok && heap.status().code() == Code::kCorruption) {
      if (corrupt) *corrupt = true;
      return "";
    }
    return "reopen failed: " + heap.status().ToString();
  }
  auto root = (*heap)->Root<StampRoot>(testing::kStampRootName);
  if (!root.ok()) return "root: " + root.status().ToString();
  const uint64_t v = (*root)->version;
  *version = v;
  if (v < log.durable)
    return "recovered version " + std::to_string(v) + " but version " +
           std::to_string(log.durable) +
           " was durable before the crash (a reported checkpoint was lost)";
  if (std::find(log.checkpointed.begin(), log.checkpointed.end(), v) == log.checkpointed.end())
    return "recovered version " + std::to_string(v) + " was never checkpointed";
  std::string bad = StampCheck(**heap, *root);
  if (!bad.empty()) return bad;
  if (continue_work) {
    // The recovered heap must be fully usable: more steps, a checkpoint, a reopen.
    for (uint64_t w = v + 1; w <= v + 2; ++w)
      if (!StampStep(**heap, *root, w)) return "heap full after recovery";
    Status s = (*heap)->Checkpoint();
    if (!s.ok()) return "checkpoint after recovery: " + s.ToString();
    if (Status c = (*heap)->Close(); !c.ok()) return "close after recovery: " + c.ToString();
    heap->reset();
    auto again = Heap::Open(path, PowerLossOptions(env));
    if (!again.ok()) return "second reopen: " + again.status().ToString();
    auto r2 = (*again)->Root<StampRoot>(testing::kStampRootName);
    if (!r2.ok()) return "root after second reopen: " + r2.status().ToString();
    if ((*r2)->version != v + 2)
      return "after recovery, checkpoint of version " + std::to_string(v + 2) + " reopened as " +
             std::to_string((*r2)->version);
    bad = StampCheck(**again, *r2);
    if (!bad.empty()) return "after recovery and more work: " + bad;
    return "";
  }
  if (Status c = (*heap)->Close(); !c.ok()) return "close: " + c.ToString();
  return "";
}

// What `amber verify` does, on the crash state before any recovery: a read-only
// open, the log walked with every page image checked, the home image checked
// against its table. It must accept every crash state (kCorruption only when
// corruption_ok) and must not write, sync, truncate or lock anything.
std::string ReadOnlyCheck(const std::string& path, const RunLog& log, bool corruption_ok) {
  FaultInjectionEnv env(Env::Default());
  Options o = PowerLossOptions(&env);
  o.create_if_missing = false;
  std::string bad;
  {
    auto store = Store::Open(&env, path, o, Store::Mode::kReadOnly);
    if (!store.ok()) {
      // No store yet: the cut came before its creation was durable.
      if (store.status().code() == Code::kNotFound && log.durable == 0) return "";
      if (corruption_ok && store.status().code() == Code::kCorruption) return "";
      return "read-only open: " + store.status().ToString();
    }
    Status s = (*store)->Recover(/*verify_home=*/true);
    if (!s.ok() && !(corruption_ok && s.code() == Code::kCorruption))
      bad = "read-only verification (amber verify) of the crash state: " + s.ToString();
  }
  for (auto op :
       {FaultInjectionEnv::kPWrite, FaultInjectionEnv::kDataSync, FaultInjectionEnv::kSync,
        FaultInjectionEnv::kTruncate, FaultInjectionEnv::kAllocate, FaultInjectionEnv::kLock,
        FaultInjectionEnv::kUnlink}) {
    if (env.CallCount(op) != 0)
      bad += std::string(bad.empty() ? "" : "; ") + "read-only inspection called " +
             FaultInjectionEnv::OpName(op);
  }
  return bad;
}

// ---------------------------------------------------------------------------
// Crash plans

enum class PlanKind {
  kDropAll,
  kKeepAll,
  kTearLast,
  kRandomSubset,
  kGarbleLogHome,   // garbles log and home-image writes only: must always recover
  kGarbleAny,       // SQLite test6 style, any write
  kGarbleMetadata,  // garbles every pending superblock (its sector 0) and table write
};

const char* PlanName(PlanKind k) {
  switch (k) {
    case PlanKind::kDropAll:
      return "DropAll";
    case PlanKind::kKeepAll:
      return "KeepAll";
    case PlanKind::kTearLast:
      return "TearLast";
    case PlanKind::kRandomSubset:
      return "KeepRandomSubset";
    case PlanKind::kGarbleLogHome:
      return "GarbleLogAndHome";
    case PlanKind::kGarbleAny:
      return "GarbleAny";
    case PlanKind::kGarbleMetadata:
      return "GarbleMetadata";
  }
  return "?";
}

// Writes that touch the superblock slots or the checksum table: the sectors whose
// atomicity the format relies on.
bool IsMetadataWrite(const PendingWrite& w) {
  return w.kind == PendingWrite::kWrite && w.offset < format::LogOffset(kCapacity);
}

// Builds the plan for the pending list `pending`.
CrashPlan MakePlan(PlanKind kind, uint64_t seed, const std::vector<PendingWrite>& pending) {
  switch (kind) {
    case PlanKind::kDropAll:
      return CrashPlan::DropAll();
    case PlanKind::kKeepAll:
      return CrashPlan::KeepAll();
    case PlanKind::kTearLast:
      return CrashPlan::TearLast(seed);
    case PlanKind::kRandomSubset:
      return CrashPlan::KeepRandomSubset(seed, 0.25 + static_cast<double>(seed % 3) * 0.25);
    case PlanKind::kGarbleAny:
      return CrashPlan::Garble(seed, 0.3, 0.5);
    case PlanKind::kGarbleMetadata: {
      std::mt19937_64 rng(seed);
      std::vector<WriteFate> fates;
      for (const PendingWrite& w : pending) {
        WriteFate f;
        const uint64_t r = rng();
        if (IsMetadataWrite(w)) {
          f.action = WriteFate::kGarble;
          f.sector = w.offset < format::kTableOffset ? 0 : r;  // the superblock's own sector
        } else {
          f.action = r % 2 ? WriteFate::kKeep : WriteFate::kDrop;
        }
        fates.push_back(f);
      }
      return CrashPlan::Explicit(std::move(fates), seed);
    }
    case PlanKind::kGarbleLogHome: {
      // Garble only log and home-image writes (superblock and table sectors are
      // assumed atomic).
      std::mt19937_64 rng(seed);
      std::vector<WriteFate> fates;
      for (const PendingWrite& w : pending) {
        WriteFate f;
        const uint64_t r = rng();
        if (!IsMetadataWrite(w) && r % 2 == 0) {
          f.action = WriteFate::kGarble;
          f.sector = rng();
        } else {
          f.action = (r >> 8) % 2 ? WriteFate::kKeep : WriteFate::kDrop;
        }
        fates.push_back(f);
      }
      return CrashPlan::Explicit(std::move(fates), seed);
    }
  }
  return CrashPlan::DropAll();
}

const char* FateName(WriteFate::Action a) {
  switch (a) {
    case WriteFate::kKeep:
      return "kept";
    case WriteFate::kDrop:
      return "dropped";
    case WriteFate::kTear:
      return "torn";
    case WriteFate::kGarble:
      return "garbled";
  }
  return "?";
}

// The pending operations and what the crash did to each, for failure messages.
std::string DescribePending(const std::vector<PendingWrite>& pending,
                            const std::vector<WriteFate>& fates) {
  std::string out;
  for (size_t i = 0; i < pending.size() && i < 64; ++i) {
    const PendingWrite& w = pending[i];
    out += "\n    " +
           std::string(w.kind == PendingWrite::kWrite      ? "write"
                       : w.kind == PendingWrite::kTruncate ? "truncate"
                                                           : "allocate") +
           " at " + std::to_string(w.offset) + " +" + std::to_string(w.length);
    if (i < fates.size()) {
      out += ": " + std::string(FateName(fates[i].action));
      if (fates[i].action == WriteFate::kTear || fates[i].action == WriteFate::kGarble)
        out += " (sector " + std::to_string(fates[i].sector) + ")";
    }
  }
  if (pending.size() > 64) out += "\n    ...";
  return out;
}

// One crash state: the power cut, then the plan.
struct CrashCase {
  int64_t after_syncs = -1;   // SetCrashAfterSyncs(n), or
  int64_t after_writes = -1;  // SetCrashAfterWrites(n)
  PlanKind plan = PlanKind::kDropAll;
  uint64_t seed = 0;
  std::string label;  // the phase the cut falls in
  bool continue_work = false;

  std::string Describe() const {
    std::string s = after_syncs >= 0 ? "power off after sync " + std::to_string(after_syncs)
                                     : "power off after write " + std::to_string(after_writes);
    return s + " (" + label + "), plan " + PlanName(plan) + " seed " + std::to_string(seed);
  }
};

struct Tally {
  uint64_t states = 0;       // crash states checked
  uint64_t pending_ops = 0;  // unsynced operations the plans decided about
  uint64_t torn = 0, garbled = 0, dropped = 0;
  uint64_t refused = 0;  // kCorruption for a garbled superblock/table sector (accepted)
  std::map<uint64_t, uint64_t> versions;  // recovered version -> count
};

// Runs one crash case in `dir`. Returns "" or the failure.
std::string RunCase(const testing::ScratchDir& dir, const CrashCase& c, Tally* tally) {
  dir.Clear();
  const std::string path = dir.File("pl.amber");
  TracingEnv env;
  if (c.after_syncs >= 0) env.SetCrashAfterSyncs(static_cast<int>(c.after_syncs));
  if (c.after_writes >= 0) env.SetCrashAfterWrites(static_cast<int>(c.after_writes));
  RunLog log = RunWorkload(&env, path);
  if (!log.open_status.ok() && !env.IsPoweredOff())
    return "workload open failed with the power on: " + log.open_status.ToString();
  const std::vector<PendingWrite> pending = env.PendingWrites();
  std::vector<WriteFate> fates;
  Status s = env.SimulateCrash(MakePlan(c.plan, c.seed, pending), &fates);
  if (!s.ok()) return "SimulateCrash: " + s.ToString();
  bool metadata_garbled = false;
  for (size_t i = 0; i < fates.size(); ++i) {
    ++tally->pending_ops;
    if (fates[i].action == WriteFate::kTear) ++tally->torn;
    if (fates[i].action == WriteFate::kDrop) ++tally->dropped;
    if (fates[i].action == WriteFate::kGarble) {
      ++tally->garbled;
      if (IsMetadataWrite(pending[i])) metadata_garbled = true;
    }
  }
  uint64_t version = 0;
  bool corrupt = false;
  std::string bad = ReadOnlyCheck(path, log, metadata_garbled);
  if (bad.empty())
    bad = OpenAndCheck(&env, path, log, metadata_garbled, &version, &corrupt, c.continue_work);
  ++tally->states;
  if (corrupt) {
    ++tally->refused;
  } else if (bad.empty()) {
    ++tally->versions[version];
  }
  if (!bad.empty())
    return bad + "\n  crash state: " + c.Describe() + ", " + std::to_string(pending.size()) +
           " pending operations; durable version before the cut " + std::to_string(log.durable) +
           ", last attempted " + std::to_string(log.attempted) + DescribePending(pending, fates);
  return "";
}

// The uninterrupted run: how many syncs and writes it makes, and in which phases.
struct Reference {
  std::vector<SyncPoint> syncs;
  uint64_t writes = 0;
  RunLog log;
};

Reference ReferenceRun(const testing::ScratchDir& dir) {
  dir.Clear();
  TracingEnv env;
  Reference ref;
  ref.log = RunWorkload(&env, dir.File("pl.amber"));
  ref.syncs = env.syncs();
  ref.writes = env.writes();
  EXPECT_TRUE(ref.log.open_status.ok()) << ref.log.open_status.ToString();
  EXPECT_EQ(ref.log.durable, kSteps);
  // Every Checkpoint() made a generation (+1: the first one at creation).
  EXPECT_EQ(ref.log.generations, ref.log.checkpointed.size());
  EXPECT_GE(ref.log.migrations, 8u) << "the log should wrap and migrate often";
  return ref;
}

void Report(const char* what, const Tally& t, double seconds) {
  std::printf(
      "%s: %llu crash states (%llu pending ops decided: %llu dropped, %llu torn, %llu garbled; "
      "%llu refused as corrupt for a garbled superblock or table sector), %zu distinct versions "
      "recovered, "
      "%.1f s, AMBER_POWERLOSS_SEED=%llu\n",
      what, static_cast<unsigned long long>(t.states),
      static_cast<unsigned long long>(t.pending_ops), static_cast<unsigned long long>(t.dropped),
      static_cast<unsigned long long>(t.torn), static_cast<unsigned long long>(t.garbled),
      static_cast<unsigned long long>(t.refused), t.versions.size(), seconds,
      static_cast<unsigned long long>(Seed()));
  std::fflush(stdout);
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs cases, stopping at the first failure (printed with its replay command).
void RunCases(const char* what, const testing::ScratchDir& dir, const std::vector<CrashCase>& cases,
              size_t min_versions = 4) {
  const auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  for (const CrashCase& c : cases) {
    std::string bad = RunCase(dir, c, &tally);
    ASSERT_TRUE(bad.empty()) << bad << "\n  " << Replay();
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "while running " << c.Describe() << "\n  " << Replay();
      return;
    }
  }
  Report(what, tally, Since(t0));
  EXPECT_GE(tally.versions.size(), min_versions) << "the crash states should recover many versions";
}

// ---------------------------------------------------------------------------
// Tests

// The reference run itself: deterministic, wraps the log, migrates.
TEST(PowerLoss, ReferenceRunIsDeterministic) {
  testing::ScratchDir dir;
  Reference a = ReferenceRun(dir);
  Reference b = ReferenceRun(dir);
  ASSERT_EQ(a.syncs.size(), b.syncs.size());
  EXPECT_EQ(a.writes, b.writes);
  for (size_t i = 0; i < a.syncs.size(); ++i) {
    EXPECT_EQ(a.syncs[i].writes_before, b.syncs[i].writes_before) << "sync " << i;
    EXPECT_EQ(a.syncs[i].phase, b.syncs[i].phase) << "sync " << i;
  }
  std::map<Phase, int> phases;
  for (const SyncPoint& p : a.syncs) ++phases[p.phase];
  std::printf("reference run: %zu syncs, %llu writes, %llu generations, %llu migrations\n",
              a.syncs.size(), static_cast<unsigned long long>(a.writes),
              static_cast<unsigned long long>(a.log.generations),
              static_cast<unsigned long long>(a.log.migrations));
  for (auto& [p, n] : phases) std::printf("  %d syncs end a %s\n", n, PhaseName(p));
  EXPECT_GT(phases[Phase::kMigrate], 0);
  EXPECT_GT(phases[Phase::kMigratePublish], 0);
}

// A cut during creation, before the temporary file is renamed into place: there
// is no store afterwards (a machine without power renames nothing), and the next
// Open of the same process (same pid, so the same temporary name is taken)
// creates one.
TEST(PowerLoss, CutDuringCreationLeavesNoStoreAndCreatesAgain) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pl.amber");
  for (int syncs = 0; syncs <= 1; ++syncs) {
    dir.Clear();
    TracingEnv env;
    env.SetCrashAfterSyncs(syncs);  // 0: before anything; 1: after the file's fsync
    auto heap = Heap::Open(path, PowerLossOptions(&env));
    ASSERT_FALSE(heap.ok()) << "created a store with the power off";
    EXPECT_EQ(heap.status().code(), Code::kNotFound) << heap.status().ToString();
    ASSERT_TRUE(env.SimulateCrash(CrashPlan::KeepAll()).ok());
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_EQ(dir.List().size(), 1u) << "the temporary file of the cut creation";
    RunLog none;
    uint64_t version = 1;
    EXPECT_EQ(OpenAndCheck(&env, path, none, false, &version), "");
    EXPECT_EQ(version, 0u);
  }
}

// Every sync point: a clean cut after sync N (N = 0 .. all), and a cut just before
// each sync with the writes it would have made durable still pending, decided by
// each plan.
TEST(PowerLoss, EverySyncPoint) {
  testing::ScratchDir dir;
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed());
  std::vector<CrashCase> cases;
  const uint64_t stride = kSanitized ? 6 : 1;  // sanitizer builds: every 6th point
  for (size_t n = 0; n <= ref.syncs.size(); n += stride) {
    CrashCase c;
    c.after_syncs = static_cast<int64_t>(n);
    c.label =
        n == 0 ? "before anything" : std::string("after a ") + PhaseName(ref.syncs[n - 1].phase);
    c.continue_work = n % 8 == 0;
    cases.push_back(c);
  }
  std::set<uint64_t> seen;
  for (size_t k = 0; k < ref.syncs.size(); k += stride) {
    const SyncPoint& p = ref.syncs[k];
    if (!seen.insert(p.writes_before).second) continue;  // no writes between two syncs
    std::vector<PlanKind> plans = {PlanKind::kDropAll, PlanKind::kTearLast,
                                   PlanKind::kGarbleLogHome};
    for (uint64_t i = 0; i < 2 * Iterations(); ++i) plans.push_back(PlanKind::kRandomSubset);
    for (PlanKind plan : plans) {
      CrashCase c;
      c.after_writes = static_cast<int64_t>(p.writes_before);
      c.plan = plan;
      c.seed = rng();
      c.label = std::string("before the sync ending a ") + PhaseName(p.phase);
      c.continue_work = c.seed % 8 == 0;
      cases.push_back(c);
    }
  }
  RunCases("every sync point", dir, cases);
}

// Cuts after randomly sampled writes (anywhere, not only before syncs), with
// every plan, including garbling any sector (superblocks too: then Open may refuse
// the store as corrupt, but must never return wrong data).
TEST(PowerLoss, SampledWritePoints) {
  testing::ScratchDir dir;
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed() ^ 0x5752495445ull);
  const uint64_t samples = (kSanitized ? 15 : 60) * Iterations();
  const PlanKind kinds[] = {PlanKind::kDropAll,       PlanKind::kKeepAll,
                            PlanKind::kTearLast,      PlanKind::kRandomSubset,
                            PlanKind::kGarbleLogHome, PlanKind::kGarbleAny};
  std::vector<CrashCase> cases;
  for (uint64_t i = 0; i < samples; ++i) {
    CrashCase c;
    c.after_writes = static_cast<int64_t>(rng() % (ref.writes + 1));
    c.plan = kinds[rng() % std::size(kinds)];
    c.seed = rng();
    c.continue_work = c.seed % 8 == 0;
    // The phase: that of the first sync after the cut.
    c.label = "end of run";
    for (const SyncPoint& p : ref.syncs) {
      if (p.writes_before >= static_cast<uint64_t>(c.after_writes)) {
        c.label = std::string("during a ") + PhaseName(p.phase);
        break;
      }
    }
    cases.push_back(c);
  }
  RunCases("sampled write points", dir, cases);
}

// A device that breaks the atomic-sector assumption: garbage in the superblock's
// sector or in a checksum-table sector of an unsynced write. Open may refuse the
// store (kCorruption) — it must never return wrong data — and the read-only
// inspection must agree.
TEST(PowerLoss, GarbledMetadataIsRefusedNeverMisread) {
  testing::ScratchDir dir;
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed() ^ 0x4741524dull);
  std::vector<CrashCase> cases;
  size_t n = 0;
  for (const SyncPoint& p : ref.syncs) {
    if (p.phase != Phase::kAppendPublish && p.phase != Phase::kMigratePublish &&
        p.phase != Phase::kMigrate)
      continue;
    if (kSanitized && n++ % 3 != 0) continue;  // sanitizer builds: every third point
    CrashCase c;
    c.after_writes = static_cast<int64_t>(p.writes_before);
    c.plan = PlanKind::kGarbleMetadata;
    c.seed = rng();
    c.label = std::string("before the sync ending a ") + PhaseName(p.phase);
    cases.push_back(c);
  }
  const auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  for (const CrashCase& c : cases) {
    std::string bad = RunCase(dir, c, &tally);
    ASSERT_TRUE(bad.empty()) << bad << "\n  " << Replay();
  }
  Report("garbled metadata", tally, Since(t0));
  EXPECT_GT(tally.refused, 0u) << "no garbled superblock or table sector was refused";
}

// Every write of a sample of migrations (home pages, checksum table, the
// superblock that frees the log), with drop / tear / subset / garble plans.
TEST(PowerLoss, CrashInsideMigration) {
  testing::ScratchDir dir;
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed() ^ 0x4d494752ull);
  // Write ranges of each migration: (writes before its data sync's predecessor, ...].
  std::vector<std::pair<uint64_t, uint64_t>> migrations;  // [first write, last write] (1-based)
  for (size_t k = 0; k < ref.syncs.size(); ++k) {
    if (ref.syncs[k].phase != Phase::kMigrate) continue;
    const uint64_t first = k == 0 ? 1 : ref.syncs[k - 1].writes_before + 1;
    const uint64_t last = k + 1 < ref.syncs.size() ? ref.syncs[k + 1].writes_before : ref.writes;
    migrations.emplace_back(first, last);
  }
  ASSERT_GE(migrations.size(), 4u);
  std::shuffle(migrations.begin(), migrations.end(), rng);
  const size_t count = std::min(migrations.size(), size_t{(kSanitized ? 1u : 3u)} * Iterations());
  const PlanKind kinds[] = {PlanKind::kDropAll, PlanKind::kTearLast, PlanKind::kRandomSubset,
                            PlanKind::kGarbleLogHome};
  std::vector<CrashCase> cases;
  for (size_t m = 0; m < count; ++m) {
    for (uint64_t w = migrations[m].first - 1; w <= migrations[m].second; ++w) {
      CrashCase c;
      c.after_writes = static_cast<int64_t>(w);
      c.plan = kinds[rng() % std::size(kinds)];
      c.seed = rng();
      c.label = "inside migration (writes " + std::to_string(migrations[m].first) + "-" +
                std::to_string(migrations[m].second) + ")";
      cases.push_back(c);
    }
  }
  RunCases("inside migration", dir, cases, kSanitized ? 1 : 2);
}

// With the migrator thread on (the default outside these tests): migrations run
// while the writer appends, so the interleaving of their writes and syncs varies
// from run to run. Cuts at random syncs and writes of that run, every plan; each
// crash state must still recover a checkpoint no older than the last durable one
// (which the tracing env reads from the superblocks that reached the disk).
TEST(PowerLoss, BackgroundMigrationRandomCuts) {
  testing::ScratchDir dir;
  g_background_migration = true;
  struct Reset {
    ~Reset() { g_background_migration = false; }
  } reset;
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed() ^ 0x42474d49ull);
  const uint64_t samples = (kSanitized ? 12 : 48) * Iterations();
  const PlanKind kinds[] = {PlanKind::kDropAll, PlanKind::kKeepAll, PlanKind::kTearLast,
                            PlanKind::kRandomSubset, PlanKind::kGarbleLogHome};
  std::vector<CrashCase> cases;
  for (uint64_t i = 0; i < samples; ++i) {
    CrashCase c;
    if (i % 2 == 0) {
      c.after_syncs = static_cast<int64_t>(rng() % (ref.syncs.size() + 1));
    } else {
      c.after_writes = static_cast<int64_t>(rng() % (ref.writes + 1));
    }
    c.plan = kinds[rng() % std::size(kinds)];
    c.seed = rng();
    c.label = "background migration";
    c.continue_work = c.seed % 4 == 0;
    cases.push_back(c);
  }
  RunCases("background migration", dir, cases);
}

// Reads the whole file (holes as zeros are fine at this size: a few MiB).
std::string ReadFile(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return out;
  struct stat st;
  ::fstat(fd, &st);
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

// Writes `data` over the file in place (same inode: the Env's own fds stay valid),
// skipping all-zero pages so the home image stays sparse.
void RestoreFile(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(data.size())), 0);
  static const std::string kZero(4096, '\0');
  for (size_t off = 0; off < data.size(); off += 4096) {
    const size_t n = std::min<size_t>(4096, data.size() - off);
    if (data.compare(off, n, kZero, 0, n) == 0) continue;
    ASSERT_EQ(::pwrite(fd, data.data() + off, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  }
  ::close(fd);
}

// A crash, then a second power cut at every write of the reopen and its first
// checkpoint (recovery itself only reads: it loads the log's newest images into
// the heap; the checkpoint appends a generation to the nearly full log and so
// migrates the generations recovery left there), then a third open that must
// still find a checkpoint no older than the one durable before the first crash.
TEST(PowerLoss, CrashDuringRecovery) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pl.amber");
  Reference ref = ReferenceRun(dir);
  std::mt19937_64 rng(Seed() ^ 0x5245434full);
  // First cuts: just before the sync that ends a migration's data writes (the log is
  // as full as it gets) or a publish, keeping everything (so the newest generation
  // is published and its migration is left to recovery).
  std::vector<uint64_t> points;
  for (const SyncPoint& p : ref.syncs)
    if (p.phase == Phase::kMigrate || p.phase == Phase::kAppendPublish)
      points.push_back(p.writes_before);
  std::shuffle(points.begin(), points.end(), rng);
  points.resize(std::min(points.size(), size_t{(kSanitized ? 2u : 6u)} * Iterations()));
  const auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  uint64_t recovery_writes = 0, recovery_cuts = 0;
  const PlanKind kinds[] = {PlanKind::kDropAll, PlanKind::kKeepAll, PlanKind::kTearLast,
                            PlanKind::kRandomSubset, PlanKind::kGarbleLogHome};
  for (uint64_t first_cut : points) {
    dir.Clear();
    CrashCase first;
    first.after_writes = static_cast<int64_t>(first_cut);
    first.plan = PlanKind::kKeepAll;
    first.label = "first crash";
    TracingEnv env;
    env.SetCrashAfterWrites(static_cast<int>(first_cut));
    RunLog log = RunWorkload(&env, path);
    ASSERT_TRUE(env.SimulateCrash(CrashPlan::KeepAll()).ok());
    const std::string saved = ReadFile(path);
    ASSERT_FALSE(saved.empty());
    // Second cut at recovery write w = 0, 1, ... until recovery completes with the
    // power still on.
    for (uint64_t w = 0;; ++w) {
      RestoreFile(path, saved);
      env.ResetPending();
      env.SetCrashAfterWrites(static_cast<int>(w));
      {
        auto heap = Heap::Open(path, PowerLossOptions(&env));  // may fail: power is off
        if (heap.ok()) {
          (*heap)->Checkpoint().IgnoreError();
          (*heap)->Close().IgnoreError();
        }
      }
      const bool cut = env.IsPoweredOff();
      const PlanKind kind = kinds[rng() % std::size(kinds)];
      const uint64_t seed = rng();
      const std::vector<PendingWrite> pending = env.PendingWrites();
      std::vector<WriteFate> fates;
      ASSERT_TRUE(env.SimulateCrash(MakePlan(kind, seed, pending), &fates).ok());
      uint64_t version = 0;
      std::string bad = ReadOnlyCheck(path, log, false);
      if (bad.empty()) bad = OpenAndCheck(&env, path, log, false, &version);
      ++tally.states;
      tally.pending_ops += pending.size();
      for (const WriteFate& f : fates) {
        if (f.action == WriteFate::kTear) ++tally.torn;
        if (f.action == WriteFate::kDrop) ++tally.dropped;
        if (f.action == WriteFate::kGarble) ++tally.garbled;
      }
      ASSERT_TRUE(bad.empty()) << bad << "\n  first crash: " << first.Describe()
                               << "; second crash during recovery after its write " << w
                               << " with plan " << PlanName(kind) << " seed " << seed
                               << DescribePending(pending, fates) << "\n  " << Replay();
      ++tally.versions[version];
      if (!cut) {
        recovery_writes += w;
        break;
      }
      ++recovery_cuts;
    }
  }
  Report("crash during recovery", tally, Since(t0));
  std::printf("  %llu power cuts inside recoveries (%llu recovery writes in all)\n",
              static_cast<unsigned long long>(recovery_cuts),
              static_cast<unsigned long long>(recovery_writes));
  EXPECT_GT(recovery_cuts, 0u);
}

}  // namespace
}  // namespace amber
