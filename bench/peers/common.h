// bench/peers/common.h — the kv-update workload shared by every peer program:
// keys, values, key distributions, measurements of the process and the disk,
// and a tiny flat report format.
//
// Workload (see shared/DESIGN.md, "Peers"): a map from 8-byte keys to 100-byte
// values. Load N keys, then M overwrites of keys drawn uniformly (or Zipf 0.99)
// from one thread; the state must be recoverable to a point at most one second
// old. Every value is a pure function of (key, sequence number), so a verifier
// can recompute the expected final state by replaying the key sequence.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace peers {

inline constexpr size_t kKeyBytes = 8;
inline constexpr size_t kValueBytes = 100;
using Value = std::array<char, kValueBytes>;

// Prints "kv-peers: <message>" to stderr and exits with status 2.
[[noreturn]] void Die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Monotonic seconds.
double Now();

// --- keys and values --------------------------------------------------------

// A bijection on 64-bit integers (the splitmix64 finalizer).
inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Key number `index` of the data set: the index in the high bits (so keys are
// distinct and ascend with the index, which makes a sorted load possible without
// a sort) and 20 bits of noise below it.
inline uint64_t KeyOf(uint64_t index) { return (index << 20) | (Mix(index) >> 44); }

__extension__ typedef unsigned __int128 U128;
// The high 64 bits of a * b: maps a uniform 64-bit a onto [0, b).
inline uint64_t MulHi(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<U128>(a) * b) >> 64);
}

// The value written for `key` by update number `seq` (0 = the load).
// Bytes 0-7: key, 8-11: seq, 12-99: filler derived from both.
void MakeValue(uint64_t key, uint32_t seq, Value* out);
// Decoded sequence number of a value (for error messages).
uint32_t SeqOf(const Value& v);

// Big-endian bytes of a key: memcmp order equals numeric order.
void EncodeKey(uint64_t key, char out[kKeyBytes]);
uint64_t DecodeKey(const char in[kKeyBytes]);

// --- key distributions --------------------------------------------------------

// xoshiro256**: fast, good, reproducible from a seed.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, n).
  uint64_t Below(uint64_t n) { return MulHi(Next(), n); }
  // Uniform in [0, 1).
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

// A pseudo-random permutation of [0, n): a 4-round Feistel network on the
// smallest even number of bits covering n, with cycle walking.
class Permutation {
 public:
  Permutation(uint64_t n, uint64_t seed);
  uint64_t operator()(uint64_t x) const;

 private:
  uint64_t n_;
  int half_bits_ = 1;
  uint64_t mask_ = 1;
  uint64_t keys_[4];
};

// Draws key indices in [0, n): uniform (theta == 0) or Zipf(theta) by the method
// of Gray et al., "Quickly generating billion-record synthetic databases"
// (SIGMOD 1994). Zipf ranks are scattered over the index space by a
// Permutation, so the hot keys are not neighbours in load order (nor in memory).
class KeyChooser {
 public:
  KeyChooser(uint64_t n, double theta, uint64_t seed);
  uint64_t Next();

 private:
  uint64_t n_;
  double theta_;
  Rng rng_;
  double zetan_ = 0, alpha_ = 0, eta_ = 0, half_pow_theta_ = 0;
  Permutation scatter_;
};

// The expected sequence number of every key index after `updates` updates of the
// workload: replays the key sequence. Returns a vector of n entries.
std::vector<uint32_t> ExpectedSeqs(uint64_t n, double theta, uint64_t seed, uint64_t updates);

// --- measurements ----------------------------------------------------------------

struct ProcIo {
  uint64_t write_bytes = 0;            // bytes this process caused to be sent to storage
  uint64_t cancelled_write_bytes = 0;  // dirtied pages that were truncated before writeback
  uint64_t read_bytes = 0;
};
// /proc/<pid>/io (pid 0 = this process). Reaped children are included.
ProcIo ReadProcIo(pid_t pid);
// VmHWM and VmRSS from /proc/<pid>/status, in bytes (pid 0 = this process).
uint64_t PeakRss(pid_t pid);
uint64_t CurrentRss(pid_t pid);

// CPU seconds (user + system) of the process and of its reaped children, from
// /proc/<pid>/stat (pid 0 = this process).
double CpuSeconds(pid_t pid);
// The first field of /proc/loadavg: how busy the machine was.
double LoadAverage();

struct DiskUsage {
  uint64_t allocated = 0;  // st_blocks * 512 summed over the tree
  uint64_t apparent = 0;   // st_size summed
  uint64_t files = 0;
};
DiskUsage MeasureDisk(const std::string& dir);
// fsyncs every regular file under dir, then drops its cached pages
// (POSIX_FADV_DONTNEED), so the next reader starts from a cold page cache.
void DropDirCache(const std::string& dir);
void RemoveTree(const std::string& dir);
void MakeDirs(const std::string& dir);
// fsync of a directory (after a rename inside it).
void SyncDir(const std::string& dir);

std::string KernelRelease();

// --- reports -----------------------------------------------------------------------

// An ordered list of (name, JSON value text). Keeps the output flat and readable.
class Report {
 public:
  void Num(std::string_view key, double v);
  void Int(std::string_view key, uint64_t v);
  void Str(std::string_view key, std::string_view v);
  void Bool(std::string_view key, bool v);
  void Null(std::string_view key);
  void Raw(std::string_view key, std::string json);  // an already-formatted value
  void NumList(std::string_view key, const std::vector<double>& v);

  // nullptr if absent.
  const std::string* Find(std::string_view key) const;
  double NumOr(std::string_view key, double fallback) const;
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

  // One "key<TAB>json" line per item, and the reverse.
  std::string Serialize() const;
  static Report Parse(const std::string& text);
  std::string ToJson() const;

 private:
  void Set(std::string_view key, std::string json);
  std::vector<std::pair<std::string, std::string>> items_;
};

std::string JsonString(std::string_view s);
std::string ReadFile(const std::string& path);
void WriteFileOrDie(const std::string& path, const std::string& contents);

}  // namespace peers
