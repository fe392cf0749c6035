// amber/options.h — how a store is created and opened.
// Plain data; copy freely. Thread-safety: none needed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amber {

class Env;

enum class TrackingMode {
  kAuto,       // userfaultfd async write-protect if the kernel has it, else full
  kUffdAsync,  // require userfaultfd async write-protect (open fails otherwise)
  kFull,       // write every used page at each checkpoint (slow, portable)
};

// Default heap base address. Chosen far from where Linux places ordinary
// mappings. Sanitizer builds use an address their runtime leaves to programs.
#if defined(__SANITIZE_THREAD__)
inline constexpr uintptr_t kDefaultBaseAddress = 0x001000000000;  // TSan "low app" range
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr uintptr_t kDefaultBaseAddress = 0x001000000000;
#else
inline constexpr uintptr_t kDefaultBaseAddress = 0x200000000000;
#endif
#else
inline constexpr uintptr_t kDefaultBaseAddress = 0x200000000000;
#endif

struct Options {
  // --- used only when the store is created; an existing store keeps its own ---
  // Most the heap can ever hold. Only touched pages use memory or disk.
  uint64_t capacity = uint64_t{1} << 30;
  // Fixed virtual address of the heap; pointers inside the heap stay valid
  // across restarts because the heap is always mapped here. 0 = kDefaultBaseAddress.
  uintptr_t base_address = 0;
  // Bytes preallocated for the checkpoint log. 0 = default: capacity / 4,
  // clamped to [16 MiB, 1 GiB]. A single checkpoint must fit in the log.
  uint64_t log_size = 0;

  // --- used on every open ---
  bool create_if_missing = true;
  bool error_if_exists = false;
  // Automatic checkpoints from a background thread every this many milliseconds
  // (0 = only explicit Checkpoint()/Commit()).
  uint32_t checkpoint_interval_ms = 1000;
  TrackingMode tracking = TrackingMode::kAuto;
  // Average bytes/second the background writer may write (0 = unlimited).
  uint64_t write_bandwidth_limit = 0;
  // Copy committed checkpoints home (migration) in a thread of its own, while
  // the writer goes on appending new ones to the log (the writer waits only when
  // the log is full). false: the writer thread migrates between checkpoints,
  // so no checkpoint is written while a migration runs (one I/O stream at a
  // time, in a deterministic order).
  bool background_migration = true;
  // Bounds what opening after a crash must replay (its time): committed
  // checkpoints are migrated home once the log holds more than this many bytes
  // of them, and the timer takes a checkpoint early once the pages written
  // since the last one pass half of it. While migration keeps up with the
  // writes, a reopen then replays about this much, plus what was written while
  // the last migration ran, however large the heap or the log (it did not keep
  // up at 10 M keys in bench/peers: docs/benchmarks.md). Smaller means faster recovery but more
  // writes (pages rewritten in every checkpoint are copied home more often, and checkpoints come
  // more often under heavy writing). 0 = no bound beyond the log's: migrate at half the log,
  // checkpoint early at a quarter of it.
  uint64_t max_replay_bytes = 0;
  // Check every home-image page against its checksum when opening (reads the
  // used part of the heap once; turn off for the fastest open).
  bool verify_on_open = true;
  // Refuse a store owned by another user unless this is set.
  bool allow_foreign_owner = false;
  // Take a final checkpoint when the Heap is destroyed (errors are ignored there;
  // call Close() to see them).
  bool checkpoint_on_close = true;
  // System call layer; null = the real operating system. Must outlive the Heap.
  Env* env = nullptr;
};

}  // namespace amber
