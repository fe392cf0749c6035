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
  // Returns a buffer for reuse. Keeps at most kKeep (the buffers of one
  // capture: its pre-copy rounds and the room reserved for its pause); frees
  // the rest, smallest first.
  void Put(StagingBuffer buffer);
  static constexpr size_t kKeep = 4;
  // Bytes mapped by buffers handed out or kept here.
  size_t bytes() const;

 private:
  Env* env_;
  mutable std::mutex mu_;
  std::vector<StagingBuffer> free_;
  size_t outstanding_ = 0;  // bytes in buffers handed out
};

}  // namespace amber
