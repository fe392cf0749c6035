// inspect.cc — `amber info`, `amber verify`, `amber checkpoints`: read-only views
// of a store. They never write to the store and take no lock, so they also work
// (on a moving target) while a program has the store open.
#include <unistd.h>

#include <cinttypes>
#include <cstdio>

#include "cli.h"
#include "env/env.h"
#include "store/store.h"
#include "util/hex.h"

namespace amber::cli {
namespace {

Result<std::unique_ptr<Store>> OpenReadOnly(const std::string& path) {
  Options o;
  o.create_if_missing = false;
  o.allow_foreign_owner = true;  // read-only inspection of another user's store is harmless
  return Store::Open(Env::Default(), path, o, Store::Mode::kReadOnly);
}

int Fail(const char* cmd, const Args& args, const Status& s) {
  const int code = s.code() == Code::kCorruption ? 1 : 2;
  if (args.json) {
    std::printf("%s\n", Json()
                            .Str("command", cmd)
                            .Bool("ok", false)
                            .Str("code", CodeName(s.code()))
                            .Str("error", s.message())
                            .Done()
                            .c_str());
  } else {
    std::fprintf(stderr, "amber %s: %s\n", cmd, s.ToString().c_str());
  }
  return code;
}

bool OneStore(const char* cmd, const Args& args) {
  if (args.positional.size() == 1) return true;
  std::fprintf(stderr, "usage: amber %s STORE [--json]\n", cmd);
  return false;
}

}  // namespace

int CmdInfo(const Args& args) {
  if (!OneStore("info", args)) return 2;
  auto store = OpenReadOnly(args.positional[0]);
  if (!store.ok()) return Fail("info", args, store.status());
  format::Superblock sb = (*store)->superblock();
  uint64_t gens = 0;
  Status walk = (*store)->ForEachGeneration(false, [&](const GenInfo&) {
    ++gens;
    return Status::OK();
  });
  const uint64_t log_used = (*store)->LogUsed();
  const std::string tracking = format::TrackingName(sb.flags);
  if (args.json) {
    std::printf("%s\n", Json()
                            .Str("command", "info")
                            .Bool("ok", walk.ok())
                            .Str("path", args.positional[0])
                            .Int("format_version", sb.format_version)
                            .Int("capacity_bytes", sb.capacity)
                            .Int("used_bytes", sb.heap_used)
                            .Str("base_address", Hex(sb.base_address))
                            .Int("generation", sb.committed_gen)
                            .Int("last_checkpoint_us", sb.commit_us)
                            .Str("last_checkpoint", TimeUs(sb.commit_us))
                            .Int("created_us", sb.created_us)
                            .Int("log_size_bytes", sb.log_size)
                            .Int("log_used_bytes", log_used)
                            .Int("log_generations", gens)
                            .Int("unnamed_generations", (*store)->adopted_at_open())
                            .Str("tracking", tracking)
                            .Str("error", walk.ok() ? "" : walk.ToString())
                            .Done()
                            .c_str());
  } else {
    std::printf("store:            %s\n", args.positional[0].c_str());
    std::printf("format version:   %u\n", sb.format_version);
    std::printf("capacity:         %s\n", Bytes(sb.capacity).c_str());
    std::printf("used:             %s (heap high-water mark)\n", Bytes(sb.heap_used).c_str());
    std::printf("base address:     %s\n", Hex(sb.base_address).c_str());
    std::printf("generation:       %" PRIu64 "\n", sb.committed_gen);
    std::printf("last checkpoint:  %s\n", TimeUs(sb.commit_us).c_str());
    std::printf("created:          %s\n", TimeUs(sb.created_us).c_str());
    std::printf("log:              %s of %s used, %" PRIu64 " unmigrated generation(s)\n",
                Bytes(log_used).c_str(), Bytes(sb.log_size).c_str(), gens);
    if ((*store)->adopted_at_open() != 0)
      std::printf("                  the last %" PRIu64
                  " of them lie past the head the superblock names (a power cut\n"
                  "                  lost its write); they are complete, so they count, and the\n"
                  "                  next read-write open publishes them\n",
                  (*store)->adopted_at_open());
    std::printf("tracking:         %s (of the last process that wrote it)\n", tracking.c_str());
    if (!walk.ok())
      std::printf("WARNING:          %s (run amber verify)\n", walk.ToString().c_str());
  }
  return walk.ok() ? 0 : 1;
}

int CmdVerify(const Args& args) {
  if (!OneStore("verify", args)) return 2;
  auto store = OpenReadOnly(args.positional[0]);
  if (!store.ok()) return Fail("verify", args, store.status());
  Store& st = **store;
  uint64_t gens = 0, pages = 0;
  Status s = st.ForEachGeneration(true, [&](const GenInfo& g) {
    ++gens;
    pages += g.page_count;
    return Status::OK();
  });
  const format::Superblock sb = st.superblock();
  // The home image below the high-water mark: every page against its checksum.
  const bool tty = !args.json && isatty(STDERR_FILENO);
  const uint64_t t0 = Env::Default()->NowMicros();
  if (s.ok()) {
    s = st.VerifyHome(sb.heap_used, [&](uint64_t done, uint64_t total) {
      if (tty && Env::Default()->NowMicros() - t0 > 500000)
        std::fprintf(stderr, "\rverifying home image: %3.0f%%",
                     100.0 * static_cast<double>(done) / static_cast<double>(total));
    });
    if (tty && Env::Default()->NowMicros() - t0 > 500000) std::fprintf(stderr, "\n");
  }
  if (!s.ok()) return Fail("verify", args, s);
  if (args.json) {
    std::printf("%s\n", Json()
                            .Str("command", "verify")
                            .Bool("ok", true)
                            .Str("path", args.positional[0])
                            .Int("generation", sb.committed_gen)
                            .Int("log_generations", gens)
                            .Int("log_pages", pages)
                            .Int("home_pages", sb.heap_used / format::kPageSize)
                            .Done()
                            .c_str());
  } else {
    std::printf("%s: OK — generation %" PRIu64 ", %" PRIu64 " log generation(s) with %" PRIu64
                " page(s), %" PRIu64 " home page(s) checked\n",
                args.positional[0].c_str(), sb.committed_gen, gens, pages,
                sb.heap_used / format::kPageSize);
  }
  return 0;
}

int CmdCheckpoints(const Args& args) {
  if (!OneStore("checkpoints", args)) return 2;
  auto store = OpenReadOnly(args.positional[0]);
  if (!store.ok()) return Fail("checkpoints", args, store.status());
  const format::Superblock sb = (*store)->superblock();
  std::vector<std::string> rows;
  if (!args.json) {
    std::printf("committed generation %" PRIu64
                "; generations still in the log (older ones "
                "are migrated to the home image):\n",
                sb.committed_gen);
    std::printf("%12s %12s %10s %12s  %s\n", "generation", "log offset", "pages", "bytes",
                "captured");
  }
  Status s = (*store)->ForEachGeneration(false, [&](const GenInfo& g) {
    const uint64_t bytes = g.total_pages * format::kPageSize;
    if (args.json) {
      rows.push_back(Json()
                         .Int("generation", g.gen)
                         .Int("log_offset", g.log_pos)
                         .Int("pages", g.page_count)
                         .Int("bytes", bytes)
                         .Int("heap_used", g.heap_used)
                         .Int("captured_us", g.capture_us)
                         .Done());
    } else {
      std::printf("%12" PRIu64 " %12" PRIu64 " %10" PRIu64 " %12s  %s\n", g.gen, g.log_pos,
                  g.page_count, Bytes(bytes).c_str(), TimeUs(g.capture_us).c_str());
    }
    return Status::OK();
  });
  if (!s.ok()) return Fail("checkpoints", args, s);
  if (args.json) {
    std::string arr = "[";
    for (size_t i = 0; i < rows.size(); ++i) arr += (i ? "," : "") + rows[i];
    arr += "]";
    std::printf("%s\n", Json()
                            .Str("command", "checkpoints")
                            .Bool("ok", true)
                            .Int("committed_generation", sb.committed_gen)
                            .Raw("generations", arr)
                            .Done()
                            .c_str());
  } else if (rows.empty() && sb.log_head == sb.log_tail) {
    std::printf("(log empty: every generation has been migrated home)\n");
  }
  return 0;
}

}  // namespace amber::cli
