// alloc_bench.cc — small-object benchmark: amber's in-heap allocator against glibc
// malloc/free on the same precomputed sequence of frees and allocations.
//
//   amber-alloc-bench [--ops N] [--live N] [--reps N] [--threads N] [--no-touch] [--json]
//
// Each repetition fills a live set of `live` objects (16..256 bytes), then times
// `ops` operations: ops/2 steps that each free a random live object and allocate
// a new one of random size in its place, writing 8 bytes into it (as a program
// would; --no-touch skips reading and writing the objects to expose the
// allocators' own cost). The allocator under test is reused across repetitions, as glibc's heap
// is, so both run warm; one untimed warm-up repetition of each comes first.
// Single-threaded times are the thread's CPU time (robust on a shared machine).
// With --threads N, N threads run the same work concurrently on one allocator
// (ops and live set are per thread) and times are wall clock.
//
// Thread-safety: a single-threaded driver apart from the --threads workers, which
// share only the allocator under test.
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "alloc/heap_allocator.h"

namespace {

struct Workload {
  std::vector<uint16_t> fill_sizes;  // initial live set
  std::vector<uint32_t> slots;       // per step: which live object to replace
  std::vector<uint16_t> sizes;       // per step: size of its replacement
};

Workload MakeWorkload(uint64_t ops, uint32_t live, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Workload w;
  w.fill_sizes.resize(live);
  for (auto& s : w.fill_sizes) s = static_cast<uint16_t>(16 + rng() % 241);
  uint64_t steps = ops / 2;
  w.slots.resize(steps);
  w.sizes.resize(steps);
  for (uint64_t i = 0; i < steps; ++i) {
    w.slots[i] = static_cast<uint32_t>(rng() % live);
    w.sizes[i] = static_cast<uint16_t>(16 + rng() % 241);
  }
  return w;
}

volatile uint64_t g_sink;
bool g_touch = true;

double ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct Timing {
  double wall_ns;
  double cpu_ns;  // this thread's CPU time: immune to being descheduled
};

// Times the operations (not the fill or the final frees).
template <class Alloc, class Free>
Timing RunOne(const Workload& w, Alloc alloc, Free release) {
  std::vector<uint64_t*> live(w.fill_sizes.size());
  for (size_t i = 0; i < live.size(); ++i) {
    live[i] = static_cast<uint64_t*>(alloc(w.fill_sizes[i]));
    if (live[i] == nullptr) {
      std::fprintf(stderr, "allocation failed\n");
      std::exit(1);
    }
    *live[i] = i;
  }
  uint64_t sum = 0;
  auto t0 = std::chrono::steady_clock::now();
  double c0 = ThreadCpuNs();
  const size_t steps = w.slots.size();
  for (size_t i = 0; i < steps; ++i) {
    uint64_t*& slot = live[w.slots[i]];
    if (g_touch) sum += *slot;
    release(slot);
    slot = static_cast<uint64_t*>(alloc(w.sizes[i]));
    if (g_touch) *slot = i;
  }
  double c1 = ThreadCpuNs();
  auto t1 = std::chrono::steady_clock::now();
  for (uint64_t* p : live) release(p);
  g_sink = g_sink + sum;
  return {std::chrono::duration<double, std::nano>(t1 - t0).count(), c1 - c0};
}

// Runs `threads` copies of the workload at once; returns ns per op. One thread:
// its CPU time, so that other processes on a shared machine do not distort the
// figure. Several threads: wall clock of the slowest (waiting on a lock counts),
// divided by one thread's ops.
template <class Alloc, class Free>
double Run(const std::vector<Workload>& ws, Alloc alloc, Free release) {
  const double ops = ws[0].slots.size() * 2.0;
  if (ws.size() == 1) return RunOne(ws[0], alloc, release).cpu_ns / ops;
  std::vector<double> ns(ws.size());
  std::vector<std::thread> ts;
  for (size_t t = 0; t < ws.size(); ++t) {
    ts.emplace_back([&, t] { ns[t] = RunOne(ws[t], alloc, release).wall_ns; });
  }
  for (auto& t : ts) t.join();
  return *std::max_element(ns.begin(), ns.end()) / ops;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t ops = 10'000'000;
  uint32_t live = 100'000;
  int reps = 5;
  int threads = 1;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--ops") {
      ops = std::strtoull(next(), nullptr, 10);
    } else if (a == "--live") {
      live = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    } else if (a == "--reps") {
      reps = std::atoi(next());
    } else if (a == "--threads") {
      threads = std::atoi(next());
    } else if (a == "--no-touch") {
      g_touch = false;
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(
          stderr, "usage: %s [--ops N] [--live N] [--reps N] [--threads N] [--no-touch] [--json]\n",
          argv[0]);
      return 2;
    }
  }
  if (ops < 2 || live == 0 || reps < 1 || threads < 1) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }

  const size_t region_len = size_t{4} << 30;
  void* region = mmap(nullptr, region_len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto formatted = amber::HeapAllocator::Format(region, region_len);
  if (!formatted.ok()) {
    std::fprintf(stderr, "%s\n", formatted.status().ToString().c_str());
    return 1;
  }
  amber::HeapAllocator* heap = *formatted;

  std::vector<Workload> ws;
  for (int t = 0; t < threads; ++t) ws.push_back(MakeWorkload(ops, live, 42 + t));

  auto amber_alloc = [heap](size_t n) { return heap->Allocate(n); };
  auto amber_free = [heap](void* p) { heap->Deallocate(p); };
  auto libc_alloc = [](size_t n) { return std::malloc(n); };
  auto libc_free = [](void* p) { std::free(p); };

  Run(ws, amber_alloc, amber_free);  // warm-up: first touch of fresh pages
  Run(ws, libc_alloc, libc_free);
  std::vector<double> amber_ns, libc_ns;
  for (int r = 0; r < reps; ++r) {
    amber_ns.push_back(Run(ws, amber_alloc, amber_free));
    libc_ns.push_back(Run(ws, libc_alloc, libc_free));
  }
  double am = Median(amber_ns), lm = Median(libc_ns);

  if (json) {
    std::printf(
        "{\"bench\":\"alloc\",\"ops\":%llu,\"live\":%u,\"threads\":%d,\"reps\":%d,"
        "\"touch\":%s,\"clock\":\"%s\",\"amber_ns_per_op_median\":%.2f,"
        "\"malloc_ns_per_op_median\":%.2f,\"ratio\":%.3f}\n",
        static_cast<unsigned long long>(ops), live, threads, reps, g_touch ? "true" : "false",
        threads == 1 ? "thread_cpu" : "wall", am, lm, am / lm);
  } else {
    std::printf(
        "alloc bench: %llu ops (free+allocate of 16..256 B), live set %u, %d thread(s), "
        "%s time%s\n",
        static_cast<unsigned long long>(ops), live, threads,
        threads == 1 ? "thread CPU" : "wall-clock", g_touch ? "" : ", objects not touched");
    std::printf("%-6s %16s %16s\n", "rep", "amber ns/op", "malloc ns/op");
    for (int r = 0; r < reps; ++r) std::printf("%-6d %16.2f %16.2f\n", r, amber_ns[r], libc_ns[r]);
    std::printf("%-6s %16.2f %16.2f   ratio amber/malloc %.3f\n", "median", am, lm, am / lm);
    std::printf("amber heap high water %.1f MiB, allocated now %zu bytes\n",
                heap->HighWater() / 1048576.0, heap->AllocatedBytes());
  }
  delete heap;
  munmap(region, region_len);
  return 0;
}
