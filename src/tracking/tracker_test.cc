// tracker_test.cc — tests of the dirty-page trackers (tracker.h).
//
// The uffd tests run on both kinds of memory the heap can be: anonymous, and a
// MAP_PRIVATE mapping of a regular file (what the heap really is). When the
// kernel or the process cannot use userfaultfd async write-protect at all,
// they GTEST_SKIP with the reason instead of passing vacuously.
//
// Mappings are placed by the kernel (no fixed address) so that sanitizer
// runtimes, TSan especially, keep their own reserved ranges.
//
// Thread-safety: the race test shares heap words between a writer thread and
// the collecting thread only through std::atomic_ref, so TSan sees no race
// that the tracker's contract does not already allow.
#include "tracking/tracker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "env/env.h"
#include "tracking/tracker_internal.h"

namespace amber {
namespace {

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Why uffd tracking cannot be used here, or "" if it can. Probed once with a
// real tracker on a small anonymous mapping.
const std::string& UffdUnavailableReason() {
  static const std::string* reason = [] {
    const size_t len = 16 * PageSize();
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return new std::string("mmap failed");
    auto t = CreateTracker(Env::Default(), p, len, TrackingMode::kUffdAsync);
    auto* r = new std::string(t.ok() ? "" : t.status().ToString());
    if (t.ok()) t->reset();
    munmap(p, len);
    return r;
  }();
  return *reason;
}

#define SKIP_IF_NO_UFFD()                                                                         \
  do {                                                                                            \
    if (!UffdUnavailableReason().empty())                                                         \
      GTEST_SKIP() << "userfaultfd async write-protect unavailable: " << UffdUnavailableReason(); \
  } while (0)

// A page-aligned region of memory the tests track: anonymous, or a MAP_PRIVATE
// mapping of a temporary regular file (the heap's real shape). The file's
// first half holds non-zero data, so reads there map real page-cache pages.
class Region {
 public:
  enum Kind { kAnon, kPrivateFile };

  Region(Kind kind, size_t pages) : len_(pages * PageSize()) {
    int flags = MAP_PRIVATE | MAP_NORESERVE;
    int fd = -1;
    if (kind == kAnon) {
      flags |= MAP_ANONYMOUS;
    } else {
      const char* dir = std::getenv("TMPDIR");
      std::string path =
          std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/amber_tracker_test_XXXXXX";
      fd = mkstemp(path.data());
      if (fd < 0) return;
      unlink(path.c_str());
      if (ftruncate(fd, static_cast<off_t>(len_)) != 0) {
        close(fd);
        return;
      }
      std::vector<char> data(len_ / 2, 'f');
      if (pwrite(fd, data.data(), data.size(), 0) != static_cast<ssize_t>(data.size())) {
        close(fd);
        return;
      }
    }
    void* p = mmap(nullptr, len_, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (fd >= 0) close(fd);  // the mapping keeps the file alive
    if (p != MAP_FAILED) base_ = static_cast<char*>(p);
  }
  ~Region() {
    if (base_ != nullptr) munmap(base_, len_);
  }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  bool ok() const { return base_ != nullptr; }
  char* base() const { return base_; }
  size_t len() const { return len_; }
  size_t pages() const { return len_ / PageSize(); }
  char* page(uint64_t i) const { return base_ + i * PageSize(); }

 private:
  size_t len_;
  char* base_ = nullptr;
};

// Collects the whole range; fails the test on error.
std::vector<uint64_t> CollectAll(DirtyTracker* t, size_t bytes) {
  std::vector<uint64_t> pages;
  Status s = t->Collect(bytes, &pages);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return pages;
}

// Reads every byte of a page in a way the compiler cannot drop.
uint64_t ReadPage(const char* p) {
  uint64_t sum = 0;
  for (size_t i = 0; i < PageSize(); i += 64) sum += static_cast<const volatile char*>(p)[i];
  return sum;
}

// ---------------------------------------------------------------------------
// uffd-wp-async on anonymous and file-backed memory.

// Each uffd test runs on both kinds of memory, and with the tracker as the
// library makes it (one reporting and re-protecting scan at this size) or tuned
// so that every Collect takes the two-pass path of large ranges: pass 1 in
// 256 KiB chunks shared with the helper thread, pass 2 merging written pages
// less than 64 KiB apart (so both merged and separate spans occur).
struct UffdParam {
  Region::Kind kind;
  bool two_pass;
};
void PrintTo(const UffdParam& p, std::ostream* os) {
  *os << (p.kind == Region::kAnon ? "anonymous" : "private file")
      << (p.two_pass ? ", two passes" : "");
}

class TrackerUffd : public ::testing::TestWithParam<UffdParam> {
 protected:
  void SetUp() override {
    SKIP_IF_NO_UFFD();
    region_ = std::make_unique<Region>(GetParam().kind, kPages);
    ASSERT_TRUE(region_->ok()) << "cannot map the test region: " << std::strerror(errno);
  }

  std::unique_ptr<DirtyTracker> Track() {
    Result<std::unique_ptr<DirtyTracker>> t =
        GetParam().two_pass
            ? tracking_internal::NewUffdTracker(
                  Env::Default(), region_->base(), region_->len(),
                  {.parallel_scan_bytes = 0, .chunk_bytes = 256 << 10, .merge_gap_bytes = 64 << 10})
            : CreateTracker(Env::Default(), region_->base(), region_->len(),
                            TrackingMode::kUffdAsync);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (!t.ok()) return nullptr;
    EXPECT_STREQ((*t)->name(), "uffd-wp-async");
    return std::move(*t);
  }

  static constexpr size_t kPages = 4096;  // 16 MiB with 4 KiB pages
  std::unique_ptr<Region> region_;
};

TEST_P(TrackerUffd, WritesBeforeCreationDoNotCount) {
  for (uint64_t i = 0; i < 64; ++i) region_->page(i)[0] = 1;
  auto t = Track();
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());
}

TEST_P(TrackerUffd, WrittenPagesReportedExactlyOnce) {
  auto t = Track();
  ASSERT_NE(t, nullptr);
  const std::vector<uint64_t> written = {0, 5, 6, 7, 100, 2047, 2048, kPages - 1};
  for (uint64_t p : written) region_->page(p)[PageSize() / 2] = 'x';
  region_->page(6)[1] = 'y';  // a second write to a page is still one page
  EXPECT_EQ(CollectAll(t.get(), region_->len()), written);
  // Clean again until written again.
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());
  region_->page(5)[0] = 'z';
  region_->page(kPages - 1)[PageSize() - 1] = 'z';
  EXPECT_EQ(CollectAll(t.get(), region_->len()), (std::vector<uint64_t>{5, kPages - 1}));
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());
}

// A Collect of 1 GiB or more takes the two-pass path with the library's own
// tuning (64 MiB chunks); the result must be the same exact, ascending list,
// on both sides of chunk boundaries and across repeated Collects (the helper
// thread is reused).
class TrackerUffdLarge : public ::testing::TestWithParam<Region::Kind> {
 protected:
  void SetUp() override { SKIP_IF_NO_UFFD(); }
};

TEST_P(TrackerUffdLarge, LargeRangeScannedInChunksIsExact) {
  const size_t pages = (size_t{3} << 29) / PageSize();  // 1.5 GiB, mapped lazily
  Region big(GetParam(), pages);
  ASSERT_TRUE(big.ok()) << "cannot map the test region: " << std::strerror(errno);
  auto t = CreateTracker(Env::Default(), big.base(), big.len(), TrackingMode::kUffdAsync);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  const uint64_t mid = pages / 2;
  for (int round = 0; round < 3; ++round) {
    std::vector<uint64_t> written = {0,   1,       511,       512,       mid - 513, mid - 1,
                                     mid, mid + 1, mid + 512, pages - 2, pages - 1};
    std::mt19937_64 rng(round);
    for (int i = 0; i < 200; ++i) written.push_back(rng() % pages);
    for (uint64_t p : written) big.page(p)[round] = static_cast<char>('a' + round);
    std::sort(written.begin(), written.end());
    written.erase(std::unique(written.begin(), written.end()), written.end());
    EXPECT_EQ(CollectAll(t->get(), big.len()), written) << "round " << round;
    EXPECT_TRUE(CollectAll(t->get(), big.len()).empty()) << "round " << round;
  }
}

TEST_P(TrackerUffd, ReadAndUntouchedPagesNotReported) {
  // Populate some pages before tracking starts, so the reads below hit both
  // present pages and never-touched ones (file data, holes, anonymous zero).
  for (uint64_t i = 0; i < kPages; i += 3) region_->page(i)[0] = 2;
  auto t = Track();
  ASSERT_NE(t, nullptr);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < kPages; i += 2) sum += ReadPage(region_->page(i));
  EXPECT_NE(sum, 0u);
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());
  region_->page(1234)[7] = 1;
  EXPECT_EQ(CollectAll(t.get(), region_->len()), std::vector<uint64_t>{1234});
}

TEST_P(TrackerUffd, WritesByTheKernelAreTracked) {
  // read(2) into the heap writes through copy_to_user, not a user-mode store.
  auto t = Track();
  ASSERT_NE(t, nullptr);
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_GT(read(fd, region_->page(77), 64), 0);
  close(fd);
  EXPECT_EQ(CollectAll(t.get(), region_->len()), std::vector<uint64_t>{77});
}

TEST_P(TrackerUffd, MoreThan512DisjointRegions) {
  // Every other page: kPages / 2 = 2048 separate regions in one Collect, past
  // both the kernel's 512-region bounce buffer and the tracker's own batch.
  auto t = Track();
  ASSERT_NE(t, nullptr);
  std::vector<uint64_t> want;
  for (uint64_t i = 0; i < kPages; i += 2) {
    region_->page(i)[0] = 1;
    want.push_back(i);
  }
  EXPECT_EQ(CollectAll(t.get(), region_->len()), want);
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());

  // And a mixed pattern: runs of different lengths with gaps, ending at the
  // last page.
  want.clear();
  std::mt19937_64 rng(42);
  for (uint64_t i = 1; i < kPages;) {
    uint64_t run = 1 + rng() % 3;
    for (uint64_t j = 0; j < run && i + j < kPages; ++j) {
      region_->page(i + j)[0] = 2;
      want.push_back(i + j);
    }
    i += run + 1 + rng() % 2;
  }
  region_->page(kPages - 1)[0] = 3;
  if (want.back() != kPages - 1) want.push_back(kPages - 1);
  EXPECT_EQ(CollectAll(t.get(), region_->len()), want);
  EXPECT_TRUE(CollectAll(t.get(), region_->len()).empty());
}

TEST_P(TrackerUffd, ScanBytesLimitsTheScan) {
  auto t = Track();
  ASSERT_NE(t, nullptr);
  for (uint64_t p : {1, 10, 11, 20}) region_->page(p)[0] = 1;
  // 10 pages and a bit rounds up to 11 pages: [0, 11).
  EXPECT_EQ(CollectAll(t.get(), 10 * PageSize() + 1), (std::vector<uint64_t>{1, 10}));
  EXPECT_TRUE(CollectAll(t.get(), 0).empty());
  // The pages beyond the earlier scan were not lost, nor re-protected.
  EXPECT_EQ(CollectAll(t.get(), region_->len()), (std::vector<uint64_t>{11, 20}));

  std::vector<uint64_t> pages;
  EXPECT_EQ(t->Collect(region_->len() + 1, &pages).code(), Code::kInvalidArgument);
}

TEST_P(TrackerUffd, CollectAppends) {
  auto t = Track();
  ASSERT_NE(t, nullptr);
  region_->page(3)[0] = 1;
  std::vector<uint64_t> pages = {999};
  ASSERT_TRUE(t->Collect(region_->len(), &pages).ok());
  EXPECT_EQ(pages, (std::vector<uint64_t>{999, 3}));
}

// A writer thread stores increasing sequence numbers into random pages while
// this thread collects over and over. Property checked after every Collect:
// for each page, the value last read from it after a Collect reported it
// ("shadow") is at least as new as every write that had completed before that
// Collect began. A write lost by the tracker would leave a page's shadow
// stale. It is a statement about contents, which is what a checkpoint needs:
// a write landing while Collect re-protects its page may be reported by this
// Collect only (not the next), but then it is visible when this Collect's
// pages are copied, which the shadow read models.
TEST_P(TrackerUffd, ConcurrentWritesAreNeverLost) {
  auto t = Track();
  ASSERT_NE(t, nullptr);
  const size_t n = kPages;
  auto word = [&](uint64_t p) {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(region_->page(p) + 64));
  };
  // The file's first half starts out as 'f' bytes, the rest as zero.
  std::vector<uint64_t> shadow(n), required(n);
  for (uint64_t p = 0; p < n; ++p) shadow[p] = required[p] = word(p).load();

  constexpr uint64_t kMaxWrites = 1 << 21;
  std::vector<uint32_t> log(kMaxWrites + 1);  // log[seq] = page written with seq
  std::atomic<uint64_t> progress{0};          // writes [1, progress] have completed
  std::atomic<bool> stop{false};
  const uint64_t first_seq = uint64_t{1} << 63;  // above any initial content (0x6666...)

  std::thread writer([&] {
    std::mt19937_64 rng(7);
    for (uint64_t s = 1; s <= kMaxWrites && !stop.load(std::memory_order_relaxed); ++s) {
      uint64_t p = rng() % n;
      // Mostly random pages, sometimes the neighbour of the last one so that
      // regions of several pages form too.
      if ((s & 7) == 0) p = (log[s - 1] + 1) % n;
      word(p).store(first_seq + s, std::memory_order_relaxed);
      log[s] = static_cast<uint32_t>(p);
      progress.store(s, std::memory_order_release);
    }
  });

  std::mt19937_64 rng(99);
  std::vector<uint64_t> pages;
  uint64_t seen = 0;  // log entries already folded into `required`
  int collects = 0;
  size_t reported = 0;
  auto check_round = [&](bool final_round) {
    const uint64_t done = progress.load(std::memory_order_acquire);
    pages.clear();
    Status s = t->Collect(region_->len(), &pages);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(std::is_sorted(pages.begin(), pages.end()));
    ASSERT_TRUE(std::adjacent_find(pages.begin(), pages.end()) == pages.end());
    for (uint64_t p : pages) {
      ASSERT_LT(p, n);
      shadow[p] = word(p).load(std::memory_order_relaxed);
    }
    reported += pages.size();
    ++collects;
    for (; seen < done; ++seen) required[log[seen + 1]] = first_seq + seen + 1;
    for (uint64_t p = 0; p < n; ++p) {
      ASSERT_GE(shadow[p], required[p]) << "write of " << required[p] - first_seq << " to page "
                                        << p << " was lost (collect #" << collects << ")";
      if (final_round) {
        ASSERT_EQ(shadow[p], word(p).load(std::memory_order_relaxed)) << "page " << p;
      }
    }
  };

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
  while (std::chrono::steady_clock::now() < deadline &&
         progress.load(std::memory_order_relaxed) < kMaxWrites) {
    check_round(false);
    if (HasFatalFailure()) break;
    // Vary the gap so that Collects start at all phases of the writer.
    if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
  }
  stop.store(true);
  writer.join();
  if (HasFatalFailure()) return;
  check_round(true);  // everything written by now must be visible
  EXPECT_GT(collects, 20);
  EXPECT_GT(progress.load(), 1000u);
  RecordProperty("collects", collects);
  RecordProperty("writes", static_cast<int>(progress.load()));
  RecordProperty("pages_reported", static_cast<int>(reported));
}

std::string KindName(Region::Kind kind) {
  return kind == Region::kAnon ? "Anonymous" : "PrivateFile";
}

INSTANTIATE_TEST_SUITE_P(
    Tracker, TrackerUffd,
    ::testing::Values(UffdParam{Region::kAnon, false}, UffdParam{Region::kPrivateFile, false},
                      UffdParam{Region::kAnon, true}, UffdParam{Region::kPrivateFile, true}),
    [](const ::testing::TestParamInfo<UffdParam>& param_info) {
      return KindName(param_info.param.kind) + (param_info.param.two_pass ? "TwoPass" : "");
    });
INSTANTIATE_TEST_SUITE_P(Tracker, TrackerUffdLarge,
                         ::testing::Values(Region::kAnon, Region::kPrivateFile),
                         [](const ::testing::TestParamInfo<Region::Kind>& param_info) {
                           return KindName(param_info.param);
                         });

// ---------------------------------------------------------------------------
// The "full" tracker.

TEST(TrackerFull, ReportsEveryScannedPageEveryTime) {
  Region region(Region::kAnon, 64);
  ASSERT_TRUE(region.ok());
  auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kFull);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_STREQ((*t)->name(), "full");
  std::vector<uint64_t> all(64);
  for (uint64_t i = 0; i < 64; ++i) all[i] = i;
  EXPECT_EQ(CollectAll(t->get(), region.len()), all);
  EXPECT_EQ(CollectAll(t->get(), region.len()), all);  // nothing written: still all
  EXPECT_EQ(CollectAll(t->get(), 2 * PageSize() + 1), (std::vector<uint64_t>{0, 1, 2}));
  EXPECT_TRUE(CollectAll(t->get(), 0).empty());
  std::vector<uint64_t> pages;
  EXPECT_EQ((*t)->Collect(region.len() + 1, &pages).code(), Code::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// CreateTracker: mode selection, fallback and fault injection.

// Fails userfaultfd(2) with a chosen status.
class NoUffdEnv : public EnvWrapper {
 public:
  explicit NoUffdEnv(Status s) : EnvWrapper(Env::Default()), status_(std::move(s)) {}
  Result<int> UserfaultFd(int) override { return status_; }

 private:
  Status status_;
};

// Refuses a full userfaultfd like an unprivileged process with
// vm.unprivileged_userfaultfd = 0 (EPERM), and records the flags asked for.
class UnprivilegedEnv : public EnvWrapper {
 public:
  UnprivilegedEnv() : EnvWrapper(Env::Default()) {}
  Result<int> UserfaultFd(int flags) override {
    calls.push_back(flags);
    if ((flags & 1 /* UFFD_USER_MODE_ONLY */) == 0) {
      return Status(Code::kPermissionDenied, "userfaultfd: Operation not permitted");
    }
    return target()->UserfaultFd(flags);
  }
  std::vector<int> calls;
};

// Counts descriptors opened and closed, and can fail ioctls on demand.
class CountingEnv : public EnvWrapper {
 public:
  CountingEnv() : EnvWrapper(Env::Default()) {}
  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    auto r = target()->Open(path, flags, mode);
    if (r.ok()) ++open_fds;
    return r;
  }
  Result<int> UserfaultFd(int flags) override {
    auto r = target()->UserfaultFd(flags);
    if (r.ok()) ++open_fds;
    return r;
  }
  Status Close(int fd) override {
    --open_fds;
    return target()->Close(fd);
  }
  Result<long> Ioctl(int fd, unsigned long request, void* arg) override {
    ++ioctls;
    if (fail_ioctl_from >= 0 && ioctls > fail_ioctl_from) return IOError("injected ioctl failure");
    return target()->Ioctl(fd, request, arg);
  }
  int open_fds = 0;
  int ioctls = 0;
  int fail_ioctl_from = -1;  // fail every ioctl after this many; -1 = never
};

TEST(TrackerCreate, ForcedUffdWithoutKernelSupportIsNotSupported) {
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  NoUffdEnv env(Status(Code::kNotSupported, "userfaultfd: Function not implemented"));
  auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kUffdAsync);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kNotSupported);
  EXPECT_NE(t.status().message().find("Function not implemented"), std::string::npos)
      << t.status().ToString();
  EXPECT_NE(t.status().message().find("uffd-wp-async"), std::string::npos) << t.status().ToString();
}

TEST(TrackerCreate, ForcedUffdDeniedIsNotSupportedToo) {
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  NoUffdEnv env(Status(Code::kPermissionDenied, "userfaultfd: Operation not permitted"));
  auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kUffdAsync);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kNotSupported);
  EXPECT_NE(t.status().message().find("not permitted"), std::string::npos) << t.status().ToString();
}

TEST(TrackerCreate, AutoFallsBackToFull) {
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  NoUffdEnv env(Status(Code::kNotSupported, "userfaultfd: Function not implemented"));
  auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kAuto);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_STREQ((*t)->name(), "full");
  EXPECT_EQ(CollectAll(t->get(), region.len()).size(), 16u);
}

TEST(TrackerCreate, AutoPrefersUffd) {
  SKIP_IF_NO_UFFD();
  Region region(Region::kPrivateFile, 16);
  ASSERT_TRUE(region.ok());
  auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kAuto);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_STREQ((*t)->name(), "uffd-wp-async");
}

TEST(TrackerCreate, FullOnRequest) {
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kFull);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_STREQ((*t)->name(), "full");
}

TEST(TrackerCreate, RetriesUserModeOnlyWhenDenied) {
  SKIP_IF_NO_UFFD();
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  UnprivilegedEnv env;
  auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kUffdAsync);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(env.calls.size(), 2u);
  EXPECT_EQ(env.calls[0] & 1, 0);
  EXPECT_EQ(env.calls[1] & 1, 1);
  EXPECT_EQ(env.calls[0] & (O_CLOEXEC | O_NONBLOCK), O_CLOEXEC | O_NONBLOCK);
  // A user-mode-only descriptor tracks user-mode writes just the same.
  region.page(9)[0] = 1;
  EXPECT_EQ(CollectAll(t->get(), region.len()), std::vector<uint64_t>{9});
}

TEST(TrackerCreate, RejectsBadRanges) {
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  for (TrackingMode mode : {TrackingMode::kAuto, TrackingMode::kUffdAsync, TrackingMode::kFull}) {
    EXPECT_EQ(CreateTracker(Env::Default(), region.base() + 8, PageSize(), mode).status().code(),
              Code::kInvalidArgument);
    EXPECT_EQ(CreateTracker(Env::Default(), region.base(), PageSize() + 8, mode).status().code(),
              Code::kInvalidArgument);
    EXPECT_EQ(CreateTracker(Env::Default(), region.base(), 0, mode).status().code(),
              Code::kInvalidArgument);
  }
}

TEST(TrackerCreate, SetupFailureAtEachStepClosesDescriptors) {
  SKIP_IF_NO_UFFD();
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  // Setup makes 4 ioctls (API, REGISTER, WRITEPROTECT, probe scan): fail each.
  for (int fail_from = 0; fail_from < 4; ++fail_from) {
    CountingEnv env;
    env.fail_ioctl_from = fail_from;
    auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kUffdAsync);
    ASSERT_FALSE(t.ok()) << "ioctl #" << fail_from + 1;
    EXPECT_EQ(t.status().code(), Code::kNotSupported);
    EXPECT_EQ(env.open_fds, 0) << "ioctl #" << fail_from + 1;
    auto a = CreateTracker(&env, region.base(), region.len(), TrackingMode::kAuto);
    ASSERT_TRUE(a.ok());
    EXPECT_STREQ((*a)->name(), "full");
    EXPECT_EQ(env.open_fds, 0);
  }
  // The failed attempts left the range unregistered: a fresh tracker works.
  auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kUffdAsync);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  region.page(2)[0] = 1;
  EXPECT_EQ(CollectAll(t->get(), region.len()), std::vector<uint64_t>{2});
}

TEST(TrackerCreate, CollectReportsScanFailure) {
  SKIP_IF_NO_UFFD();
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  CountingEnv env;
  {
    auto t = CreateTracker(&env, region.base(), region.len(), TrackingMode::kUffdAsync);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(env.open_fds, 2);  // the userfaultfd and /proc/self/pagemap
    region.page(1)[0] = 1;
    env.fail_ioctl_from = env.ioctls;
    std::vector<uint64_t> pages;
    Status s = (*t)->Collect(region.len(), &pages);
    EXPECT_EQ(s.code(), Code::kIOError);
    EXPECT_NE(s.message().find("PAGEMAP_SCAN"), std::string::npos) << s.ToString();
    env.fail_ioctl_from = -1;
    EXPECT_EQ(CollectAll(t->get(), region.len()), std::vector<uint64_t>{1});
  }
  EXPECT_EQ(env.open_fds, 0);
}

TEST(TrackerCreate, DestroyingTheTrackerStopsTracking) {
  SKIP_IF_NO_UFFD();
  Region region(Region::kAnon, 16);
  ASSERT_TRUE(region.ok());
  {
    auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kUffdAsync);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
  }
  // The range is plain memory again and can be tracked afresh.
  for (size_t i = 0; i < region.pages(); ++i) region.page(i)[0] = 1;
  auto t = CreateTracker(Env::Default(), region.base(), region.len(), TrackingMode::kUffdAsync);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(CollectAll(t->get(), region.len()).empty());
}

}  // namespace
}  // namespace amber

namespace amber {
namespace {

// CountDirty reports written pages without consuming them: Collect still sees
// them afterwards, and only then does the count drop to zero.
TEST(TrackerCount, CountsWithoutConsuming) {
  const size_t len = 256 * 4096;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  for (TrackingMode mode : {TrackingMode::kAuto, TrackingMode::kFull}) {
    auto tracker = CreateTracker(Env::Default(), mem, len, mode);
    ASSERT_TRUE(tracker.ok()) << tracker.status().ToString();
    const bool full = std::string((*tracker)->name()) == "full";
    auto* bytes = static_cast<char*>(mem);
    for (int p : {3, 4, 100, 200}) bytes[p * 4096] = 1;
    for (int round = 0; round < 2; ++round) {
      auto n = (*tracker)->CountDirty(len);
      ASSERT_TRUE(n.ok());
      EXPECT_EQ(*n, full ? 256u : 4u);
    }
    std::vector<uint64_t> pages;
    ASSERT_TRUE((*tracker)->Collect(len, &pages).ok());
    if (!full) {
      EXPECT_EQ(pages, (std::vector<uint64_t>{3, 4, 100, 200}));
      EXPECT_EQ(*(*tracker)->CountDirty(len), 0u);
      EXPECT_EQ(*(*tracker)->CountDirty(150 * 4096), 0u);
      bytes[150 * 4096] = 2;
      EXPECT_EQ(*(*tracker)->CountDirty(150 * 4096), 0u);  // outside the scanned range
      EXPECT_EQ(*(*tracker)->CountDirty(len), 1u);
    }
  }
  munmap(mem, len);
}

}  // namespace
}  // namespace amber
