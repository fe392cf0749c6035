// bench_commit.cc — `amber bench commit`: the cost of a durable Commit() after
// a small change (KeyKOS's journal escape), against the device's own floor, a
// 4 KiB write + fdatasync, in the same run.
//
// Method: a small store with automatic checkpoints off. One warm-up round, then
// --rounds rounds, each of: dirty one heap page inside a Section, time
// Commit(); then pwrite 4 KiB into a file in the same directory and fdatasync
// it, timed together. The file is written and synced once beforehand and the
// rounds write successive 4 KiB blocks of it, as the engine appends to its
// pre-zeroed log. The two are interleaved so that both see the same background
// load. Medians in microseconds.
//
// Thread-safety: single-threaded.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "bench.h"

namespace amber::cli::bench {

int BenchCommit(const Args& args) {
  const std::string kind = "commit";
  Flags f(args, kind);
  uint64_t rounds = 0;
  if (!f.Validate({"rounds"}) || !f.Count("rounds", 100, 10, 1000000, &rounds))
    return UsageError(kind, f.error());

  Options o;
  o.capacity = 64 * kMiB;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  TempDir dir(f.Dir(), kind);
  const std::string path = dir.File("commit.amber");
  const std::string sync_path = dir.File("fdatasync.dat");
  std::unique_ptr<Heap> heap = OpenHeap(path, o);
  auto* page = static_cast<char*>(heap->Allocate(kPage, kPage));
  if (page == nullptr) Fatal("cannot allocate a page");
  {
    Section s(*heap);
    std::memset(page, 1, kPage);
  }
  Check(heap->Commit(), "Commit");

  // The fdatasync file: blocks for every round, written and synced once.
  const uint64_t slots = std::min<uint64_t>(rounds + 1, 4096);
  const int fd = ::open(sync_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) Fatal("opening " + sync_path + ": " + std::strerror(errno));
  void* mem = nullptr;
  if (::posix_memalign(&mem, kPage, kPage) != 0) Fatal("out of memory");
  char* buf = static_cast<char*>(mem);
  std::memset(buf, 0, kPage);
  for (uint64_t i = 0; i < slots; ++i)
    if (::pwrite(fd, buf, kPage, static_cast<off_t>(i * kPage)) != static_cast<ssize_t>(kPage))
      Fatal("writing " + sync_path + ": " + std::strerror(errno));
  if (::fdatasync(fd) != 0) Fatal(std::string("fdatasync: ") + std::strerror(errno));

  std::vector<double> commit_us, sync_us;
  const Stats before = heap->GetStats();
  for (uint64_t r = 0; r <= rounds; ++r) {  // round 0 warms up
    {
      Section s(*heap);
      TouchPage(page, r);
    }
    double t0 = NowMs();
    Check(heap->Commit(), "Commit");
    const double c = (NowMs() - t0) * 1000;

    std::memset(buf, static_cast<int>(r & 0xff), 64);
    t0 = NowMs();
    if (::pwrite(fd, buf, kPage, static_cast<off_t>((r % slots) * kPage)) !=
        static_cast<ssize_t>(kPage))
      Fatal("writing " + sync_path + ": " + std::strerror(errno));
    if (::fdatasync(fd) != 0) Fatal(std::string("fdatasync: ") + std::strerror(errno));
    const double s = (NowMs() - t0) * 1000;
    if (r == 0) continue;
    commit_us.push_back(c);
    sync_us.push_back(s);
    Note("round %llu of %llu", static_cast<unsigned long long>(r),
         static_cast<unsigned long long>(rounds));
  }
  const Stats after = heap->GetStats();
  ::close(fd);
  std::free(mem);
  Check(heap->Close(), "Close");
  heap.reset();

  const double commit_med = Median(commit_us), sync_med = Median(sync_us);
  Report rep(kind);
  rep.Title(
      Fmt("amber bench commit: %llu rounds of one dirty page + Commit(), against 4 KiB "
          "pwrite + fdatasync",
          static_cast<unsigned long long>(rounds)));
  rep.Num("commit_us_median", commit_med)
      .Num("fdatasync_us_median", sync_med, "4 KiB pwrite + fdatasync, same directory");
  rep.Row("commit / fdatasync", Fmt("%.2f", sync_med > 0 ? commit_med / sync_med : 0));
  rep.Row("commit min / p99 / max",
          Fmt("%.0f / %.0f / %.0f us", Min(commit_us), Percentile(commit_us, 99), Max(commit_us)));
  rep.Row("fdatasync min / p99 / max",
          Fmt("%.0f / %.0f / %.0f us", Min(sync_us), Percentile(sync_us, 99), Max(sync_us)));
  rep.Row("checkpoints / migrations / bytes written",
          Fmt("%llu / %llu / %s",
              static_cast<unsigned long long>(after.checkpoints - before.checkpoints),
              static_cast<unsigned long long>(after.migrations - before.migrations),
              Bytes(after.bytes_written - before.bytes_written).c_str()));
  rep.Row("pause, median since open", Fmt("%.3f ms", after.pause_ms_median));
  rep.Print(args.json);
  return kExitOk;
}

}  // namespace amber::cli::bench
