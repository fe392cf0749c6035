// staging.h — memory that holds captured page images until the writer has
// written them. First touch of fresh memory is slow on VMs (DESIGN.md: 1.4–2.5
// ms/MiB), and the copy happens inside the pause, so buffers are mapped with
// MAP_POPULATE once and reused across checkpoints.
//
// Thread-safety: StagingPool is thread-safe; a StagingBuffer belongs to one owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "env/env.h"

namespace amber {

class StagingBuffer {
 public:
  StagingBuffer() = default;
  StagingBuffer(Env* env, char* data, size_t capacity) : env_(env), data_(data), cap_(capacity) {}
  StagingBuffer(StagingBuffer&& o) noexcept { *this = std::move(o); }
  StagingBuffer& operator=(StagingBuffer&& o) noexcept;
  ~StagingBuffer();
  char* data() const { return data_; }
  size_t capacity() const { return cap_; }

 private:
  Env* env_ = nullptr;
  char* data_ = nullptr;
  size_t cap_ = 0;
};

class StagingPool {
 public:
  explicit StagingPool(Env* env) : env_(env) {}
  // A buffer of at least `bytes` (a reused one when one is big enough).
  // kResourceExhausted if memory cannot be mapped.
  Result<StagingBuffer> Get(size_t bytes);
  // Returns a buffer for reuse. Free buffers are kept as long as they add up
  // to no more than the most the pool ever had handed out at once (so it
  // holds at most twice its peak use), and at least kKeep of them; beyond that the
  // smallest are freed. Kept rather than unmapped because memory handed back
  // is slow to touch again on a VM (the host may have reclaimed it).
  void Put(StagingBuffer buffer);
  static constexpr size_t kKeep = 4;
  // Bytes mapped by buffers handed out or kept here.
  size_t bytes() const;

 private:
  Env* env_;
  mutable std::mutex mu_;
  std::vector<StagingBuffer> free_;
  size_t outstanding_ = 0;  // bytes in buffers handed out
  size_t peak_outstanding_ = 0;
};

}  // namespace amber
