// bench/peers/kv_map.cc — std::unordered_map as the upper bound (--mode=memory,
// no persistence) and the do-it-yourself persistence most programs start with
// (--mode=dump: the whole map written to a new file every second, fsync, rename,
// fsync of the directory; the program stops while it writes).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

constexpr uint64_t kDumpMagic = 0x31504d55444b5621ull;  // "!VKDUMP1"
constexpr size_t kRecordBytes = kKeyBytes + kValueBytes;

class MapStore : public KvStore {
 public:
  MapStore(const Config& cfg, bool dump) : cfg_(cfg), dump_(dump) {}

  std::string Describe() const override {
    return dump_ ? "std::unordered_map; every second the whole map is written to a new file, "
                   "fsync, rename over the old one, fsync of the directory (the program "
                   "waits while it writes)"
                 : "std::unordered_map in memory, no persistence (upper bound)";
  }
  std::string Version() const override { return "libstdc++ " + std::to_string(__GLIBCXX__); }
  bool Persistent() const override { return dump_; }

  void Open(bool create) override {
    path_ = cfg_.dir + "/map.dump";
    if (create) {
      last_sync_ = Now();
      return;
    }
    Load();
  }
  void BeginLoad(uint64_t keys) override { map_.reserve(keys); }
  void Put(uint64_t key, const Value& value) override { map_.insert_or_assign(key, value); }
  void Tick(double now) override {
    if (dump_ && now - last_sync_ >= cfg_.sync_interval_ms / 1e3) {
      Dump();
      last_sync_ = Now();  // the next interval starts when this sync ends
    }
  }
  void Flush() override {
    if (dump_) {
      Dump();
      last_sync_ = Now();
    }
  }
  void BeginUpdates() override { dump_ms_.clear(); }

  bool Get(uint64_t key, Value* value) override {
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    *value = it->second;
    return true;
  }

  void AddReport(Report* r) override {
    if (dump_) {
      r->Int("dumps", dump_ms_.size());
      if (!dump_ms_.empty()) {
        std::vector<double> v = dump_ms_;
        std::sort(v.begin(), v.end());
        r->Num("pause_ms_median", v[v.size() / 2]);
        r->Num("pause_ms_max", v.back());
        r->Str("pause_kind", "whole-map dump (write + fsync + rename)");
      }
    } else {
      // What a fork-based snapshot (Redis's way) would cost this process: the
      // fork() call itself, in the parent, with the map fully built.
      std::vector<double> forks;
      for (int i = 0; i < 5; i++) {
        double t0 = Now();
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        double t1 = Now();
        if (pid < 0) Die("fork: %s", std::strerror(errno));
        waitpid(pid, nullptr, 0);
        forks.push_back((t1 - t0) * 1e3);
      }
      std::sort(forks.begin(), forks.end());
      r->Num("fork_ms_median", forks[forks.size() / 2]);
      r->Num("fork_ms_max", forks.back());
      r->Int("fork_rss_bytes", CurrentRss(0));
    }
    r->Int("heap_bytes", CurrentRss(0));
  }

 private:
  void Dump() {
    double t0 = Now();
    std::string tmp = path_ + ".tmp";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) Die("open %s: %s", tmp.c_str(), std::strerror(errno));
    std::vector<char> buf;
    buf.reserve(1 << 20);
    auto flush = [&] {
      size_t off = 0;
      while (off < buf.size()) {
        ssize_t n = write(fd, buf.data() + off, buf.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) Die("write %s: %s", tmp.c_str(), std::strerror(errno));
        off += static_cast<size_t>(n);
      }
      buf.clear();
    };
    auto append = [&](const void* p, size_t n) {
      const char* c = static_cast<const char*>(p);
      buf.insert(buf.end(), c, c + n);
      if (buf.size() >= (1 << 20) - kRecordBytes) flush();
    };
    uint64_t header[2] = {kDumpMagic, map_.size()};
    append(header, sizeof(header));
    uint64_t sum = 0;
    for (const auto& [key, value] : map_) {
      append(&key, sizeof(key));
      append(value.data(), value.size());
      sum += Mix(key ^ SeqOf(value));
    }
    append(&sum, sizeof(sum));
    flush();
    if (fsync(fd) != 0) Die("fsync %s: %s", tmp.c_str(), std::strerror(errno));
    close(fd);
    if (rename(tmp.c_str(), path_.c_str()) != 0) Die("rename: %s", std::strerror(errno));
    SyncDir(cfg_.dir);
    dump_ms_.push_back((Now() - t0) * 1e3);
  }

  void Load() {
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Die("open %s: %s", path_.c_str(), std::strerror(errno));
    std::vector<char> buf(1 << 20);
    size_t have = 0, pos = 0;
    bool eof = false;
    // Makes at least n bytes available at buf[pos].
    auto need = [&](size_t n) {
      if (have - pos >= n) return true;
      std::memmove(buf.data(), buf.data() + pos, have - pos);
      have -= pos;
      pos = 0;
      while (!eof && have < n) {
        ssize_t r = read(fd, buf.data() + have, buf.size() - have);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) Die("read %s: %s", path_.c_str(), std::strerror(errno));
        if (r == 0) eof = true;
        have += static_cast<size_t>(r);
      }
      return have >= n;
    };
    uint64_t header[2];
    if (!need(sizeof(header))) Die("%s: truncated", path_.c_str());
    std::memcpy(header, buf.data(), sizeof(header));
    pos += sizeof(header);
    if (header[0] != kDumpMagic) Die("%s: bad magic", path_.c_str());
    map_.reserve(header[1]);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < header[1]; i++) {
      if (!need(kRecordBytes)) Die("%s: truncated", path_.c_str());
      uint64_t key;
      Value value;
      std::memcpy(&key, buf.data() + pos, sizeof(key));
      std::memcpy(value.data(), buf.data() + pos + sizeof(key), value.size());
      pos += kRecordBytes;
      sum += Mix(key ^ SeqOf(value));
      map_.emplace(key, value);
    }
    uint64_t stored;
    if (!need(sizeof(stored))) Die("%s: truncated", path_.c_str());
    std::memcpy(&stored, buf.data() + pos, sizeof(stored));
    if (stored != sum) Die("%s: checksum mismatch", path_.c_str());
    close(fd);
  }

  Config cfg_;
  bool dump_;
  std::string path_;
  double last_sync_ = 0;
  std::unordered_map<uint64_t, Value> map_;
  std::vector<double> dump_ms_;
};

std::unique_ptr<KvStore> Make(const Config& cfg) {
  return std::make_unique<MapStore>(cfg, cfg.mode == "dump");
}

std::string SystemFor(const std::string& mode) {
  if (mode.empty() || mode == "memory") return "map";
  if (mode == "dump") return "map-dump";
  return "";
}

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-map", peers::Make, peers::SystemFor);
}
