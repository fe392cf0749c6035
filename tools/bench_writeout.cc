// bench_writeout.cc — `amber bench writeout`: how fast the background writer
// gets a checkpoint onto the device, against a plain sequential write of the
// same bytes in the same run, and (--limit) whether the writer keeps to
// Options::write_bandwidth_limit.
//
// Method: fill --bytes of heap memory and checkpoint it (a warm-up that also
// sizes the staging memory). Then --rounds rounds, each of:
//   amber: make sure the log is empty (a small extra checkpoint makes the writer
//     migrate once the log is over half full, outside the timing: the log holds
//     two rounds' generations, so a measured round never migrates — checked),
//     dirty every filled page, time Checkpoint() until it returns durable, and
//     subtract the pause (Stats::pause_ms_last): write time. It includes the
//     copy of the dirty set into staging memory that Checkpoint() makes before
//     the pause (a pre-copy) and the per-page CRCs: the engine reports neither
//     separately.
//   raw: write the same number of bytes to a file in the same directory with
//     O_DIRECT in 1 MiB aligned blocks, then fdatasync. The file is written once
//     before the first round (the engine's log is pre-zeroed at creation too), so
//     the rounds overwrite allocated blocks; that first pass is shown in the table.
// Rates are MiB/s of the --bytes payload; the medians are reported.
//
// Thread-safety: single-threaded (the engine's writer thread is its own).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "bench.h"
#include "store/format.h"

namespace amber::cli::bench {
namespace {

constexpr uint64_t kRawBlock = kMiB;
constexpr uint64_t kFlushPages = 128;

// Writes `bytes` with O_DIRECT (if the file system has it) in 1 MiB blocks from
// offset 0, then fdatasync. Returns milliseconds.
double RawPass(int fd, const char* buf, uint64_t bytes) {
  const double t0 = NowMs();
  for (uint64_t off = 0; off < bytes;) {
    const uint64_t n = std::min(kRawBlock, bytes - off);
    const ssize_t w = ::pwrite(fd, buf, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0 || w % kPage != 0)
      Fatal(std::string("raw sequential write: ") + (w < 0 ? std::strerror(errno) : "short write"));
    off += static_cast<uint64_t>(w);
  }
  if (::fdatasync(fd) != 0) Fatal(std::string("raw fdatasync: ") + std::strerror(errno));
  return NowMs() - t0;
}

double MiBPerSec(uint64_t bytes, double ms) {
  return ms > 0 ? static_cast<double>(bytes) / static_cast<double>(kMiB) / (ms / 1000) : 0;
}

}  // namespace

int BenchWriteout(const Args& args) {
  const std::string kind = "writeout";
  Flags f(args, kind);
  uint64_t bytes = 0, limit = 0, rounds = 0;
  if (!f.Validate({"bytes", "limit", "rounds"}) ||
      !f.Size("bytes", 256 * kMiB, kMiB, uint64_t{1} << 40, &bytes) ||
      !f.Size("limit", 0, 64 * kKiB, uint64_t{1} << 40, &limit) ||
      !f.Count("rounds", 3, 3, 1000, &rounds))
    return UsageError(kind, f.error());
  bytes = bytes / kPage * kPage;
  const uint64_t n = bytes / kPage;

  // Half the log holds a measured generation (n pages) with room for 64 more;
  // the generation plus a flush of 128 pages is over half, so the flush migrates.
  Options o;
  o.capacity = format::RoundUp(bytes + bytes / 32 + 64 * kMiB, 2 * kMiB);
  o.log_size = 2 * (format::GenerationPages(n) + 64) * kPage;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.write_bandwidth_limit = limit;

  TempDir dir(f.Dir(), kind);
  const std::string path = dir.File("writeout.amber");
  const std::string raw_path = dir.File("raw-sequential.dat");
  std::unique_ptr<Heap> heap = OpenHeap(path, o);
  Line("filling %s of heap%s, then %llu rounds", Bytes(bytes).c_str(),
       limit ? (" (writer limited to " + Bytes(limit) + "/s)").c_str() : "",
       static_cast<unsigned long long>(rounds));
  const HeapData data = FillHeap(*heap, bytes, 64 * kMiB, bytes);

  auto empty_log = [&] {
    for (int i = 0; i < 8 && heap->GetStats().log_used > 0; ++i) {
      for (uint64_t p = 0; p < std::min(kFlushPages, n); ++p) TouchPage(data.Page(p), p);
      Check(heap->Checkpoint(), "Checkpoint (between rounds)");
      // Checkpoint() returns before the migration it starts (over half the log)
      // has run, in the background and under the same bandwidth limit: wait
      // for it (up to a minute), or the next round would share the limit with it.
      WaitForMigration(*heap, 60);
    }
    return heap->GetStats().log_used == 0;
  };

  // The raw file: O_DIRECT where the file system allows it.
  bool direct = true;
  int fd = ::open(raw_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) {
    direct = false;
    fd = ::open(raw_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    Line("O_DIRECT is not supported in %s: the raw write goes through the page cache",
         dir.path().c_str());
  }
  if (fd < 0) Fatal("opening " + raw_path + ": " + std::strerror(errno));
  void* mem = nullptr;
  if (::posix_memalign(&mem, kPage, kRawBlock) != 0) Fatal("out of memory");
  char* buf = static_cast<char*>(mem);
  for (uint64_t i = 0; i < kRawBlock; ++i) buf[i] = static_cast<char>(Mix(i / 8) >> (8 * (i % 8)));
  const double raw_fresh_ms = RawPass(fd, buf, bytes);

  std::vector<double> amber_rates, raw_rates, pauses, calls;
  int migrated_rounds = 0, unclean_rounds = 0;
  uint64_t salt = 1;
  for (uint64_t r = 0; r < rounds; ++r) {
    if (!empty_log()) ++unclean_rounds;
    for (uint64_t p = 0; p < n; ++p) TouchPage(data.Page(p), salt++);
    const Stats before = heap->GetStats();
    const double t0 = NowMs();
    Check(heap->Checkpoint(), "Checkpoint");
    const double call_ms = NowMs() - t0;
    const Stats after = heap->GetStats();
    if (after.checkpoints != before.checkpoints + 1)
      Fatal("Checkpoint() made no new checkpoint of the dirtied heap");
    if (after.migrations != before.migrations) ++migrated_rounds;
    pauses.push_back(after.pause_ms_last);
    calls.push_back(call_ms);
    amber_rates.push_back(MiBPerSec(bytes, call_ms - after.pause_ms_last));
    raw_rates.push_back(MiBPerSec(bytes, RawPass(fd, buf, bytes)));
    Note("round %llu of %llu: amber %.0f MiB/s, raw %.0f MiB/s",
         static_cast<unsigned long long>(r + 1), static_cast<unsigned long long>(rounds),
         amber_rates.back(), raw_rates.back());
  }
  ::close(fd);
  std::free(mem);
  const Stats st = heap->GetStats();
  Check(heap->Close(), "Close");
  heap.reset();

  const double amber_rate = Median(amber_rates), raw_rate = Median(raw_rates);
  Report rep(kind);
  rep.Title(Fmt("amber bench writeout: %s checkpointed %llu times%s", Bytes(bytes).c_str(),
                static_cast<unsigned long long>(rounds),
                limit ? Fmt(", write_bandwidth_limit %s/s", Bytes(limit).c_str()).c_str() : ""));
  rep.Num("writeout_mb_s", amber_rate, "MiB/s: bytes / (Checkpoint() time - pause), median")
      .Num("raw_seq_mb_s", raw_rate,
           direct ? "MiB/s: O_DIRECT, 1 MiB blocks + fdatasync, median"
                  : "MiB/s: buffered (no O_DIRECT here), 1 MiB blocks + fdatasync, median")
      .Num("ratio", raw_rate > 0 ? amber_rate / raw_rate : 0);
  if (limit) {
    const double limit_mb = static_cast<double>(limit) / static_cast<double>(kMiB);
    rep.Num("limit_mb_s", limit_mb)
        .Num("achieved_mb_s", amber_rate,
             Fmt("%+.1f%% of the limit", (amber_rate / limit_mb - 1) * 100));
  }
  std::string per_round;
  for (size_t i = 0; i < amber_rates.size(); ++i)
    per_round += Fmt("%s%.0f/%.0f", i ? ", " : "", amber_rates[i], raw_rates[i]);
  rep.Row("amber/raw MiB/s per round", per_round);
  rep.Row("Checkpoint() call / pause, median",
          Fmt("%.1f ms / %.3f ms", Median(calls), Median(pauses)));
  rep.Row("raw first pass (fresh file)", Fmt("%.0f MiB/s", MiBPerSec(bytes, raw_fresh_ms)));
  rep.Row("rounds that migrated / started unclean",
          Fmt("%d / %d (both should be 0)", migrated_rounds, unclean_rounds));
  rep.Row("tracking / staging memory", st.tracking + " / " + Bytes(st.staging_bytes));
  rep.Print(args.json);
  return kExitOk;
}

}  // namespace amber::cli::bench
