// bench_kv.cc — `amber bench kv`: DESIGN.md's kv-update workload on amber,
// against the same code without persistence, in the same run.
//
// Workload: a map from 8-byte keys to 100-byte values; load --keys keys, then
// --rounds rounds of --updates uniformly random overwrites from one thread.
//   amber: amber::unordered_map<uint64_t, std::array<char, 100>> in a root of a
//     fresh store, reserved up front; the load in Sections of 256 inserts and a
//     Commit(); then each timed round: one Section per overwrite (or per
//     --per-section overwrites, as a program batching its updates would),
//     automatic checkpoints every --interval-ms, and a Commit() at its end
//     (inside the timing: the state is durable when the clock stops).
//   no persistence: the same templated load and update code on a
//     std::unordered_map with std::allocator, reserved the same way, no store,
//     no Sections (the update loop is otherwise identical); its rounds run
//     before and after amber's.
// Rates are the median round's: a single one-second loop on a shared machine
// varied by 1.5x from run to run.
// bytes_written is Stats::bytes_written (every byte amber wrote to the store
// file: log, commit records, superblocks, migration) over all rounds; the
// table also shows /proc/self/io write_bytes over the same phase.
// peak_rss_bytes is VmHWM over the amber phase (reset after the first
// no-persistence run, which runs before and after amber).
// recover_ms_no_verify: after Close(), the store's pages are dropped from the
// page cache (posix_fadvise), then Heap::Open + Root + one find() that must
// return the last value written are timed; recover_ms does the same again with
// Options::verify_on_open = true (the default). Recovery copies the committed
// generations still in the log home (recover_log_bytes, read before the first
// reopen); the writer then migrates them in the background if the log is more
// than half full, so the second reopen may find less to do.
//
// Thread-safety: single-threaded (the engine's timer and writer threads are its own).
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "amber/allocator.h"
#include "bench.h"
#include "env/env.h"
#include "store/format.h"
#include "store/store.h"

namespace amber::cli::bench {
namespace {

using Value = std::array<char, 100>;
constexpr uint64_t kPayloadBytes = 8 + sizeof(Value);  // what one update changes
constexpr int kInsertsPerSection = 256;

struct KvRoot {
  amber::unordered_map<uint64_t, Value> map;
};

struct NoGuard {};

// Key number i: distinct for distinct i (Mix is a bijection), spread out.
uint64_t KeyOf(uint64_t i) { return Mix(i); }

// A value: 8-byte stamp, then a fixed pattern.
Value MakeValue(uint64_t stamp) {
  Value v;
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<char>('a' + i % 26);
  std::memcpy(v.data(), &stamp, sizeof(stamp));
  return v;
}

uint64_t StampOf(const Value& v) {
  uint64_t stamp;
  std::memcpy(&stamp, v.data(), sizeof(stamp));
  return stamp;
}

template <class Map, class Guard>
void Load(Map& map, uint64_t keys, const Guard& guard) {
  Value v = MakeValue(0);
  for (uint64_t i = 0; i < keys;) {
    [[maybe_unused]] auto g = guard();
    for (int b = 0; b < kInsertsPerSection && i < keys; ++b, ++i) map.emplace(KeyOf(i), v);
  }
}

// The timed loop, shared by both variants. Returns how many keys were missing
// (must be 0); *last_key receives the key of the last update (its stamp is
// `updates`).
template <class Map, class Guard>
uint64_t Update(Map& map, uint64_t keys, uint64_t updates, uint64_t per_guard, const Guard& guard,
                uint64_t* last_key, uint64_t seed) {
  Rng rng(seed);
  Value v = MakeValue(0);
  uint64_t missing = 0, key = 0;
  if (per_guard == 1) {
    for (uint64_t u = 1; u <= updates; ++u) {
      key = KeyOf(rng.Below(keys));
      std::memcpy(v.data(), &u, sizeof(u));
      {
        [[maybe_unused]] auto g = guard();
        auto it = map.find(key);
        if (it == map.end()) {
          ++missing;
        } else {
          it->second = v;
        }
      }
      if ((u & 0x3ffff) == 0) Note("updates: %" PRIu64 " of %" PRIu64, u, updates);
    }
  } else {
    // `per_guard` updates share one guard (one Section). A loop of its own, so
    // that the per-update loop above stays the code the earlier figures were
    // measured with (whether folding them would change its speed is not known:
    // the machine drifted too much to tell).
    for (uint64_t u = 1; u <= updates;) {
      {
        [[maybe_unused]] auto g = guard();
        for (const uint64_t end = std::min(updates, u + per_guard - 1); u <= end; ++u) {
          key = KeyOf(rng.Below(keys));
          std::memcpy(v.data(), &u, sizeof(u));
          auto it = map.find(key);
          if (it == map.end()) {
            ++missing;
          } else {
            it->second = v;
          }
        }
      }
      if (((u - 1) & 0x3ffff) < per_guard) Note("updates: %" PRIu64 " of %" PRIu64, u - 1, updates);
    }
  }
  *last_key = key;
  return missing;
}

// /proc/self/io write_bytes: bytes this process caused to be sent to storage.
uint64_t IoWriteBytes() { return ProcNumber("/proc/self/io", "write_bytes:"); }

// Resets VmHWM to the current RSS (Linux >= 4.0); harmless if it fails.
void ResetPeakRss() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

}  // namespace

int BenchKv(const Args& args) {
  const std::string kind = "kv";
  Flags f(args, kind);
  uint64_t keys = 0, updates = 0, interval_ms = 0, rounds = 0, per_section = 0;
  if (!f.Validate({"keys", "updates", "interval-ms", "rounds", "per-section"}) ||
      !f.Count("rounds", 3, 1, 100, &rounds) ||
      !f.Count("per-section", 1, 1, 1 << 20, &per_section) ||
      !f.Count("keys", 1000000, 1, uint64_t{1} << 32, &keys) ||
      !f.Count("updates", 2000000, 1, uint64_t{1} << 40, &updates) ||
      !f.Count("interval-ms", 1000, 0, 3600000, &interval_ms))
    return UsageError(kind, f.error());

  // ~140 bytes a key (node of 8 + 100 bytes + list pointer, 16-byte aligned, and
  // an 8-byte bucket). Capacity costs only address space. Uniformly random
  // updates dirty nearly every page of the map within a second, so one
  // interval's checkpoint is the whole map; the log holds four of them, because
  // the engine checkpoints early once the dirty set passes a quarter of the log
  // (and migrates once it is half full): a smaller log would checkpoint more
  // often than every --interval-ms.
  Options o;
  o.capacity = format::RoundUp(keys * 400 + 64 * kMiB, 64 * kMiB);
  o.log_size = std::max(16 * kMiB, format::RoundUp(4 * keys * 160 + 64 * kMiB, kMiB));
  o.checkpoint_interval_ms = static_cast<uint32_t>(interval_ms);

  TempDir dir(f.Dir(), kind);
  const std::string path = dir.File("kv.amber");
  Line("%" PRIu64 " keys, %" PRIu64 " updates, %" PRIu64 " a Section, checkpoint every %" PRIu64
       " ms",
       keys, updates, per_section, interval_ms);

  // --- no persistence: the same code on a std::unordered_map ---
  auto plain_run = [&] {
    std::unordered_map<uint64_t, Value> map;
    auto none = [] { return NoGuard{}; };
    map.reserve(keys);
    Load(map, keys, none);
    std::vector<double> secs;
    for (uint64_t r = 0; r < rounds; ++r) {
      const double p0 = NowSec();
      uint64_t plain_last = 0;
      const uint64_t plain_missing =
          Update(map, keys, updates, per_section, none, &plain_last, 7 + r);
      secs.push_back(NowSec() - p0);
      if (plain_missing != 0 || StampOf(map.find(plain_last)->second) != updates)
        Fatal("the no-persistence run lost updates");
    }
    return secs;
  };
  std::vector<double> plain_secs = plain_run();
  ResetPeakRss();  // peak_rss_bytes is the amber phase's own

  // --- amber ---
  std::unique_ptr<Heap> heap = OpenHeap(path, o);
  auto root = heap->Root<KvRoot>("kv");
  if (!root.ok()) Fatal("Root: " + root.status().ToString());
  KvRoot* kv = *root;
  Heap* h = heap.get();
  auto section = [h] { return Section(*h); };
  const double t_load = NowSec();
  {
    Section s(*h);
    kv->map.reserve(keys);
  }
  Load(kv->map, keys, section);
  Check(heap->Commit(), "Commit after the load");
  const double load_s = NowSec() - t_load;
  const Stats s0 = heap->GetStats();
  const uint64_t io0 = IoWriteBytes();
  // Rounds of `updates` overwrites, each ending in a Commit() (timed): durable
  // when its clock stops.
  uint64_t last_key = 0, missing = 0;
  std::vector<double> amber_secs, loop_secs;
  for (uint64_t r = 0; r < rounds; ++r) {
    const double t0 = NowSec();
    missing += Update(kv->map, keys, updates, per_section, section, &last_key, 7 + r);
    loop_secs.push_back(NowSec() - t0);
    Check(heap->Commit(), "Commit at the end of a round");
    amber_secs.push_back(NowSec() - t0);
  }
  const double amber_s = Median(amber_secs);
  const double loop_s = Median(loop_secs);
  const uint64_t io_bytes = IoWriteBytes() - io0;
  const Stats s1 = heap->GetStats();
  const uint64_t peak_rss = PeakRssBytes();
  if (missing != 0) Fatal(Fmt("%" PRIu64 " updated keys were missing from the map", missing));
  Check(heap->Close(), "Close");
  heap.reset();

  // --- recovery ---
  auto recover = [&](bool verify) {
    DropFromPageCache(path);
    Options ro = o;
    ro.create_if_missing = false;
    ro.verify_on_open = verify;
    ro.checkpoint_on_close = false;
    const double r0 = NowMs();
    auto reopened = Heap::Open(path, ro);
    if (!reopened.ok()) Fatal("re-opening " + path + ": " + reopened.status().ToString());
    auto r = (*reopened)->Root<KvRoot>("kv");
    if (!r.ok()) Fatal("Root after re-open: " + r.status().ToString());
    auto it = (*r)->map.find(last_key);
    const uint64_t stamp = it == (*r)->map.end() ? 0 : StampOf(it->second);
    const double ms = NowMs() - r0;
    if (stamp != updates)
      Fatal(Fmt("recovered state is wrong: key %" PRIu64 " has stamp %" PRIu64
                ", expected %" PRIu64,
                last_key, stamp, updates));
    Check((*reopened)->Close(), "Close after re-open");
    return ms;
  };
  uint64_t recover_log_bytes = 0;
  {
    auto st = Store::Open(Env::Default(), path, o, Store::Mode::kReadOnly);
    if (!st.ok()) Fatal("reading " + path + ": " + st.status().ToString());
    recover_log_bytes = (*st)->LogUsed();
  }
  const double recover_ms_no_verify = recover(false);
  const double recover_ms = recover(true);

  // Machine state drifts within a run (page cache, memory placement, the other
  // core's load): the baseline runs before and after amber, and its median over
  // both counts.
  const std::vector<double> plain_after = plain_run();
  plain_secs.insert(plain_secs.end(), plain_after.begin(), plain_after.end());
  const double plain_s = Median(plain_secs);

  const double ups = static_cast<double>(updates) / amber_s;
  const double plain_ups = static_cast<double>(updates) / plain_s;
  const uint64_t written = s1.bytes_written - s0.bytes_written;
  Report rep(kind);
  rep.Title(Fmt("amber bench kv: %" PRIu64 " keys, %" PRIu64 " random overwrites of 100-byte "
                "values a round, %" PRIu64 " rounds, %" PRIu64
                " a Section, checkpoint every %" PRIu64 " ms, Commit() at the end of each round",
                keys, updates, rounds, per_section, interval_ms));
  rep.Num("updates_per_s", ups, "median round, its Commit() included")
      .Num("updates_per_s_no_persistence", plain_ups,
           "std::unordered_map, same code, median of rounds before and after")
      .Num("ratio", ups / plain_ups)
      .Int("updates_per_section", per_section, "--per-section")
      .Int("bytes_written", written, Bytes(written) + ", Stats::bytes_written over all rounds")
      .Num("write_amplification",
           static_cast<double>(written) / static_cast<double>(rounds * updates * kPayloadBytes),
           "bytes_written / (rounds x updates x 108)")
      .Int("peak_rss_bytes", peak_rss, Bytes(peak_rss) + ", VmHWM")
      .Num("recover_ms", recover_ms, "Open + Root + find, page cache dropped")
      .Num("recover_ms_no_verify", recover_ms_no_verify, "same, verify_on_open = false")
      .Int("recover_log_bytes", recover_log_bytes,
           Bytes(recover_log_bytes) + " of committed generations in the log at the reopen");
  auto list = [](const std::vector<double>& v) {
    std::string out;
    for (double x : v) out += (out.empty() ? "" : " ") + Fmt("%.2f", x);
    return out;
  };
  rep.Row("amber round: update loop / its Commit(), median",
          Fmt("%.2f s / %.2f s", loop_s, amber_s - loop_s));
  rep.Row("amber rounds, s", list(amber_secs));
  rep.Row("no-persistence rounds (before, then after), s", list(plain_secs));
  rep.Row("checkpoints / migrations during the rounds",
          Fmt("%" PRIu64 " / %" PRIu64, s1.checkpoints - s0.checkpoints,
              s1.migrations - s0.migrations));
  rep.Row("pages written during updates", Fmt("%" PRIu64, s1.pages_written - s0.pages_written));
  rep.Row("/proc/self/io write_bytes during updates", Bytes(io_bytes));
  rep.Row("pause since open: median / max",
          Fmt("%.3f / %.3f ms", s1.pause_ms_median, s1.pause_ms_max));
  rep.Row("load (amber, incl. Commit)", Fmt("%.2f s", load_s));
  rep.Row("heap used / log size", Bytes(s1.heap_used) + " / " + Bytes(s1.log_size));
  rep.Row("tracking / staging memory", s1.tracking + " / " + Bytes(s1.staging_bytes));
  if (s1.checkpoint_errors != 0) rep.Row("checkpoint errors", s1.last_error);
  rep.Print(args.json);
  return kExitOk;
}

}  // namespace amber::cli::bench
