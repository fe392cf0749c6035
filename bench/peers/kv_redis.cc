// bench/peers/kv_redis.cc — a real redis-server on 127.0.0.1 (started by this
// program on a free port, in the run's data directory) and a pipelined client
// speaking RESP over one TCP connection: SETs go out in batches of 256.
//   --mode=rdb  `save 1 1`: a fork()ed child writes a snapshot whenever a second
//               has passed and something changed (a snapshot that takes longer than
//               a second misses the one-second target);
//   --mode=aof  `appendonly yes`, `appendfsync everysec` (and the default
//               automatic AOF rewrites).
// The final Flush makes everything durable: rdb waits for a running BGSAVE and
// then runs SAVE; aof switches to `appendfsync always` and re-sends the last SET,
// whose reply comes after the fsync. Device bytes are read from
// /proc/<redis-server pid>/io, which includes its reaped fork children.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

constexpr size_t kPipeline = 256;

struct Reply {
  char type = 0;  // '+', '-', ':', '$' (str; nil when is_nil), '*'
  std::string str;
  int64_t integer = 0;
  bool is_nil = false;
};

// One blocking RESP connection.
class RespClient {
 public:
  ~RespClient() {
    if (fd_ >= 0) close(fd_);
  }

  // Retries for up to `timeout_s` while the server starts.
  void Connect(int port, double timeout_s) {
    double deadline = Now() + timeout_s;
    for (;;) {
      fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd_ < 0) Die("socket: %s", std::strerror(errno));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) break;
      close(fd_);
      fd_ = -1;
      if (Now() > deadline) Die("redis: cannot connect to 127.0.0.1:%d", port);
      usleep(1000);
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }

  void Append(std::initializer_list<std::string_view> args) {
    out_ += '*';
    out_ += std::to_string(args.size());
    out_ += "\r\n";
    for (std::string_view a : args) {
      out_ += '$';
      out_ += std::to_string(a.size());
      out_ += "\r\n";
      out_.append(a.data(), a.size());
      out_ += "\r\n";
    }
  }

  void Send() {
    size_t off = 0;
    while (off < out_.size()) {
      ssize_t n = send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) Die("redis: send: %s", std::strerror(errno));
      off += static_cast<size_t>(n);
    }
    out_.clear();
  }

  void Read(Reply* r) {
    std::string_view line = ReadLine();
    r->type = line[0];
    r->is_nil = false;
    r->str.clear();
    std::string_view rest = line.substr(1);
    switch (r->type) {
      case '+':
      case '-':
        r->str.assign(rest);
        break;
      case ':':
      case '*':
        r->integer = std::strtoll(std::string(rest).c_str(), nullptr, 10);
        if (r->type == '*') {
          Reply elem;  // not needed by this client: read and drop
          for (int64_t i = 0; i < r->integer; i++) Read(&elem);
        }
        break;
      case '$': {
        int64_t len = std::strtoll(std::string(rest).c_str(), nullptr, 10);
        if (len < 0) {
          r->is_nil = true;
          break;
        }
        Fill(static_cast<size_t>(len) + 2);
        r->str.assign(buf_.data() + pos_, static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len) + 2;
        break;
      }
      default:
        Die("redis: unexpected reply byte '%c'", r->type);
    }
  }

  Reply Command(std::initializer_list<std::string_view> args) {
    Append(args);
    Send();
    Reply r;
    Read(&r);
    return r;
  }

 private:
  // Makes n bytes available at buf_[pos_].
  void Fill(size_t n) {
    if (len_ - pos_ >= n) return;
    std::memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
    len_ -= pos_;
    pos_ = 0;
    if (buf_.size() < n) buf_.resize(n);
    while (len_ < n) {
      ssize_t got = recv(fd_, buf_.data() + len_, buf_.size() - len_, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) Die("redis: connection lost: %s", got == 0 ? "EOF" : std::strerror(errno));
      len_ += static_cast<size_t>(got);
    }
  }

  std::string_view ReadLine() {
    for (size_t scanned = 0;;) {
      const char* start = buf_.data() + pos_;
      const void* nl = std::memchr(start + scanned, '\n', len_ - pos_ - scanned);
      if (nl != nullptr) {
        size_t n = static_cast<size_t>(static_cast<const char*>(nl) - start);
        pos_ += n + 1;
        if (n == 0 || start[n - 1] != '\r') Die("redis: malformed reply");
        return std::string_view(start, n - 1);
      }
      scanned = len_ - pos_;
      Fill(scanned + 1);
    }
  }

  int fd_ = -1;
  std::string out_;
  std::vector<char> buf_ = std::vector<char>(1 << 20);
  size_t pos_ = 0, len_ = 0;
};

std::string InfoField(const std::string& info, const char* name) {
  std::string key = std::string(name) + ":";
  size_t pos = 0;
  while ((pos = info.find(key, pos)) != std::string::npos) {
    if (pos == 0 || info[pos - 1] == '\n') {
      size_t end = info.find_first_of("\r\n", pos);
      return info.substr(pos + key.size(), end - pos - key.size());
    }
    pos += key.size();
  }
  return "";
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("cannot find a free port: %s", std::strerror(errno));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

class RedisStore : public KvStore {
 public:
  RedisStore(const Config& cfg, bool aof) : cfg_(cfg), aof_(aof) {}
  ~RedisStore() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  std::string Describe() const override {
    return aof_ ? "Redis, AOF (appendonly yes, appendfsync everysec, default rewrites), "
                  "pipelined client (256 SETs a batch) over loopback TCP"
                : "Redis, RDB snapshots by fork (save 1 1), pipelined client (256 SETs a "
                  "batch) over loopback TCP";
  }
  std::string Version() const override { return "Redis " + version_; }

  void Open(bool) override {
    StartServer();
    client_.Connect(port_, 30);
    Reply r;
    // Wait out LOADING (recovery reads the RDB or AOF before serving).
    while ((r = client_.Command({"PING"})).type == '-' && r.str.rfind("LOADING", 0) == 0) {
      usleep(1000);
    }
    std::string info = Info("server");
    version_ = InfoField(info, "redis_version");
    last_info_ = Now();
    forks_seen_ = std::strtoull(InfoField(Info("stats"), "total_forks").c_str(), nullptr, 10);
  }

  void Put(uint64_t key, const Value& value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    client_.Append(
        {"SET", std::string_view(k, sizeof(k)), std::string_view(value.data(), value.size())});
    last_key_ = key;
    last_value_ = value;
    if (++pending_ >= kPipeline) Drain();
  }

  void Tick(double now) override {
    if (now - last_info_ >= 1.0) {
      last_info_ = now;
      Drain();
      PollForks();
    }
  }

  void Flush() override {
    Drain();
    if (aof_) {
      Expect(client_.Command({"CONFIG", "SET", "appendfsync", "always"}), "CONFIG SET");
      Put(last_key_, last_value_);
      Drain();
      Expect(client_.Command({"CONFIG", "SET", "appendfsync", "everysec"}), "CONFIG SET");
    } else {
      while (InfoField(Info("persistence"), "rdb_bgsave_in_progress") == "1") usleep(5000);
      PollForks();
      Expect(client_.Command({"SAVE"}), "SAVE");
    }
  }

  void BeginUpdates() override { fork_ms_.clear(); }

  bool Get(uint64_t key, Value* value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    for (;;) {
      Reply r = client_.Command({"GET", std::string_view(k, sizeof(k))});
      if (r.type == '-' && r.str.rfind("LOADING", 0) == 0) {
        usleep(1000);
        continue;
      }
      return Decode(r, value);
    }
  }

  void MultiGet(const uint64_t* keys, size_t n, Value* values, bool* found) override {
    char k[kKeyBytes];
    for (size_t i = 0; i < n; i++) {
      EncodeKey(keys[i], k);
      client_.Append({"GET", std::string_view(k, sizeof(k))});
    }
    client_.Send();
    Reply r;
    for (size_t i = 0; i < n; i++) {
      client_.Read(&r);
      found[i] = Decode(r, &values[i]);
    }
  }

  pid_t ServerPid() const override { return pid_; }

  void AddReport(Report* r) override {
    PollForks();
    std::string mem = Info("memory");
    std::string stats = Info("stats");
    std::string pers = Info("persistence");
    uint64_t used = std::strtoull(InfoField(mem, "used_memory").c_str(), nullptr, 10);
    r->Int("heap_bytes", used);
    r->Int("redis_used_memory", used);
    r->Int("redis_total_forks",
           std::strtoull(InfoField(stats, "total_forks").c_str(), nullptr, 10));
    r->Num("redis_latest_fork_usec",
           std::strtod(InfoField(stats, "latest_fork_usec").c_str(), nullptr));
    r->Int("redis_rdb_saves", std::strtoull(InfoField(pers, "rdb_saves").c_str(), nullptr, 10));
    r->Num("redis_rdb_last_bgsave_time_sec",
           std::strtod(InfoField(pers, "rdb_last_bgsave_time_sec").c_str(), nullptr));
    r->Int("redis_aof_rewrites",
           std::strtoull(InfoField(pers, "aof_rewrites").c_str(), nullptr, 10));
    r->Int("redis_snapshot_forks_sampled", fork_ms_.size());
    if (!fork_ms_.empty()) {
      std::vector<double> v = fork_ms_;
      std::sort(v.begin(), v.end());
      r->Num("pause_ms_median", v[v.size() / 2]);
      r->Num("pause_ms_max", v.back());
      r->Str("pause_kind", "fork() in redis-server (latest_fork_usec)");
    }
  }

  void Crash() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  void Close() override {
    if (pid_ <= 0) return;
    client_.Append({"SHUTDOWN", "NOSAVE"});
    client_.Send();
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  void StartServer() {
    port_ = FreePort();
    std::string log = cfg_.dir + ".redis.log";
    std::vector<std::string> args = {"redis-server", "--port",    std::to_string(port_),
                                     "--bind",       "127.0.0.1", "--dir",
                                     cfg_.dir,       "--logfile", log,
                                     "--daemonize",  "no",        "--dbfilename",
                                     "dump.rdb"};
    if (aof_) {
      for (const char* a : {"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"}) {
        args.push_back(a);
      }
    } else {
      for (const char* a : {"--save", "1 1", "--appendonly", "no"}) args.push_back(a);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) Die("fork: %s", std::strerror(errno));
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      execvp("redis-server", argv.data());
      std::fprintf(stderr, "kv-peers: exec redis-server: %s\n", std::strerror(errno));
      _exit(127);
    }
  }

  std::string Info(const char* section) {
    Reply r = client_.Command({"INFO", section});
    if (r.type != '$') Die("redis INFO: %s", r.str.c_str());
    return r.str;
  }

  void Drain() {
    if (pending_ == 0) return;
    client_.Send();
    Reply r;
    for (; pending_ > 0; pending_--) {
      client_.Read(&r);
      if (r.type != '+') Die("redis SET: %s", r.str.c_str());
    }
  }

  // Records the fork pause of each snapshot the server took since the last poll
  // (only the latest if several happened in between).
  void PollForks() {
    std::string stats = Info("stats");
    uint64_t forks = std::strtoull(InfoField(stats, "total_forks").c_str(), nullptr, 10);
    if (forks > forks_seen_) {
      forks_seen_ = forks;
      fork_ms_.push_back(std::strtod(InfoField(stats, "latest_fork_usec").c_str(), nullptr) / 1e3);
    }
  }

  static void Expect(const Reply& r, const char* what) {
    if (r.type != '+') Die("redis %s: %s", what, r.str.c_str());
  }

  static bool Decode(const Reply& r, Value* value) {
    if (r.type != '$') Die("redis GET: %s", r.str.c_str());
    if (r.is_nil) return false;
    if (r.str.size() != value->size()) Die("redis: value of %zu bytes", r.str.size());
    std::memcpy(value->data(), r.str.data(), value->size());
    return true;
  }

  Config cfg_;
  bool aof_;
  pid_t pid_ = -1;
  int port_ = 0;
  RespClient client_;
  size_t pending_ = 0;
  std::string version_;
  double last_info_ = 0;
  uint64_t forks_seen_ = 0;
  std::vector<double> fork_ms_;
  uint64_t last_key_ = 0;
  Value last_value_{};
};

std::unique_ptr<KvStore> Make(const Config& cfg) {
  return std::make_unique<RedisStore>(cfg, cfg.mode == "aof");
}

std::string SystemFor(const std::string& mode) {
  if (mode.empty() || mode == "rdb") return "redis-rdb";
  if (mode == "aof") return "redis-aof";
  return "";
}

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-redis", peers::Make, peers::SystemFor);
}
