// crash_worker — the child process of the crash tests.
//
//   crash_worker run STORE SEED [--threads N] [--interval-ms MS] [--checkpoint-every K]
//                    [--commit-threads C] [--log-kib L]
//       Opens (or recovers) the store and extends per-thread hash chains forever,
//       each step inside a Section, with automatic checkpoints every MS ms. Every
//       K steps thread 0 calls Checkpoint() and, when it returns, prints
//       "durable <steps of every chain>" and "migrations <count so far>" on stdout.
//       With C > 0, threads 1..C also call Commit() every K/4 of their own steps and
//       print "commit <thread> <steps of its chain>" when it returns (group commit
//       under kill -9). L sets the log size when the store is created (a small log
//       makes migration run every few checkpoints). The test kills it with SIGKILL.
//   crash_worker verify STORE [MIN_STEPS...]
//       Reopens the store and checks every chain is exactly a prefix of its
//       deterministic sequence (a state some checkpoint captured, never a mix) and
//       at least MIN_STEPS long. Prints "ok <steps...>" or "bad <reason>", exits 0/1.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "amber/amber.h"
#include "test_util.h"

namespace {

constexpr int kMaxThreads = 8;

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x;
}

// A chain in the heap, and the same chain simulated with std containers for
// verification. `recent` grows and is trimmed, `blobs` is rewritten: both keep
// the allocator busy (allocation, free, reuse) while staying bounded in size.
template <class Vec, class Map>
struct ChainT {
  uint64_t steps = 0;
  uint64_t hash = 0;
  Vec recent;
  Map blobs;
};
using Chain = ChainT<amber::vector<uint64_t>, amber::map<uint64_t, amber::string>>;
using SimChain = ChainT<std::vector<uint64_t>, std::map<uint64_t, std::string>>;
struct Root {
  uint64_t threads = 0;
  Chain chains[kMaxThreads];
};

// One step of chain t: deterministic given (t, steps, hash).
template <class C>
void Step(C& c, uint64_t t) {
  uint64_t v = Mix(c.hash, c.steps * kMaxThreads + t);
  c.recent.push_back(v);
  if (c.recent.size() > 3000) c.recent.erase(c.recent.begin(), c.recent.begin() + 1500);
  if (v % 7 == 0) {
    using Str = typename decltype(c.blobs)::mapped_type;
    c.blobs[c.steps % 64] = Str(16 + v % 300, static_cast<char>('a' + v % 26));
  }
  c.hash = Mix(c.hash, v);
  // Atomic: thread 0 reads every chain's length for its "durable" report while the
  // chain's own thread extends it (Sections do not exclude each other).
  std::atomic_ref<uint64_t>(c.steps).store(c.steps + 1, std::memory_order_release);
}

amber::Options WorkerOptions(uint32_t interval_ms, uint64_t log_kib = 32 << 10) {
  amber::Options o;
  o.capacity = uint64_t{256} << 20;
  o.log_size = log_kib << 10;
  o.base_address = amber::testing::TestBase(1);
  o.checkpoint_interval_ms = interval_ms;
  o.checkpoint_on_close = false;
  o.verify_on_open = true;
  return o;
}

std::mutex g_out_mu;  // one line at a time on stdout

void Report(const std::string& line) {
  std::lock_guard<std::mutex> l(g_out_mu);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int Run(const std::string& path, uint64_t seed, int threads, uint32_t interval_ms, uint64_t every,
        int commit_threads, uint64_t log_kib) {
  auto heap = amber::Heap::Open(path, WorkerOptions(interval_ms, log_kib));
  if (!heap.ok()) {
    std::fprintf(stderr, "open: %s\n", heap.status().ToString().c_str());
    return 2;
  }
  auto root = (*heap)->Root<Root>("crash-root");
  if (!root.ok()) return 2;
  Root* r = *root;
  {
    amber::Section s(**heap);
    if (r->threads == 0) r->threads = static_cast<uint64_t>(threads);
  }
  threads = static_cast<int>(r->threads);
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const bool commits = t <= commit_threads;
      const uint64_t commit_every = std::max<uint64_t>(1, every / 4);
      for (uint64_t i = 1;; ++i) {
        {
          amber::Section s(**heap);
          Step(r->chains[t], static_cast<uint64_t>(t));
        }
        if ((i + seed) % 1024 == 0) std::this_thread::yield();
        if (commits && (i + seed) % commit_every == 0) {
          const uint64_t steps = r->chains[t].steps;  // only this thread writes chain t
          amber::Status st = (*heap)->Commit();
          if (!st.ok()) {
            std::fprintf(stderr, "commit: %s\n", st.ToString().c_str());
            std::_Exit(3);
          }
          Report("commit " + std::to_string(t) + " " + std::to_string(steps));
        }
      }
    });
  }
  for (uint64_t i = 1;; ++i) {
    {
      amber::Section s(**heap);
      Step(r->chains[0], 0);
    }
    if (i % every == 0) {
      // Read the chain lengths inside a section so they form one captured state,
      // then make everything up to here durable before reporting it.
      std::vector<uint64_t> steps;
      {
        amber::Section s(**heap);
        for (int t = 0; t < threads; ++t)
          steps.push_back(
              std::atomic_ref<uint64_t>(r->chains[t].steps).load(std::memory_order_acquire));
      }
      amber::Status st = (*heap)->Checkpoint();
      if (!st.ok()) {
        std::fprintf(stderr, "checkpoint: %s\n", st.ToString().c_str());
        return 3;
      }
      std::string line = "durable";
      for (auto n : steps) line += " " + std::to_string(n);
      Report(line);
      Report("migrations " + std::to_string((*heap)->GetStats().migrations));
    }
  }
}

int Verify(const std::string& path, const std::vector<uint64_t>& min_steps) {
  auto heap = amber::Heap::Open(path, WorkerOptions(0));
  if (!heap.ok()) {
    std::printf("bad open: %s\n", heap.status().ToString().c_str());
    return 1;
  }
  auto root = (*heap)->Root<Root>("crash-root");
  if (!root.ok()) {
    std::printf("bad root: %s\n", root.status().ToString().c_str());
    return 1;
  }
  Root* r = *root;
  std::string out = "ok";
  for (uint64_t t = 0; t < r->threads; ++t) {
    const Chain& c = r->chains[t];
    amber::Section s(**heap);
    // Replay the deterministic sequence with std containers and compare all.
    SimChain sim;
    while (sim.steps < c.steps) Step(sim, t);
    bool same = sim.hash == c.hash && sim.recent.size() == c.recent.size() &&
                std::equal(sim.recent.begin(), sim.recent.end(), c.recent.begin()) &&
                sim.blobs.size() == c.blobs.size();
    for (auto& [k, v] : sim.blobs) {
      auto it = c.blobs.find(k);
      same = same && it != c.blobs.end() && std::string(it->second.data(), it->second.size()) == v;
    }
    if (!same) {
      std::printf("bad chain %" PRIu64 ": state at step %" PRIu64 " is not the deterministic one\n",
                  t, c.steps);
      return 1;
    }
    if (t < min_steps.size() && c.steps < min_steps[t]) {
      std::printf("bad chain %" PRIu64 ": %" PRIu64 " steps, but %" PRIu64
                  " were reported durable\n",
                  t, c.steps, min_steps[t]);
      return 1;
    }
    out += " " + std::to_string(c.steps);
  }
  (*heap)->Close().IgnoreError();
  std::printf("%s\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: crash_worker run|verify STORE ...\n");
    return 2;
  }
  std::string mode = argv[1], path = argv[2];
  if (mode == "verify") {
    std::vector<uint64_t> mins;
    for (int i = 3; i < argc; ++i) mins.push_back(std::strtoull(argv[i], nullptr, 10));
    return Verify(path, mins);
  }
  if (mode != "run" || argc < 4) return 2;
  uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  int threads = 1;
  uint32_t interval = 3;
  uint64_t every = 200;
  int commit_threads = 0;
  uint64_t log_kib = 32 << 10;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--commit-threads")) commit_threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--log-kib")) log_kib = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--interval-ms"))
      interval = static_cast<uint32_t>(std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--checkpoint-every"))
      every = std::strtoull(argv[i + 1], nullptr, 10);
  }
  threads = std::max(1, std::min(threads, kMaxThreads));
  return Run(path, seed, threads, interval, every, commit_threads, log_kib);
}
