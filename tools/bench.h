// bench.h — shared pieces of `amber bench` (tools/bench*.cc): option parsing
// (sizes, fractions, counts) with clear errors, the temporary directory the
// benchmarks put their stores in (removed afterwards, also on SIGINT/SIGTERM),
// clocks, medians and percentiles, throttled progress lines on stderr, filling a
// heap with data, and the result report (a human table or one JSON line).
//
// Thread-safety: everything here is used from the benchmark's main thread only,
// except the pure functions (parsing, statistics, clocks, Rng instances owned by
// one thread) and HeapData::Page, which may be called from any thread.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "amber/heap.h"
#include "cli.h"

namespace amber::cli::bench {

inline constexpr uint64_t kKiB = uint64_t{1} << 10;
inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;
inline constexpr uint64_t kPage = 4096;

// Exit statuses of `amber bench`: 0 success, 2 usage or runtime error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 2;

// --- parsing -----------------------------------------------------------------

// "4096", "64K", "512M", "1G", "1.5G", "8GiB", "100MB": bytes, suffixes are powers
// of 1024 (K, M, G, T, case-insensitive, optionally followed by "B" or "iB").
bool ParseSize(std::string_view text, uint64_t* out, std::string* error);
// "0.01", ".5", "1", "1%", "0.1%": a fraction in (0, 1].
bool ParseFraction(std::string_view text, double* out, std::string* error);
// "1000000", "1e6", "2M", "20k": a whole number; suffixes are powers of 1000.
bool ParseCount(std::string_view text, uint64_t* out, std::string* error);

// The options of one benchmark kind, checked and parsed. Every getter returns
// false and sets error() on bad input; the caller prints it and exits with 2.
class Flags {
 public:
  Flags(const Args& args, std::string kind) : args_(args), kind_(std::move(kind)) {}
  // Rejects flags not in `allowed` ("dir" is always allowed), flags given twice,
  // and positional arguments after the kind.
  bool Validate(std::initializer_list<std::string_view> allowed);
  bool Has(const char* name) const { return args_.Flag(name) != nullptr; }
  bool Size(const char* name, uint64_t def, uint64_t min, uint64_t max, uint64_t* out);
  bool Fraction(const char* name, double def, double* out);
  bool Count(const char* name, uint64_t def, uint64_t min, uint64_t max, uint64_t* out);
  // --dir, else $TMPDIR, else /tmp.
  std::string Dir() const;
  const std::string& error() const { return error_; }

 private:
  bool Fail(const std::string& message);
  const Args& args_;
  std::string kind_;
  std::string error_;
};

// Prints "amber bench KIND: message" and a hint to stderr; returns kExitError.
int UsageError(const std::string& kind, const std::string& message);

// --- running -------------------------------------------------------------------

// Monotonic clock.
double NowMs();
double NowSec();

// A fresh directory DIR/amber-bench-XXXXXX for this run's files. Removed with
// everything in it by the destructor, by Fatal() and on SIGINT/SIGTERM/SIGHUP
// (the signal handler unlinks the files named through File(), so create files
// only through it).
class TempDir {
 public:
  // Exits through Fatal() if the directory cannot be made.
  TempDir(const std::string& parent, const std::string& kind);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // DIR/name, registered for removal (with the ".creating.<pid>" name a store
  // uses while it is being created).
  std::string File(const std::string& name);

 private:
  std::string path_;
};

// Reports a runtime failure ("amber bench KIND: message"), removes the temporary
// directory and exits with kExitError without running destructors (background
// threads of an open heap may still be running).
[[noreturn]] void Fatal(const std::string& message);
// Fatal() unless s is OK.
void Check(const Status& s, const std::string& what);

// Short progress lines on stderr ("amber bench KIND: text"), never on stdout.
// Note() prints only once the benchmark has run for 2 s and at most once a
// second, so quick runs stay silent; Line() always prints.
void SetKind(const std::string& kind);
void Note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// --- statistics -------------------------------------------------------------------

double Median(std::vector<double> v);                // 0 for an empty vector
double Percentile(std::vector<double> v, double p);  // nearest rank, p in (0, 100]
double Min(const std::vector<double>& v);
double Max(const std::vector<double>& v);

// xoshiro256** seeded through splitmix64: fast, good enough for picking pages
// and keys. One instance per thread.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next() {
    auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n), n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t s_[4];
};
// splitmix64's finaliser: a bijection on uint64_t.
inline uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The number after `field` (e.g. "VmHWM:") at the start of a line of the
// /proc file at `path`, in the file's own unit; 0 if the file or field is missing.
uint64_t ProcNumber(const char* path, const char* field);

// Peak resident set size of this process (VmHWM), 0 if unknown.
uint64_t PeakRssBytes();

// --- heap helpers ------------------------------------------------------------------

// SIZE bytes of heap memory in large page-aligned blocks, every page written.
struct HeapData {
  std::vector<char*> blocks;
  uint64_t block_bytes = 0;  // every block but possibly the last
  uint64_t pages = 0;
  char* Page(uint64_t i) const {
    const uint64_t per = block_bytes / kPage;
    return blocks[i / per] + (i % per) * kPage;
  }
};
// Allocates `bytes` (a multiple of 4 KiB) in blocks of at most `block_bytes`,
// writes every page, and calls Checkpoint() after each `checkpoint_every` bytes
// and at the end, so that no single checkpoint outgrows the log. Fatal on error.
HeapData FillHeap(Heap& heap, uint64_t bytes, uint64_t block_bytes, uint64_t checkpoint_every);

// Writes one 8-byte word of page `p` (a different word each call): dirties it.
inline void TouchPage(char* p, uint64_t salt) {
  auto* w = reinterpret_cast<volatile uint64_t*>(p + (salt % (kPage / 8)) * 8);
  *w = *w + salt + 1;
}

// Opens (creating) the store at path, Fatal on error.
std::unique_ptr<Heap> OpenHeap(const std::string& path, const Options& options);

// Polls (every 5 ms) until the log is at most half full, which is when no
// migration is due or running (a finished one frees its part of the log), or a
// checkpoint error is reported, or max_s seconds pass. Returns the last Stats.
Stats WaitForMigration(Heap& heap, double max_s);

// Removes a closed store file's pages from the page cache (posix_fadvise), so a
// following open reads from the device rather than from memory.
void DropFromPageCache(const std::string& path);

// --- output --------------------------------------------------------------------------

// The result of one benchmark: JSON fields (with "bench":KIND first) and rows of
// the human table. Row() adds a line to the table only.
class Report {
 public:
  explicit Report(const std::string& kind);
  void Title(const std::string& title) { title_ = title; }
  // A JSON field that is also a table row; `human` is shown beside the value.
  Report& Int(const std::string& key, uint64_t value, const std::string& human = "");
  Report& Num(const std::string& key, double value, const std::string& human = "");
  // A table row only.
  Report& Row(const std::string& label, const std::string& text);
  // The table on stdout; with --json, one JSON line on stdout and the table on stderr.
  void Print(bool json) const;

 private:
  Json json_;
  std::string title_;
  std::vector<std::pair<std::string, std::string>> rows_;
};

// printf into a std::string.
std::string Fmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The benchmark kinds (bench_*.cc). `args.positional[0]` is the kind.
int BenchPause(const Args& args);
int BenchWriteout(const Args& args);
int BenchKv(const Args& args);
int BenchCommit(const Args& args);
int BenchReplay(const Args& args);

}  // namespace amber::cli::bench
