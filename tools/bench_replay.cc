// bench_replay.cc — `amber bench replay`: how long opening after a crash takes
// to replay the log (copy the newest image of every page in it home), and how
// much page cache that leaves behind.
//
// Method: a store whose log holds --generations generations over a --heap of
// pages: the first writes every page, each later one a random --fraction of
// them (a program checkpointing a large heap under random writes between two
// migrations). Written through the store layer directly, every image from one
// reused buffer (the content does not matter to the copying; each image is
// still checksummed on the way in and checked on the way back). Then
// --rounds rounds of: the store file synced and dropped from the page cache,
// the store opened read-write, and Store::RecoverInPlace timed (what
// Heap::Open does before mapping the heap, without the home verification of
// verify_on_open), with the growth of the page cache over it (/proc/meminfo
// "Cached"; other processes' file I/O lands there too). Recovery neither syncs
// nor publishes, so every round replays the same log.
//
// Thread-safety: single-threaded.
#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "bench.h"
#include "env/env.h"
#include "store/format.h"
#include "store/store.h"

namespace amber::cli::bench {
namespace {

// /proc/meminfo "Cached" in bytes, 0 if unknown.
uint64_t PageCacheBytes() { return ProcNumber("/proc/meminfo", "Cached:") * kKiB; }

}  // namespace

int BenchReplay(const Args& args) {
  const std::string kind = "replay";
  Flags f(args, kind);
  uint64_t heap = 0, generations = 0, rounds = 0;
  double fraction = 0;
  if (!f.Validate({"heap", "generations", "fraction", "rounds"}) ||
      !f.Size("heap", kGiB, 1 * kMiB, uint64_t{1} << 40, &heap) ||
      !f.Count("generations", 5, 1, 1000, &generations) ||
      !f.Fraction("fraction", 0.45, &fraction) || !f.Count("rounds", 3, 1, 1000, &rounds))
    return UsageError(kind, f.error());
  heap = format::RoundUp(heap, kPage);
  const uint64_t pages = heap / kPage;

  // Which pages each generation holds (sorted), decided up front so that the
  // log can be sized for them.
  Rng rng(42);
  std::vector<std::vector<uint64_t>> gens(generations);
  uint64_t log_pages = 0;
  for (uint64_t g = 0; g < generations; ++g) {
    for (uint64_t p = 0; p < pages; ++p)
      if (g == 0 || static_cast<double>(rng.Below(1000000)) < fraction * 1e6) gens[g].push_back(p);
    if (gens[g].empty()) gens[g].push_back(rng.Below(pages));
    log_pages += format::GenerationPages(gens[g].size()) + 1;
  }
  Options o;
  o.capacity = heap;
  // Room for all of them: the store layer migrates only when an append finds
  // no room, and the replay is to find them all in the log.
  o.log_size = format::RoundUp((log_pages + 16) * kPage, kMiB);
  o.checkpoint_interval_ms = 0;
  TempDir dir(f.Dir(), kind);
  const std::string path = dir.File("replay.amber");
  Line("writing %" PRIu64 " generations over %s (log %s)", generations, Bytes(heap).c_str(),
       Bytes(o.log_size).c_str());
  {
    auto st = Store::Open(Env::Default(), path, o, Store::Mode::kReadWrite);
    if (!st.ok()) Fatal("creating " + path + ": " + st.status().ToString());
    // One aligned buffer of images (O_DIRECT writes need the alignment),
    // repeated as many times as a generation needs.
    constexpr uint64_t kBufPages = 4096;  // 16 MiB
    PageBuffer buf;
    if (!buf.Assign(kBufPages * kPage)) Fatal("out of memory");
    for (uint64_t i = 0; i < buf.size; i += 8) std::memcpy(buf.data + i, &i, 8);
    for (uint64_t g = 0; g < generations; ++g) {
      std::vector<ImageRun> runs;
      for (uint64_t left = gens[g].size(); left > 0;) {
        const uint64_t n = std::min(left, kBufPages);
        runs.push_back({buf.data, n});
        left -= n;
      }
      Check((*st)->AppendGeneration(g + 1, gens[g], runs, heap, g + 1),
            Fmt("writing generation %" PRIu64, g + 1));
      Note("generation %" PRIu64 " of %" PRIu64 " written", g + 1, generations);
    }
  }

  std::vector<double> ms, cache_growth;
  uint64_t log_bytes = 0;
  for (uint64_t r = 0; r < rounds; ++r) {
    DropFromPageCache(path);
    auto st = Store::Open(Env::Default(), path, o, Store::Mode::kReadWrite);
    if (!st.ok()) Fatal("opening " + path + ": " + st.status().ToString());
    log_bytes = (*st)->LogUsed();
    const uint64_t cached0 = PageCacheBytes();
    const double t0 = NowMs();
    Check((*st)->RecoverInPlace(/*verify_home=*/false), "replaying the log");
    ms.push_back(NowMs() - t0);
    const uint64_t cached1 = PageCacheBytes();
    cache_growth.push_back(cached1 > cached0 ? static_cast<double>(cached1 - cached0) : 0);
    Note("round %" PRIu64 " of %" PRIu64 ": %.0f ms", r + 1, rounds, ms.back());
  }
  DropFromPageCache(path);

  uint64_t distinct = 0;
  {
    std::vector<bool> seen(pages);
    for (const auto& g : gens) {
      for (uint64_t p : g) {
        if (!seen[p]) ++distinct;
        seen[p] = true;
      }
    }
  }
  Report rep(kind);
  rep.Title(Fmt("amber bench replay: %" PRIu64 " generations over %s (the first all of it, "
                "then %.0f%% of its pages each), %" PRIu64 " rounds",
                generations, Bytes(heap).c_str(), fraction * 100, rounds));
  rep.Num("replay_ms_median", Median(ms), "Store::RecoverInPlace, page cache dropped before")
      .Int("log_bytes", log_bytes, Bytes(log_bytes) + " of generations replayed")
      .Int("replayed_bytes", distinct * kPage,
           Bytes(distinct * kPage) + ": the newest image of each page, copied home")
      .Int("cache_growth_bytes_median", static_cast<uint64_t>(Median(cache_growth)),
           Bytes(static_cast<uint64_t>(Median(cache_growth))) + " of page cache added");
  auto list = [](const std::vector<double>& v, double scale, const char* fmt) {
    std::string out;
    for (double x : v) out += (out.empty() ? "" : " ") + Fmt(fmt, x / scale);
    return out;
  };
  rep.Row("replay, ms", list(ms, 1, "%.0f"));
  rep.Row("page cache added, MiB", list(cache_growth, static_cast<double>(kMiB), "%.0f"));
  rep.Print(args.json);
  return kExitOk;
}

}  // namespace amber::cli::bench
