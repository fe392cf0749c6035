// bench_pause.cc — `amber bench pause`: how long a checkpoint holds mutators
// back on a filled heap, against fork() of the same process (what Redis does to
// snapshot).
//
// Method: create a store, fill --heap bytes of heap memory (every page written,
// checkpointed as it goes so that no single checkpoint outgrows the log), then
// one unmeasured warm-up round and --rounds measured rounds of: dirty --dirty of
// the filled pages, chosen at random without repetition, and Checkpoint(). The
// pause of each round is Stats::pause_ms_last (the engine's own measurement:
// gate closed → open). With --threads N, N mutator threads dirty the pages
// inside Sections (16 pages a Section) and, once their share is done, keep
// rewriting one of this round's pages every ~20 µs inside a Section while the
// main thread checkpoints, so every capture has to close the gate on running
// mutators; each thread also records the longest time it waited to enter a
// Section (the pause as a mutator sees it). fork(): the parent times the fork()
// call itself, the child calls _exit(0) at once, the parent reaps it; the median
// of 7, with the mutators stopped. The rounds start once the migration the
// fill set off has finished (the table says how long that took, and how many
// measured rounds overlapped a migration anyway).
//
// Thread-safety: the mutator threads share only the atomics in Shared and the
// Heap (whose members are thread-safe); each writes only its own Mutator record
// and its own pages, and the main thread reads the records after joining them.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "bench.h"
#include "store/format.h"

namespace amber::cli::bench {
namespace {

constexpr uint64_t kStop = ~uint64_t{0};
constexpr int kPagesPerSection = 16;
constexpr int kHotIntervalUs = 20;
constexpr int kForks = 7;

struct Shared {
  std::atomic<uint64_t> round{0};  // the round mutators work on; kStop ends them
  std::atomic<uint32_t> done{0};   // mutators that finished this round's share
};

struct Mutator {
  uint64_t first_page = 0;  // this thread's pages: [first_page, first_page + page_count)
  uint64_t page_count = 0;
  uint64_t quota = 0;       // pages it dirties each round
  double max_enter_ms = 0;  // longest wait to enter a Section
  uint64_t hot_writes = 0;  // writes made while waiting for the next round
};

void MutatorLoop(Heap* heap, const HeapData* data, Shared* sh, Mutator* m, uint32_t threads,
                 uint64_t seed) {
  Rng rng(seed);
  std::vector<uint64_t> mine(m->page_count);
  std::iota(mine.begin(), mine.end(), m->first_page);
  const uint64_t quota = std::min<uint64_t>(m->quota, mine.size());
  uint64_t my_round = 0, salt = seed;
  char* hot = nullptr;
  for (;;) {
    const uint64_t r = sh->round.load(std::memory_order_acquire);
    if (r == kStop) break;
    if (r != my_round) {
      // This round's share: distinct random pages of this thread's range.
      for (uint64_t i = 0; i < quota;) {
        const double t0 = NowMs();
        Section section(*heap);
        m->max_enter_ms = std::max(m->max_enter_ms, NowMs() - t0);
        for (int b = 0; b < kPagesPerSection && i < quota; ++b, ++i) {
          std::swap(mine[i], mine[i + rng.Below(mine.size() - i)]);
          TouchPage(data->Page(mine[i]), salt++);
        }
      }
      hot = quota > 0 ? data->Page(mine[0]) : nullptr;
      my_round = r;
      if (sh->done.fetch_add(1, std::memory_order_acq_rel) + 1 == threads) sh->done.notify_all();
      continue;
    }
    // Keep mutating while the main thread checkpoints.
    if (hot != nullptr) {
      const double t0 = NowMs();
      Section section(*heap);
      m->max_enter_ms = std::max(m->max_enter_ms, NowMs() - t0);
      TouchPage(hot, salt++);
      ++m->hot_writes;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(kHotIntervalUs));
  }
}

}  // namespace

int BenchPause(const Args& args) {
  const std::string kind = "pause";
  Flags f(args, kind);
  uint64_t heap_bytes = 0, threads = 0, rounds = 0;
  double dirty = 0;
  if (!f.Validate({"heap", "dirty", "threads", "rounds"}) ||
      !f.Size("heap", kGiB, kMiB, uint64_t{1} << 44, &heap_bytes) ||
      !f.Fraction("dirty", 0.001, &dirty) || !f.Count("threads", 0, 0, 256, &threads) ||
      !f.Count("rounds", 20, 20, 1000000, &rounds))
    return UsageError(kind, f.error());
  heap_bytes = heap_bytes / kPage * kPage;
  const uint64_t pages = heap_bytes / kPage;
  const uint64_t k = std::clamp<uint64_t>(
      static_cast<uint64_t>(std::llround(dirty * static_cast<double>(pages))), 1, pages);

  // The log takes the fill in quarters and a measured round's checkpoint with
  // room to spare (the writer migrates once it is half full).
  uint64_t log_size = std::max(std::min(heap_bytes, kGiB), 16 * kMiB);
  log_size =
      std::max(log_size, format::RoundUp(2 * format::GenerationPages(k + 1024) * kPage, kMiB));
  Options o;
  o.capacity = format::RoundUp(heap_bytes + heap_bytes / 32 + 64 * kMiB, 2 * kMiB);
  o.log_size = log_size;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;

  TempDir dir(f.Dir(), kind);
  const std::string path = dir.File("pause.amber");
  const double t_create = NowSec();
  std::unique_ptr<Heap> heap = OpenHeap(path, o);
  const double create_s = NowSec() - t_create;
  Line("filling a %s heap (log %s), then %llu rounds dirtying %llu pages each",
       Bytes(heap_bytes).c_str(), Bytes(log_size).c_str(), static_cast<unsigned long long>(rounds),
       static_cast<unsigned long long>(k));
  const double t_fill = NowSec();
  const uint64_t quarter = log_size / 4 / kPage * kPage;
  const HeapData data = FillHeap(*heap, heap_bytes, std::min(64 * kMiB, quarter), quarter);
  const double fill_s = NowSec() - t_fill;
  // The fill leaves the log over half full, so a migration of up to half a
  // log's worth of pages is starting or running in the background; the rounds
  // (a few ms each) would all overlap it, which the steady state of this
  // workload (one migration per ~log/2 of dirty pages) rarely does. Wait for
  // it (up to ten minutes); rounds that overlap a migration anyway are counted.
  const double t_settle = NowSec();
  const Stats settled = WaitForMigration(*heap, 600);
  if (!settled.last_error.empty()) Fatal("migration after the fill: " + settled.last_error);
  if (settled.log_used * 2 > settled.log_size)
    Fatal(Fmt("the log stayed over half full for 10 minutes after the fill (%s of %s)",
              Bytes(settled.log_used).c_str(), Bytes(settled.log_size).c_str()));
  const double settle_s = NowSec() - t_settle;

  // Mutators.
  Shared sh;
  std::vector<Mutator> muts(threads);
  std::vector<std::thread> workers;
  for (uint64_t t = 0; t < threads; ++t) {
    muts[t].first_page = pages * t / threads;
    muts[t].page_count = pages * (t + 1) / threads - muts[t].first_page;
    muts[t].quota = k / threads + (t < k % threads ? 1 : 0);
  }
  for (uint64_t t = 0; t < threads; ++t)
    workers.emplace_back(MutatorLoop, heap.get(), &data, &sh, &muts[t],
                         static_cast<uint32_t>(threads), 1000 + t);

  Rng rng(42);
  std::vector<uint64_t> perm;
  if (threads == 0) {
    perm.resize(pages);
    std::iota(perm.begin(), perm.end(), 0);
  }
  std::vector<double> pauses, calls_ms, written;
  double warmup_pause = 0;
  int migrating_rounds = 0;  // measured rounds that began with or started a migration
  uint64_t salt = 0;
  for (uint64_t r = 0; r <= rounds; ++r) {  // round 0 warms up and is not counted
    if (threads == 0) {
      for (uint64_t i = 0; i < k; ++i) {
        std::swap(perm[i], perm[i + rng.Below(pages - i)]);
        TouchPage(data.Page(perm[i]), salt++);
      }
    } else {
      sh.done.store(0);
      sh.round.store(r + 1, std::memory_order_release);
      for (uint32_t d = sh.done.load(); d < threads; d = sh.done.load()) sh.done.wait(d);
    }
    const Stats before = heap->GetStats();
    const double t0 = NowMs();
    Check(heap->Checkpoint(), "Checkpoint");
    const double call_ms = NowMs() - t0;
    const Stats after = heap->GetStats();
    if (r > 0 && (before.log_used * 2 > before.log_size || after.migrations != before.migrations))
      ++migrating_rounds;
    if (after.checkpoints != before.checkpoints + 1)
      Fatal(Fmt("round %llu: Checkpoint() made %llu checkpoints instead of 1",
                static_cast<unsigned long long>(r),
                static_cast<unsigned long long>(after.checkpoints - before.checkpoints)));
    if (r == 0) {
      warmup_pause = after.pause_ms_last;
      continue;
    }
    pauses.push_back(after.pause_ms_last);
    calls_ms.push_back(call_ms);
    written.push_back(static_cast<double>(after.pages_written - before.pages_written));
    Note("round %llu of %llu: pause %.3f ms", static_cast<unsigned long long>(r),
         static_cast<unsigned long long>(rounds), after.pause_ms_last);
  }
  sh.round.store(kStop, std::memory_order_release);
  for (auto& w : workers) w.join();

  // fork() of the same populated process.
  std::vector<double> forks;
  for (int i = 0; i < kForks; ++i) {
    const double t0 = NowMs();
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    const double ms = NowMs() - t0;
    if (pid < 0) Fatal(std::string("fork: ") + std::strerror(errno));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    forks.push_back(ms);
  }

  const Stats st = heap->GetStats();
  const uint64_t peak_rss = PeakRssBytes();
  Check(heap->Close(), "Close");
  heap.reset();

  const double pause_med = Median(pauses);
  const double fork_med = Median(forks);
  double max_enter = 0;
  uint64_t hot_writes = 0;
  for (auto& m : muts) {
    max_enter = std::max(max_enter, m.max_enter_ms);
    hot_writes += m.hot_writes;
  }
  Report rep(kind);
  rep.Title(
      Fmt("amber bench pause: %s heap, %llu random pages (%.3g%%) dirtied before each of "
          "%llu checkpoints",
          Bytes(heap_bytes).c_str(), static_cast<unsigned long long>(k),
          100.0 * static_cast<double>(k) / static_cast<double>(pages),
          static_cast<unsigned long long>(rounds)));
  rep.Int("heap_bytes", heap_bytes, Bytes(heap_bytes))
      .Int("dirty_bytes", k * kPage, Bytes(k * kPage))
      .Num("pause_ms_median", pause_med, "Stats::pause_ms_last of each round")
      .Num("pause_ms_p99", Percentile(pauses, 99), "nearest rank")
      .Num("fork_ms_median", fork_med, Fmt("median of %d", kForks))
      .Num("fork_over_pause", pause_med > 0 ? fork_med / pause_med : 0);
  rep.Row("tracking", st.tracking);
  rep.Row("mutators", threads == 0 ? std::string("main thread, between checkpoints")
                                   : Fmt("%llu threads in Sections, writing during checkpoints "
                                         "(%llu writes meanwhile)",
                                         static_cast<unsigned long long>(threads),
                                         static_cast<unsigned long long>(hot_writes)));
  rep.Row("pause min / max", Fmt("%.3f / %.3f ms", Min(pauses), Max(pauses)));
  rep.Row("warm-up round's pause (not counted)", Fmt("%.3f ms", warmup_pause));
  if (threads > 0)
    rep.Row("longest Section entry, mutator view",
            Fmt("%.3f ms (includes scheduling delays)", max_enter));
  rep.Row("Checkpoint() call, median",
          Fmt("%.3f ms (capture + write-out + sync)", Median(calls_ms)));
  rep.Row("pages written per checkpoint, median", Fmt("%.0f", Median(written)));
  rep.Row("fork min / max", Fmt("%.3f / %.3f ms", Min(forks), Max(forks)));
  rep.Row("store created / heap filled in",
          Fmt("%.2f s / %.2f s (%.0f MiB/s)", create_s, fill_s,
              static_cast<double>(heap_bytes) / static_cast<double>(kMiB) / fill_s));
  rep.Row("waited for the fill's migration", Fmt("%.2f s", settle_s));
  rep.Row("rounds overlapping a migration",
          Fmt("%d of %llu", migrating_rounds, static_cast<unsigned long long>(rounds)));
  rep.Row("log size / staging memory", Bytes(st.log_size) + " / " + Bytes(st.staging_bytes));
  rep.Row("peak RSS", Bytes(peak_rss));
  rep.Print(args.json);
  return kExitOk;
}

}  // namespace amber::cli::bench
