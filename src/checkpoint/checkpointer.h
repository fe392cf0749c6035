// checkpointer.h — takes checkpoints: the short capture (the pause) and the
// background write-out.
//
// Pre-copy (mutators still running): collect and re-protect the pages written
// since the last capture and copy them into reused, pre-faulted staging memory.
// A page written again after its re-protection is reported again by the next
// collect, so a copy torn by a concurrent write is always redone below.
// Capture (mutators held back only here): close the gate and wait for open
// Sections → hold the allocator lock → collect the pages written since the
// pre-copy → copy just those (over their earlier copy, or appended) → open the
// gate. The pause thus grows with what changed during the pre-copy, not with
// everything that changed since the last checkpoint. The captured generation is then handed to the
// writer thread, which appends it to the log, makes it durable and publishes it (Store). Once the
// log is half full, the migrator thread copies its generations home while the writer goes on
// appending (the writer waits for it only when the log is full). Pages of a generation that fails
// to be written are carried into the next capture, so nothing is ever dropped.
//
// Thread-safety: every public member is thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "amber/heap.h"
#include "amber/options.h"
#include "amber/status.h"
#include "checkpoint/gate.h"
#include "checkpoint/staging.h"
#include "store/store.h"
#include "tracking/tracker.h"

namespace amber {

class Checkpointer {
 public:
  struct Deps {
    Store* store;
    DirtyTracker* tracker;
    Gate* gate;
    std::mutex* alloc_mutex;               // held during capture
    std::function<uint64_t()> scan_bytes;  // bytes from base worth scanning (under alloc lock)
    char* base;
  };
  Checkpointer(const Deps& deps, const Options& options);
  ~Checkpointer();  // Stop()

  // Starts the writer thread and, if options.checkpoint_interval_ms, the timer.
  void Start();
  // Stops the timer, writes out everything captured, joins the threads.
  void Stop();

  // Captures a generation now and queues it for writing; *gen receives its number
  // (or the newest earlier one when nothing changed).
  Status Capture(uint64_t* gen);
  // Waits until generation gen is durable; its write error if it failed.
  Status WaitDurable(uint64_t gen);
  Status Checkpoint();
  Status Commit();

  void FillStats(Stats* stats) const;

  // Pre-copy only when at least this many pages are dirty (below it the copy in
  // the pause is cheaper than the extra bookkeeping).
  static constexpr size_t kPreCopyMinPages = 256;
  // At most this many pre-copy rounds before the pause.
  static constexpr int kMaxPreCopyRounds = 3;
  // Staging for large page sets comes in buffers of at most this many pages.
  static constexpr size_t kStagingChunkPages = 16384;  // 64 MiB

 private:
  struct Job {
    uint64_t gen = 0;
    std::vector<uint64_t> pages;         // in image order
    std::vector<StagingBuffer> buffers;  // where the images are
    std::vector<ImageRun> runs;          // the images, in page order
    uint64_t heap_used = 0;
    uint64_t capture_us = 0;
    uint64_t writer_failures = 0;  // writer_failures_ when it took the carried pages
  };
  void WriterLoop();
  void MigratorLoop();
  // Most committed bytes the log should hold (what a reopen replays): half the
  // log, or Options::max_replay_bytes if smaller.
  uint64_t ReplayBound() const;
  // The log holds more than ReplayBound(): time to copy it home.
  bool MigrationDue() const;
  void TimerLoop();
  // Bytes written since the last capture (no side effects).
  uint64_t DirtyBytes();

  Deps deps_;
  Options options_;
  Env* env_;
  StagingPool pool_;

  std::mutex capture_mu_;              // serialises captures
  uint64_t next_gen_;                  // guarded by capture_mu_
  std::vector<uint64_t> scratch_;      // guarded by capture_mu_
  std::vector<uint64_t> pre_;          // guarded by capture_mu_
  bool precopy_;                       // tracker supports it (not "full")
  std::atomic<uint64_t> captures_{0};  // captures whose gate has closed
  std::atomic<uint64_t> last_captured_gen_{0};
  // The newest capture that closed the gate produced a generation (or found
  // nothing dirty). False after one failed: its pages were carried to the next
  // capture, so a Commit() must not share it. Guarded by capture_mu_.
  bool last_capture_ok_ = true;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::condition_variable timer_cv_;
  std::deque<Job> queue_;
  std::vector<uint64_t> carry_;  // pages of failed generations, sorted
  // Generations the writer failed. A job captured before the latest failure lacks
  // that generation's pages (they were carried to a later capture), so publishing it
  // would make a state that mixes two checkpoints: the writer fails it too.
  uint64_t writer_failures_ = 0;
  uint64_t durable_gen_ = 0;           // newest generation made durable
  uint64_t processed_gen_ = 0;         // newest generation the writer finished (ok or not)
  std::map<uint64_t, Status> failed_;  // generation -> its error
  bool stopping_ = false;
  bool timer_stop_ = false;
  std::condition_variable migrate_cv_;
  bool migrate_wanted_ = true;  // at start: recovery leaves the log as it was
  bool migrator_stop_ = false;
  bool writer_exited_ = false;
  std::vector<double> pauses_ms_;
  uint64_t checkpoints_ = 0, errors_ = 0, pages_written_ = 0, holds_ = 0;
  std::string last_error_;

  std::thread writer_;
  std::thread migrator_;
  std::thread timer_;
};

}  // namespace amber
