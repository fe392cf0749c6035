// tracker_bench.cc — how long DirtyTracker::Collect takes, i.e. the part of the
// checkpoint pause that finds and re-protects the written pages.
//
// For a region (default 1 GiB, a MAP_PRIVATE mapping of a temporary file, the
// heap's real shape) and dirty fractions 0, 0.1%, 1% and 10%, each round writes
// one byte to that many distinct random pages (not timed) and then times one
// Collect. Prints the median of the rounds, one table row per fraction, or with
// --json one JSON object per line.
//
//   amber-tracker-bench [--size=1G] [--rounds=25] [--anon] [--no-populate]
//                       [--mode=auto|uffd|full] [--json]
//
// --no-populate leaves never-touched pages in the region (the dirtied pages are
// then first touches); by default every page is written once before tracking
// starts, as in a heap that has been in use for a while.
//
// Thread-safety: single-threaded.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "env/env.h"
#include "tracking/tracker.h"

namespace amber {
namespace {

struct Flags {
  uint64_t size = uint64_t{1} << 30;
  int rounds = 25;
  bool anon = false;
  bool populate = true;
  bool json = false;
  TrackingMode mode = TrackingMode::kAuto;
};

// "123", "64K", "512M", "1G" → bytes; 0 on a malformed value.
uint64_t ParseSize(std::string_view s) {
  char* end = nullptr;
  std::string str(s);
  unsigned long long v = std::strtoull(str.c_str(), &end, 10);
  if (end == str.c_str()) return 0;
  switch (*end) {
    case '\0':
      return v;
    case 'k':
    case 'K':
      return v << 10;
    case 'm':
    case 'M':
      return v << 20;
    case 'g':
    case 'G':
      return v << 30;
    default:
      return 0;
  }
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view name) -> std::string_view { return a.substr(name.size()); };
    if (a.starts_with("--size=")) {
      f->size = ParseSize(value("--size="));
      if (f->size == 0) return false;
    } else if (a.starts_with("--rounds=")) {
      f->rounds = std::atoi(std::string(value("--rounds=")).c_str());
      if (f->rounds < 1) return false;
    } else if (a == "--anon") {
      f->anon = true;
    } else if (a == "--no-populate") {
      f->populate = false;
    } else if (a == "--json") {
      f->json = true;
    } else if (a == "--mode=auto") {
      f->mode = TrackingMode::kAuto;
    } else if (a == "--mode=uffd") {
      f->mode = TrackingMode::kUffdAsync;
    } else if (a == "--mode=full") {
      f->mode = TrackingMode::kFull;
    } else {
      return false;
    }
  }
  return true;
}

// Maps the benchmark region; a private file mapping unless --anon.
char* MapRegion(const Flags& f) {
  int fd = -1;
  int flags = MAP_PRIVATE | MAP_NORESERVE;
  if (f.anon) {
    flags |= MAP_ANONYMOUS;
  } else {
    const char* dir = std::getenv("TMPDIR");
    std::string path =
        std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/amber_tracker_bench_XXXXXX";
    fd = mkstemp(path.data());
    if (fd < 0) return nullptr;
    unlink(path.c_str());
    if (ftruncate(fd, static_cast<off_t>(f.size)) != 0) {
      close(fd);
      return nullptr;
    }
  }
  void* p = mmap(nullptr, f.size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (fd >= 0) close(fd);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int Main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) {
    std::fprintf(stderr,
                 "usage: %s [--size=1G] [--rounds=25] [--anon] [--no-populate] "
                 "[--mode=auto|uffd|full] [--json]\n",
                 argv[0]);
    return 2;
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  f.size = (f.size + page - 1) / page * page;
  const uint64_t npages = f.size / page;

  char* base = MapRegion(f);
  if (base == nullptr) {
    std::fprintf(stderr, "cannot map %llu bytes: %s\n", static_cast<unsigned long long>(f.size),
                 std::strerror(errno));
    return 1;
  }
  if (f.populate) {
    for (uint64_t i = 0; i < npages; ++i) base[i * page] = 1;
  }

  auto t0 = std::chrono::steady_clock::now();
  auto tracker = CreateTracker(Env::Default(), base, f.size, f.mode);
  double create_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!tracker.ok()) {
    std::fprintf(stderr, "%s\n", tracker.status().ToString().c_str());
    return 1;
  }
  DirtyTracker* t = tracker->get();
  const bool exact = std::string_view(t->name()) != "full";
  const char* backing = f.anon ? "anon" : "file";

  if (!f.json) {
    std::printf("tracker %s, %s region %llu MiB, %s, %d rounds, setup %.1f ms\n", t->name(),
                backing, static_cast<unsigned long long>(f.size >> 20),
                f.populate ? "populated" : "unpopulated", f.rounds, create_ms);
    std::printf("%10s %10s %12s %12s %12s %14s\n", "dirty", "pages", "collect_ms", "p10_ms",
                "p90_ms", "write_us/page");
  }

  std::mt19937_64 rng(12345);
  std::vector<uint64_t> perm(npages);
  for (uint64_t i = 0; i < npages; ++i) perm[i] = i;
  std::vector<uint64_t> pages;
  pages.reserve(npages);
  uint8_t stamp = 2;

  for (double fraction : {0.0, 0.001, 0.01, 0.1}) {
    const uint64_t k = static_cast<uint64_t>(fraction * static_cast<double>(npages) + 0.5);
    std::vector<double> collect_ms, write_us;
    for (int round = -1; round < f.rounds; ++round) {  // round -1 warms up
      // k distinct random pages: a partial Fisher-Yates shuffle.
      for (uint64_t i = 0; i < k; ++i) std::swap(perm[i], perm[i + rng() % (npages - i)]);
      ++stamp;
      auto w0 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < k; ++i)
        base[perm[i] * page + (i & 63) * 8] = static_cast<char>(stamp);
      auto w1 = std::chrono::steady_clock::now();
      pages.clear();
      auto c0 = std::chrono::steady_clock::now();
      Status s = t->Collect(f.size, &pages);
      auto c1 = std::chrono::steady_clock::now();
      if (!s.ok()) {
        std::fprintf(stderr, "Collect: %s\n", s.ToString().c_str());
        return 1;
      }
      if (exact && pages.size() != k) {
        std::fprintf(stderr, "Collect found %zu pages, %llu were written\n", pages.size(),
                     static_cast<unsigned long long>(k));
        return 1;
      }
      if (round < 0) continue;
      collect_ms.push_back(std::chrono::duration<double, std::milli>(c1 - c0).count());
      if (k > 0) {
        write_us.push_back(std::chrono::duration<double, std::micro>(w1 - w0).count() /
                           static_cast<double>(k));
      }
    }
    const double median = Percentile(collect_ms, 0.5);
    const double per_write = write_us.empty() ? 0.0 : Percentile(write_us, 0.5);
    if (f.json) {
      std::printf(
          "{\"bench\":\"tracker\",\"tracker\":\"%s\",\"backing\":\"%s\",\"populated\":%s,"
          "\"region_bytes\":%llu,\"dirty_fraction\":%g,\"dirty_pages\":%llu,\"rounds\":%d,"
          "\"collect_ms_median\":%.4f,\"collect_ms_p10\":%.4f,\"collect_ms_p90\":%.4f,"
          "\"write_us_per_page_median\":%.3f}\n",
          t->name(), backing, f.populate ? "true" : "false",
          static_cast<unsigned long long>(f.size), fraction, static_cast<unsigned long long>(k),
          f.rounds, median, Percentile(collect_ms, 0.1), Percentile(collect_ms, 0.9), per_write);
    } else {
      std::printf("%9.1f%% %10llu %12.3f %12.3f %12.3f %14.3f\n", fraction * 100,
                  static_cast<unsigned long long>(k), median, Percentile(collect_ms, 0.1),
                  Percentile(collect_ms, 0.9), per_write);
    }
    std::fflush(stdout);
  }
  tracker->reset();
  munmap(base, f.size);
  return 0;
}

}  // namespace
}  // namespace amber

int main(int argc, char** argv) { return amber::Main(argc, argv); }
