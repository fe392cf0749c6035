// bench_smoke_test.cc — runs `amber bench` (build/bin/amber) on tiny
// configurations of every kind with --json and checks that it works: exit
// status 0, stdout is exactly one JSON object per line holding exactly the
// documented fields ("bench" plus the kind's figures), numeric and positive
// where they must be, and the temporary directory is left empty. Also checks
// --help and that bad input exits with 2. These are not benchmarks: the figures
// themselves are not judged. The whole suite takes a few seconds.
//
// Thread-safety: each test runs its own child process in its own directory.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace amber {
namespace {

const std::string kAmber = std::string(AMBER_BIN_DIR) + "/amber";

struct RunResult {
  int status = -1;  // exit status, -1 if killed
  std::string out;  // stdout (stderr goes to the test log)
};

RunResult RunAmber(const std::vector<std::string>& args) {
  std::string cmd = "'" + kAmber + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// A JSON value of a flat object.
struct JsonValue {
  enum class Kind { kString, kNumber, kBool, kNull } kind = Kind::kNull;
  std::string str;
  double num = 0;
};

// Parses exactly one flat JSON object (string keys; string, number, boolean or
// null values) spanning the whole line. Returns false on anything else.
class FlatJsonParser {
 public:
  explicit FlatJsonParser(const std::string& text) : s_(text) {}

  bool Parse(std::map<std::string, JsonValue>* out) {
    Ws();
    if (!Eat('{')) return false;
    Ws();
    if (Eat('}')) return End();
    for (;;) {
      std::string key;
      Ws();
      if (!String(&key)) return false;
      Ws();
      if (!Eat(':')) return false;
      Ws();
      JsonValue v;
      if (!Value(&v)) return false;
      if (!out->emplace(key, v).second) return false;  // duplicate key
      Ws();
      if (Eat('}')) return End();
      if (!Eat(',')) return false;
    }
  }

 private:
  bool End() {
    Ws();
    return i_ == s_.size();
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  bool Eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool Literal(const char* word) {
    const std::string w(word);
    if (s_.compare(i_, w.size(), w) != 0) return false;
    i_ += w.size();
    return true;
  }
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      if (e == 'u') {
        if (i_ + 4 > s_.size()) return false;
        for (int k = 0; k < 4; ++k)
          if (!std::isxdigit(static_cast<unsigned char>(s_[i_ + k]))) return false;
        i_ += 4;
        *out += '?';
      } else if (std::string("\"\\/bfnrt").find(e) != std::string::npos) {
        *out += e;
      } else {
        return false;
      }
    }
    return false;
  }
  bool Digits() {
    const size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  bool Number(double* out) {
    const size_t start = i_;
    Eat('-');
    if (Eat('0')) {
      // no leading zeros
    } else if (!Digits()) {
      return false;
    }
    if (Eat('.') && !Digits()) return false;
    if (Eat('e') || Eat('E')) {
      if (!Eat('+')) Eat('-');
      if (!Digits()) return false;
    }
    *out = std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    return true;
  }
  bool Value(JsonValue* v) {
    if (i_ >= s_.size()) return false;
    if (s_[i_] == '"') {
      v->kind = JsonValue::Kind::kString;
      return String(&v->str);
    }
    if (Literal("true") || Literal("false")) {
      v->kind = JsonValue::Kind::kBool;
      return true;
    }
    if (Literal("null")) {
      v->kind = JsonValue::Kind::kNull;
      return true;
    }
    v->kind = JsonValue::Kind::kNumber;
    return Number(&v->num);
  }

  const std::string& s_;
  size_t i_ = 0;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(line);
  return lines;
}

// Runs `amber bench KIND ARGS... --json --dir TMP` and checks the output: one
// line, a JSON object with "bench":KIND and exactly `positive` + `nonneg`
// numeric fields, those in `positive` above zero. Returns the object.
std::map<std::string, JsonValue> RunJson(const std::string& kind,
                                         const std::vector<std::string>& extra,
                                         const std::set<std::string>& positive,
                                         const std::set<std::string>& nonneg = {}) {
  testing::TempDir tmp;
  std::vector<std::string> args = {"bench", kind};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), {"--json", "--dir", tmp.path()});
  const RunResult r = RunAmber(args);
  std::map<std::string, JsonValue> obj;
  EXPECT_EQ(r.status, 0) << "amber bench " << kind << " failed; stdout:\n" << r.out;
  const std::vector<std::string> lines = Lines(r.out);
  EXPECT_EQ(lines.size(), 1u) << r.out;
  if (lines.empty()) return obj;
  EXPECT_TRUE(FlatJsonParser(lines[0]).Parse(&obj)) << "not a flat JSON object: " << lines[0];

  EXPECT_EQ(obj["bench"].kind, JsonValue::Kind::kString);
  EXPECT_EQ(obj["bench"].str, kind);
  std::set<std::string> want = positive;
  want.insert(nonneg.begin(), nonneg.end());
  want.insert("bench");
  std::set<std::string> got;
  for (auto& [k, v] : obj) got.insert(k);
  EXPECT_EQ(got, want) << lines[0];
  for (const std::string& f : want) {
    if (f == "bench") continue;
    auto it = obj.find(f);
    if (it == obj.end()) continue;  // reported above
    EXPECT_EQ(it->second.kind, JsonValue::Kind::kNumber) << f << " in " << lines[0];
    if (positive.count(f)) {
      EXPECT_GT(it->second.num, 0) << f << " in " << lines[0];
    } else {
      EXPECT_GE(it->second.num, 0) << f << " in " << lines[0];
    }
  }
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path(), ec))
      << "amber bench " << kind << " left files in " << tmp.path();
  return obj;
}

const std::set<std::string> kPauseFields = {"heap_bytes",   "dirty_bytes",    "pause_ms_median",
                                            "pause_ms_p99", "fork_ms_median", "fork_over_pause"};
const std::set<std::string> kWriteoutFields = {"writeout_mb_s", "raw_seq_mb_s", "ratio"};

TEST(BenchSmoke, Pause) {
  auto obj = RunJson("pause", {"--heap", "64M", "--dirty", "0.01", "--rounds", "20"}, kPauseFields);
  EXPECT_EQ(obj["heap_bytes"].num, 64.0 * 1024 * 1024);
  EXPECT_EQ(obj["dirty_bytes"].num, 164.0 * 4096);  // 1% of 16384 pages
  EXPECT_GE(obj["pause_ms_p99"].num, obj["pause_ms_median"].num);
}

TEST(BenchSmoke, PauseWithThreads) {
  auto obj =
      RunJson("pause", {"--heap", "32M", "--dirty", "1%", "--rounds", "20", "--threads", "2"},
              kPauseFields);
  EXPECT_GE(obj["pause_ms_p99"].num, obj["pause_ms_median"].num);
}

TEST(BenchSmoke, Writeout) { RunJson("writeout", {"--bytes", "16M"}, kWriteoutFields); }

TEST(BenchSmoke, WriteoutWithLimit) {
  std::set<std::string> fields = kWriteoutFields;
  fields.insert({"limit_mb_s", "achieved_mb_s"});
  auto obj = RunJson("writeout", {"--bytes", "8M", "--limit", "64M"}, fields);
  EXPECT_EQ(obj["limit_mb_s"].num, 64);
}

const std::set<std::string> kKvFields = {
    "updates_per_s",       "updates_per_s_no_persistence", "ratio",          "updates_per_section",
    "bytes_written",       "write_amplification",          "peak_rss_bytes", "recover_ms",
    "recover_ms_no_verify"};

TEST(BenchSmoke, Kv) {
  auto obj = RunJson("kv", {"--keys", "20000", "--updates", "40000", "--interval-ms", "50"},
                     kKvFields, {"recover_log_bytes"});
  EXPECT_EQ(obj["updates_per_section"].num, 1);
}

// Updates batched into Sections, with a last batch that is not full: the
// benchmark itself fails if an update is missing or the recovered state does
// not end with the last one.
TEST(BenchSmoke, KvBatchedSections) {
  auto obj = RunJson("kv",
                     {"--keys", "20000", "--updates", "40001", "--interval-ms", "50",
                      "--per-section", "7", "--rounds", "1"},
                     kKvFields, {"recover_log_bytes"});
  EXPECT_EQ(obj["updates_per_section"].num, 7);
}

TEST(BenchSmoke, Commit) {
  RunJson("commit", {"--rounds", "20"}, {"commit_us_median", "fdatasync_us_median"});
}

// A small replay: the first of the three generations writes every page of the
// 8 MiB heap, so all of it is replayed, from a log holding more than that.
TEST(BenchSmoke, Replay) {
  auto obj =
      RunJson("replay", {"--heap", "8M", "--generations", "3", "--rounds", "2"},
              {"replay_ms_median", "log_bytes", "replayed_bytes"}, {"cache_growth_bytes_median"});
  EXPECT_EQ(obj["replayed_bytes"].num, 8 << 20);
  EXPECT_GT(obj["log_bytes"].num, 8 << 20);
}

TEST(BenchSmoke, Help) {
  const RunResult r = RunAmber({"bench", "--help"});
  EXPECT_EQ(r.status, 0);
  for (const char* kind : {"pause", "writeout", "kv", "commit", "replay", "--json", "--dir"})
    EXPECT_NE(r.out.find(kind), std::string::npos) << kind << " missing from:\n" << r.out;
}

TEST(BenchSmoke, BadInputExitsWith2) {
  const std::vector<std::vector<std::string>> bad = {
      {"bench"},
      {"bench", "nosuch"},
      {"bench", "pause", "--heap", "12X"},
      {"bench", "pause", "--heap", "-1G"},
      {"bench", "pause", "--dirty", "0"},
      {"bench", "pause", "--dirty", "1.5"},
      {"bench", "pause", "--dirty", "abc"},
      {"bench", "pause", "--rounds", "5"},
      {"bench", "pause", "--threads", "x"},
      {"bench", "pause", "--bytes", "1M"},
      {"bench", "pause", "--heap", "1G", "--heap", "2G"},
      {"bench", "pause", "extra"},
      {"bench", "writeout", "--limit", "fast"},
      {"bench", "kv", "--keys", "1.5"},
      {"bench", "kv", "--interval-ms", "-5"},
      {"bench", "commit", "--rounds", "0"},
      {"bench", "commit", "--dir", "/nonexistent/amber-bench-dir"},
      {"bench", "replay", "--fraction", "2"},
      {"bench", "replay", "--generations", "0"},
  };
  for (const auto& args : bad) {
    const RunResult r = RunAmber(args);
    std::string cmd;
    for (auto& a : args) cmd += a + " ";
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_TRUE(r.out.empty()) << cmd << "wrote to stdout: " << r.out;
  }
}

}  // namespace
}  // namespace amber
