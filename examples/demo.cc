// amber-demo — a persistent word-count index that survives kill -9.
//
//   amber-demo STORE [--docs N] [--kill-after-ms MS]
//
// A worker process ingests a deterministic stream of documents into a word-count
// index that lives in an amber heap (ordinary C++ containers, no serialization),
// with automatic checkpoints every 50 ms and a durable Commit() every 500
// documents. The demo kills the worker with SIGKILL in the middle of its run,
// reopens the store, checks that the recovered index is exactly the index of the
// first n documents (recomputed from scratch) with n no older than the last
// commit the worker reported, prints what was recovered and the checkpoint
// statistics, then finishes the job. The store is left at STORE for `amber info`.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "amber/amber.h"

namespace {

// Everything the program keeps lives in this root object, in the heap.
struct Index {
  amber::unordered_map<amber::string, uint64_t> counts;  // word -> occurrences
  uint64_t docs = 0;                                     // documents ingested so far
  uint64_t words = 0;                                    // words ingested so far
};

constexpr int kWordsPerDoc = 40;

// Deterministic document stream: document i is always the same 40 words, drawn
// from a skewed vocabulary of made-up words.
std::string Word(uint64_t id) {
  static const char* syl[] = {"am", "ber", "ko",  "ros",  "ke",   "y",    "lo",   "gi",
                              "ca", "per", "sis", "tent", "heap", "snap", "shot", "page"};
  std::string w;
  do {
    w += syl[id % 16];
    id /= 16;
  } while (id > 0);
  return w;
}
std::vector<std::string> Document(uint64_t i) {
  std::vector<std::string> out;
  uint64_t x = i * 0x9E3779B97F4A7C15ull + 1;
  for (int k = 0; k < kWordsPerDoc; ++k) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t r = x * 0x2545F4914F6CDD1Dull;
    // Skewed: small ids are much more frequent (like real text).
    uint64_t id = (r % 4096) * (r % 4096) / 4096 % 4096 + (r >> 60);
    out.push_back(Word(id));
  }
  return out;
}

void Ingest(amber::Heap& heap, Index* index, uint64_t doc) {
  auto words = Document(doc);
  amber::Section section(heap);  // a checkpoint never splits one document
  for (auto& w : words) ++index->counts[amber::string(w.data(), w.size())];
  index->words += words.size();
  index->docs = doc + 1;
}

amber::Options DemoOptions() {
  amber::Options o;
  o.capacity = uint64_t{256} << 20;
  o.checkpoint_interval_ms = 50;
  return o;
}

int Die(const char* what, const amber::Status& s) {
  std::fprintf(stderr, "amber-demo: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

// The worker: ingest documents until killed, reporting every durable commit.
int Worker(const std::string& path, uint64_t target, int report_fd) {
  auto heap = amber::Heap::Open(path, DemoOptions());
  if (!heap.ok()) return Die("open", heap.status());
  auto index = (*heap)->Root<Index>("index");
  if (!index.ok()) return Die("root", index.status());
  for (uint64_t d = (*index)->docs; d < target; ++d) {
    Ingest(**heap, *index, d);
    if ((d + 1) % 500 == 0) {
      if (auto s = (*heap)->Commit(); !s.ok()) return Die("commit", s);
      uint64_t done = d + 1;
      if (write(report_fd, &done, sizeof(done)) != sizeof(done)) return 1;
    }
  }
  return 0;
}

// Recomputes the index of the first n documents and compares.
bool Matches(const Index& index, uint64_t n, std::string* why) {
  std::unordered_map<std::string, uint64_t> expect;
  for (uint64_t d = 0; d < n; ++d)
    for (auto& w : Document(d)) ++expect[w];
  if (index.words != n * kWordsPerDoc) {
    *why = "word total " + std::to_string(index.words) + " != " + std::to_string(n * kWordsPerDoc);
    return false;
  }
  if (index.counts.size() != expect.size()) {
    *why = "vocabulary size differs";
    return false;
  }
  for (auto& [w, c] : index.counts) {
    auto it = expect.find(std::string(w.data(), w.size()));
    if (it == expect.end() || it->second != c) {
      *why = "count of '" + std::string(w.data(), w.size()) + "' differs";
      return false;
    }
  }
  return true;
}

void PrintStats(const amber::Stats& st) {
  std::printf("  checkpoints %" PRIu64 " (errors %" PRIu64 "), generation %" PRIu64
              ", tracking %s\n",
              st.checkpoints, st.checkpoint_errors, st.last_generation, st.tracking.c_str());
  std::printf("  pause min/median/max %.3f / %.3f / %.3f ms, %" PRIu64
              " pages written, %.1f MiB to the store file\n",
              st.pause_ms_min, st.pause_ms_median, st.pause_ms_max, st.pages_written,
              static_cast<double>(st.bytes_written) / (1 << 20));
  std::printf("  heap used %.1f MiB of %.0f MiB, log %.1f of %.0f MiB\n",
              static_cast<double>(st.heap_used) / (1 << 20),
              static_cast<double>(st.heap_capacity) / (1 << 20),
              static_cast<double>(st.log_used) / (1 << 20),
              static_cast<double>(st.log_size) / (1 << 20));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: amber-demo STORE [--docs N] [--kill-after-ms MS]\n");
    return 2;
  }
  const std::string path = argv[1];
  uint64_t docs = 400000;
  int kill_ms = 1200;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--docs"))
      docs = std::strtoull(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--kill-after-ms"))
      kill_ms = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "amber-demo: unknown option %s\n", argv[i]);
      return 2;
    }
  }

  uint64_t start_docs = 0;
  {
    auto heap = amber::Heap::Open(path, DemoOptions());
    if (!heap.ok()) return Die("open", heap.status());
    auto index = (*heap)->Root<Index>("index");
    if (!index.ok()) return Die("root", index.status());
    start_docs = (*index)->docs;
    std::printf("amber-demo: store %s holds %" PRIu64 " documents, %zu distinct words\n",
                path.c_str(), start_docs, (*index)->counts.size());
  }
  const uint64_t target = start_docs + docs;

  // 1. A worker ingests; we kill -9 it in the middle of its run.
  int fds[2];
  if (pipe(fds) != 0) return 1;
  std::printf("amber-demo: worker ingesting documents %" PRIu64 "..%" PRIu64
              " (checkpoint every 50 ms, commit every 500 documents)\n",
              start_docs, target);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    _exit(Worker(path, target, fds[1]));
  }
  close(fds[1]);
  std::this_thread::sleep_for(std::chrono::milliseconds(kill_ms));
  int status = 0;
  bool killed = waitpid(pid, &status, WNOHANG) == 0;
  if (killed) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  uint64_t durable = start_docs, v;
  while (read(fds[0], &v, sizeof(v)) == sizeof(v)) durable = v;
  close(fds[0]);
  if (killed) {
    std::printf(
        "amber-demo: killed the worker with SIGKILL after %d ms; its last durable "
        "commit covered %" PRIu64 " documents\n",
        kill_ms, durable);
  } else {
    std::printf("amber-demo: the worker finished before the kill (exit %d)\n",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }

  // 2. Recover, check, and finish the job.
  auto t0 = std::chrono::steady_clock::now();
  auto heap = amber::Heap::Open(path, DemoOptions());
  if (!heap.ok()) return Die("reopen after kill", heap.status());
  auto index = (*heap)->Root<Index>("index");
  if (!index.ok()) return Die("root", index.status());
  double open_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  Index* idx = *index;
  std::string why;
  const uint64_t recovered = idx->docs;
  const bool exact = Matches(*idx, recovered, &why);
  std::printf("amber-demo: recovered %" PRIu64 " documents (%zu distinct words) in %.1f ms: %s\n",
              recovered, idx->counts.size(), open_ms,
              exact ? "index is exactly that of the first documents, as checkpointed"
                    : ("MISMATCH: " + why).c_str());
  if (recovered < durable) {
    std::printf("amber-demo: LOST DATA: recovered fewer documents than were committed\n");
    return 1;
  }
  if (!exact) return 1;
  std::printf("amber-demo: nothing committed was lost (%" PRIu64 " >= %" PRIu64 ")\n", recovered,
              durable);
  for (uint64_t d = recovered; d < target; ++d) Ingest(**heap, idx, d);
  if (auto s = (*heap)->Commit(); !s.ok()) return Die("commit", s);

  std::vector<std::pair<uint64_t, std::string>> top;
  for (auto& [w, c] : idx->counts) top.emplace_back(c, std::string(w.data(), w.size()));
  std::partial_sort(top.begin(), top.begin() + std::min<size_t>(5, top.size()), top.end(),
                    std::greater<>());
  std::printf("amber-demo: finished: %" PRIu64 " documents, %" PRIu64 " words; most frequent:",
              idx->docs, idx->words);
  for (size_t i = 0; i < std::min<size_t>(5, top.size()); ++i)
    std::printf(" %s=%" PRIu64, top[i].second.c_str(), top[i].first);
  std::printf("\namber-demo: checkpoint statistics of this process:\n");
  PrintStats((*heap)->GetStats());
  if (auto s = (*heap)->Close(); !s.ok()) return Die("close", s);
  std::printf("amber-demo: store left at %s; inspect it with: amber info %s\n", path.c_str(),
              path.c_str());
  return 0;
}
