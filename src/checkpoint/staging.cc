// staging.cc — pre-faulted, reused staging buffers (see staging.h).
#include "checkpoint/staging.h"

#include <sys/mman.h>

#include <algorithm>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace amber {

StagingBuffer& StagingBuffer::operator=(StagingBuffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) env_->Unmap(data_, cap_).IgnoreError();
    env_ = o.env_;
    data_ = o.data_;
    cap_ = o.cap_;
    o.data_ = nullptr;
    o.cap_ = 0;
  }
  return *this;
}

StagingBuffer::~StagingBuffer() {
  if (data_ != nullptr) env_->Unmap(data_, cap_).IgnoreError();
}

Result<StagingBuffer> StagingPool::Get(size_t bytes) {
  {
    std::lock_guard<std::mutex> l(mu_);
    // Smallest free buffer that is big enough.
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->capacity() >= bytes && (best == free_.end() || it->capacity() < best->capacity()))
        best = it;
    if (best != free_.end()) {
      StagingBuffer b = std::move(*best);
      free_.erase(best);
      outstanding_ += b.capacity();
      peak_outstanding_ = std::max(peak_outstanding_, outstanding_);
      return b;
    }
  }
  // Round up generously so that a slowly growing dirty set reuses buffers.
  size_t cap = std::max<size_t>(size_t{1} << 20, bytes + bytes / 8);
  cap = (cap + (size_t{2} << 20) - 1) & ~((size_t{2} << 20) - 1);
  // Mapped without the lock: populating a large buffer can take seconds on a
  // VM, and bytes() (Heap::GetStats) must not wait for it. Populated for
  // writing up front; a kernel without MADV_POPULATE_WRITE (< 5.14) gets
  // MAP_POPULATE instead. No MADV_HUGEPAGE: populating was 1.3-5x faster with
  // it, but under writeback it stalled in compaction long enough for a capture
  // to outgrow the log (Engine.DirtySetTriggersEarlyCheckpoints failed 4 of 10
  // runs beside a dd ... conv=fdatasync loop, 0 of 12 without it).
  auto p = env_->Map(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!p.ok()) return Status(Code::kResourceExhausted, p.status().message());
  if (!env_->Advise(*p, cap, MADV_POPULATE_WRITE).ok()) {
    env_->Unmap(*p, cap).IgnoreError();
    p = env_->Map(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                  -1, 0);
    if (!p.ok()) return Status(Code::kResourceExhausted, p.status().message());
  }
  std::lock_guard<std::mutex> l(mu_);
  outstanding_ += cap;
  peak_outstanding_ = std::max(peak_outstanding_, outstanding_);
  return StagingBuffer(env_, static_cast<char*>(*p), cap);
}

void StagingPool::Put(StagingBuffer buffer) {
  if (buffer.data() == nullptr) return;
  std::lock_guard<std::mutex> l(mu_);
  outstanding_ -= buffer.capacity();
  free_.push_back(std::move(buffer));
  size_t free_bytes = 0;
  for (auto& b : free_) free_bytes += b.capacity();
  while (free_.size() > kKeep && free_bytes > peak_outstanding_) {
    auto smallest = std::min_element(free_.begin(), free_.end(),
                                     [](auto& a, auto& b) { return a.capacity() < b.capacity(); });
    free_bytes -= smallest->capacity();
    free_.erase(smallest);
  }
}

size_t StagingPool::bytes() const {
  std::lock_guard<std::mutex> l(mu_);
  size_t total = outstanding_;
  for (auto& b : free_) total += b.capacity();
  return total;
}

}  // namespace amber
