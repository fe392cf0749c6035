// checkpointer.cc — capture (the pause), write-out thread, timer, group commit.
// See checkpointer.h for the protocol.
#include "checkpoint/checkpointer.h"

#include <pthread.h>

#include <algorithm>
#include <cassert>
#include <cstring>

namespace amber {

using format::kPageSize;

namespace {

// Sorted union of a and b into a.
void MergeSorted(std::vector<uint64_t>* a, const std::vector<uint64_t>& b) {
  if (b.empty()) return;
  std::vector<uint64_t> out;
  out.reserve(a->size() + b.size());
  std::set_union(a->begin(), a->end(), b.begin(), b.end(), std::back_inserter(out));
  a->swap(out);
}

constexpr size_t kMaxQueued = 2;  // captured generations waiting for the writer

}  // namespace

Checkpointer::Checkpointer(const Deps& deps, const Options& options)
    : deps_(deps),
      options_(options),
      env_(deps.store->env()),
      pool_(deps.store->env()),
      next_gen_(deps.store->superblock().committed_gen + 1),
      precopy_(std::string_view(deps.tracker->name()) != "full") {
  durable_gen_ = processed_gen_ = next_gen_ - 1;
  last_captured_gen_ = next_gen_ - 1;
}

Checkpointer::~Checkpointer() { Stop(); }

void Checkpointer::Start() {
  // Named, so that top -H, gdb and perf tell them apart from the program's own.
  writer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "amber-writer");
    WriterLoop();
  });
  if (options_.background_migration) {
    migrator_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "amber-migrate");
      MigratorLoop();
    });
  }
  if (options_.checkpoint_interval_ms > 0) {
    timer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "amber-timer");
      TimerLoop();
    });
  }
}

void Checkpointer::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  {
    // After the writer: the generations it wrote last need no migration now;
    // the next open finds them in the log. A migration under way is finished.
    std::lock_guard<std::mutex> l(mu_);
    migrator_stop_ = true;
  }
  migrate_cv_.notify_all();
  if (migrator_.joinable()) migrator_.join();
}

namespace {

// Where each staged page's image is, sorted by page: a page collected again is
// copied over its earlier image, so each page has one image per generation.
using StagedIndex = std::vector<std::pair<uint64_t, char*>>;

char* FindStaged(const StagedIndex& index, uint64_t page) {
  auto it = std::lower_bound(index.begin(), index.end(), std::make_pair(page, (char*)nullptr),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  return it != index.end() && it->first == page ? it->second : nullptr;
}

// `added` is sorted already: stage() copies a sorted page list in order.
void MergeIndex(StagedIndex* index, const StagedIndex& added) {
  assert(std::is_sorted(added.begin(), added.end()));
  StagedIndex out;
  out.reserve(index->size() + added.size());
  std::merge(index->begin(), index->end(), added.begin(), added.end(), std::back_inserter(out));
  index->swap(out);
}

}  // namespace

Status Checkpointer::Capture(uint64_t* gen) {
  *gen = 0;
  {
    // Back-pressure: bounded staging memory. Waits here, before the gate closes,
    // so mutators keep running while the writer catches up.
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return queue_.size() < kMaxQueued || stopping_; });
    if (stopping_) return FailedPrecondition("heap is closing");
  }
  std::lock_guard<std::mutex> cl(capture_mu_);
  auto scan_now = [&] { return format::RoundUp(deps_.scan_bytes(), kPageSize); };
  auto all_pages = [](uint64_t scan, std::vector<uint64_t>* out) {
    out->clear();
    for (uint64_t p = 0; p < scan / kPageSize; ++p) out->push_back(p);
  };

  Job job;
  StagedIndex staged;
  // Fixed-size chunks for large sets, so that buffers freed by any earlier
  // generation fit any later one and fresh memory (slow to touch on a VM) is
  // rarely needed.
  auto get_chunk = [&](size_t pages) {
    return pool_.Get(std::min<size_t>(pages, kStagingChunkPages) * kPageSize);
  };
  // Copies `pages` (sorted) into the staging: over an earlier image, else into
  // the free room of the newest buffer, else into a buffer from `spare` (if
  // given), else into a new buffer of at most kStagingChunkPages. With
  // `index`, records where the new images are for later rounds (the pause,
  // the last user, skips that). False if a buffer could not be had; the pages
  // not yet copied are then left in *rest.
  auto stage = [&](const std::vector<uint64_t>& pages, std::vector<StagingBuffer>* spare,
                   bool index, std::vector<uint64_t>* rest) {
    std::vector<uint64_t> fresh;
    for (uint64_t p : pages) {
      if (char* img = FindStaged(staged, p)) {
        std::memcpy(img, deps_.base + p * kPageSize, kPageSize);
      } else {
        fresh.push_back(p);
      }
    }
    StagedIndex added;
    size_t i = 0;
    while (i < fresh.size()) {
      // Room left in the newest buffer (its run is the last one).
      size_t room = 0;
      if (!job.runs.empty()) {
        const StagingBuffer& b = job.buffers.back();
        room = b.capacity() / kPageSize - job.runs.back().pages;
      }
      if (room == 0) {
        const size_t need = fresh.size() - i;
        if (spare != nullptr && !spare->empty()) {
          job.buffers.push_back(std::move(spare->back()));
          spare->pop_back();
        } else {
          auto b = get_chunk(need);
          if (!b.ok()) {
            rest->assign(fresh.begin() + static_cast<ptrdiff_t>(i), fresh.end());
            if (index) MergeIndex(&staged, added);
            return false;
          }
          job.buffers.push_back(std::move(*b));
        }
        job.runs.push_back({job.buffers.back().data(), 0});
        room = job.buffers.back().capacity() / kPageSize;
      }
      ImageRun& run = job.runs.back();
      char* dst = job.buffers.back().data() + run.pages * kPageSize;
      const size_t n = std::min(room, fresh.size() - i);
      for (size_t k = 0; k < n; ++k, dst += kPageSize) {
        const uint64_t p = fresh[i + k];
        std::memcpy(dst, deps_.base + p * kPageSize, kPageSize);
        if (index) added.emplace_back(p, dst);
        job.pages.push_back(p);
      }
      run.pages += n;
      i += n;
    }
    if (index) MergeIndex(&staged, added);
    return true;
  };

  // Phase 1, mutators running: rounds of collect (which re-protects what it
  // reports) and copy. Each round copies what was written during the previous
  // one, so the set left for the pause shrinks while the rounds converge; they
  // stop when it is small, stops shrinking, or after kMaxPreCopyRounds.
  bool all_dirty = false;
  std::vector<uint64_t> uncopied;  // collected (so re-protected) but not copied
  size_t last_collect = 0;         // pages the newest collect found
  const uint64_t precopy_budget = deps_.store->superblock().log_size / 4;
  if (precopy_) {
    for (int round = 0; round < kMaxPreCopyRounds; ++round) {
      uint64_t scan;
      {
        std::lock_guard<std::mutex> al(*deps_.alloc_mutex);
        scan = scan_now();
      }
      pre_.clear();
      if (!deps_.tracker->Collect(scan, &pre_).ok()) {
        all_dirty = true;  // contract: all dirty
        break;
      }
      const size_t previous = last_collect;
      last_collect = pre_.size();
      // Left to the pause: a small set (cheaper there than another round), a
      // set that did not shrink (writes outpace the copy), or one that would
      // take the generation past a quarter of the log. Each round lengthens
      // the capture, and everything written until the pause joins this
      // generation, which must fit in the log.
      if (pre_.size() < kPreCopyMinPages || (round > 0 && last_collect * 4 > previous * 3) ||
          (job.pages.size() + pre_.size()) * kPageSize > precopy_budget) {
        uncopied = pre_;
        break;
      }
      if (!stage(pre_, nullptr, /*index=*/true, &uncopied)) break;
    }
  }
  // Room for what the pause will find, mapped now rather than inside it (first
  // touch of fresh memory is slow): about what the newest collect found, which
  // was written during the round before it, with a margin.
  std::vector<StagingBuffer> spare;
  if (last_collect >= kPreCopyMinPages) {
    for (size_t want = last_collect + last_collect / 2; want > 0;) {
      auto b = get_chunk(want);
      if (!b.ok()) break;
      spare.push_back(std::move(*b));
      want -= std::min(want, kStagingChunkPages);
    }
  }

  // Phase 2, the pause.
  const uint64_t t0 = env_->NowMicros();
  deps_.gate->Close();
  captures_.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock<std::mutex> al(*deps_.alloc_mutex);
  const uint64_t scan = scan_now();
  scratch_.clear();
  if (all_dirty || !deps_.tracker->Collect(scan, &scratch_).ok()) {
    all_dirty = true;
    all_pages(scan, &scratch_);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    MergeSorted(&scratch_, carry_);
    carry_.clear();
    job.writer_failures = writer_failures_;
  }
  MergeSorted(&scratch_, uncopied);  // dirty before phase 1 ended but not copied there
  auto resume = [&] {
    al.unlock();
    deps_.gate->Open();
  };
  auto give_back = [&] {
    for (auto& b : job.buffers) pool_.Put(std::move(b));
    job.buffers.clear();
    for (auto& b : spare) pool_.Put(std::move(b));
  };
  auto fail = [&](const Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    MergeSorted(&carry_, scratch_);  // not lost: retried by the next capture
    std::vector<uint64_t> copied(job.pages.begin(), job.pages.end());
    std::sort(copied.begin(), copied.end());
    MergeSorted(&carry_, copied);
    ++errors_;
    last_error_ = s.ToString();
    last_capture_ok_ = false;
    return s;
  };

  if (job.pages.empty() && scratch_.empty()) {
    resume();
    give_back();
    last_capture_ok_ = true;
    *gen = last_captured_gen_.load();
    return Status::OK();
  }
  std::vector<uint64_t> rest;
  if (!stage(scratch_, &spare, /*index=*/false, &rest)) {  // rest is part of scratch_
    resume();
    give_back();
    return fail(ResourceExhausted("no memory for the checkpoint's staging"));
  }
  resume();
  const double pause_ms = static_cast<double>(env_->NowMicros() - t0) / 1000.0;
  for (auto& b : spare) pool_.Put(std::move(b));  // unused

  job.gen = next_gen_++;
  job.heap_used = scan;
  job.capture_us = env_->WallMicros();
  *gen = job.gen;
  last_captured_gen_.store(job.gen);
  last_capture_ok_ = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (pauses_ms_.size() >= 100000)
      pauses_ms_.erase(pauses_ms_.begin(), pauses_ms_.begin() + 50000);
    pauses_ms_.push_back(pause_ms);
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return Status::OK();
}

Status Checkpointer::WaitDurable(uint64_t gen) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return processed_gen_ >= gen || writer_exited_; });
  if (auto it = failed_.find(gen); it != failed_.end()) return it->second;
  if (processed_gen_ < gen)
    return FailedPrecondition("heap closed before the checkpoint was written");
  return Status::OK();
}

Status Checkpointer::Checkpoint() {
  uint64_t gen;
  AMBER_RETURN_IF_ERROR(Capture(&gen));
  if (gen == 0) return Status::OK();
  return WaitDurable(gen);
}

Status Checkpointer::Commit() {
  // Group commit: any capture that closes the gate after this point includes
  // everything this thread wrote before calling, so share it instead of making
  // another one.
  const uint64_t seen = captures_.load(std::memory_order_seq_cst);
  uint64_t gen = 0;
  {
    std::unique_lock<std::mutex> cl(capture_mu_);
    // Not one that failed: its pages wait in carry_ for the next capture.
    if (captures_.load(std::memory_order_seq_cst) > seen && last_capture_ok_)
      gen = last_captured_gen_.load();
  }
  if (gen == 0) return Checkpoint();
  return WaitDurable(gen);
}

uint64_t Checkpointer::ReplayBound() const {
  // Half the log at most, so the writer has the other half to append to while
  // a migration runs and a burst of checkpoints still fits.
  const uint64_t half = deps_.store->superblock().log_size / 2;
  return options_.max_replay_bytes == 0 ? half : std::min(options_.max_replay_bytes, half);
}

bool Checkpointer::MigrationDue() const { return deps_.store->LogUsed() > ReplayBound(); }

void Checkpointer::MigratorLoop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    migrate_cv_.wait(l, [&] { return migrate_wanted_ || migrator_stop_; });
    if (migrator_stop_) break;
    migrate_wanted_ = false;
    if (!MigrationDue()) continue;
    l.unlock();
    Status ms = deps_.store->Migrate();
    l.lock();
    if (!ms.ok()) last_error_ = ms.WithContext("migration").ToString();
  }
}

void Checkpointer::WriterLoop() {
  auto migrate_if_due = [&] {
    if (!MigrationDue()) return;
    if (!options_.background_migration) {
      // Inline: the writer migrates before it takes the next generation.
      Status ms = deps_.store->Migrate();
      std::lock_guard<std::mutex> l(mu_);
      if (!ms.ok()) last_error_ = ms.WithContext("migration").ToString();
      return;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      migrate_wanted_ = true;
    }
    migrate_cv_.notify_all();
  };
  // Recovery loads the log's generations into the heap without migrating them:
  // inline mode reclaims that space before the first generation (the migrator
  // thread does so when it starts).
  if (!options_.background_migration) migrate_if_due();
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    cv_.notify_all();  // a capture may be waiting for queue room
    Status s;
    {
      // Captured before an earlier generation failed: incomplete without its pages.
      std::lock_guard<std::mutex> l(mu_);
      if (job.writer_failures != writer_failures_ && !failed_.empty())
        s = failed_.rbegin()->second.WithContext(
            "generation " + std::to_string(failed_.rbegin()->first) + " before it failed");
    }
    if (s.ok())
      s = deps_.store->AppendGeneration(job.gen, job.pages, job.runs, job.heap_used,
                                        job.capture_us);
    for (auto& b : job.buffers) pool_.Put(std::move(b));
    {
      // Report durability first: waiters must not pay for a migration.
      std::lock_guard<std::mutex> l(mu_);
      processed_gen_ = job.gen;
      if (s.ok()) {
        durable_gen_ = job.gen;
        ++checkpoints_;
        pages_written_ += job.pages.size();
      } else {
        ++errors_;
        last_error_ = s.ToString();
        failed_[job.gen] = s;
        while (failed_.size() > 1024) failed_.erase(failed_.begin());
        MergeSorted(&carry_, job.pages);  // retried by the next capture
        ++writer_failures_;
      }
    }
    cv_.notify_all();
    if (s.ok()) migrate_if_due();
  }
  std::lock_guard<std::mutex> l(mu_);
  writer_exited_ = true;
  cv_.notify_all();
}

uint64_t Checkpointer::DirtyBytes() {
  std::lock_guard<std::mutex> cl(capture_mu_);  // CountDirty must not overlap Collect
  uint64_t scan;
  {
    std::lock_guard<std::mutex> al(*deps_.alloc_mutex);
    scan = format::RoundUp(deps_.scan_bytes(), kPageSize);
  }
  auto n = deps_.tracker->CountDirty(scan);
  return n.ok() ? *n * kPageSize : 0;
}

void Checkpointer::TimerLoop() {
  // A checkpoint is due when the interval has passed, or early when the dirty
  // set passes half the replay bound (a quarter of the log by default), so that
  // a fast mutator never dirties more than one checkpoint can hold. The timer
  // wakes at least every 50 ms, and sooner while the dirty set grows fast: it
  // aims to look again before the set could reach the early threshold at the
  // rate seen since the last look (a fixed 50 ms let a mutator dirtying 64 MB/s
  // outgrow a 4 MiB log when one poll came late).
  using std::chrono::steady_clock;
  const auto interval = std::chrono::milliseconds(options_.checkpoint_interval_ms);
  const auto poll = std::min<std::chrono::milliseconds>(interval, std::chrono::milliseconds(50));
  const auto min_poll = std::chrono::milliseconds(1);
  const uint64_t log_size = deps_.store->superblock().log_size;
  const uint64_t early = ReplayBound() / 2;
  auto last = steady_clock::now();
  // The previous look at the dirty set: its size and time (0 after a capture).
  uint64_t seen_dirty = 0;
  auto seen_at = last;
  std::chrono::nanoseconds wait = poll;
  std::unique_lock<std::mutex> l(mu_);
  while (!timer_stop_) {
    if (timer_cv_.wait_for(l, wait, [&] { return timer_stop_; })) break;
    const bool queue_full = queue_.size() >= kMaxQueued;
    l.unlock();
    const auto now = steady_clock::now();
    const bool due = now - last >= interval;
    const uint64_t dirty = due && !queue_full ? 0 : DirtyBytes();
    // A look scans the heap's page tables (about 0.3 ms a GiB): never look
    // more often than keeps that under a tenth of a core.
    const auto soonest = std::min<std::chrono::nanoseconds>(
        poll, std::max<std::chrono::nanoseconds>(min_poll, (steady_clock::now() - now) * 10));
    wait = poll;
    if (dirty > seen_dirty && dirty < early && now > seen_at) {
      // Time to reach `early` at the rate since the last look; look again
      // after a quarter of it, so that a late wake-up still has room.
      const double rate = static_cast<double>(dirty - seen_dirty) /
                          std::chrono::duration<double>(now - seen_at).count();
      const auto to_early =
          std::chrono::duration<double>(static_cast<double>(early - dirty) / rate);
      wait = std::clamp<std::chrono::nanoseconds>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(to_early / 4), soonest, poll);
    }
    seen_dirty = dirty;
    seen_at = now;
    // Past half the log (the writer is behind, or this look came late), the
    // dirty set is getting close to what one checkpoint can hold: hold
    // Sections back (as KeyKOS stalls the dirtying process) and capture with
    // them held, so the set cannot grow past the log, instead of failing
    // later. The capture waits for queue room first; the gate counts both
    // closers. Otherwise no capture while the queue is full: the timer,
    // blocked in Capture waiting for room, could not look at the set meanwhile.
    const bool hold = dirty > log_size / 2;
    if (hold || ((due || dirty > early) && !queue_full)) {
      if (hold) {
        deps_.gate->Close();
        std::lock_guard<std::mutex> w(mu_);
        ++holds_;
      }
      last = steady_clock::now();
      uint64_t gen;
      Capture(&gen).IgnoreError();  // failures are counted in the stats
      if (hold) deps_.gate->Open();
      seen_dirty = 0;
      seen_at = steady_clock::now();
    } else if (dirty > early) {
      wait = soonest;  // over it with the queue full: look again soon
    }
    l.lock();
  }
}

void Checkpointer::FillStats(Stats* st) const {
  std::vector<double> v;
  {
    // Copies only: mu_ is also what the writer reports durability under.
    std::lock_guard<std::mutex> l(mu_);
    st->checkpoints = checkpoints_;
    st->checkpoint_errors = errors_;
    st->last_generation = durable_gen_;
    st->pages_written = pages_written_;
    st->last_error = last_error_;
    st->backpressure_holds = holds_;
    v = pauses_ms_;
  }
  st->migrations = deps_.store->migrations();  // background and back-pressure ones
  if (!v.empty()) {
    st->pause_ms_last = v.back();
    std::sort(v.begin(), v.end());
    st->pause_ms_min = v.front();
    st->pause_ms_max = v.back();
    st->pause_ms_median = v[v.size() / 2];
    st->pause_ms_p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  }
  st->staging_bytes = pool_.bytes();
}

}  // namespace amber
