// bench/peers/driver.cc — runs the kv-update workload against one KvStore.
//
// A program (kv-sqlite, kv-amber, ...) is started without --phase. It then acts
// as the coordinator for each repetition:
//   1. starts itself with --phase=run: load (keys in ascending order by default,
//      a bulk import; --load-order=random for random order), updates, final sync, spot check,
//      measurements; that process then kills itself with SIGKILL (a crash: no
//      destructor, no close, no final save);
//   2. measures the data directory, drops its files from the page cache (unless
//      --warm-recovery), and starts itself with --phase=recover: the clock runs
//      from the spawn until the first read returned the expected value; the
//      recovered state is then verified (every key, or a sample on big sets);
//   3. writes <results>/<system>-<workload>.json (medians over repetitions) and
//      prints a row of the human table.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <string>
#include <vector>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

struct Flags {
  std::string mode;
  std::string phase;  // "", "run" or "recover"
  std::string data_dir = "peers-data";
  std::string results_dir = "bench/results";
  std::string report_file;
  double max_update_seconds = 0;  // 0 = no limit
  uint64_t verify_full_max = 1000000;
  uint64_t updates_done = 0;  // recovery: how many updates the run made
  int ready_fd = -1;
  int repeat = 1;
  bool warm_recovery = false;
  bool keep_data = false;
  std::string dist = "uniform";
  std::string load_order = "sorted";
};

void Usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--mode=M] [--workload=NAME] [--keys=N] [--updates=M]\n"
               "          [--dist=uniform|zipf] [--theta=0.99] [--max-update-seconds=S]\n"
               "          [--data-dir=DIR] [--results=DIR] [--repeat=R] [--seed=S]\n"
               "          [--verify-full-max=K] [--load-order=random|sorted]\n"
               "          [--warm-recovery] [--keep-data]\n"
               "Runs kv-update (load N keys, M overwrites, state recoverable within 1 s),\n"
               "kills the process, times recovery in a fresh one, and writes\n"
               "RESULTS/<system>-<workload>.json.\n",
               program);
  std::exit(2);
}

uint64_t ParseU64(const std::string& v, const char* flag) {
  char* end = nullptr;
  errno = 0;
  // Accept 1e6 / 1000000 / 1_000_000.
  std::string clean;
  for (char c : v) {
    if (c != '_') clean += c;
  }
  double d = std::strtod(clean.c_str(), &end);
  if (errno != 0 || end == clean.c_str() || *end != '\0' || d < 0)
    Die("bad %s: %s", flag, v.c_str());
  return static_cast<uint64_t>(std::llround(d));
}

double ParseDouble(const std::string& v, const char* flag) {
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0') Die("bad %s: %s", flag, v.c_str());
  return d;
}

void ParseFlags(int argc, char** argv, Config* cfg, Flags* flags) {
  cfg->workload = "kv-update";
  cfg->keys = 1000000;
  cfg->updates = 2000000;
  double theta = 0.99;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") Usage(argv[0]);
    if (arg == "--warm-recovery") {
      flags->warm_recovery = true;
      continue;
    }
    if (arg == "--keep-data") {
      flags->keep_data = true;
      continue;
    }
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) Usage(argv[0]);
    std::string name = arg.substr(2, eq - 2);
    std::string v = arg.substr(eq + 1);
    if (name == "mode") {
      flags->mode = v;
    } else if (name == "workload") {
      cfg->workload = v;
    } else if (name == "keys") {
      cfg->keys = ParseU64(v, "--keys");
    } else if (name == "updates") {
      cfg->updates = ParseU64(v, "--updates");
    } else if (name == "dist") {
      flags->dist = v;
    } else if (name == "load-order") {
      if (v != "random" && v != "sorted") Die("--load-order must be random or sorted");
      flags->load_order = v;
    } else if (name == "theta") {
      theta = ParseDouble(v, "--theta");
    } else if (name == "seed") {
      cfg->seed = ParseU64(v, "--seed");
    } else if (name == "max-update-seconds") {
      flags->max_update_seconds = ParseDouble(v, "--max-update-seconds");
    } else if (name == "data-dir") {
      flags->data_dir = v;
    } else if (name == "results") {
      flags->results_dir = v;
    } else if (name == "repeat") {
      flags->repeat = static_cast<int>(ParseU64(v, "--repeat"));
    } else if (name == "verify-full-max") {
      flags->verify_full_max = ParseU64(v, "--verify-full-max");
    } else if (name == "phase") {
      flags->phase = v;
    } else if (name == "report-file") {
      flags->report_file = v;
    } else if (name == "ready-fd") {
      flags->ready_fd = static_cast<int>(ParseU64(v, "--ready-fd"));
    } else if (name == "updates-done") {
      flags->updates_done = ParseU64(v, "--updates-done");
    } else {
      Usage(argv[0]);
    }
  }
  if (flags->dist == "uniform") {
    cfg->theta = 0;
  } else if (flags->dist == "zipf") {
    cfg->theta = theta;
  } else {
    Die("--dist must be uniform or zipf");
  }
  if (cfg->keys == 0) Die("--keys must be positive");
  if (cfg->keys > std::numeric_limits<uint32_t>::max()) Die("--keys too large");
  if (cfg->updates >= std::numeric_limits<uint32_t>::max()) Die("--updates too large");
  if (flags->repeat < 1) flags->repeat = 1;
}

// Reads the expected value of index `idx` back and compares; returns mismatches.
uint64_t VerifyIndices(KvStore* store, const std::vector<uint32_t>& expected,
                       const std::vector<uint64_t>& indices, uint64_t* missing) {
  constexpr size_t kBatch = 1024;
  std::vector<uint64_t> keys(kBatch);
  std::vector<Value> got(kBatch);
  std::unique_ptr<bool[]> found(new bool[kBatch]);
  Value want;
  uint64_t mismatches = 0;
  for (size_t start = 0; start < indices.size(); start += kBatch) {
    size_t n = std::min(kBatch, indices.size() - start);
    for (size_t i = 0; i < n; i++) keys[i] = KeyOf(indices[start + i]);
    store->MultiGet(keys.data(), n, got.data(), found.get());
    for (size_t i = 0; i < n; i++) {
      uint64_t idx = indices[start + i];
      if (!found[i]) {
        if (*missing == 0) {
          std::fprintf(stderr, "kv-peers: key #%" PRIu64 " is missing\n", idx);
        }
        ++*missing;
        mismatches++;
        continue;
      }
      MakeValue(keys[i], expected[idx], &want);
      if (want != got[i]) {
        if (mismatches - *missing < 3) {
          std::fprintf(stderr, "kv-peers: key #%" PRIu64 ": expected update %u, found update %u\n",
                       idx, expected[idx], SeqOf(got[i]));
        }
        mismatches++;
      }
    }
  }
  return mismatches;
}

[[noreturn]] void RunPhase(const Config& cfg, const Flags& flags, StoreFactory factory) {
  std::unique_ptr<KvStore> store = factory(cfg);
  Report r;
  KeyChooser chooser(cfg.keys, cfg.theta, cfg.seed);  // Zipf setup outside the clock

  store->Open(true);
  Value v;
  double t0 = Now();
  store->BeginLoad(cfg.keys);
  const bool sorted = flags.load_order == "sorted";
  Permutation order(cfg.keys, cfg.seed ^ 0x10ad);
  for (uint64_t i = 0; i < cfg.keys; i++) {
    uint64_t key = KeyOf(sorted ? i : order(i));
    MakeValue(key, 0, &v);
    store->Put(key, v);
    if ((i & 15) == 15) store->Tick(Now());
  }
  store->EndLoad();
  store->Flush();
  double load_s = Now() - t0;

  pid_t server = store->ServerPid();
  ProcIo io0 = ReadProcIo(server);
  double load_avg = LoadAverage();
  double cpu0 = CpuSeconds(0) + (server ? CpuSeconds(server) : 0);
  store->BeginUpdates();
  double t1 = Now();
  double deadline = flags.max_update_seconds > 0 ? t1 + flags.max_update_seconds
                                                 : std::numeric_limits<double>::infinity();
  double last = t1, next_second = t1 + 1, max_gap = 0;
  uint64_t done = 0, done_at_second = 0;
  std::vector<double> per_second;
  for (uint64_t u = 0; u < cfg.updates; u++) {
    uint64_t key = KeyOf(chooser.Next());
    MakeValue(key, static_cast<uint32_t>(u + 1), &v);
    store->Put(key, v);
    done = u + 1;
    if ((u & 15) == 15) {
      double now = Now();
      max_gap = std::max(max_gap, now - last);
      last = now;
      while (now >= next_second) {
        per_second.push_back(static_cast<double>(done - done_at_second));
        done_at_second = done;
        next_second += 1;
      }
      if (now >= deadline) break;
      store->Tick(now);
    }
  }
  double t_flush = Now();
  store->Flush();
  double t2 = Now();
  ProcIo io1 = ReadProcIo(server);
  double cpu = CpuSeconds(0) + (server ? CpuSeconds(server) : 0) - cpu0;

  double update_s = t2 - t1;
  uint64_t written = io1.write_bytes - io0.write_bytes;
  uint64_t cancelled = io1.cancelled_write_bytes - io0.cancelled_write_bytes;
  uint64_t device = written > cancelled ? written - cancelled : 0;
  uint64_t logical = done * (kKeyBytes + kValueBytes);

  r.Str("description", store->Describe());
  r.Str("version", store->Version());
  r.Bool("persistent", store->Persistent());
  r.Num("load_s", load_s);
  r.Num("load_keys_per_s", static_cast<double>(cfg.keys) / load_s);
  r.Int("updates", done);
  r.Bool("updates_time_capped", done < cfg.updates);
  r.Num("update_s", update_s);
  r.Num("updates_per_s", static_cast<double>(done) / update_s);
  r.Num("final_flush_ms", (t2 - t_flush) * 1e3);
  r.Num("update_cpu_s", cpu);
  r.Str("update_cpu_note",
        server ? "client + server + its reaped children" : "this process, all threads");
  r.Num("loadavg_at_start", load_avg);
  r.Num("max_stall_ms", max_gap * 1e3);
  r.Str("max_stall_note", "longest time taken by 16 consecutive updates");
  r.Int("logical_bytes", logical);
  r.Int("device_write_bytes", device);
  r.Int("write_bytes_raw", written);
  r.Int("cancelled_write_bytes", cancelled);
  r.Str("io_source", server ? "/proc/<server pid>/io" : "/proc/self/io");
  if (store->Persistent()) {
    r.Num("write_amplification", static_cast<double>(device) / static_cast<double>(logical));
  } else {
    r.Null("write_amplification");
  }
  r.Int("peak_rss_bytes", PeakRss(server));
  if (server) r.Int("client_peak_rss_bytes", PeakRss(0));
  r.NumList("updates_per_second_series", per_second);
  store->AddReport(&r);

  // Spot check of the live state: the 1000 most recently updated keys and 10,000
  // others drawn at random.
  std::vector<uint32_t> expected = ExpectedSeqs(cfg.keys, cfg.theta, cfg.seed, done);
  std::vector<uint64_t> indices;
  uint32_t recent = done > 1000 ? static_cast<uint32_t>(done - 1000) : 0;
  for (uint64_t i = 0; i < cfg.keys; i++) {
    if (expected[i] > recent) indices.push_back(i);
  }
  Rng pick(cfg.seed ^ 0x5eed);
  for (int i = 0; i < 10000; i++) indices.push_back(pick.Below(cfg.keys));
  uint64_t missing = 0;
  double tv = Now();
  uint64_t bad = VerifyIndices(store.get(), expected, indices, &missing);
  r.Int("verify_run_keys", indices.size());
  r.Int("verify_run_mismatches", bad);
  r.Num("verify_run_s", Now() - tv);
  r.Bool("verify_run_ok", bad == 0);

  WriteFileOrDie(flags.report_file, r.Serialize());
  std::fflush(stdout);
  std::fflush(stderr);
  store->Crash();
  if (store->Persistent()) {
    raise(SIGKILL);
  }
  std::_Exit(bad == 0 ? 0 : 1);
}

[[noreturn]] void RecoverPhase(const Config& cfg, const Flags& flags, StoreFactory factory) {
  // Everything the verifier needs is computed before the clock starts.
  std::vector<uint32_t> expected = ExpectedSeqs(cfg.keys, cfg.theta, cfg.seed, flags.updates_done);
  uint64_t first_index = 0;
  for (uint64_t i = 0; i < cfg.keys; i++) {
    if (expected[i] > expected[first_index]) first_index = i;
  }
  std::unique_ptr<KvStore> store = factory(cfg);
  Report r;

  double t0 = Now();
  store->Open(false);
  double t_open = Now();
  Value got, want;
  uint64_t first_key = KeyOf(first_index);
  if (!store->Get(first_key, &got)) Die("recovery: the most recently updated key is missing");
  double t_read = Now();
  MakeValue(first_key, expected[first_index], &want);
  if (got != want) {
    Die("recovery: the most recently updated key holds update %u, expected %u", SeqOf(got),
        expected[first_index]);
  }
  if (flags.ready_fd >= 0) {
    char c = '1';
    if (write(flags.ready_fd, &c, 1) != 1) Die("write ready fd: %s", std::strerror(errno));
    close(flags.ready_fd);
  }
  r.Num("recovery_open_ms", (t_open - t0) * 1e3);
  r.Num("recovery_first_read_ms", (t_read - t0) * 1e3);

  std::vector<uint64_t> indices;
  if (cfg.keys <= flags.verify_full_max) {
    indices.resize(cfg.keys);
    for (uint64_t i = 0; i < cfg.keys; i++) indices[i] = i;
    r.Str("recovery_verify", "full");
  } else {
    Rng pick(cfg.seed ^ 0xfeed);
    for (uint64_t i = 0; i < flags.verify_full_max; i++) indices.push_back(pick.Below(cfg.keys));
    r.Str("recovery_verify", "sample");
  }
  uint64_t missing = 0;
  double tv = Now();
  uint64_t bad = VerifyIndices(store.get(), expected, indices, &missing);
  r.Num("recovery_verify_s", Now() - tv);
  r.Int("recovery_verified_keys", indices.size());
  r.Int("recovery_mismatches", bad);
  r.Int("recovery_missing", missing);
  r.Bool("recovery_ok", bad == 0);
  store->Close();
  WriteFileOrDie(flags.report_file, r.Serialize());
  std::fflush(stdout);
  std::_Exit(bad == 0 ? 0 : 1);
}

pid_t SpawnSelf(const std::vector<std::string>& args, int inherit_fd) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) Die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    if (inherit_fd >= 0) fcntl(inherit_fd, F_SETFD, 0);
    execv("/proc/self/exe", argv.data());
    std::fprintf(stderr, "kv-peers: exec: %s\n", std::strerror(errno));
    std::_Exit(127);
  }
  return pid;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

bool IsNumber(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (end == nullptr || *end != '\0') return false;
  *out = d;
  return true;
}

// Numbers: median over the repetitions; booleans: all true; anything else: the
// first repetition's.
Report Combine(const std::vector<Report>& runs) {
  Report out;
  for (const auto& [key, first] : runs[0].items()) {
    double d;
    if (first == "true" || first == "false") {
      bool all = true;
      for (const auto& run : runs) {
        const std::string* v = run.Find(key);
        all = all && v != nullptr && *v == "true";
      }
      out.Bool(key, all);
    } else if (IsNumber(first, &d)) {
      std::vector<double> values;
      for (const auto& run : runs) {
        double x;
        const std::string* v = run.Find(key);
        if (v != nullptr && IsNumber(*v, &x)) values.push_back(x);
      }
      out.Num(key, Median(values));
    } else {
      out.Raw(key, first);
    }
  }
  return out;
}

std::string Today() {
  time_t t = time(nullptr);
  tm tmv;
  gmtime_r(&t, &tmv);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return buf;
}

std::string Mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", bytes / 1e6);
  return buf;
}

int Coordinate(int argc, char** argv, const Config& cfg, const Flags& flags, StoreFactory factory) {
  std::unique_ptr<KvStore> probe = factory(cfg);
  const bool persistent = probe->Persistent();
  std::string name = cfg.system + "-" + cfg.workload;
  std::string run_dir = flags.data_dir + "/" + name;
  MakeDirs(flags.data_dir);
  MakeDirs(flags.results_dir);

  std::vector<std::string> base(argv, argv + argc);
  std::vector<Report> runs;
  bool ok = true;
  for (int rep = 0; rep < flags.repeat; rep++) {
    RemoveTree(run_dir);
    MakeDirs(run_dir);
    std::string run_report = flags.data_dir + "/" + name + ".run.txt";
    std::string rec_report = flags.data_dir + "/" + name + ".recover.txt";
    unlink(run_report.c_str());
    unlink(rec_report.c_str());

    std::vector<std::string> args = base;
    args.push_back("--phase=run");
    args.push_back("--report-file=" + run_report);
    pid_t pid = SpawnSelf(args, -1);
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) Die("waitpid: %s", std::strerror(errno));
    bool crashed_as_planned = persistent ? (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                                         : (WIFEXITED(status) && WEXITSTATUS(status) == 0);
    Report run = Report::Parse(ReadFile(run_report));
    if (!crashed_as_planned || run.Find("updates") == nullptr) {
      std::fprintf(stderr, "kv-peers: %s: run phase failed (%s)\n", name.c_str(),
                   DescribeExit(status).c_str());
      if (!flags.keep_data) RemoveTree(run_dir);
      return 1;
    }
    DiskUsage disk = MeasureDisk(run_dir);
    run.Int("disk_bytes", disk.allocated);
    run.Int("disk_apparent_bytes", disk.apparent);
    run.Int("disk_files", disk.files);

    if (persistent) {
      if (!flags.warm_recovery) DropDirCache(run_dir);
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) != 0) Die("pipe: %s", std::strerror(errno));
      args = base;
      args.push_back("--phase=recover");
      args.push_back("--report-file=" + rec_report);
      args.push_back("--ready-fd=" + std::to_string(fds[1]));
      args.push_back("--updates-done=" + *run.Find("updates"));
      double t0 = Now();
      pid = SpawnSelf(args, fds[1]);
      close(fds[1]);
      char c;
      ssize_t n;
      do {
        n = read(fds[0], &c, 1);
      } while (n < 0 && errno == EINTR);
      double t1 = Now();
      close(fds[0]);
      if (waitpid(pid, &status, 0) < 0) Die("waitpid: %s", std::strerror(errno));
      Report rec = Report::Parse(ReadFile(rec_report));
      if (n != 1) {
        std::fprintf(stderr, "kv-peers: %s: recovery failed (%s)\n", name.c_str(),
                     DescribeExit(status).c_str());
        run.Null("recovery_ms");
        run.Bool("recovery_ok", false);
        ok = false;
      } else {
        run.Num("recovery_ms", (t1 - t0) * 1e3);
        for (const auto& [k, v] : rec.items()) run.Raw(k, v);
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          std::fprintf(stderr, "kv-peers: %s: recovery verification failed (%s)\n", name.c_str(),
                       DescribeExit(status).c_str());
          run.Bool("recovery_ok", false);
          ok = false;
        }
      }
    } else {
      run.Null("recovery_ms");
    }
    if (run.Find("verify_run_ok") == nullptr || *run.Find("verify_run_ok") != "true") ok = false;
    if (!flags.keep_data) RemoveTree(run_dir);
    unlink(run_report.c_str());
    unlink(rec_report.c_str());
    runs.push_back(std::move(run));
  }

  Report out;
  out.Str("system", cfg.system);
  out.Str("workload", cfg.workload);
  out.Str("distribution", cfg.theta > 0 ? "zipf" : "uniform");
  out.Str("load_order", flags.load_order);
  if (cfg.theta > 0) out.Num("zipf_theta", cfg.theta);
  out.Int("keys", cfg.keys);
  out.Int("updates_requested", cfg.updates);
  out.Int("key_bytes", kKeyBytes);
  out.Int("value_bytes", kValueBytes);
  out.Int("sync_interval_ms", cfg.sync_interval_ms);
  out.Int("repeats", runs.size());
  out.Str("recovery_cache",
          flags.warm_recovery ? "warm" : "cold (data files dropped from the page cache)");
  out.Str("kernel", KernelRelease());
  out.Int("cpus", static_cast<uint64_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  out.Str("date", Today());
  Report combined = Combine(runs);
  for (const auto& [k, v] : combined.items()) out.Raw(k, v);
  std::vector<double> ups, recs;
  for (const auto& run : runs) {
    ups.push_back(run.NumOr("updates_per_s", 0));
    recs.push_back(run.NumOr("recovery_ms", NAN));
  }
  out.NumList("updates_per_s_runs", ups);
  if (persistent) out.NumList("recovery_ms_runs", recs);
  out.Bool("ok", ok);
  std::string path = flags.results_dir + "/" + name + ".json";
  WriteFileOrDie(path, out.ToJson());

  char wa[32] = "-", rec_ms[32] = "-";
  if (persistent) {
    std::snprintf(wa, sizeof(wa), "%.2f", out.NumOr("write_amplification", NAN));
    std::snprintf(rec_ms, sizeof(rec_ms), "%.0f", out.NumOr("recovery_ms", NAN));
  }
  std::printf("%-15s %-16s %9" PRIu64 " %9.0f %7.1f %7s %8s %8s %8s %9s %9.1f %s\n",
              cfg.system.c_str(), cfg.workload.c_str(), cfg.keys, out.NumOr("updates_per_s", 0),
              out.NumOr("load_s", 0), wa, Mb(out.NumOr("device_write_bytes", 0)).c_str(),
              Mb(out.NumOr("peak_rss_bytes", 0)).c_str(), Mb(out.NumOr("disk_bytes", 0)).c_str(),
              rec_ms, out.NumOr("max_stall_ms", 0), ok ? "ok" : "FAILED");
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int Main(int argc, char** argv, const char* program, StoreFactory factory,
         std::string (*system_for_mode)(const std::string& mode)) {
  Config cfg;
  Flags flags;
  ParseFlags(argc, argv, &cfg, &flags);
  cfg.mode = flags.mode;
  cfg.system = system_for_mode(flags.mode);
  if (cfg.system.empty()) Die("%s: unknown --mode=%s", program, flags.mode.c_str());
  std::string name = cfg.system + "-" + cfg.workload;
  cfg.dir = flags.data_dir + "/" + name;
  if (flags.phase == "run") RunPhase(cfg, flags, factory);
  if (flags.phase == "recover") RecoverPhase(cfg, flags, factory);
  if (!flags.phase.empty()) Die("unknown --phase=%s", flags.phase.c_str());
  return Coordinate(argc, argv, cfg, flags, factory);
}

}  // namespace peers
