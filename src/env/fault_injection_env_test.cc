// fault_injection_env_test.cc — tests of FaultInjectionEnv: every crash mode on small
// hand-made files, reverting of extensions and truncations, crash points, errno
// injection and the size limit, and concurrent use (meant to run under TSan too).
#include "env/fault_injection_env.h"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace amber {
namespace {

// Reads a whole file with the C++ library (not through any Env).
std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "amber_fault_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (int fd : fds_) env_.Close(fd).IgnoreError();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string PathFor(const std::string& name) const { return dir_ + "/" + name; }

  int OpenFile(const std::string& name, int extra_flags = 0) {
    Result<int> fd = env_.Open(PathFor(name), O_RDWR | O_CREAT | extra_flags, 0644);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (!fd.ok()) return -1;
    fds_.push_back(*fd);
    return *fd;
  }

  void Write(int fd, uint64_t off, const std::string& data) {
    Status s = env_.PWrite(fd, data.data(), data.size(), off);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void Sync(int fd) {
    Status s = env_.DataSync(fd);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The scenario of the brief: A = 4096 'A' synced; then B = 1024 'B' at 0 and
  // C = 2048 'C' at 1024 pending (C overwrites old bytes), D = 1000 'D' at 4096
  // pending (extends the file). Returns the path.
  std::string BuildScenario() {
    int fd = OpenFile("scenario");
    Write(fd, 0, std::string(4096, 'A'));
    Sync(fd);
    Write(fd, 0, std::string(1024, 'B'));
    Write(fd, 1024, std::string(2048, 'C'));
    Write(fd, 4096, std::string(1000, 'D'));
    EXPECT_EQ(env_.PendingWriteCount(), 3u);
    return PathFor("scenario");
  }

  FaultInjectionEnv env_{Env::Default()};
  std::string dir_;
  std::vector<int> fds_;
};

std::string Concat(std::initializer_list<std::pair<size_t, char>> runs) {
  std::string s;
  for (auto [n, c] : runs) s.append(n, c);
  return s;
}

// ---------------------------------------------------------------------------

TEST_F(FaultInjectionEnvTest, RecordsPendingWritesWithOldBytes) {
  std::string path = BuildScenario();
  std::vector<PendingWrite> p = env_.PendingWrites();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].kind, PendingWrite::kWrite);
  EXPECT_EQ(p[0].path, path);
  EXPECT_EQ(p[0].offset, 0u);
  EXPECT_EQ(p[0].data, std::string(1024, 'B'));
  EXPECT_EQ(p[0].old_data, std::string(1024, 'A'));
  EXPECT_EQ(p[0].old_size, 4096u);
  EXPECT_FALSE(p[0].ExtendsFile());
  EXPECT_EQ(p[0].SectorCount(), 2u);
  EXPECT_EQ(p[1].old_data, std::string(2048, 'A'));
  EXPECT_EQ(p[2].old_data, "");  // entirely beyond end of file
  EXPECT_EQ(p[2].old_size, 4096u);
  EXPECT_TRUE(p[2].ExtendsFile());
  EXPECT_LT(p[0].seq, p[1].seq);
  EXPECT_LT(p[1].seq, p[2].seq);
  // The live process sees its writes at once.
  EXPECT_EQ(ReadAll(path), Concat({{1024, 'B'}, {2048, 'C'}, {1024, 'A'}, {1000, 'D'}}));
  EXPECT_EQ(env_.PendingWrites(path).size(), 3u);
  EXPECT_EQ(env_.PendingWrites(PathFor("other")).size(), 0u);
}

TEST_F(FaultInjectionEnvTest, SectorCountUsesAbsoluteBoundaries) {
  PendingWrite w;
  w.offset = 508;
  w.length = 10;
  EXPECT_EQ(w.SectorCount(), 2u);
  w.offset = 512;
  w.length = 512;
  EXPECT_EQ(w.SectorCount(), 1u);
  w.length = 0;
  EXPECT_EQ(w.SectorCount(), 0u);
  w.kind = PendingWrite::kTruncate;
  w.length = 100;
  EXPECT_EQ(w.SectorCount(), 0u);
}

TEST_F(FaultInjectionEnvTest, DropAllLeavesOnlySyncedData) {
  std::string path = BuildScenario();
  std::vector<WriteFate> fates;
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll(), &fates).ok());
  EXPECT_EQ(ReadAll(path), std::string(4096, 'A'));  // extension truncated back
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  ASSERT_EQ(fates.size(), 3u);
  for (const WriteFate& f : fates) EXPECT_EQ(f.action, WriteFate::kDrop);
}

TEST_F(FaultInjectionEnvTest, KeepAllLeavesEverything) {
  std::string path = BuildScenario();
  std::string before = ReadAll(path);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepAll()).ok());
  EXPECT_EQ(ReadAll(path), before);
}

TEST_F(FaultInjectionEnvTest, TearLastKeepsFirstSectorsOfLastWrite) {
  // A synced, then B and C pending; tear C after one sector.
  int fd = OpenFile("tear");
  Write(fd, 0, std::string(4096, 'A'));
  Sync(fd);
  Write(fd, 0, std::string(1024, 'B'));
  Write(fd, 1024, std::string(2048, 'C'));
  std::vector<WriteFate> fates;
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::TearLast(0, 1), &fates).ok());
  EXPECT_EQ(ReadAll(PathFor("tear")), Concat({{1024, 'B'}, {512, 'C'}, {2560, 'A'}}));
  ASSERT_EQ(fates.size(), 2u);
  EXPECT_EQ(fates[0], (WriteFate{WriteFate::kKeep, 0}));
  EXPECT_EQ(fates[1], (WriteFate{WriteFate::kTear, 1}));
}

TEST_F(FaultInjectionEnvTest, TearOfExtendingWriteGrowsFileOnlyToKeptSectors) {
  std::string path = BuildScenario();  // last write: D, 1000 bytes at 4096 (2 sectors)
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::TearLast(0, 1)).ok());
  EXPECT_EQ(ReadAll(path), Concat({{1024, 'B'}, {2048, 'C'}, {1024, 'A'}, {512, 'D'}}));
}

TEST_F(FaultInjectionEnvTest, TearAtUnalignedOffsetCutsAtAbsoluteSectorBoundary) {
  int fd = OpenFile("unaligned");
  Write(fd, 0, std::string(2048, 'A'));
  Sync(fd);
  Write(fd, 100, std::string(1000, 'X'));  // sectors [0,512) [512,1024) [1024,1536)
  ASSERT_EQ(env_.PendingWrites()[0].SectorCount(), 3u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::TearLast(0, 2)).ok());
  EXPECT_EQ(ReadAll(PathFor("unaligned")), Concat({{100, 'A'}, {924, 'X'}, {1024, 'A'}}));
}

TEST_F(FaultInjectionEnvTest, RandomTearIsSeededAndAGenuineTear) {
  std::set<uint64_t> seen;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    int fd = OpenFile("rt" + std::to_string(seed));
    Write(fd, 0, std::string(4096, 'A'));
    Sync(fd);
    Write(fd, 0, std::string(4096, 'Z'));  // 8 sectors
    std::vector<WriteFate> fates;
    ASSERT_TRUE(env_.SimulateCrash(CrashPlan::TearLast(seed), &fates).ok());
    ASSERT_EQ(fates.size(), 1u);
    ASSERT_EQ(fates[0].action, WriteFate::kTear);
    uint64_t k = fates[0].sector;
    ASSERT_LT(k, 8u);
    EXPECT_EQ(ReadAll(PathFor("rt" + std::to_string(seed))),
              Concat({{k * 512, 'Z'}, {4096 - k * 512, 'A'}}));
    seen.insert(k);
  }
  EXPECT_GT(seen.size(), 3u);  // the seed matters
}

// Builds 64 one-sector pending writes over a synced file and crashes with `plan`.
std::string SubsetScenario(FaultInjectionEnv* env, const std::string& path, const CrashPlan& plan,
                           std::vector<WriteFate>* fates) {
  Result<int> fd = env->Open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  EXPECT_TRUE(fd.ok());
  std::string base(64 * 512, '.');
  EXPECT_TRUE(env->PWrite(*fd, base.data(), base.size(), 0).ok());
  EXPECT_TRUE(env->DataSync(*fd).ok());
  for (int i = 0; i < 64; ++i) {
    std::string sector(512, static_cast<char>('0' + i % 64));
    EXPECT_TRUE(env->PWrite(*fd, sector.data(), sector.size(), uint64_t(i) * 512).ok());
  }
  EXPECT_TRUE(env->Close(*fd).ok());
  EXPECT_TRUE(env->SimulateCrash(plan, fates).ok());
  return ReadAll(path);
}

TEST_F(FaultInjectionEnvTest, KeepRandomSubsetIsReproducible) {
  std::vector<WriteFate> f1, f2, f3;
  std::string a = SubsetScenario(&env_, PathFor("s"), CrashPlan::KeepRandomSubset(7), &f1);
  std::string b = SubsetScenario(&env_, PathFor("s"), CrashPlan::KeepRandomSubset(7), &f2);
  std::string c = SubsetScenario(&env_, PathFor("s"), CrashPlan::KeepRandomSubset(8), &f3);
  EXPECT_EQ(a, b);
  EXPECT_EQ(f1, f2);
  EXPECT_NE(a, c);
  // Every sector is either the new write or the old synced byte, as the fate says.
  ASSERT_EQ(f1.size(), 64u);
  int kept = 0;
  for (int i = 0; i < 64; ++i) {
    bool keep = f1[i].action == WriteFate::kKeep;
    kept += keep;
    EXPECT_EQ(a.substr(size_t(i) * 512, 512),
              std::string(512, keep ? static_cast<char>('0' + i) : '.'));
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 64);
}

TEST_F(FaultInjectionEnvTest, GarbleReplacesOneSectorWithRandomBytes) {
  auto run = [&](const std::string& name, uint64_t seed, std::vector<WriteFate>* fates) {
    int fd = OpenFile(name);
    Write(fd, 0, std::string(8192, 'A'));
    Sync(fd);
    Write(fd, 0, std::string(4096, 'N'));
    EXPECT_TRUE(env_.SimulateCrash(CrashPlan::Garble(seed, 1.0), fates).ok());
    return ReadAll(PathFor(name));
  };
  std::vector<WriteFate> f1, f2, f3;
  std::string a = run("g1", 11, &f1);
  std::string b = run("g2", 11, &f2);
  std::string c = run("g3", 12, &f3);
  EXPECT_EQ(a, b);
  EXPECT_EQ(f1, f2);
  ASSERT_EQ(f1.size(), 1u);
  ASSERT_EQ(f1[0].action, WriteFate::kGarble);
  ASSERT_LT(f1[0].sector, 8u);
  ASSERT_EQ(a.size(), 8192u);
  EXPECT_EQ(a.substr(4096), std::string(4096, 'A'));
  for (uint64_t s = 0; s < 8; ++s) {
    std::string sector = a.substr(s * 512, 512);
    if (s == f1[0].sector) {
      EXPECT_NE(sector, std::string(512, 'N'));
      EXPECT_NE(sector, std::string(512, 'A'));
    } else {
      EXPECT_EQ(sector, std::string(512, 'N')) << "sector " << s;
    }
  }
  EXPECT_NE(a, c);
}

TEST_F(FaultInjectionEnvTest, GarbleModeMixesKeptDroppedAndGarbled) {
  std::vector<WriteFate> f1, f2;
  std::string a = SubsetScenario(&env_, PathFor("m"), CrashPlan::Garble(3, 0.3, 0.5), &f1);
  std::string b = SubsetScenario(&env_, PathFor("m"), CrashPlan::Garble(3, 0.3, 0.5), &f2);
  EXPECT_EQ(a, b);
  EXPECT_EQ(f1, f2);
  int counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 64; ++i) {
    ++counts[f1[i].action];
    std::string got = a.substr(size_t(i) * 512, 512);
    switch (f1[i].action) {
      case WriteFate::kKeep:
        EXPECT_EQ(got, std::string(512, static_cast<char>('0' + i)));
        break;
      case WriteFate::kDrop:
        EXPECT_EQ(got, std::string(512, '.'));
        break;
      case WriteFate::kGarble:
        EXPECT_NE(got, std::string(512, static_cast<char>('0' + i)));
        break;
      case WriteFate::kTear:
        ADD_FAILURE() << "garble mode never tears";
        break;
    }
  }
  EXPECT_GT(counts[WriteFate::kKeep], 0);
  EXPECT_GT(counts[WriteFate::kDrop], 0);
  EXPECT_GT(counts[WriteFate::kGarble], 0);
}

TEST_F(FaultInjectionEnvTest, KeepPrefixEnumeratesInOrderCrashStates) {
  // Systematic enumeration: for k = 0..n, the first k pending writes survive.
  const std::string path = PathFor("scenario");
  std::vector<std::string> expected = {
      std::string(4096, 'A'),
      Concat({{1024, 'B'}, {3072, 'A'}}),
      Concat({{1024, 'B'}, {2048, 'C'}, {1024, 'A'}}),
      Concat({{1024, 'B'}, {2048, 'C'}, {1024, 'A'}, {1000, 'D'}}),
  };
  for (size_t k = 0; k < expected.size(); ++k) {
    ASSERT_TRUE(env_.Unlink(path).ok() || k == 0);
    BuildScenario();
    ASSERT_EQ(env_.PendingWriteCount(), 3u);
    ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepPrefix(k)).ok());
    EXPECT_EQ(ReadAll(path), expected[k]) << "prefix " << k;
  }
}

TEST_F(FaultInjectionEnvTest, ExplicitFatesAndOverlappingWrites) {
  // Dropping an earlier write under a kept later overlapping one: the later one wins,
  // the dropped one's other bytes revert.
  int fd = OpenFile("explicit");
  Write(fd, 0, std::string(2048, 'A'));
  Sync(fd);
  Write(fd, 0, std::string(1024, 'X'));    // dropped
  Write(fd, 512, std::string(1024, 'Y'));  // kept
  Write(fd, 2048, std::string(512, 'Z'));  // dropped: extension reverted
  ASSERT_TRUE(
      env_.SimulateCrash(CrashPlan::Explicit(
                             {{WriteFate::kDrop, 0}, {WriteFate::kKeep, 0}, {WriteFate::kDrop, 0}}))
          .ok());
  EXPECT_EQ(ReadAll(PathFor("explicit")), Concat({{512, 'A'}, {1024, 'Y'}, {512, 'A'}}));
}

TEST_F(FaultInjectionEnvTest, ExplicitWithWrongFateCountChangesNothing) {
  std::string path = BuildScenario();
  std::string before = ReadAll(path);
  Status s = env_.SimulateCrash(CrashPlan::Explicit({{WriteFate::kDrop, 0}}));
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadAll(path), before);
  EXPECT_EQ(env_.PendingWriteCount(), 3u);
}

TEST_F(FaultInjectionEnvTest, DroppedExtensionLeavesHoleUnderKeptWrite) {
  int fd = OpenFile("hole");
  Write(fd, 0, std::string(512, 'A'));
  Sync(fd);
  Write(fd, 512, std::string(512, 'X'));   // extends to 1024; dropped
  Write(fd, 1024, std::string(512, 'Y'));  // extends to 1536; kept
  ASSERT_TRUE(
      env_.SimulateCrash(CrashPlan::Explicit({{WriteFate::kDrop, 0}, {WriteFate::kKeep, 0}})).ok());
  EXPECT_EQ(ReadAll(PathFor("hole")), Concat({{512, 'A'}, {512, '\0'}, {512, 'Y'}}));
}

TEST_F(FaultInjectionEnvTest, ExtendingWritesAreTruncatedBack) {
  int fd = OpenFile("extend");
  Write(fd, 0, std::string(1000, 'a'));
  Sync(fd);
  Write(fd, 1000, std::string(24, 'b'));       // append
  Write(fd, 1 << 20, std::string(4096, 'c'));  // sparse, far beyond
  Write(fd, 990, std::string(20, 'd'));        // straddles the old end
  ASSERT_EQ(ReadAll(PathFor("extend")).size(), (1u << 20) + 4096);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("extend")), std::string(1000, 'a'));
}

TEST_F(FaultInjectionEnvTest, NewUnsyncedFileBecomesEmpty) {
  int fd = OpenFile("new");
  Write(fd, 0, "hello");
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_TRUE(std::filesystem::exists(PathFor("new")));  // creation is durable
  EXPECT_EQ(ReadAll(PathFor("new")), "");
}

TEST_F(FaultInjectionEnvTest, TruncateAndAllocateArePendingToo) {
  int fd = OpenFile("trunc");
  Write(fd, 0, Concat({{1000, 'a'}, {1000, 'b'}}));
  Sync(fd);
  ASSERT_TRUE(env_.Truncate(fd, 1000).ok());     // shrink: cut bytes saved
  ASSERT_TRUE(env_.Allocate(fd, 0, 8192).ok());  // grow
  ASSERT_TRUE(env_.Allocate(fd, 0, 100).ok());   // inside: not recorded
  ASSERT_TRUE(env_.Truncate(fd, 10000).ok());    // grow
  std::vector<PendingWrite> p = env_.PendingWrites();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].kind, PendingWrite::kTruncate);
  EXPECT_EQ(p[0].old_data, std::string(1000, 'b'));
  EXPECT_EQ(p[1].kind, PendingWrite::kAllocate);
  EXPECT_TRUE(p[1].ExtendsFile());
  EXPECT_EQ(p[2].kind, PendingWrite::kTruncate);
  EXPECT_TRUE(p[2].ExtendsFile());
  ASSERT_EQ(ReadAll(PathFor("trunc")).size(), 10000u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("trunc")), Concat({{1000, 'a'}, {1000, 'b'}}));

  // Kept truncation and allocation are re-applied.
  ASSERT_TRUE(env_.Truncate(fd, 500).ok());
  ASSERT_TRUE(env_.Allocate(fd, 0, 4096).ok());
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("trunc")), Concat({{500, 'a'}, {3596, '\0'}}));
}

TEST_F(FaultInjectionEnvTest, SyncMakesOnlyThatFileDurable) {
  int a = OpenFile("a");
  int b = OpenFile("b");
  Write(a, 0, "aaaa");
  Write(b, 0, "bbbb");
  ASSERT_TRUE(env_.Sync(a).ok());  // fsync counts as well as fdatasync
  EXPECT_EQ(env_.PendingWriteCount(), 1u);
  EXPECT_EQ(env_.PendingWrites()[0].path, PathFor("b"));
  // A second fd on the same path syncs the same file.
  int a2 = OpenFile("a");
  Write(a, 0, "AAAA");
  Sync(a2);
  EXPECT_EQ(env_.PendingWriteCount(), 1u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("a")), "AAAA");
  EXPECT_EQ(ReadAll(PathFor("b")), "");
}

TEST_F(FaultInjectionEnvTest, PendingSurvivesCloseAndResetPendingForgets) {
  Result<int> fd = env_.Open(PathFor("c"), O_RDWR | O_CREAT, 0644);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(env_.PWrite(*fd, "xyz", 3, 0).ok());
  ASSERT_TRUE(env_.Close(*fd).ok());
  EXPECT_EQ(env_.PendingWriteCount(), 1u);
  env_.ResetPending();
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("c")), "xyz");
}

TEST_F(FaultInjectionEnvTest, UnlinkForgetsPendingWrites) {
  int fd = OpenFile("u");
  Write(fd, 0, "data");
  ASSERT_TRUE(env_.Unlink(PathFor("u")).ok());
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_FALSE(std::filesystem::exists(PathFor("u")));
}

TEST_F(FaultInjectionEnvTest, WorksWithODirectFds) {
  Result<int> fd = env_.Open(PathFor("direct"), O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (!fd.ok()) GTEST_SKIP() << "O_DIRECT not supported here: " << fd.status().ToString();
  fds_.push_back(*fd);
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, 8192), 0);
  char* buf = static_cast<char*>(mem);
  std::memset(buf, 'A', 8192);
  ASSERT_TRUE(env_.PWrite(*fd, buf, 8192, 0).ok());
  ASSERT_TRUE(env_.DataSync(*fd).ok());
  std::memset(buf, 'B', 4096);
  ASSERT_TRUE(env_.PWrite(*fd, buf, 4096, 4096).ok());
  ASSERT_TRUE(env_.PWrite(*fd, buf, 4096, 8192).ok());
  std::vector<PendingWrite> p = env_.PendingWrites();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].old_data, std::string(4096, 'A'));
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::TearLast(0, 0)).ok());
  EXPECT_EQ(ReadAll(PathFor("direct")), Concat({{4096, 'A'}, {4096, 'B'}}));
  free(mem);
}

// DropCache reaches the real file: its clean pages leave the page cache, and
// the bytes read afterwards (from the disk) are the same.
TEST_F(FaultInjectionEnvTest, DropCacheEvictsCleanPagesOfTheFile) {
  struct statfs fs;
  ASSERT_EQ(statfs(dir_.c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs keeps its files in the page cache";
  constexpr size_t kBytes = 64 * 4096;
  int fd = OpenFile("cached");
  Write(fd, 0, std::string(kBytes, 'x'));
  Sync(fd);
  std::string back(kBytes, '\0');
  ASSERT_TRUE(env_.PRead(fd, back.data(), kBytes, 0).ok());
  auto resident = [&] {
    void* m = mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, fd, 0);
    EXPECT_NE(m, MAP_FAILED);
    std::vector<unsigned char> in(kBytes / 4096);
    EXPECT_EQ(mincore(m, kBytes, in.data()), 0);
    munmap(m, kBytes);
    size_t n = 0;
    for (unsigned char r : in) n += r & 1;
    return n;
  };
  EXPECT_EQ(resident(), kBytes / 4096) << "just written and read: all cached";
  ASSERT_TRUE(env_.DropCache(fd, 0, kBytes).ok());
  EXPECT_EQ(resident(), 0u);
  ASSERT_TRUE(env_.PRead(fd, back.data(), kBytes, 0).ok());
  EXPECT_EQ(back, std::string(kBytes, 'x'));
}

// ---------------------------------------------------------------------------
// Crash points

TEST_F(FaultInjectionEnvTest, CrashAfterSyncsStopsApplyingWrites) {
  int fd = OpenFile("cp");
  env_.SetCrashAfterSyncs(2);
  Write(fd, 0, "one.");
  Sync(fd);  // 1st sync
  Write(fd, 4, "two.");
  EXPECT_FALSE(env_.IsPoweredOff());
  Sync(fd);  // 2nd sync: applied, then the power is off
  EXPECT_TRUE(env_.IsPoweredOff());
  Write(fd, 8, "three");  // returns OK, not applied
  EXPECT_TRUE(env_.Truncate(fd, 0).ok());
  EXPECT_TRUE(env_.Allocate(fd, 0, 1 << 20).ok());
  EXPECT_TRUE(env_.Unlink(PathFor("cp")).ok());
  Sync(fd);
  EXPECT_EQ(ReadAll(PathFor("cp")), "one.two.");
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  EXPECT_EQ(env_.CallCount(FaultInjectionEnv::kPWrite), 3u);

  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_FALSE(env_.IsPoweredOff());  // power restored
  Write(fd, 8, "four");
  EXPECT_EQ(ReadAll(PathFor("cp")), "one.two.four");
}

TEST_F(FaultInjectionEnvTest, CrashAfterWritesThenCrashDropsTheApplied) {
  int fd = OpenFile("cw");
  Write(fd, 0, "base");
  Sync(fd);
  env_.SetCrashAfterWrites(2);
  Write(fd, 4, "-1");
  Write(fd, 6, "-2");
  EXPECT_TRUE(env_.IsPoweredOff());
  Write(fd, 8, "-3");
  Sync(fd);  // not applied: the two writes stay pending
  EXPECT_EQ(ReadAll(PathFor("cw")), "base-1-2");
  EXPECT_EQ(env_.PendingWriteCount(), 2u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepPrefix(1)).ok());
  EXPECT_EQ(ReadAll(PathFor("cw")), "base-1");
}

TEST_F(FaultInjectionEnvTest, CrashPointZeroAndManualPower) {
  int fd = OpenFile("pw");
  env_.SetCrashAfterSyncs(0);
  EXPECT_TRUE(env_.IsPoweredOff());
  Write(fd, 0, "lost");
  env_.PowerOn();
  Write(fd, 0, "kept");
  env_.PowerOff();
  Write(fd, 0, "lost");
  env_.PowerOn();
  EXPECT_EQ(ReadAll(PathFor("pw")), "kept");
  env_.SetCrashAfterWrites(1);
  env_.SetCrashAfterWrites(-1);  // disarmed
  Write(fd, 0, "more");
  Write(fd, 0, "MORE");
  EXPECT_FALSE(env_.IsPoweredOff());
  EXPECT_EQ(ReadAll(PathFor("pw")), "MORE");
}

// ---------------------------------------------------------------------------
// Error injection

TEST_F(FaultInjectionEnvTest, InjectsErrorAtNthCall) {
  int fd = OpenFile("err");
  env_.InjectError(FaultInjectionEnv::kPWrite, ENOSPC, 2);
  Write(fd, 0, "1111");
  Status s = env_.PWrite(fd, "2222", 4, 4);
  EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
  EXPECT_NE(s.message().find("injected"), std::string::npos);
  Write(fd, 8, "3333");
  EXPECT_EQ(ReadAll(PathFor("err")), std::string("1111") + std::string(4, '\0') + "3333");
  EXPECT_EQ(env_.PendingWriteCount(), 2u);  // the failed write had no effect
  EXPECT_EQ(env_.CallCount(FaultInjectionEnv::kPWrite), 3u);
  EXPECT_EQ(env_.InjectedErrorCount(FaultInjectionEnv::kPWrite), 1u);
  EXPECT_EQ(env_.InjectedErrorCount(), 1u);
}

TEST_F(FaultInjectionEnvTest, FailedSyncMakesNothingDurable) {
  int fd = OpenFile("eio");
  Write(fd, 0, "data");
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  Status s = env_.DataSync(fd);
  EXPECT_EQ(s.code(), Code::kIOError) << s.ToString();
  EXPECT_EQ(env_.PendingWriteCount(), 1u);
  Sync(fd);  // the next one succeeds
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
}

// ---------------------------------------------------------------------------
// Writes lost to a failed sync (SetSyncFailureLosesWrites: Linux's writeback errors)

TEST_F(FaultInjectionEnvTest, FailedSyncLosesWritesWhenAskedTo) {
  env_.SetSyncFailureLosesWrites(true);
  int fd = OpenFile("lost");
  Write(fd, 0, std::string(4096, 'A'));
  Sync(fd);
  Write(fd, 0, std::string(1024, 'B'));
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_EQ(env_.DataSync(fd).code(), Code::kIOError);
  Write(fd, 2048, std::string(1024, 'C'));  // after the failure: pending as usual
  Sync(fd);                                 // succeeds, but does not bring B back
  std::vector<PendingWrite> p = env_.PendingWrites();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(p[0].lost);
  // The process still reads B (the page cache keeps it).
  EXPECT_EQ(ReadAll(PathFor("lost")), Concat({{1024, 'B'}, {1024, 'A'}, {1024, 'C'}, {1024, 'A'}}));
  std::vector<WriteFate> fates;
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepAll(), &fates).ok());
  EXPECT_EQ(fates, std::vector<WriteFate>({{WriteFate::kDrop, 0}}))
      << "a lost write never survives";
  EXPECT_EQ(ReadAll(PathFor("lost")), Concat({{2048, 'A'}, {1024, 'C'}, {1024, 'A'}}));
}

TEST_F(FaultInjectionEnvTest, LostWriteIsRestoredOnlyWhereNoLaterWriteIsDurable) {
  env_.SetSyncFailureLosesWrites(true);
  int fd = OpenFile("lost");
  Write(fd, 0, std::string(4096, 'A'));
  Sync(fd);
  Write(fd, 0, std::string(3072, 'B'));
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_FALSE(env_.DataSync(fd).ok());
  Write(fd, 1024, std::string(1024, 'C'));  // rewritten and synced: durable
  Sync(fd);
  Write(fd, 2048, std::string(512, 'D'));  // rewritten, never synced
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("lost")), Concat({{1024, 'A'}, {1024, 'C'}, {2048, 'A'}}));
}

TEST_F(FaultInjectionEnvTest, TwoFailedSyncsLoseBothAndTheOldestBytesComeBack) {
  env_.SetSyncFailureLosesWrites(true);
  int fd = OpenFile("lost");
  Write(fd, 0, std::string(2048, 'A'));
  Sync(fd);
  Write(fd, 0, std::string(2048, 'B'));
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_FALSE(env_.DataSync(fd).ok());
  Write(fd, 1024, std::string(1024, 'C'));
  env_.InjectError(FaultInjectionEnv::kSync, EIO, 1);
  EXPECT_FALSE(env_.Sync(fd).ok());
  Sync(fd);
  EXPECT_EQ(env_.PendingWriteCount(), 2u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("lost")), std::string(2048, 'A'));
}

TEST_F(FaultInjectionEnvTest, DirectReadsSeeTheDiskAfterALostWrite) {
  env_.SetSyncFailureLosesWrites(true);
  int fd = OpenFile("direct");
  Write(fd, 0, std::string(3 * 4096, 'A'));
  Sync(fd);
  Result<int> dfd = env_.Open(PathFor("direct"), O_RDONLY | O_DIRECT, 0);
  if (!dfd.ok()) GTEST_SKIP() << "O_DIRECT not supported here: " << dfd.status().ToString();
  fds_.push_back(*dfd);
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, 3 * 4096), 0);
  std::unique_ptr<void, decltype(&free)> hold(mem, &free);
  auto direct = [&] {
    EXPECT_TRUE(env_.PRead(*dfd, mem, 3 * 4096, 0).ok());
    return std::string(static_cast<char*>(mem), 3 * 4096);
  };
  auto buffered = [&] {
    std::string s(3 * 4096, 0);
    EXPECT_TRUE(env_.PRead(fd, s.data(), s.size(), 0).ok());
    return s;
  };
  Write(fd, 0, std::string(2 * 4096, 'B'));
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_FALSE(env_.DataSync(fd).ok());
  EXPECT_EQ(direct(), std::string(3 * 4096, 'A'));
  EXPECT_EQ(buffered(), Concat({{2 * 4096, 'B'}, {4096, 'A'}}));
  Write(fd, 4096, std::string(4096, 'C'));  // pending: a direct read flushes it
  EXPECT_EQ(direct(), Concat({{4096, 'A'}, {4096, 'C'}, {4096, 'A'}}));
  Sync(fd);                             // C durable
  Write(fd, 0, std::string(100, 'D'));  // lost at the next failure, over 'B' lost too
  Write(fd, 3 * 4096 - 1, "E");         // lost too
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_FALSE(env_.DataSync(fd).ok());
  EXPECT_EQ(direct(), Concat({{4096, 'A'}, {4096, 'C'}, {4096, 'A'}}));
  Sync(fd);
  EXPECT_EQ(direct(), Concat({{4096, 'A'}, {4096, 'C'}, {4096, 'A'}}));
  EXPECT_EQ(buffered(),
            Concat({{100, 'D'}, {4096 - 100, 'B'}, {4096, 'C'}, {4095, 'A'}, {1, 'E'}}));
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::KeepAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("direct")), Concat({{4096, 'A'}, {4096, 'C'}, {4096, 'A'}}));
}

TEST_F(FaultInjectionEnvTest, ExtendingWriteStaysPendingAfterAFailedSync) {
  env_.SetSyncFailureLosesWrites(true);
  int fd = OpenFile("grow");
  Write(fd, 0, "abcd");
  env_.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
  EXPECT_FALSE(env_.DataSync(fd).ok());
  Sync(fd);
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  EXPECT_EQ(ReadAll(PathFor("grow")), "abcd");
}

TEST_F(FaultInjectionEnvTest, ErrorCountAndUntilCleared) {
  int fd = OpenFile("count");
  env_.InjectError(FaultInjectionEnv::kSync, EIO, 1, 2);
  EXPECT_EQ(env_.Sync(fd).code(), Code::kIOError);
  EXPECT_EQ(env_.Sync(fd).code(), Code::kIOError);
  EXPECT_TRUE(env_.Sync(fd).ok());

  env_.InjectError(FaultInjectionEnv::kPRead, EIO, 1, -1);
  char c;
  Write(fd, 0, "x");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(env_.PRead(fd, &c, 1, 0).code(), Code::kIOError);
  env_.ClearErrors();
  EXPECT_TRUE(env_.PRead(fd, &c, 1, 0).ok());
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(env_.InjectedErrorCount(FaultInjectionEnv::kSync), 2u);
  EXPECT_EQ(env_.InjectedErrorCount(FaultInjectionEnv::kPRead), 5u);
  EXPECT_EQ(env_.InjectedErrorCount(), 7u);
}

TEST_F(FaultInjectionEnvTest, ErrnoConvertedForEveryOp) {
  using E = FaultInjectionEnv;
  int fd = OpenFile("ops");
  env_.InjectError(E::kOpen, ENOENT, 1);
  EXPECT_EQ(env_.Open(PathFor("x"), O_RDWR | O_CREAT, 0644).status().code(), Code::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(PathFor("x")));
  env_.InjectError(E::kTruncate, EIO, 1);
  EXPECT_EQ(env_.Truncate(fd, 10).code(), Code::kIOError);
  env_.InjectError(E::kAllocate, ENOSPC, 1);
  EXPECT_EQ(env_.Allocate(fd, 0, 10).code(), Code::kNoSpace);
  EXPECT_EQ(env_.PendingWriteCount(), 0u);
  env_.InjectError(E::kLock, EWOULDBLOCK, 1);
  EXPECT_EQ(env_.Lock(fd, true).code(), Code::kBusy);
  env_.InjectError(E::kMap, ENOMEM, 1);
  EXPECT_EQ(env_.Map(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0).status().code(),
            Code::kResourceExhausted);
  env_.InjectError(E::kUserfaultFd, EPERM, 1);
  EXPECT_EQ(env_.UserfaultFd(0).status().code(), Code::kPermissionDenied);
  env_.InjectError(E::kIoctl, ENOSYS, 1);
  EXPECT_EQ(env_.Ioctl(fd, 0, nullptr).status().code(), Code::kNotSupported);
  env_.InjectError(E::kStat, EACCES, 1);
  EXPECT_EQ(env_.StatPath(PathFor("ops")).status().code(), Code::kPermissionDenied);
  env_.InjectError(E::kUnlink, EROFS, 1);
  EXPECT_EQ(env_.Unlink(PathFor("ops")).code(), Code::kPermissionDenied);
  EXPECT_TRUE(std::filesystem::exists(PathFor("ops")));
  for (int op = 0; op < E::kNumOps; ++op) {
    if (op == E::kPRead || op == E::kPWrite || op == E::kDataSync || op == E::kSync) continue;
    EXPECT_EQ(env_.InjectedErrorCount(static_cast<E::Op>(op)), 1u) << E::OpName(E::Op(op));
  }
  // All rules were one-shot: everything works again.
  EXPECT_TRUE(env_.Lock(fd, true).ok());
  EXPECT_TRUE(env_.Stat(fd).ok());
}

TEST_F(FaultInjectionEnvTest, FileSizeLimit) {
  int fd = OpenFile("limit");
  env_.SetFileSizeLimit(8192);
  Write(fd, 0, std::string(8192, 'a'));  // exactly at the limit
  Status s = env_.PWrite(fd, "b", 1, 8192);
  EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
  EXPECT_EQ(env_.Allocate(fd, 0, 8193).code(), Code::kNoSpace);
  Write(fd, 100, "overwrite is fine");
  EXPECT_EQ(ReadAll(PathFor("limit")).size(), 8192u);
  EXPECT_EQ(env_.InjectedErrorCount(FaultInjectionEnv::kPWrite), 1u);
  EXPECT_EQ(env_.InjectedErrorCount(FaultInjectionEnv::kAllocate), 1u);
  env_.ClearErrors();  // also lifts the limit
  Write(fd, 8192, "b");
}

// ---------------------------------------------------------------------------
// Concurrency (run under TSan as well)

TEST_F(FaultInjectionEnvTest, ConcurrentWritersThenCrash) {
  constexpr int kThreads = 4;
  constexpr int kWrites = 300;
  std::vector<std::string> synced(kThreads);
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string path = PathFor("t" + std::to_string(t));
      Result<int> fd = env_.Open(path, O_RDWR | O_CREAT, 0644);
      ASSERT_TRUE(fd.ok());
      std::string image;  // what the file holds now
      uint64_t x = 88172645463325252ull + uint64_t(t);
      for (int i = 0; i < kWrites; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t off = (x % 64) * 512 + (x >> 32) % 300;
        std::string data(1 + (x >> 20) % 700, static_cast<char>('a' + (i + t) % 26));
        ASSERT_TRUE(env_.PWrite(*fd, data.data(), data.size(), off).ok());
        if (image.size() < off + data.size()) image.resize(off + data.size(), '\0');
        image.replace(off, data.size(), data);
        if (i % 37 == 0) {
          ASSERT_TRUE((i % 2 ? env_.Sync(*fd) : env_.DataSync(*fd)).ok());
          synced[t] = image;
        }
      }
      ASSERT_TRUE(env_.Close(*fd).ok());
    });
  }
  std::thread observer([&] {
    while (!done.load()) {
      (void)env_.PendingWriteCount();
      (void)env_.PendingWrites().size();
      (void)env_.CallCount(FaultInjectionEnv::kPWrite);
    }
  });
  for (auto& th : threads) th.join();
  done.store(true);
  observer.join();
  EXPECT_EQ(env_.CallCount(FaultInjectionEnv::kPWrite), uint64_t(kThreads) * kWrites);
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(ReadAll(PathFor("t" + std::to_string(t))), synced[t]) << "thread " << t;
  }
}

TEST_F(FaultInjectionEnvTest, ConcurrentWritersOnOneFileWithCrashPoint) {
  // Two threads write disjoint halves of one file and sync; the power goes off after
  // the 5th sync. Whatever was synced before stays; nothing later is applied.
  int fd = OpenFile("shared");
  Write(fd, 0, std::string(2 * 64 * 512, '.'));
  Sync(fd);
  env_.SetCrashAfterSyncs(5);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 64; ++i) {
        std::string s(512, static_cast<char>('A' + t));
        ASSERT_TRUE(env_.PWrite(fd, s.data(), s.size(), uint64_t(t * 64 + i) * 512).ok());
        if (i % 4 == 3) {
          ASSERT_TRUE(env_.DataSync(fd).ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(env_.IsPoweredOff());
  std::string live = ReadAll(PathFor("shared"));
  ASSERT_TRUE(env_.SimulateCrash(CrashPlan::DropAll()).ok());
  std::string after = ReadAll(PathFor("shared"));
  // After the crash every sector is either old or new, and each thread's surviving
  // writes form a prefix of its sequence (writes were applied in order).
  for (int t = 0; t < 2; ++t) {
    bool seen_old = false;
    for (int i = 0; i < 64; ++i) {
      std::string sector = after.substr(size_t(t * 64 + i) * 512, 512);
      if (sector == std::string(512, '.')) {
        seen_old = true;
      } else {
        EXPECT_EQ(sector, std::string(512, static_cast<char>('A' + t)));
        EXPECT_FALSE(seen_old) << "thread " << t << " sector " << i;
      }
    }
  }
  // What survived had been applied to the live file.
  ASSERT_EQ(after.size(), live.size());
  for (size_t i = 0; i < after.size(); i += 512) {
    if (after[i] != '.') {
      EXPECT_EQ(after[i], live[i]) << "offset " << i;
    }
  }
  EXPECT_NE(live, std::string(live.size(), '.'));
}

}  // namespace
}  // namespace amber
