// bench/peers/common.cc — see common.h.
#include "common.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <numeric>

namespace peers {

void Die(const char* fmt, ...) {
  std::fflush(stdout);
  std::fputs("kv-peers: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(2);
}

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// --- keys and values --------------------------------------------------------------

void MakeValue(uint64_t key, uint32_t seq, Value* out) {
  char* p = out->data();
  std::memcpy(p, &key, 8);
  std::memcpy(p + 8, &seq, 4);
  uint64_t h = Mix(key ^ (static_cast<uint64_t>(seq) << 32 | seq));
  for (size_t off = 12; off < kValueBytes; off += 8) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    std::memcpy(p + off, &h, 8);  // 12 + 11 * 8 = 100
  }
}

uint32_t SeqOf(const Value& v) {
  uint32_t seq;
  std::memcpy(&seq, v.data() + 8, 4);
  return seq;
}

void EncodeKey(uint64_t key, char out[kKeyBytes]) {
  for (size_t i = 0; i < kKeyBytes; i++) out[i] = static_cast<char>(key >> (56 - 8 * i));
}

uint64_t DecodeKey(const char in[kKeyBytes]) {
  uint64_t k = 0;
  for (size_t i = 0; i < kKeyBytes; i++) k = (k << 8) | static_cast<unsigned char>(in[i]);
  return k;
}

// --- distributions --------------------------------------------------------------------

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) {
    seed += 0x9e3779b97f4a7c15ull;
    s = Mix(seed);
  }
}

uint64_t Rng::Next() {
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

Permutation::Permutation(uint64_t n, uint64_t seed) : n_(n) {
  while ((uint64_t{1} << (2 * half_bits_)) < n_) half_bits_++;
  mask_ = (uint64_t{1} << half_bits_) - 1;
  for (auto& k : keys_) {
    seed += 0x9e3779b97f4a7c15ull;
    k = Mix(seed);
  }
}

uint64_t Permutation::operator()(uint64_t x) const {
  do {
    uint64_t l = x >> half_bits_, r = x & mask_;
    for (uint64_t k : keys_) {
      uint64_t next = l ^ (Mix(r ^ k) & mask_);
      l = r;
      r = next;
    }
    x = (l << half_bits_) | r;
  } while (x >= n_);  // cycle walking: stays a bijection on [0, n)
  return x;
}

KeyChooser::KeyChooser(uint64_t n, double theta, uint64_t seed)
    : n_(n), theta_(theta), rng_(seed), scatter_(n, seed ^ 0x21bf) {
  if (n == 0) Die("empty key space");
  if (theta_ <= 0) return;
  if (theta_ >= 1) Die("zipf theta must be in (0, 1)");
  double zeta2 = 1.0 + std::pow(0.5, theta_);
  for (uint64_t i = 1; i <= n_; i++) zetan_ += std::pow(static_cast<double>(i), -theta_);
  alpha_ = 1.0 / (1.0 - theta_);
  eta_ = (1.0 - std::pow(2.0 / static_cast<double>(n_), 1.0 - theta_)) / (1.0 - zeta2 / zetan_);
  half_pow_theta_ = std::pow(0.5, theta_);
}

uint64_t KeyChooser::Next() {
  if (theta_ <= 0) return rng_.Below(n_);
  double u = rng_.NextDouble();
  double uz = u * zetan_;
  uint64_t rank;
  if (uz < 1.0) {
    rank = 0;
  } else if (uz < 1.0 + half_pow_theta_) {
    rank = 1;
  } else {
    rank = static_cast<uint64_t>(static_cast<double>(n_) * std::pow(eta_ * u - eta_ + 1.0, alpha_));
    if (rank >= n_) rank = n_ - 1;
  }
  return scatter_(rank);
}

std::vector<uint32_t> ExpectedSeqs(uint64_t n, double theta, uint64_t seed, uint64_t updates) {
  std::vector<uint32_t> seqs(n, 0);
  KeyChooser chooser(n, theta, seed);
  for (uint64_t u = 0; u < updates; u++) seqs[chooser.Next()] = static_cast<uint32_t>(u + 1);
  return seqs;
}

// --- measurements -------------------------------------------------------------------------

static std::string ProcPath(pid_t pid, const char* leaf) {
  return pid == 0 ? std::string("/proc/self/") + leaf : "/proc/" + std::to_string(pid) + "/" + leaf;
}

static uint64_t FieldOf(const std::string& text, const char* name) {
  size_t pos = 0;
  size_t len = std::strlen(name);
  while ((pos = text.find(name, pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      return std::strtoull(text.c_str() + pos + len, nullptr, 10);
    }
    pos += len;
  }
  return 0;
}

ProcIo ReadProcIo(pid_t pid) {
  std::string text = ReadFile(ProcPath(pid, "io"));
  ProcIo io;
  io.write_bytes = FieldOf(text, "write_bytes:");
  io.cancelled_write_bytes = FieldOf(text, "cancelled_write_bytes:");
  io.read_bytes = FieldOf(text, "read_bytes:");
  return io;
}

uint64_t PeakRss(pid_t pid) { return FieldOf(ReadFile(ProcPath(pid, "status")), "VmHWM:") * 1024; }
uint64_t CurrentRss(pid_t pid) {
  return FieldOf(ReadFile(ProcPath(pid, "status")), "VmRSS:") * 1024;
}

double CpuSeconds(pid_t pid) {
  std::string text = ReadFile(ProcPath(pid, "stat"));
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  // Fields after the command name, starting with field 3 (state).
  std::vector<std::string> f;
  size_t pos = paren + 2;
  while (pos < text.size() && f.size() < 20) {
    size_t sp = text.find(' ', pos);
    if (sp == std::string::npos) sp = text.size();
    f.push_back(text.substr(pos, sp - pos));
    pos = sp + 1;
  }
  if (f.size() < 15) return 0;
  double ticks = 0;
  for (int i = 11; i <= 14; i++) ticks += std::strtod(f[i].c_str(), nullptr);  // utime..cstime
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double LoadAverage() { return std::strtod(ReadFile("/proc/loadavg").c_str(), nullptr); }

namespace {
DiskUsage* g_usage = nullptr;
int AddUsage(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_F) {
    g_usage->allocated += static_cast<uint64_t>(st->st_blocks) * 512;
    g_usage->apparent += static_cast<uint64_t>(st->st_size);
    g_usage->files++;
  }
  return 0;
}
int DropOne(const char* path, const struct stat*, int type, struct FTW*) {
  if (type != FTW_F) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  fsync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return 0;
}
int RemoveOne(const char* path, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP) {
    rmdir(path);
  } else {
    unlink(path);
  }
  return 0;
}
}  // namespace

DiskUsage MeasureDisk(const std::string& dir) {
  DiskUsage usage;
  g_usage = &usage;
  nftw(dir.c_str(), AddUsage, 16, FTW_PHYS);
  g_usage = nullptr;
  return usage;
}

void DropDirCache(const std::string& dir) { nftw(dir.c_str(), DropOne, 16, FTW_PHYS); }

void RemoveTree(const std::string& dir) {
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return;
  nftw(dir.c_str(), RemoveOne, 16, FTW_PHYS | FTW_DEPTH);
}

void MakeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); pos++) {
    if (pos == dir.size() || dir[pos] == '/') {
      std::string prefix = dir.substr(0, pos);
      if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        Die("mkdir %s: %s", prefix.c_str(), std::strerror(errno));
      }
    }
  }
}

void SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Die("open %s: %s", dir.c_str(), std::strerror(errno));
  if (fsync(fd) != 0) Die("fsync %s: %s", dir.c_str(), std::strerror(errno));
  close(fd);
}

std::string KernelRelease() {
  utsname u;
  if (uname(&u) != 0) return "unknown";
  return u.release;
}

// --- reports ---------------------------------------------------------------------------------

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

static std::string FormatNum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.6g", v);
  }
  return buf;
}

void Report::Set(std::string_view key, std::string json) {
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = std::move(json);
      return;
    }
  }
  items_.emplace_back(std::string(key), std::move(json));
}

void Report::Num(std::string_view key, double v) { Set(key, FormatNum(v)); }
void Report::Int(std::string_view key, uint64_t v) { Set(key, std::to_string(v)); }
void Report::Str(std::string_view key, std::string_view v) { Set(key, JsonString(v)); }
void Report::Bool(std::string_view key, bool v) { Set(key, v ? "true" : "false"); }
void Report::Null(std::string_view key) { Set(key, "null"); }
void Report::Raw(std::string_view key, std::string json) { Set(key, std::move(json)); }
void Report::NumList(std::string_view key, const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) {
    if (i) s += ", ";
    s += FormatNum(v[i]);
  }
  s += "]";
  Set(key, s);
}

const std::string* Report::Find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

double Report::NumOr(std::string_view key, double fallback) const {
  const std::string* v = Find(key);
  if (v == nullptr || v->empty()) return fallback;
  char* end = nullptr;
  double d = std::strtod(v->c_str(), &end);
  return (end != nullptr && *end == '\0') ? d : fallback;
}

std::string Report::Serialize() const {
  std::string out;
  for (const auto& [k, v] : items_) out += k + "\t" + v + "\n";
  return out;
}

Report Report::Parse(const std::string& text) {
  Report r;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    size_t tab = line.find('\t');
    if (tab != std::string::npos) r.Set(line.substr(0, tab), line.substr(tab + 1));
    pos = nl + 1;
  }
  return r;
}

std::string Report::ToJson() const {
  std::string out = "{\n";
  for (size_t i = 0; i < items_.size(); i++) {
    out += "  " + JsonString(items_[i].first) + ": " + items_[i].second;
    out += i + 1 < items_.size() ? ",\n" : "\n";
  }
  out += "}\n";
  return out;
}

std::string ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

void WriteFileOrDie(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) Die("open %s: %s", tmp.c_str(), std::strerror(errno));
  if (std::fwrite(contents.data(), 1, contents.size(), f) != contents.size() ||
      std::fclose(f) != 0) {
    Die("write %s: %s", tmp.c_str(), std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Die("rename %s: %s", path.c_str(), std::strerror(errno));
  }
}

}  // namespace peers
