// Crash test: a child process extends hash chains with automatic checkpoints
// every few milliseconds and is killed with SIGKILL at random moments. After each
// kill a fresh process recovers the store and checks that the state is exactly
// one a checkpoint captured (every chain a prefix of its deterministic sequence)
// and no older than the last checkpoint the child reported durable.
//
// The third variant has threads calling Commit() (group commit) as well, on a
// store with a 1 MiB log so that migration runs every few checkpoints and kills
// land inside it; each Commit() that returned is a durability promise checked
// after the kill like the Checkpoint() reports.
//
// AMBER_CRASH_ITERATIONS overrides the number of kills (default 50, 50 and 40; the
// soak script runs more). AMBER_CRASH_SEED replays a run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace amber {
namespace {

const std::string kWorker = std::string(AMBER_BIN_DIR) + "/crash_worker";

// Runs argv, returns (exit status, stdout).
std::pair<int, std::string> RunCapture(const std::vector<std::string>& args) {
  std::string cmd;
  for (auto& a : args) cmd += "'" + a + "' ";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

struct Killed {
  std::string last_durable;           // "" if none reported
  std::map<int, uint64_t> committed;  // chain -> steps a returned Commit() covered
  uint64_t migrations = 0;            // migrations the child had done at its last report
  std::string errors;                 // the child's stderr
  bool exited_early = false;
};

// Starts the worker and kills it with SIGKILL: if wait_first_report, `ms` after
// its first durable report (so slow builds such as TSan still reach one), else
// `ms` after it started (possibly during recovery). Returns its last report.
Killed RunAndKill(const std::string& store, uint64_t seed, int threads, int ms,
                  bool wait_first_report, const std::string& err_path,
                  const std::vector<std::string>& extra) {
  int out[2];
  EXPECT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> args = {kWorker,
                                   "run",
                                   store,
                                   std::to_string(seed),
                                   "--threads",
                                   std::to_string(threads),
                                   "--interval-ms",
                                   std::to_string(1 + seed % 4),
                                   "--checkpoint-every",
                                   std::to_string(100 + seed % 400)};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  EXPECT_EQ(posix_spawn(&pid, kWorker.c_str(), &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  std::string all;
  char buf[65536];
  ssize_t n;
  if (wait_first_report) {
    // Up to 60 s for the first report (sanitizer builds are slow to start).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (all.find("durable") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{out[0], POLLIN, 0};
      if (poll(&pfd, 1, 100) > 0) {
        n = read(out[0], buf, sizeof(buf));
        if (n <= 0) break;
        all.append(buf, static_cast<size_t>(n));
      }
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  Killed k;
  int status;
  if (waitpid(pid, &status, WNOHANG) != 0) k.exited_early = true;
  kill(pid, SIGKILL);
  if (!k.exited_early) waitpid(pid, &status, 0);
  while ((n = read(out[0], buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(out[0]);
  std::istringstream lines(all);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("durable", 0) == 0 && !line.empty()) k.last_durable = line.substr(7);
    if (line.rfind("migrations ", 0) == 0)
      k.migrations = std::strtoull(line.c_str() + 11, nullptr, 10);
    int chain;
    unsigned long long steps;
    if (std::sscanf(line.c_str(), "commit %d %llu", &chain, &steps) == 2)
      k.committed[chain] = std::max<uint64_t>(k.committed[chain], steps);
  }
  FILE* e = fopen(err_path.c_str(), "r");
  if (e) {
    while ((n = static_cast<ssize_t>(fread(buf, 1, sizeof(buf), e))) > 0)
      k.errors.append(buf, static_cast<size_t>(n));
    fclose(e);
  }
  return k;
}

void CrashLoop(int threads, int default_iterations, const std::vector<std::string>& extra = {}) {
  int iterations = default_iterations;
  if (const char* env = getenv("AMBER_CRASH_ITERATIONS")) iterations = std::atoi(env);
  uint64_t seed0 = std::random_device{}();
  if (const char* env = getenv("AMBER_CRASH_SEED")) seed0 = std::strtoull(env, nullptr, 10);
  std::printf("crash test: %d iterations, %d thread(s), AMBER_CRASH_SEED=%llu\n", iterations,
              threads, static_cast<unsigned long long>(seed0));
  testing::TempDir dir;
  const std::string store = dir.File("crash.amber");
  std::mt19937_64 rng(seed0);
  uint64_t reported = 0, progressed = 0, commits = 0, migrations = 0;
  for (int i = 0; i < iterations; ++i) {
    // Verification replays every chain from the start, so begin a fresh store
    // every 10 kills to keep its cost linear in the number of iterations.
    if (i % 10 == 0) std::remove(store.c_str());
    const uint64_t seed = rng();
    const bool wait_first = rng() % 5 != 0;
    const int ms = static_cast<int>(rng() % (wait_first ? 200 : 120));
    Killed k = RunAndKill(store, seed, threads, ms, wait_first, dir.File("stderr"), extra);
    ASSERT_FALSE(k.exited_early) << "worker exited by itself at iteration " << i << ": "
                                 << k.errors;
    // Minimum steps of each chain: the last Checkpoint() report, raised by the
    // Commit()s that returned.
    std::vector<uint64_t> min_steps;
    std::istringstream mins(k.last_durable);
    for (uint64_t m; mins >> m;) min_steps.push_back(m);
    for (auto [chain, steps] : k.committed) {
      if (min_steps.size() <= static_cast<size_t>(chain)) min_steps.resize(chain + 1, 0);
      min_steps[chain] = std::max(min_steps[chain], steps);
      ++commits;
    }
    migrations += k.migrations;
    std::vector<std::string> verify = {kWorker, "verify", store};
    for (uint64_t m : min_steps) verify.push_back(std::to_string(m));
    if (!k.last_durable.empty()) ++reported;
    auto [code, out] = RunCapture(verify);
    ASSERT_EQ(code, 0) << "iteration " << i << " (AMBER_CRASH_SEED=" << seed0 << "): " << out
                       << " after reported durable:" << k.last_durable << " (with commits)";
    ASSERT_EQ(out.rfind("ok", 0), 0u) << out;
    if (out != "ok 0\n") ++progressed;
  }
  std::printf(
      "crash test: %d kills survived, %llu with a durable report checked, %llu chains "
      "with a returned Commit() checked, %llu migrations done by the killed runs\n",
      iterations, static_cast<unsigned long long>(reported),
      static_cast<unsigned long long>(commits), static_cast<unsigned long long>(migrations));
  // The test must have exercised something: chains grew and durability reports came.
  EXPECT_GT(progressed, 0u);
  EXPECT_GT(reported, static_cast<uint64_t>(iterations) / 4);
}

TEST(CrashTest, KillNineSingleThread) { CrashLoop(1, 50); }
TEST(CrashTest, KillNineFourThreads) { CrashLoop(4, 50); }
// Three of four threads commit; a 1 MiB log: migration every few checkpoints.
TEST(CrashTest, KillNineCommitsAndMigration) {
  CrashLoop(4, 40, {"--commit-threads", "3", "--log-kib", "1024"});
}

}  // namespace
}  // namespace amber
