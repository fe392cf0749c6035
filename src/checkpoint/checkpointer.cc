// checkpointer.cc — capture (the pause), write-out thread, timer, group commit.
// See checkpointer.h for the protocol.
#include "checkpoint/checkpointer.h"

#include <algorithm>
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
  writer_ = std::thread([this] { WriterLoop(); });
  if (options_.background_migration) migrator_ = std::thread([this] { MigratorLoop(); });
  if (options_.checkpoint_interval_ms > 0) timer_ = std::thread([this] { TimerLoop(); });
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

  // Phase 1, mutators running: collect, re-protect and copy what is dirty so far.
  pre_.clear();
  bool all_dirty = false;
  Job job;
  if (precopy_) {
    uint64_t scan;
    {
      std::lock_guard<std::mutex> al(*deps_.alloc_mutex);
      scan = scan_now();
    }
    if (!deps_.tracker->Collect(scan, &pre_).ok()) all_dirty = true;  // contract: all dirty
    if (!all_dirty && pre_.size() >= kPreCopyMinPages) {
      const size_t slack = std::max<size_t>(pre_.size() / 8, 64);
      auto buffer = pool_.Get((pre_.size() + slack) * kPageSize);
      if (buffer.ok()) {
        char* dst = buffer->data();
        for (uint64_t p : pre_) {
          std::memcpy(dst, deps_.base + p * kPageSize, kPageSize);
          dst += kPageSize;
        }
        job.pages = pre_;
        job.buffers.push_back(std::move(*buffer));
        pre_.clear();  // copied; what remains in pre_ must be copied in the pause
      }
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
  MergeSorted(&scratch_, pre_);  // dirty before phase 1 but not copied there
  auto resume = [&] {
    al.unlock();
    deps_.gate->Open();
  };
  auto fail = [&](const Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    MergeSorted(&carry_, scratch_);  // not lost: retried by the next capture
    std::vector<uint64_t> copied(job.pages.begin(), job.pages.end());
    MergeSorted(&carry_, copied);
    ++errors_;
    last_error_ = s.ToString();
    return s;
  };

  // Pages copied in phase 1 and written again since: copy over the old copy.
  // The rest are appended after the phase-1 images.
  const size_t precopied = job.pages.size();
  std::vector<uint64_t> extra;
  char* first = precopied ? job.buffers[0].data() : nullptr;
  for (uint64_t p : scratch_) {
    auto it = std::lower_bound(job.pages.begin(), job.pages.begin() + precopied, p);
    if (it != job.pages.begin() + precopied && *it == p) {
      std::memcpy(first + (it - job.pages.begin()) * kPageSize, deps_.base + p * kPageSize,
                  kPageSize);
    } else {
      extra.push_back(p);
    }
  }
  if (precopied == 0 && extra.empty()) {
    resume();
    *gen = last_captured_gen_.load();
    return Status::OK();
  }
  // Extras go into the phase-1 buffer's slack, then into one more buffer.
  size_t in_first = 0;
  if (precopied) {
    const size_t room = job.buffers[0].capacity() / kPageSize - precopied;
    in_first = std::min(room, extra.size());
    job.runs.push_back({first, precopied + in_first});
  }
  for (size_t i = 0; i < in_first; ++i)
    std::memcpy(first + (precopied + i) * kPageSize, deps_.base + extra[i] * kPageSize, kPageSize);
  if (in_first < extra.size()) {
    const size_t n = extra.size() - in_first;
    auto buffer = pool_.Get(n * kPageSize);
    if (!buffer.ok()) {
      resume();
      for (auto& b : job.buffers) pool_.Put(std::move(b));
      return fail(buffer.status());
    }
    char* dst = buffer->data();
    for (size_t i = in_first; i < extra.size(); ++i, dst += kPageSize)
      std::memcpy(dst, deps_.base + extra[i] * kPageSize, kPageSize);
    job.runs.push_back({buffer->data(), n});
    job.buffers.push_back(std::move(*buffer));
  }
  resume();
  const double pause_ms = static_cast<double>(env_->NowMicros() - t0) / 1000.0;

  job.pages.insert(job.pages.end(), extra.begin(), extra.end());
  job.gen = next_gen_++;
  job.heap_used = scan;
  job.capture_us = env_->WallMicros();
  *gen = job.gen;
  last_captured_gen_.store(job.gen);
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
    if (captures_.load(std::memory_order_seq_cst) > seen) gen = last_captured_gen_.load();
  }
  if (gen == 0) return Checkpoint();
  return WaitDurable(gen);
}

void Checkpointer::MigratorLoop() {
  const uint64_t log_size = deps_.store->superblock().log_size;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    migrate_cv_.wait(l, [&] { return migrate_wanted_ || migrator_stop_; });
    if (migrator_stop_) break;
    migrate_wanted_ = false;
    // Migrate once the log is half full, so the writer has the other half to
    // append to meanwhile and a burst of checkpoints still fits.
    if (deps_.store->LogUsed() * 2 <= log_size) continue;
    l.unlock();
    Status ms = deps_.store->Migrate();
    l.lock();
    if (!ms.ok()) last_error_ = ms.WithContext("migration").ToString();
  }
}

void Checkpointer::WriterLoop() {
  const uint64_t log_size = deps_.store->superblock().log_size;
  auto migrate_if_half_full = [&] {
    if (deps_.store->LogUsed() * 2 <= log_size) return;
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
  if (!options_.background_migration) migrate_if_half_full();
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
    if (s.ok()) migrate_if_half_full();
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
  // Wakes at least every 50 ms: a checkpoint is due when the interval has passed,
  // or early when the dirty set passes a quarter of the log, so that a fast
  // mutator never dirties more than one checkpoint can hold.
  const auto interval = std::chrono::milliseconds(options_.checkpoint_interval_ms);
  const auto poll = std::min<std::chrono::milliseconds>(interval, std::chrono::milliseconds(50));
  const uint64_t log_size = deps_.store->superblock().log_size;
  auto last = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> l(mu_);
  while (!timer_stop_) {
    if (timer_cv_.wait_for(l, poll, [&] { return timer_stop_; })) break;
    const bool queue_full = queue_.size() >= kMaxQueued;
    l.unlock();
    const bool due = std::chrono::steady_clock::now() - last >= interval;
    const uint64_t dirty = due && !queue_full ? 0 : DirtyBytes();
    if (queue_full && dirty > log_size / 2) {
      // The writer is behind and the next checkpoint is getting close to what
      // the log can hold: hold Sections back until the writer catches up (as
      // KeyKOS stalls the dirtying process), instead of failing later.
      deps_.gate->Close();
      {
        std::unique_lock<std::mutex> w(mu_);
        ++holds_;
        cv_.wait(w, [&] { return queue_.size() < kMaxQueued || stopping_; });
      }
      deps_.gate->Open();
    }
    if (due || dirty > log_size / 4) {
      last = std::chrono::steady_clock::now();
      uint64_t gen;
      Capture(&gen).IgnoreError();  // failures are counted in the stats
    }
    l.lock();
  }
}

void Checkpointer::FillStats(Stats* st) const {
  std::lock_guard<std::mutex> l(mu_);
  st->checkpoints = checkpoints_;
  st->checkpoint_errors = errors_;
  st->last_generation = durable_gen_;
  st->pages_written = pages_written_;
  st->migrations = deps_.store->migrations();  // background and back-pressure ones
  st->last_error = last_error_;
  if (!pauses_ms_.empty()) {
    std::vector<double> v = pauses_ms_;
    std::sort(v.begin(), v.end());
    st->pause_ms_min = v.front();
    st->pause_ms_max = v.back();
    st->pause_ms_median = v[v.size() / 2];
    st->pause_ms_p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
    st->pause_ms_last = pauses_ms_.back();
  }
  st->staging_bytes = pool_.bytes();
  st->backpressure_holds = holds_;
}

}  // namespace amber
