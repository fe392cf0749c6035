// bench.cc — `amber bench KIND`: the dispatcher, its help text, and the helpers
// every benchmark kind shares (declared in bench.h): option parsing, the
// temporary directory and its cleanup on signals, progress lines, statistics,
// filling a heap, and the report. The kinds live in bench_pause.cc,
// bench_writeout.cc, bench_kv.cc, bench_commit.cc and bench_replay.cc.
//
// Thread-safety: see bench.h. The signal handler only calls async-signal-safe
// functions (unlink, rmdir, signal, raise) on paths stored before it can run.
#include "bench.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>
#include <thread>

namespace amber::cli {

namespace bench {
namespace {

// --- cleanup state, readable from the signal handler ---------------------------------

constexpr int kMaxFiles = 32;
constexpr size_t kMaxPath = 4096;
char g_dir[kMaxPath];
char g_files[kMaxFiles][kMaxPath];
std::atomic<int> g_file_count{0};
std::atomic<bool> g_dir_live{false};

void RemoveRegistered() {
  const int n = g_file_count.load();
  for (int i = 0; i < n; ++i) ::unlink(g_files[i]);
  if (g_dir_live.load()) ::rmdir(g_dir);
}

extern "C" void OnSignal(int sig) {
  RemoveRegistered();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void Register(const std::string& path) {
  const int i = g_file_count.load();
  if (i >= kMaxFiles || path.size() >= kMaxPath) return;  // still removed by the destructor
  std::memcpy(g_files[i], path.c_str(), path.size() + 1);
  g_file_count.store(i + 1);
}

// --- progress ------------------------------------------------------------------------

std::string g_kind = "?";
double g_start_sec = 0;
double g_last_note_sec = 0;

void VLine(const char* fmt, va_list ap) {
  std::fprintf(stderr, "amber bench %s: ", g_kind.c_str());
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  g_last_note_sec = NowSec();
}

// --- parsing -------------------------------------------------------------------------

// The leading decimal number of text: digits, optional fraction, optional
// exponent. *used receives its length.
bool LeadingNumber(std::string_view text, double* value, size_t* used) {
  size_t i = 0;
  bool digits = false;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    ++i;
    digits = true;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      ++i;
      digits = true;
    }
  }
  if (!digits) return false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    size_t j = i + 1;
    if (j < text.size() && (text[j] == '+' || text[j] == '-')) ++j;
    const size_t exp_start = j;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j > exp_start) i = j;  // otherwise the 'e' is left for the suffix check
  }
  const std::string number(text.substr(0, i));
  errno = 0;
  *value = std::strtod(number.c_str(), nullptr);
  if (errno != 0 || !std::isfinite(*value)) return false;
  *used = i;
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void PrintHelp(FILE* out) {
  std::fprintf(
      out,
      "usage: amber bench KIND [options] [--json] [--dir DIR]\n"
      "\n"
      "Kinds:\n"
      "  pause     checkpoint pause on a filled heap, against fork() of the same process\n"
      "              --heap SIZE        heap data to fill (default 1G)\n"
      "              --dirty FRACTION   pages dirtied at random before each checkpoint\n"
      "                                 (default 0.001)\n"
      "              --threads N        N mutator threads dirty the pages inside Sections\n"
      "                                 and keep writing during each checkpoint\n"
      "                                 (default 0: the main thread dirties them)\n"
      "              --rounds R         checkpoints measured, at least 20 (default 20)\n"
      "            fields: heap_bytes dirty_bytes pause_ms_median pause_ms_p99\n"
      "                    fork_ms_median fork_over_pause\n"
      "  writeout  background write-out rate against a raw O_DIRECT sequential write\n"
      "              --bytes SIZE       bytes dirtied and checkpointed each round (default 256M)\n"
      "              --limit RATE       Options::write_bandwidth_limit, bytes/s (e.g. 100M)\n"
      "              --rounds R         rounds, at least 3 (default 3)\n"
      "            fields: writeout_mb_s raw_seq_mb_s ratio [limit_mb_s achieved_mb_s]\n"
      "  kv        the kv-update workload of DESIGN.md: amber::unordered_map<uint64_t,\n"
      "            100-byte value>, one thread, one Section per update, automatic\n"
      "            checkpoints, Commit() at the end of each round; the same code on a\n"
      "            std::unordered_map without persistence before and after; medians\n"
      "              --keys N           keys loaded (default 1000000)\n"
      "              --updates M        uniformly random overwrites a round (default 2000000)\n"
      "              --rounds R         rounds of each (default 3)\n"
      "              --interval-ms T    checkpoint interval (default 1000; 0 = only Commit)\n"
      "              --per-section N    updates in one Section (default 1)\n"
      "            fields: updates_per_s updates_per_s_no_persistence ratio\n"
      "                    updates_per_section bytes_written\n"
      "                    write_amplification peak_rss_bytes recover_ms recover_ms_no_verify\n"
      "                    recover_log_bytes\n"
      "  commit    Commit() after dirtying one page, against a 4 KiB pwrite + fdatasync\n"
      "              --rounds R         rounds, at least 10 (default 100)\n"
      "            fields: commit_us_median fdatasync_us_median\n"
      "  replay    opening after a crash: the log replayed home (Store::RecoverInPlace)\n"
      "            from a cold page cache, and the page cache it leaves\n"
      "              --heap SIZE        heap the generations cover (default 1G)\n"
      "              --generations N    generations in the log (default 5): the first\n"
      "                                 writes every page, the others a random share\n"
      "              --fraction F       that share (default 0.45)\n"
      "              --rounds R         replays timed (default 3)\n"
      "            fields: replay_ms_median log_bytes replayed_bytes\n"
      "                    cache_growth_bytes_median\n"
      "\n"
      "Common options:\n"
      "  --json      print one JSON object per line on stdout (\"bench\":KIND first);\n"
      "              the table and progress lines go to stderr\n"
      "  --dir DIR   where temporary stores and files go (default $TMPDIR or /tmp);\n"
      "              they are removed afterwards\n"
      "\n"
      "SIZE and RATE: bytes with an optional K, M, G or T suffix (powers of 1024),\n"
      "e.g. 4096, 512M, 1.5G. FRACTION: 0 < f <= 1, or a percentage such as 0.1%%.\n"
      "N, M: whole numbers, e.g. 1000000, 1e6, 2M (k/M/G = powers of 1000).\n"
      "Rates (*_mb_s) are in MiB/s. Exit status: 0 done, 2 bad usage or a failure.\n");
}

}  // namespace

// --- parsing -----------------------------------------------------------------------

bool ParseSize(std::string_view text, uint64_t* out, std::string* error) {
  double v = 0;
  size_t used = 0;
  auto bad = [&] {
    *error = "'" + std::string(text) +
             "' is not a size (expected bytes with an optional K, M, G "
             "or T suffix, e.g. 4096, 512M, 1G, 1.5G)";
    return false;
  };
  if (!LeadingNumber(text, &v, &used)) return bad();
  const std::string suffix = Lower(text.substr(used));
  static const std::pair<const char*, int> kUnits[] = {
      {"", 0},    {"b", 0}, {"k", 1},  {"kb", 1},  {"kib", 1}, {"m", 2},  {"mb", 2},
      {"mib", 2}, {"g", 3}, {"gb", 3}, {"gib", 3}, {"t", 4},   {"tb", 4}, {"tib", 4}};
  int shift = -1;
  for (auto& [name, s] : kUnits)
    if (suffix == name) shift = s;
  if (shift < 0) return bad();
  const double bytes = std::floor(v * std::ldexp(1.0, 10 * shift));
  if (bytes >= std::ldexp(1.0, 62)) {
    *error = "'" + std::string(text) + "' is too large";
    return false;
  }
  *out = static_cast<uint64_t>(bytes);
  return true;
}

bool ParseFraction(std::string_view text, double* out, std::string* error) {
  double v = 0;
  size_t used = 0;
  const std::string rest = LeadingNumber(text, &v, &used) ? std::string(text.substr(used)) : "?";
  if (rest != "" && rest != "%") {
    *error = "'" + std::string(text) + "' is not a fraction (expected e.g. 0.01 or 1%)";
    return false;
  }
  if (rest == "%") v /= 100;
  if (!(v > 0 && v <= 1)) {
    *error = "'" + std::string(text) +
             "' is out of range: a fraction must be above 0 and at "
             "most 1 (100%)";
    return false;
  }
  *out = v;
  return true;
}

bool ParseCount(std::string_view text, uint64_t* out, std::string* error) {
  double v = 0;
  size_t used = 0;
  auto bad = [&](const char* why) {
    *error = "'" + std::string(text) + "' " + why;
    return false;
  };
  if (!LeadingNumber(text, &v, &used))
    return bad("is not a whole number (expected e.g. 1000000, 1e6 or 2M)");
  const std::string suffix = Lower(text.substr(used));
  double mult = 1;
  if (suffix == "k") {
    mult = 1e3;
  } else if (suffix == "m") {
    mult = 1e6;
  } else if (suffix == "g") {
    mult = 1e9;
  } else if (!suffix.empty()) {
    return bad("is not a whole number (expected e.g. 1000000, 1e6 or 2M)");
  }
  v *= mult;
  if (v != std::floor(v)) return bad("is not a whole number");
  if (v >= std::ldexp(1.0, 63)) return bad("is too large");
  *out = static_cast<uint64_t>(v);
  return true;
}

bool Flags::Fail(const std::string& message) {
  error_ = message;
  return false;
}

bool Flags::Validate(std::initializer_list<std::string_view> allowed) {
  if (args_.positional.size() > 1) return Fail("unexpected argument '" + args_.positional[1] + "'");
  std::set<std::string> seen;
  for (const auto& [name, value] : args_.flags) {
    bool ok = name == "dir";
    for (std::string_view a : allowed) ok = ok || name == a;
    if (!ok) return Fail("unknown option --" + name + " for 'bench " + kind_ + "'");
    if (!seen.insert(name).second) return Fail("option --" + name + " given twice");
    if (value.empty()) return Fail("option --" + name + " needs a value");
  }
  return true;
}

bool Flags::Size(const char* name, uint64_t def, uint64_t min, uint64_t max, uint64_t* out) {
  const std::string* v = args_.Flag(name);
  if (v == nullptr) {
    *out = def;
    return true;
  }
  std::string e;
  if (!ParseSize(*v, out, &e)) return Fail(std::string("--") + name + ": " + e);
  if (*out < min) return Fail(std::string("--") + name + " must be at least " + Bytes(min));
  if (*out > max) return Fail(std::string("--") + name + " must be at most " + Bytes(max));
  return true;
}

bool Flags::Fraction(const char* name, double def, double* out) {
  const std::string* v = args_.Flag(name);
  if (v == nullptr) {
    *out = def;
    return true;
  }
  std::string e;
  if (!ParseFraction(*v, out, &e)) return Fail(std::string("--") + name + ": " + e);
  return true;
}

bool Flags::Count(const char* name, uint64_t def, uint64_t min, uint64_t max, uint64_t* out) {
  const std::string* v = args_.Flag(name);
  if (v == nullptr) {
    *out = def;
    return true;
  }
  std::string e;
  if (!ParseCount(*v, out, &e)) return Fail(std::string("--") + name + ": " + e);
  if (*out < min || *out > max)
    return Fail(std::string("--") + name + " must be between " + std::to_string(min) + " and " +
                std::to_string(max) + ", got " + *v);
  return true;
}

std::string Flags::Dir() const {
  if (const std::string* d = args_.Flag("dir")) return *d;
  const char* t = std::getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/tmp";
}

int UsageError(const std::string& kind, const std::string& message) {
  std::fprintf(stderr, "amber bench %s: %s\n(amber bench --help lists the options)\n", kind.c_str(),
               message.c_str());
  return kExitError;
}

// --- running -------------------------------------------------------------------------

double NowSec() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
double NowMs() { return NowSec() * 1e3; }

TempDir::TempDir(const std::string& parent, const std::string& kind) {
  struct stat st;
  if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    Fatal("--dir " + parent + ": not a directory (" + std::strerror(errno) + ")");
  std::string tmpl = parent + "/amber-bench-" + kind + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    Fatal("cannot create a directory in " + parent + ": " + std::strerror(errno));
  path_ = tmpl;
  if (path_.size() < kMaxPath) {
    std::memcpy(g_dir, path_.c_str(), path_.size() + 1);
    g_dir_live.store(true);
  }
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  g_dir_live.store(false);
  g_file_count.store(0);
}

std::string TempDir::File(const std::string& name) {
  std::string p = path_ + "/" + name;
  Register(p);
  Register(p + ".creating." + std::to_string(::getpid()));
  return p;
}

void Fatal(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "amber bench %s: %s\n", g_kind.c_str(), message.c_str());
  std::fflush(stderr);
  if (g_dir_live.load()) {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  }
  ::_exit(kExitError);
}

void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Fatal(what + ": " + s.ToString());
}

void SetKind(const std::string& kind) {
  g_kind = kind;
  g_start_sec = NowSec();
  g_last_note_sec = 0;
}

void Note(const char* fmt, ...) {
  const double now = NowSec();
  if (now - g_start_sec < 2 || now - g_last_note_sec < 1) return;
  va_list ap;
  va_start(ap, fmt);
  VLine(fmt, ap);
  va_end(ap);
}

void Line(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VLine(fmt, ap);
  va_end(ap);
}

std::string Fmt(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[512];
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// --- statistics ----------------------------------------------------------------------

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

double Min(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) {
    seed += 0x9e3779b97f4a7c15ull;
    s = Mix(seed);
  }
}

uint64_t ProcNumber(const char* path, const char* field) {
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t v = 0;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, n) == 0) {
      v = std::strtoull(line + n, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return v;
}

uint64_t PeakRssBytes() { return ProcNumber("/proc/self/status", "VmHWM:") * kKiB; }

// --- heap helpers --------------------------------------------------------------------

std::unique_ptr<Heap> OpenHeap(const std::string& path, const Options& options) {
  auto heap = Heap::Open(path, options);
  if (!heap.ok()) Fatal("opening " + path + ": " + heap.status().ToString());
  return std::move(*heap);
}

HeapData FillHeap(Heap& heap, uint64_t bytes, uint64_t block_bytes, uint64_t checkpoint_every) {
  HeapData d;
  d.block_bytes = block_bytes;
  d.pages = bytes / kPage;
  uint64_t done = 0, since = 0;
  while (done < bytes) {
    const uint64_t n = std::min(block_bytes, bytes - done);
    auto* p = static_cast<char*>(heap.Allocate(n, kPage));
    if (p == nullptr)
      Fatal("the heap is full after " + Bytes(done) + " of " + Bytes(bytes) + " (capacity " +
            Bytes(heap.capacity()) + ")");
    for (uint64_t off = 0; off < n; off += kPage)
      std::memset(p + off, static_cast<int>(((done + off) / kPage) % 251 + 1), kPage);
    d.blocks.push_back(p);
    done += n;
    since += n;
    if (since >= checkpoint_every) {
      Check(heap.Checkpoint(), "checkpoint while filling the heap");
      since = 0;
    }
    Note("filling the heap: %s of %s", Bytes(done).c_str(), Bytes(bytes).c_str());
  }
  Check(heap.Checkpoint(), "checkpoint after filling the heap");
  return d;
}

Stats WaitForMigration(Heap& heap, double max_s) {
  const double t0 = NowSec();
  Stats st = heap.GetStats();
  while (st.log_used * 2 > st.log_size && st.last_error.empty() && NowSec() - t0 < max_s) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    st = heap.GetStats();
  }
  return st;
}

void DropFromPageCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);  // only clean pages can be dropped
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// --- output --------------------------------------------------------------------------

Report::Report(const std::string& kind) { json_.Str("bench", kind); }

namespace {
std::string HumanNumber(double v) {
  if (std::fabs(v) >= 1e4) return Fmt("%.0f", v);
  return Fmt("%.4g", v);
}
}  // namespace

Report& Report::Int(const std::string& key, uint64_t value, const std::string& human) {
  json_.Int(key, value);
  rows_.emplace_back(key, std::to_string(value) + (human.empty() ? "" : "  (" + human + ")"));
  return *this;
}

Report& Report::Num(const std::string& key, double value, const std::string& human) {
  json_.Num(key, value);
  rows_.emplace_back(key, HumanNumber(value) + (human.empty() ? "" : "  (" + human + ")"));
  return *this;
}

Report& Report::Row(const std::string& label, const std::string& text) {
  rows_.emplace_back("  " + label, text);
  return *this;
}

void Report::Print(bool json) const {
  // With --json the table still goes to stderr, so a long run is not lost for
  // the eye; stdout carries only the JSON line.
  FILE* table = json ? stderr : stdout;
  if (!title_.empty()) std::fprintf(table, "%s\n", title_.c_str());
  size_t width = 0;
  for (auto& [label, text] : rows_) width = std::max(width, label.size());
  for (auto& [label, text] : rows_)
    std::fprintf(table, "  %-*s  %s\n", static_cast<int>(width), label.c_str(), text.c_str());
  std::fflush(table);
  if (json) {
    std::printf("%s\n", json_.Done().c_str());
    std::fflush(stdout);
  }
}

}  // namespace bench

int CmdBench(const Args& args) {
  if (args.positional.empty()) {
    bench::PrintHelp(args.help ? stdout : stderr);
    return args.help ? bench::kExitOk : bench::kExitError;
  }
  if (args.help) {
    bench::PrintHelp(stdout);
    return bench::kExitOk;
  }
  const std::string& kind = args.positional[0];
  bench::SetKind(kind);
  if (kind == "pause") return bench::BenchPause(args);
  if (kind == "writeout") return bench::BenchWriteout(args);
  if (kind == "kv") return bench::BenchKv(args);
  if (kind == "commit") return bench::BenchCommit(args);
  if (kind == "replay") return bench::BenchReplay(args);
  return bench::UsageError(
      kind, "unknown benchmark '" + kind + "' (kinds: pause, writeout, kv, commit, replay)");
}

}  // namespace amber::cli
