// Tests of the store file: creation, superblocks, the log ring, migration,
// recovery and detection of damage.
#include "store/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "env/fault_injection_env.h"
#include "test_util.h"

namespace amber {
namespace {

using format::kPageSize;
using testing::FlipByte;
using testing::TempDir;

Options SmallOptions() {
  Options o;
  o.capacity = uint64_t{4} << 20;  // 1024 pages
  o.log_size = 64 * kPageSize;     // a tiny log, to exercise wrap-around
  o.base_address = testing::TestBase();
  return o;
}

std::unique_ptr<Store> OpenStore(const std::string& path, Options o = SmallOptions(),
                                 Store::Mode mode = Store::Mode::kReadWrite) {
  auto s = Store::Open(Env::Default(), path, o, mode);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

// Page images whose content names (page, version).
std::vector<char> Images(const std::vector<uint64_t>& pages, uint64_t version) {
  std::vector<char> buf(pages.size() * kPageSize);
  for (size_t i = 0; i < pages.size(); ++i) {
    for (size_t j = 0; j < kPageSize; j += 16) {
      std::memcpy(&buf[i * kPageSize + j], &pages[i], 8);
      std::memcpy(&buf[i * kPageSize + j + 8], &version, 8);
    }
  }
  return buf;
}

// The same in page-aligned memory (staging buffers are), as O_DIRECT needs.
std::shared_ptr<char> AlignedImages(const std::vector<uint64_t>& pages, uint64_t version) {
  std::vector<char> v = Images(pages, version);
  std::shared_ptr<char> buf(static_cast<char*>(std::aligned_alloc(kPageSize, v.size())), std::free);
  std::memcpy(buf.get(), v.data(), v.size());
  return buf;
}

// Creates the store at path and appends generations 1 and 2 (pages p1, then
// p2, images from aligned memory so that large ones take O_DIRECT) over a heap
// of heap_pages. Returns the log's file offset (0 after a failed assertion).
uint64_t AppendTwoGenerations(const std::string& path, const Options& o,
                              const std::vector<uint64_t>& p1, const std::vector<uint64_t>& p2,
                              uint64_t heap_pages) {
  auto st = OpenStore(path, o);
  EXPECT_TRUE(st);
  if (!st) return 0;
  auto i1 = AlignedImages(p1, 1), i2 = AlignedImages(p2, 2);
  EXPECT_TRUE(st->AppendGeneration(1, p1, i1.get(), heap_pages * kPageSize, 1).ok());
  EXPECT_TRUE(st->AppendGeneration(2, p2, i2.get(), heap_pages * kPageSize, 2).ok());
  return st->superblock().log_offset;
}

// Reads heap page `page` from the home image.
std::pair<uint64_t, uint64_t> HomePage(const std::string& path, const Store& st, uint64_t page) {
  char buf[16];
  auto fd = Env::Default()->Open(path, O_RDONLY, 0);
  EXPECT_TRUE(fd.ok());
  EXPECT_TRUE(
      Env::Default()->PRead(*fd, buf, 16, st.superblock().home_offset + page * kPageSize).ok());
  Env::Default()->Close(*fd).IgnoreError();
  uint64_t a, b;
  std::memcpy(&a, buf, 8);
  std::memcpy(&b, buf + 8, 8);
  return {a, b};
}

// A migration running in another thread while generations keep being appended
// (the checkpointer's migrator and writer): the tail it publishes must land on
// the first generation it did not migrate, the ring must never be overwritten
// under it, and a fresh open must see every page's newest image.
TEST(Store, MigrationConcurrentWithAppendsLosesNothing) {
  TempDir dir;
  auto path = dir.File("s.amber");
  std::map<uint64_t, uint64_t> expect;  // page -> version of its newest image
  constexpr uint64_t kGens = 400;
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(st);
    std::atomic<bool> done{false};
    std::thread migrator([&] {
      while (!done.load()) EXPECT_TRUE(st->Migrate().ok());
    });
    std::mt19937_64 rng(11);
    for (uint64_t g = 1; g <= kGens; ++g) {
      std::vector<uint64_t> pages;
      for (uint64_t p = rng() % 40; pages.size() < 1 + g % 9 && p < 1024; p += 1 + rng() % 30)
        pages.push_back(p);
      auto img = Images(pages, g);
      Status s = st->AppendGeneration(g, pages, img.data(), 1024 * kPageSize, g);
      ASSERT_TRUE(s.ok()) << "generation " << g << ": " << s.ToString();
      for (uint64_t p : pages) expect[p] = g;
    }
    done = true;
    migrator.join();
    EXPECT_GT(st->migrations(), 10u);
    EXPECT_EQ(st->superblock().committed_gen, kGens);
    // What is left in the log walks cleanly from the published tail.
    EXPECT_TRUE(st->ForEachGeneration(true, [](const GenInfo&) { return Status::OK(); }).ok());
  }
  auto st = OpenStore(path);
  ASSERT_TRUE(st);
  ASSERT_TRUE(st->Recover(/*verify_home=*/true).ok());
  for (const auto& [page, version] : expect)
    EXPECT_EQ(HomePage(path, *st, page), std::make_pair(page, version)) << "page " << page;
}

TEST(Store, CreateWritesValidSuperblockWithMode0600) {
  TempDir dir;
  auto path = dir.File("s.amber");
  auto st = OpenStore(path);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->created());
  auto sb = st->superblock();
  EXPECT_EQ(sb.capacity, uint64_t{4} << 20);
  EXPECT_EQ(sb.log_size, 64 * kPageSize);
  EXPECT_EQ(sb.committed_gen, 0u);
  EXPECT_EQ(sb.base_address, testing::TestBase());
  struct stat info;
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<uint64_t>(info.st_size), sb.home_offset + sb.capacity);
}

TEST(Store, MissingStoreWithoutCreateIsNotFound) {
  TempDir dir;
  Options o = SmallOptions();
  o.create_if_missing = false;
  auto s = Store::Open(Env::Default(), dir.File("none.amber"), o, Store::Mode::kReadWrite);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kNotFound);
  auto r = Store::Open(Env::Default(), dir.File("none.amber"), o, Store::Mode::kReadOnly);
  EXPECT_EQ(r.status().code(), Code::kNotFound);
}

TEST(Store, SecondWriterIsBusy) {
  TempDir dir;
  auto path = dir.File("s.amber");
  auto a = OpenStore(path);
  auto b = Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadWrite);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kBusy);
  EXPECT_NE(b.status().message().find("another process"), std::string::npos);
}

TEST(Store, NotAStoreIsCorruption) {
  TempDir dir;
  auto path = dir.File("junk");
  FILE* f = fopen(path.c_str(), "w");
  std::string junk(100000, 'x');
  fwrite(junk.data(), 1, junk.size(), f);
  fclose(f);
  chmod(path.c_str(), 0600);
  auto s = Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadWrite);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kCorruption) << s.status().ToString();
}

TEST(Store, GenerationsSurviveReopenAndMigrateHome) {
  TempDir dir;
  auto path = dir.File("s.amber");
  {
    auto st = OpenStore(path);
    std::vector<uint64_t> p1 = {0, 1, 7}, p2 = {1, 9};
    auto i1 = Images(p1, 1), i2 = Images(p2, 2);
    ASSERT_TRUE(st->AppendGeneration(1, p1, i1.data(), 10 * kPageSize, 111).ok());
    ASSERT_TRUE(st->AppendGeneration(2, p2, i2.data(), 10 * kPageSize, 222).ok());
    std::vector<uint64_t> gens;
    ASSERT_TRUE(st->ForEachGeneration(true, [&](const GenInfo& g) {
                    gens.push_back(g.gen);
                    return Status::OK();
                  }).ok());
    EXPECT_EQ(gens, (std::vector<uint64_t>{1, 2}));
  }
  auto st = OpenStore(path);
  EXPECT_FALSE(st->created());
  EXPECT_EQ(st->superblock().committed_gen, 2u);
  ASSERT_TRUE(st->Recover(true).ok());
  EXPECT_EQ(st->LogUsed(), 0u);
  EXPECT_EQ(HomePage(path, *st, 0), std::make_pair(uint64_t{0}, uint64_t{1}));
  EXPECT_EQ(HomePage(path, *st, 1), std::make_pair(uint64_t{1}, uint64_t{2}));  // newest wins
  EXPECT_EQ(HomePage(path, *st, 7), std::make_pair(uint64_t{7}, uint64_t{1}));
  EXPECT_EQ(HomePage(path, *st, 9), std::make_pair(uint64_t{9}, uint64_t{2}));
  EXPECT_EQ(HomePage(path, *st, 3), std::make_pair(uint64_t{0}, uint64_t{0}));
}

// Generations of 256 pages or more are written with O_DIRECT (where the file
// system has it): they must not land in the page cache, and must recover and
// migrate exactly like buffered ones.
TEST(Store, LargeGenerationsBypassThePageCacheAndRecover) {
  TempDir dir;
  auto path = dir.File("s.amber");
  Options o = SmallOptions();
  o.log_size = 1024 * kPageSize;
  constexpr uint64_t kN = 300;
  std::vector<uint64_t> p1(kN), p2(kN);
  for (uint64_t i = 0; i < kN; ++i) {
    p1[i] = i;            // pages 0..299
    p2[i] = 150 + 2 * i;  // half of them again, and others beyond
  }
  const uint64_t log_offset = AppendTwoGenerations(path, o, p1, p2, 1024);
  ASSERT_FALSE(HasFailure());
  // Page-cache residency of generation 1's images (after its descriptor page).
  auto fd = Env::Default()->Open(path, O_RDONLY, 0);
  ASSERT_TRUE(fd.ok());
  void* m = ::mmap(nullptr, kN * kPageSize, PROT_READ, MAP_SHARED, *fd, log_offset + kPageSize);
  ASSERT_NE(m, MAP_FAILED);
  std::vector<unsigned char> resident(kN);
  ASSERT_EQ(::mincore(m, kN * kPageSize, resident.data()), 0);
  ::munmap(m, kN * kPageSize);
  Env::Default()->Close(*fd).IgnoreError();
  auto direct = Env::Default()->Open(path, O_RDONLY | O_DIRECT, 0);
  if (direct.ok()) {
    Env::Default()->Close(*direct).IgnoreError();
    size_t cached = 0;
    for (unsigned char r : resident) cached += r & 1;
    EXPECT_EQ(cached, 0u) << "large generation went through the page cache";
  }
  auto st = OpenStore(path, o);
  ASSERT_TRUE(st);
  ASSERT_TRUE(st->Recover(true).ok());
  EXPECT_EQ(st->LogUsed(), 0u);
  for (uint64_t page = 0; page < 150 + 2 * kN; ++page) {
    const bool in2 = page >= 150 && (page - 150) % 2 == 0;
    const uint64_t want = in2 ? 2 : page < kN ? 1 : 0;
    ASSERT_EQ(HomePage(path, *st, page), std::make_pair(want == 0 ? 0 : page, want)) << page;
  }
}

// Some file systems (FUSE and network ones among them) accept open(O_DIRECT)
// and then fail the writes with EINVAL. The log must then go through the page
// cache, from the first refused write on, without failing a generation.
// An Env that knows which descriptors were opened with O_DIRECT.
class DirectFdEnv : public EnvWrapper {
 public:
  DirectFdEnv() : EnvWrapper(Env::Default()) {}
  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    Result<int> fd = EnvWrapper::Open(path, flags, mode);
    if (fd.ok() && (flags & O_DIRECT) != 0) {
      std::lock_guard<std::mutex> l(mu_);
      direct_fds_.push_back(*fd);
      ++direct_opens_;
    }
    return fd;
  }
  // Descriptors opened with O_DIRECT so far (0: the file system has none).
  int direct_opens() {
    std::lock_guard<std::mutex> l(mu_);
    return direct_opens_;
  }
  Status Close(int fd) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      direct_fds_.erase(std::remove(direct_fds_.begin(), direct_fds_.end(), fd), direct_fds_.end());
    }
    return EnvWrapper::Close(fd);
  }

 protected:
  bool IsDirect(int fd) {
    std::lock_guard<std::mutex> l(mu_);
    return std::find(direct_fds_.begin(), direct_fds_.end(), fd) != direct_fds_.end();
  }

 private:
  std::mutex mu_;
  std::vector<int> direct_fds_;
  int direct_opens_ = 0;
};

// A file system without O_DIRECT: opening with it fails with EINVAL.
class NoDirectEnv : public EnvWrapper {
 public:
  NoDirectEnv() : EnvWrapper(Env::Default()) {}
  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    if ((flags & O_DIRECT) != 0) return InvalidArgument("open: no O_DIRECT here (test)");
    return EnvWrapper::Open(path, flags, mode);
  }
};

class RefuseDirectWritesEnv : public DirectFdEnv {
 public:
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    if (IsDirect(fd)) {
      ++refused_;
      return InvalidArgument("pwrite: direct writes refused (test)");
    }
    return EnvWrapper::PWrite(fd, buf, n, off);
  }
  int refused() { return refused_; }

 private:
  std::atomic<int> refused_{0};
};

TEST(Store, DirectWritesRefusedWithEinvalFallBackToThePageCache) {
  TempDir dir;
  auto path = dir.File("s.amber");
  Options o = SmallOptions();
  o.log_size = 1024 * kPageSize;
  RefuseDirectWritesEnv env;
  constexpr uint64_t kN = 300;  // large enough for the direct path
  std::vector<uint64_t> p1(kN), p2(kN);
  for (uint64_t i = 0; i < kN; ++i) {
    p1[i] = i;
    p2[i] = 2 * i;
  }
  {
    auto st = Store::Open(&env, path, o, Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    const int refused_at_create = env.refused();  // pre-zeroing the log has its own fallback
    auto i1 = AlignedImages(p1, 1), i2 = AlignedImages(p2, 2);
    Status s1 = (*st)->AppendGeneration(1, p1, i1.get(), 1024 * kPageSize, 1);
    ASSERT_TRUE(s1.ok()) << s1.ToString();
    Status s2 = (*st)->AppendGeneration(2, p2, i2.get(), 1024 * kPageSize, 2);
    ASSERT_TRUE(s2.ok()) << s2.ToString();
    int direct_fd_probe = env.refused() - refused_at_create;
    if (direct_fd_probe == 0) GTEST_SKIP() << "no O_DIRECT on this file system: nothing refused";
    EXPECT_EQ(direct_fd_probe, 1) << "after the first refusal, log writes must not try O_DIRECT";
  }
  auto st = OpenStore(path, o);
  ASSERT_TRUE(st);
  ASSERT_TRUE(st->Recover(true).ok());
  for (uint64_t page = 0; page < 2 * kN; ++page) {
    const uint64_t want = page % 2 == 0 ? 2 : page < kN ? 1 : 0;
    ASSERT_EQ(HomePage(path, *st, page), std::make_pair(want == 0 ? 0 : page, want)) << page;
  }
}

std::vector<uint64_t> PageRange(uint64_t first, uint64_t n) {
  std::vector<uint64_t> v;
  for (uint64_t i = 0; i < n; ++i) v.push_back(first + i);
  return v;
}

// Fails the `fail_at`-th read of 1 MiB or more (migration's windows; 0 = none)
// with EIO, and records the ranges of 1 MiB or more dropped from the cache.
class LargeReadEnv : public DirectFdEnv {
 public:
  explicit LargeReadEnv(int fail_at) : fail_at_(fail_at) {}
  Status PRead(int fd, void* buf, size_t n, uint64_t off) override {
    if (n >= (1u << 20) && ++large_ == fail_at_) return IOError("pread: injected EIO (test)");
    return EnvWrapper::PRead(fd, buf, n, off);
  }
  Status DropCache(int fd, uint64_t off, uint64_t len) override {
    if (len >= (1u << 20)) {
      std::lock_guard<std::mutex> l(mu_);
      dropped_.emplace_back(off, len);
    }
    return EnvWrapper::DropCache(fd, off, len);
  }
  std::vector<std::pair<uint64_t, uint64_t>> dropped() {
    std::lock_guard<std::mutex> l(mu_);
    return dropped_;
  }

 private:
  const int fail_at_;
  std::atomic<int> large_{0};
  std::mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> dropped_;  // (offset, length)
};

// Migration reads the log in windows of up to 8 MiB and drops each from the
// page cache once copied home (that the drop evicts: env's
// DropCacheEvictsCleanPagesOfTheFile). Generation 1 is 14 MiB of images (more
// than a window) and generation 2 supersedes a stretch of it long enough to
// split a window there: three windows, all copied home and dropped; a read
// that fails fails the migration without moving the tail, and a retry then
// completes it.
TEST(Store, MigrationReadsTheLogInWindowsAndDropsThemFromTheCache) {
  TempDir dir;
  auto path = dir.File("s.amber");
  Options o = SmallOptions();
  o.capacity = uint64_t{16} << 20;  // 4096 pages
  o.log_size = uint64_t{16} << 20;
  const std::vector<uint64_t> p1 = PageRange(0, 3500), p2 = PageRange(1000, 200);
  const uint64_t log_offset = AppendTwoGenerations(path, o, p1, p2, 4096);
  ASSERT_FALSE(HasFailure());
  LargeReadEnv env(/*fail_at=*/2);
  auto st = Store::Open(&env, path, o, Store::Mode::kReadWrite);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const uint64_t used = (*st)->LogUsed();
  ASSERT_GT(used, uint64_t{14} << 20);
  Status failed = (*st)->Migrate();
  EXPECT_EQ(failed.code(), Code::kIOError) << failed.ToString();
  EXPECT_NE(failed.ToString().find("injected EIO"), std::string::npos) << failed.ToString();
  EXPECT_EQ((*st)->LogUsed(), used) << "a failed migration must not move the tail";
  EXPECT_EQ((*st)->migrations(), 0u);
  Status retried = (*st)->Migrate();
  ASSERT_TRUE(retried.ok()) << retried.ToString();
  EXPECT_EQ((*st)->LogUsed(), 0u);
  // Windows: pages 0-999, then 1200-3499 and generation 2's images (more than
  // 8 MiB, so two). The failed attempt copied the first and stopped at the
  // second; each window was dropped once copied.
  const auto dropped = env.dropped();
  auto pages_at = [&](uint64_t pos, uint64_t n) {  // log page pos on, n pages
    return std::make_pair(log_offset + pos * kPageSize, n * kPageSize);
  };
  const uint64_t img1 = format::DescriptorPages(3500);  // generation 1's images
  const uint64_t img2 = format::GenerationPages(3500) + format::DescriptorPages(200);
  ASSERT_EQ(dropped.size(), 1u + 3u);
  // Each drop reaches to the next window and back to the previous one's start.
  EXPECT_EQ(dropped[0], pages_at(img1, 1200));  // with the superseded stretch after it
  EXPECT_EQ(dropped[1], pages_at(img1, 1200));
  EXPECT_EQ(dropped[2], pages_at(img1, 1200 + 2048));  // 8 MiB
  EXPECT_EQ(dropped[3], pages_at(img1 + 1200, img2 + 200 - (img1 + 1200)));
  for (uint64_t page = 0; page < 3500; ++page) {
    const uint64_t want = page >= 1000 && page < 1200 ? 2 : 1;
    ASSERT_EQ(HomePage(path, **st, page), std::make_pair(page, want)) << page;
  }
  EXPECT_EQ(HomePage(path, **st, 3500), std::make_pair(uint64_t{0}, uint64_t{0}));
  ASSERT_TRUE((*st)->VerifyHome(4096 * kPageSize).ok());
}

TEST(Store, RingWrapsAndMigratesUnderPressure) {
  TempDir dir;
  auto path = dir.File("s.amber");
  std::mt19937_64 rng(42);
  std::map<uint64_t, uint64_t> expect;  // page -> version
  {
    auto st = OpenStore(path);
    for (uint64_t gen = 1; gen <= 60; ++gen) {
      std::vector<uint64_t> pages;
      for (uint64_t p = rng() % 8; p < 1024 && pages.size() < 1 + rng() % 12; p += 1 + rng() % 50)
        pages.push_back(p);
      auto img = Images(pages, gen);
      Status s = st->AppendGeneration(gen, pages, img.data(), 1024 * kPageSize, gen);
      ASSERT_TRUE(s.ok()) << gen << ": " << s.ToString();
      for (auto p : pages) expect[p] = gen;
    }
    EXPECT_GT(st->migrations(), 0u);
  }
  auto st = OpenStore(path);
  ASSERT_TRUE(st->Recover(true).ok());
  for (auto [page, version] : expect) EXPECT_EQ(HomePage(path, *st, page).second, version) << page;
}

Status Append(Store& st, uint64_t gen, const std::vector<uint64_t>& pages) {
  auto img = Images(pages, gen);
  return st.AppendGeneration(gen, pages, img.data(), 1024 * kPageSize, gen);
}

// The superblock slots as raw bytes: saved before a publish and put back, they
// model a power cut that lost the superblock write (it is not synced).
std::vector<char> ReadSuperblocks(const std::string& path) {
  std::vector<char> b(format::kTableOffset);
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pread(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
  ::close(fd);
  return b;
}
// Applies `edit` to each written superblock slot in `raw` (as ReadSuperblocks
// returns them) and seals it again.
void EditSuperblocks(std::vector<char>* raw, const std::function<void(format::Superblock*)>& edit) {
  for (uint64_t slot = 0; slot < format::kSuperblockSlots; ++slot) {
    format::Superblock sb;
    std::memcpy(&sb, raw->data() + slot * kPageSize, sizeof(sb));
    if (sb.sequence == 0) continue;
    edit(&sb);
    format::SealSuperblock(&sb);
    std::memcpy(raw->data() + slot * kPageSize, &sb, sizeof(sb));
  }
}
void WriteSuperblocks(const std::string& path, const std::vector<char>& b) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
  ::close(fd);
}

// A generation counts once it is complete and synced: its superblock is written
// without a sync, and a power cut that loses it must not lose the generation.
// Open finds it past the head the durable superblock names and adopts it: in
// memory when read-only (writing nothing), published when read-write.
TEST(Store, CompleteGenerationPastTheHeadIsAdopted) {
  TempDir dir;
  auto path = dir.File("s.amber");
  std::vector<char> before;
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());
    before = ReadSuperblocks(path);
    ASSERT_TRUE(Append(*st, 2, {5, 6}).ok());
    ASSERT_TRUE(Append(*st, 3, {6}).ok());
  }
  WriteSuperblocks(path, before);  // both later superblocks lost
  {
    auto ro = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    ASSERT_TRUE(ro);
    EXPECT_EQ(ro->superblock().committed_gen, 3u);
    EXPECT_EQ(ro->adopted_at_open(), 2u);
    uint64_t walked = 0;
    ASSERT_TRUE(ro->ForEachGeneration(true, [&](const GenInfo& g) {
                    EXPECT_EQ(g.gen, ++walked);
                    return Status::OK();
                  }).ok());
    EXPECT_EQ(walked, 3u);
    EXPECT_EQ(ReadSuperblocks(path), before) << "a read-only open wrote";
  }
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->superblock().committed_gen, 3u);
    EXPECT_EQ(st->adopted_at_open(), 2u);
    EXPECT_EQ(st->superblock().format_version, format::kFormatVersion);
  }
  EXPECT_NE(ReadSuperblocks(path), before) << "the adoption was not published";
  auto st = OpenStore(path);
  ASSERT_TRUE(st->Recover(true).ok());
  EXPECT_EQ(st->superblock().committed_gen, 3u);
  EXPECT_EQ(HomePage(path, *st, 5), std::make_pair(uint64_t{5}, uint64_t{2}));
  EXPECT_EQ(HomePage(path, *st, 6), std::make_pair(uint64_t{6}, uint64_t{3}));
}

// An attempt whose sync failed may leave a complete generation at the head.
// When the next attempt does not fit there and wraps to 0, and its superblock
// is then lost, Open must adopt the new generation at 0, not the leftover at
// the head (the writer zeroes the head's page for this).
// Holds the first write into the checksum table after HoldNext() (a
// migration's, after its home writes and before its sync, which is outside the
// store's sync lock) until Release().
class HoldNextTableWriteEnv : public FaultInjectionEnv {
 public:
  using FaultInjectionEnv::FaultInjectionEnv;
  void HoldNext() { armed_ = true; }
  void WaitHeld() { latch_.WaitHeld(); }
  void Release() { latch_.Release(); }
  Status PWrite(int fd, const void* buf, size_t n, uint64_t off) override {
    if (off >= format::kTableOffset && off < format::LogOffset(SmallOptions().capacity) &&
        armed_.exchange(false))
      latch_.Hold();
    return FaultInjectionEnv::PWrite(fd, buf, n, off);
  }

 private:
  std::atomic<bool> armed_{false};
  testing::Latch latch_;
};

TEST(Store, LeftoverAtTheOldHeadIsNotAdoptedAfterAWrap) {
  TempDir dir;
  auto path = dir.File("s.amber");
  // Holds a migration before its sync until released; fails injected ones.
  HoldNextTableWriteEnv env(Env::Default());
  uint64_t head_before = 0;
  std::vector<char> superblocks;
  {
    auto opened = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    Store& st = **opened;
    // Generations 1 and 2 fill [0, 44) of the 64-page log.
    ASSERT_TRUE(Append(st, 1, PageRange(0, 20)).ok());
    ASSERT_TRUE(Append(st, 2, PageRange(100, 20)).ok());
    // A migration of 1-2 publishes its tail after generation 3 was appended:
    // the log is then [3's position, head), not empty, and its tail is not 0.
    env.HoldNext();
    Status ms;
    std::thread migrator([&] { ms = st.Migrate(); });
    env.WaitHeld();
    ASSERT_TRUE(Append(st, 3, PageRange(200, 6)).ok());
    env.Release();
    migrator.join();
    ASSERT_TRUE(ms.ok()) << ms.ToString();
    ASSERT_TRUE(st.Sync().ok());
    const format::Superblock sb = st.superblock();
    ASSERT_NE(sb.log_tail, 0u);
    ASSERT_NE(sb.log_tail, sb.log_head);
    head_before = sb.log_head;
    superblocks = ReadSuperblocks(path);
    // Generation 4 is written at the head, complete, but its sync fails.
    env.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
    ASSERT_EQ(Append(st, 4, PageRange(300, 6)).code(), Code::kIOError);
    ASSERT_EQ(st.superblock().log_head, head_before);
    // The next attempt is too big for the rest of the ring: it wraps to 0.
    ASSERT_TRUE(Append(st, 5, PageRange(400, 15)).ok());
    ASSERT_LT(st.superblock().log_head, head_before);
  }
  WriteSuperblocks(path, superblocks);  // its superblock lost
  auto st = OpenStore(path);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->superblock().committed_gen, 5u);
  Status r = st->Recover(/*verify_home=*/true);
  ASSERT_TRUE(r.ok()) << r.ToString();
  EXPECT_EQ(HomePage(path, *st, 400), std::make_pair(uint64_t{400}, uint64_t{5}));
  EXPECT_EQ(HomePage(path, *st, 300), std::make_pair(uint64_t{0}, uint64_t{0}));
  EXPECT_EQ(HomePage(path, *st, 200), std::make_pair(uint64_t{200}, uint64_t{3}));
}

// An attempt of an earlier process (complete on disk, numbered above what
// was committed) may lie where a later process's head comes to rest. Each
// append zeroes the page after itself, so that after a power cut the leftover
// is not taken for a generation of the later process.
TEST(Store, LeftoverOfAnEarlierProcessIsNeverAdopted) {
  TempDir dir;
  auto path = dir.File("s.amber");
  uint64_t log_offset;
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());  // log pages [0, 3)
    ASSERT_TRUE(st->Sync().ok());
    log_offset = st->superblock().log_offset;
  }
  const std::vector<char> before = ReadSuperblocks(path);
  {
    // The earlier process: 2 at [3, 6), 3 at [6, 9); then its superblocks are
    // lost and 2's header with them (say its write never reached the disk).
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 2, {6}).ok());
    ASSERT_TRUE(Append(*st, 3, {77}).ok());
  }
  WriteSuperblocks(path, before);
  std::vector<char> zeros(kPageSize, 0);
  {
    auto fd = Env::Default()->Open(path, O_RDWR, 0);
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(
        Env::Default()->PWrite(*fd, zeros.data(), kPageSize, log_offset + 3 * kPageSize).ok());
    Env::Default()->Close(*fd).IgnoreError();
  }
  {
    // The later process commits its own 2 at [3, 6), and dies before writing
    // anything at 6.
    auto st = OpenStore(path);
    ASSERT_EQ(st->superblock().committed_gen, 1u);
    ASSERT_TRUE(Append(*st, 2, {6}).ok());
    ASSERT_EQ(st->superblock().log_head, 6 * kPageSize);
    ASSERT_TRUE(st->Sync().ok());
  }
  {
    auto ro = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    EXPECT_EQ(ro->superblock().committed_gen, 2u);
    EXPECT_EQ(ro->adopted_at_open(), 0u);
  }
  auto st = OpenStore(path);
  EXPECT_EQ(st->superblock().committed_gen, 2u);
  ASSERT_TRUE(st->Recover(true).ok());
  EXPECT_EQ(HomePage(path, *st, 6), std::make_pair(uint64_t{6}, uint64_t{2}));
  EXPECT_EQ(HomePage(path, *st, 77), std::make_pair(uint64_t{0}, uint64_t{0}));
}

// Reads the device as it would be after a writeback that failed: whatever a
// descriptor opened with O_DIRECT reads in [from, to) comes back as zeros,
// while the page cache (plain descriptors) still has the written bytes.
class LostWritebackEnv : public DirectFdEnv {
 public:
  LostWritebackEnv(uint64_t from, uint64_t to) : from_(from), to_(to) {}
  Status PRead(int fd, void* buf, size_t n, uint64_t off) override {
    AMBER_RETURN_IF_ERROR(EnvWrapper::PRead(fd, buf, n, off));
    if (IsDirect(fd)) {
      const uint64_t b = std::max(off, from_), e = std::min(off + n, to_);
      if (b < e) std::memset(static_cast<char*>(buf) + (b - off), 0, e - b);
    }
    return Status::OK();
  }

 private:
  uint64_t from_, to_;
};

// A read-write open publishes what it adopts, so it must judge the generation
// by what the device holds: the page cache may hold a generation whose
// writeback failed (Linux then marks the pages clean and reports the error
// to one sync only), which a retried open would otherwise publish.
TEST(Store, AdoptionReadsTheDeviceNotThePageCache) {
  TempDir dir;
  auto path = dir.File("s.amber");
  uint64_t from, to;
  std::vector<char> before;
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());
    ASSERT_TRUE(st->Sync().ok());
    before = ReadSuperblocks(path);
    from = st->superblock().log_offset + st->superblock().log_head;
    ASSERT_TRUE(Append(*st, 2, {5}).ok());
    to = st->superblock().log_offset + st->superblock().log_head;
  }
  WriteSuperblocks(path, before);
  {
    auto ro = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    ASSERT_EQ(ro->superblock().committed_gen, 2u) << "the page cache view adopts it";
  }
  LostWritebackEnv env(from + kPageSize, to);  // its images and commit record lost
  auto opened = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  if (env.direct_opens() == 0) GTEST_SKIP() << "no O_DIRECT on this file system";
  EXPECT_EQ((*opened)->superblock().committed_gen, 1u);
  EXPECT_EQ((*opened)->adopted_at_open(), 0u);
}

// Adoption and the ring walk must agree. A generation at the head that the
// walk would take (sound descriptor and commit record, next number) but whose
// images are not all there ends the search: one at 0 is then never adopted,
// because a writer that went to 0 zeroed the head in the same sync, so it was
// never reported; adopting it would make the walk go through the head.
TEST(Store, GenerationAtZeroIsNotAdoptedPastATornOneAtTheHead) {
  TempDir dir;
  auto path = dir.File("s.amber");
  uint64_t log_offset, head3;
  std::vector<char> s3, g4(3 * kPageSize);
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5, 6, 7}).ok());  // [0, 5)
    ASSERT_TRUE(Append(*st, 2, {8}).ok());        // [5, 8)
    ASSERT_TRUE(Append(*st, 3, {9}).ok());        // [8, 11)
    ASSERT_TRUE(st->Sync().ok());
    log_offset = st->superblock().log_offset;
    head3 = st->superblock().log_head;
    ASSERT_EQ(head3, 11 * kPageSize);
    s3 = ReadSuperblocks(path);
    ASSERT_TRUE(Append(*st, 4, {10}).ok());  // [11, 14)
  }
  auto fd = Env::Default()->Open(path, O_RDWR, 0);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(Env::Default()->PRead(*fd, g4.data(), g4.size(), log_offset + head3).ok());
  // Generation 4 complete at 0 (as if written there), torn at the head.
  ASSERT_TRUE(Env::Default()->PWrite(*fd, g4.data(), g4.size(), log_offset).ok());
  Env::Default()->Close(*fd).IgnoreError();
  ASSERT_TRUE(FlipByte(path, log_offset + head3 + kPageSize + 7));
  // The superblock of generation 3, with 1 migrated: the log is [5, 11), and
  // [0, 5) is free, so generation 4 would fit at 0.
  EditSuperblocks(&s3, [](format::Superblock* sb) { sb->log_tail = 5 * kPageSize; });
  WriteSuperblocks(path, s3);
  for (auto mode : {Store::Mode::kReadOnly, Store::Mode::kReadWrite}) {
    auto st = OpenStore(path, SmallOptions(), mode);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->superblock().committed_gen, 3u);
    Status walk = st->ForEachGeneration(true, [](const GenInfo&) { return Status::OK(); });
    EXPECT_TRUE(walk.ok()) << walk.ToString();
  }
}

// A read-write open makes the superblock it starts from durable: it may have
// read one that an earlier process wrote but never synced (here: the
// superblock naming generation 1, which a generation's append does not sync).
TEST(Store, ReadWriteOpenPublishesTheSuperblockItLoaded) {
  TempDir dir;
  auto path = dir.File("s.amber");
  FaultInjectionEnv env(Env::Default());
  {
    auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    ASSERT_TRUE(Append(**st, 1, {5}).ok());
  }  // "killed": no Sync
  {
    auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ((*st)->adopted_at_open(), 0u) << "the page cache has the superblock";
  }
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
  EXPECT_EQ(st->superblock().committed_gen, 1u);
  EXPECT_EQ(st->adopted_at_open(), 0u) << "the reopen's superblock was not made durable";
}

// Without O_DIRECT (reads of the device), adoption could not tell the page
// cache from the disk: every superblock is synced, as in version 1, and flagged
// so that nothing past the head counts.
TEST(Store, WithoutODirectEverySuperblockIsSynced) {
  TempDir dir;
  auto path = dir.File("s.amber");
  NoDirectEnv env;
  std::vector<char> before;
  {
    auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    ASSERT_TRUE(Append(**st, 1, {5}).ok());
    before = ReadSuperblocks(path);
    const uint64_t syncs = (*st)->syncs();
    ASSERT_TRUE(Append(**st, 2, {5}).ok());
    EXPECT_EQ((*st)->syncs(), syncs + 2);
    EXPECT_EQ((*st)->superblock().flags & format::kFlagUnnamedCount, 0u);
  }
  WriteSuperblocks(path, before);  // generation 2 past the head: never reported
  auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
  EXPECT_EQ(st->superblock().committed_gen, 1u);
}

std::vector<char> ReadFile(const std::string& path) {
  std::vector<char> b;
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  b.resize(static_cast<size_t>(st.st_size));
  EXPECT_EQ(::pread(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
  ::close(fd);
  return b;
}

// A power cut anywhere in a read-write open (its publishes, the zeroing of the
// candidate pages, the version upgrade) leaves a store whose next open shows
// the checkpoint it should: a complete generation the last writer reported is
// never lost, and a version-1 leftover past the head never counts.
TEST(Store, PowerCutDuringAReadWriteOpen) {
  TempDir dir;
  auto path = dir.File("s.amber");
  for (const bool version1 : {false, true}) {
    SCOPED_TRACE(version1 ? "version-1 store, a leftover past the head"
                          : "a reported generation past the head");
    ::unlink(path.c_str());
    std::vector<char> named;
    {
      auto st = OpenStore(path);
      ASSERT_TRUE(Append(*st, 1, {5}).ok());
      ASSERT_TRUE(st->Sync().ok());
      named = ReadSuperblocks(path);
      ASSERT_TRUE(Append(*st, 2, {5}).ok());
    }
    uint32_t flags = 0;
    EditSuperblocks(&named, [&](format::Superblock* sb) {
      flags |= sb->flags;
      if (version1) sb->format_version = 1;
    });
    WriteSuperblocks(path, named);
    // Generation 2 counts only if its writer flagged that unnamed ones do.
    const uint64_t want =
        !version1 && (flags & format::kFlagUnnamedCount) != 0 ? uint64_t{2} : uint64_t{1};
    const std::vector<char> initial = ReadFile(path);
    bool completed = false;
    for (int n = 0; !completed && n < 64; ++n) {
      for (int plan = 0; plan < 3; ++plan) {
        SCOPED_TRACE("power off after write " + std::to_string(n) + ", plan " +
                     std::to_string(plan));
        {
          int fd = ::open(path.c_str(), O_WRONLY);
          ASSERT_GE(fd, 0);
          ASSERT_EQ(::pwrite(fd, initial.data(), initial.size(), 0),
                    static_cast<ssize_t>(initial.size()));
          ::close(fd);
        }
        FaultInjectionEnv env(Env::Default());
        env.SetCrashAfterWrites(n);
        {
          auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
          ASSERT_TRUE(st.ok()) << st.status().ToString();
        }
        if (!env.IsPoweredOff()) completed = true;
        const CrashPlan p = plan == 0   ? CrashPlan::DropAll()
                            : plan == 1 ? CrashPlan::KeepAll()
                                        : CrashPlan::KeepRandomSubset(1000 + n);
        ASSERT_TRUE(env.SimulateCrash(p).ok());
        for (int round = 0; round < 2; ++round) {
          auto ro = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
          ASSERT_TRUE(ro);
          EXPECT_EQ(ro->superblock().committed_gen, want);
          Status walk = ro->ForEachGeneration(true, [](const GenInfo&) { return Status::OK(); });
          EXPECT_TRUE(walk.ok()) << walk.ToString();
          // And again after a read-write open of it (which publishes).
          auto rw = OpenStore(path);
          ASSERT_TRUE(rw);
          EXPECT_EQ(rw->superblock().committed_gen, want);
        }
      }
    }
    EXPECT_TRUE(completed) << "the open never finished without a cut";
  }
}

// Linux reports a writeback error to one sync and then drops the pages' new
// contents (they stay in the page cache, marked clean). If the first
// generation after an open fails its sync so, the retried generation is
// reported durable with one sync and a superblock left unsynced: it counts
// after a power cut only if the flag that unnamed generations count already
// reached the disk, so the open must not leave that superblock to the
// generation's sync.
TEST(Store, SyncErrorAfterOpenDoesNotLoseARetriedGeneration) {
  TempDir dir;
  auto path = dir.File("s.amber");
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());
    ASSERT_TRUE(st->Sync().ok());
  }
  FaultInjectionEnv env(Env::Default());
  env.SetSyncFailureLosesWrites(true);
  {
    auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    if (((*st)->superblock().flags & format::kFlagUnnamedCount) == 0)
      GTEST_SKIP() << "every superblock is synced here (no O_DIRECT reads)";
    env.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
    Status failed = Append(**st, 2, {6});
    EXPECT_EQ(failed.code(), Code::kIOError) << failed.ToString();
    Status retried = Append(**st, 2, {6});
    ASSERT_TRUE(retried.ok()) << retried.ToString();
    EXPECT_EQ(env.InjectedErrorCount(), 1u);
  }
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  for (auto mode : {Store::Mode::kReadOnly, Store::Mode::kReadWrite}) {
    auto st = OpenStore(path, SmallOptions(), mode);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->superblock().committed_gen, 2u) << "a generation reported durable was lost";
  }
}

// Sync() makes the last superblock durable. If a sync failed after that
// superblock was written, its write may be lost although the page cache shows
// it: Sync() writes it again instead of syncing a page that is no longer dirty.
TEST(Store, SyncRewritesASuperblockAFailedSyncMayHaveLost) {
  TempDir dir;
  auto path = dir.File("s.amber");
  FaultInjectionEnv env(Env::Default());
  env.SetSyncFailureLosesWrites(true);
  {
    auto st = Store::Open(&env, path, SmallOptions(), Store::Mode::kReadWrite);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    if (((*st)->superblock().flags & format::kFlagUnnamedCount) == 0)
      GTEST_SKIP() << "every superblock is synced here (no O_DIRECT reads)";
    ASSERT_TRUE(Append(**st, 1, {5}).ok());  // its superblock is not synced
    env.InjectError(FaultInjectionEnv::kDataSync, EIO, 1);
    EXPECT_EQ((*st)->Sync().code(), Code::kIOError);
    Status again = (*st)->Sync();
    ASSERT_TRUE(again.ok()) << again.ToString();
  }
  ASSERT_TRUE(env.SimulateCrash(CrashPlan::DropAll()).ok());
  auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->superblock().committed_gen, 1u);
  EXPECT_EQ(st->adopted_at_open(), 0u) << "the superblock naming generation 1 was lost";
}

TEST(Store, GenerationLargerThanLogIsNoSpace) {
  TempDir dir;
  auto st = OpenStore(dir.File("s.amber"));
  std::vector<uint64_t> pages(80);
  for (uint64_t i = 0; i < 80; ++i) pages[i] = i;
  auto img = Images(pages, 1);
  Status s = st->AppendGeneration(1, pages, img.data(), 80 * kPageSize, 1);
  EXPECT_EQ(s.code(), Code::kNoSpace);
  EXPECT_NE(s.message().find("log_size"), std::string::npos);
  EXPECT_EQ(st->superblock().committed_gen, 0u);
}

// Past the head, only a complete generation counts: one without its commit
// record, or with an image that does not match its checksum (a crash before
// its sync completed), is ignored. A read-write open that ignores one zeroes
// its first page, so that it can never be taken for a later generation.
TEST(Store, TornGenerationPastTheHeadIsIgnored) {
  TempDir dir;
  auto path = dir.File("s.amber");
  {
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());
  }
  const std::vector<char> before = ReadSuperblocks(path);
  uint64_t pos, log_offset;
  {
    auto st = OpenStore(path);
    pos = st->superblock().log_head;
    log_offset = st->superblock().log_offset;
    ASSERT_TRUE(Append(*st, 2, {5}).ok());
  }
  WriteSuperblocks(path, before);
  auto fd = Env::Default()->Open(path, O_RDWR, 0);
  ASSERT_TRUE(fd.ok());
  // Generation 2 is one descriptor page, one image, one commit page.
  const uint64_t commit_at = log_offset + pos + 2 * kPageSize;
  std::vector<char> commit(kPageSize), zeros(kPageSize, 0);
  ASSERT_TRUE(Env::Default()->PRead(*fd, commit.data(), kPageSize, commit_at).ok());
  auto read_only_committed = [&] {
    auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    return st ? st->superblock().committed_gen : 0;
  };
  {
    SCOPED_TRACE("an image byte flipped");
    ASSERT_TRUE(FlipByte(path, log_offset + pos + kPageSize + 100));
    EXPECT_EQ(read_only_committed(), 1u);
    ASSERT_TRUE(FlipByte(path, log_offset + pos + kPageSize + 100));
  }
  {
    SCOPED_TRACE("no commit record");
    ASSERT_TRUE(Env::Default()->PWrite(*fd, zeros.data(), kPageSize, commit_at).ok());
    EXPECT_EQ(read_only_committed(), 1u);
  }
  {
    SCOPED_TRACE("complete again");
    ASSERT_TRUE(Env::Default()->PWrite(*fd, commit.data(), kPageSize, commit_at).ok());
    EXPECT_EQ(read_only_committed(), 2u);
  }
  EXPECT_EQ(ReadSuperblocks(path), before);
  {
    SCOPED_TRACE("torn, then opened for writing");
    ASSERT_TRUE(Env::Default()->PWrite(*fd, zeros.data(), kPageSize, commit_at).ok());
    auto st = OpenStore(path);
    EXPECT_EQ(st->superblock().committed_gen, 1u);
    ASSERT_TRUE(st->Recover(true).ok());
    EXPECT_EQ(HomePage(path, *st, 5).second, 1u);
  }
  WriteSuperblocks(path, before);
  ASSERT_TRUE(Env::Default()->PWrite(*fd, commit.data(), kPageSize, commit_at).ok());
  EXPECT_EQ(read_only_committed(), 1u) << "the ignored generation's header was not zeroed";
  Env::Default()->Close(*fd).IgnoreError();
}

// A version-1 store (whose generations count only once a synced superblock
// names them) is read by its own rules, and upgraded when opened for writing:
// a version-1 build must then refuse it rather than drop adopted generations.
TEST(Store, VersionOneStoreIsReadAndUpgraded) {
  TempDir dir;
  auto path = dir.File("s.amber");
  std::vector<char> raw;
  {
    // Generation 2 lies complete past the head: a version-1 writer never
    // reported it (it synced the superblock of everything it reported), so it
    // must not count.
    auto st = OpenStore(path);
    ASSERT_TRUE(Append(*st, 1, {5}).ok());
    ASSERT_TRUE(st->Sync().ok());
    raw = ReadSuperblocks(path);
    ASSERT_TRUE(Append(*st, 2, {5}).ok());
  }
  EditSuperblocks(&raw, [](format::Superblock* sb) { sb->format_version = 1; });
  WriteSuperblocks(path, raw);
  {
    auto ro = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    ASSERT_TRUE(ro);
    EXPECT_EQ(ro->superblock().format_version, 1u);
    EXPECT_EQ(ro->superblock().committed_gen, 1u);
  }
  EXPECT_EQ(ReadSuperblocks(path), raw);
  auto st = OpenStore(path);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->superblock().format_version, format::kFormatVersion);
  EXPECT_EQ(st->superblock().committed_gen, 1u);
  ASSERT_TRUE(st->Recover(true).ok());
  EXPECT_EQ(HomePage(path, *st, 5).second, 1u);
  st.reset();
  // Version 2 from here on: the leftover must not count under its rules either
  // (the upgrading open zeroed the page at the head).
  auto again = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
  EXPECT_EQ(again->superblock().committed_gen, 1u);
}

TEST(Store, FlippedSuperblockByteIsCorruption) {
  TempDir dir;
  auto path = dir.File("s.amber");
  { auto st = OpenStore(path); }
  for (uint64_t off :
       {uint64_t{kPageSize + 40}, uint64_t{kPageSize + 0}, uint64_t{kPageSize + 120}}) {
    ASSERT_TRUE(FlipByte(path, off));
    auto s = Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadOnly);
    ASSERT_FALSE(s.ok()) << off;
    EXPECT_EQ(s.status().code(), Code::kCorruption) << s.status().ToString();
    ASSERT_TRUE(FlipByte(path, off));  // restore
  }
  EXPECT_TRUE(Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadOnly).ok());
}

TEST(Store, FlippedLogByteIsCorruption) {
  TempDir dir;
  auto path = dir.File("s.amber");
  uint64_t log_offset;
  {
    auto st = OpenStore(path);
    std::vector<uint64_t> p = {1, 2, 3};
    auto img = Images(p, 1);
    ASSERT_TRUE(st->AppendGeneration(1, p, img.data(), 8 * kPageSize, 1).ok());
    log_offset = st->superblock().log_offset;
  }
  // Descriptor, a page image, the commit record.
  for (uint64_t off :
       {log_offset + 70, log_offset + kPageSize * 2 + 99, log_offset + kPageSize * 4 + 9}) {
    ASSERT_TRUE(FlipByte(path, off));
    auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    Status s = st->Recover(false);
    EXPECT_EQ(s.code(), Code::kCorruption) << off << " " << s.ToString();
    ASSERT_TRUE(FlipByte(path, off));
  }
}

TEST(Store, FlippedHomeByteIsCorruption) {
  TempDir dir;
  auto path = dir.File("s.amber");
  uint64_t home;
  {
    auto st = OpenStore(path);
    std::vector<uint64_t> p = {0, 4};
    auto img = Images(p, 1);
    ASSERT_TRUE(st->AppendGeneration(1, p, img.data(), 8 * kPageSize, 1).ok());
    ASSERT_TRUE(st->Migrate().ok());
    home = st->superblock().home_offset;
  }
  {
    auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    EXPECT_TRUE(st->VerifyHome(8 * kPageSize).ok());
  }
  for (uint64_t off : {home + 5, home + 4 * kPageSize + 4000, home + 2 * kPageSize + 1}) {
    ASSERT_TRUE(FlipByte(path, off));
    auto st = OpenStore(path, SmallOptions(), Store::Mode::kReadOnly);
    Status s = st->VerifyHome(8 * kPageSize);
    EXPECT_EQ(s.code(), Code::kCorruption) << off;
    ASSERT_TRUE(FlipByte(path, off));
  }
}

TEST(Store, TruncatedStoreIsCorruption) {
  TempDir dir;
  auto path = dir.File("s.amber");
  { auto st = OpenStore(path); }
  ASSERT_EQ(::truncate(path.c_str(), 100000), 0);
  auto s = Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadWrite);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kCorruption);
  EXPECT_NE(s.status().message().find("truncated"), std::string::npos) << s.status().ToString();
}

TEST(Store, WrongVersionIsNotSupported) {
  TempDir dir;
  auto path = dir.File("s.amber");
  { auto st = OpenStore(path); }
  // Rewrite slot 1 with version 99 and a valid checksum.
  auto fd = Env::Default()->Open(path, O_RDWR, 0);
  ASSERT_TRUE(fd.ok());
  format::Superblock sb;
  ASSERT_TRUE(Env::Default()->PRead(*fd, &sb, sizeof(sb), kPageSize).ok());
  sb.format_version = 99;
  format::SealSuperblock(&sb);
  ASSERT_TRUE(Env::Default()->PWrite(*fd, &sb, sizeof(sb), kPageSize).ok());
  Env::Default()->Close(*fd).IgnoreError();
  auto s = Store::Open(Env::Default(), path, SmallOptions(), Store::Mode::kReadOnly);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kNotSupported);
  EXPECT_NE(s.status().message().find("version 99"), std::string::npos);
}

TEST(Store, BadCreateOptionsAreRejected) {
  TempDir dir;
  Options o = SmallOptions();
  o.capacity = 1000;
  EXPECT_EQ(Store::Open(Env::Default(), dir.File("a"), o, Store::Mode::kReadWrite).status().code(),
            Code::kInvalidArgument);
  o = SmallOptions();
  o.base_address = 12345;
  EXPECT_EQ(Store::Open(Env::Default(), dir.File("b"), o, Store::Mode::kReadWrite).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(
      Store::Open(Env::Default(), "", SmallOptions(), Store::Mode::kReadWrite).status().code(),
      Code::kInvalidArgument);
  EXPECT_EQ(Store::Open(Env::Default(), dir.File("no/such/dir/x"), SmallOptions(),
                        Store::Mode::kReadWrite)
                .status()
                .code(),
            Code::kNotFound);
}

}  // namespace
}  // namespace amber
