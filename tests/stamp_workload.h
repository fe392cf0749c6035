// stamp_workload.h — a deterministic heap workload for the power-loss and I/O-error
// tests: a root holding a version counter and `kSlots` heap blocks, each filled with
// words derived from (slot, stamp). Step v rewrites some blocks with stamp v and
// frees and reallocates others (new sizes, small and multi-page), so every
// checkpoint dirties a varying set of pages and keeps the allocator busy.
//
// The state after step V is a pure function of V (StampModel), so a recovered heap
// can be checked exactly: its version says which checkpoint it claims to be, and
// every block must hold exactly that checkpoint's sizes and stamps — never a mix.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alloc/heap_allocator.h"
#include "amber/amber.h"
#include "heap/heap_header.h"
#include "test_util.h"

namespace amber::testing {

inline constexpr int kSlots = 40;

// Sanitizer builds run several times slower: the tests explore a smaller sample there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitizedBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitizedBuild = true;
#else
inline constexpr bool kSanitizedBuild = false;
#endif
#else
inline constexpr bool kSanitizedBuild = false;
#endif

inline uint64_t StampMix(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 32;
  return x;
}

// The root object. Plain data only.
struct StampRoot {
  uint64_t version = 0;  // last step completed
  uint64_t* blocks[kSlots] = {};
  uint64_t sizes[kSlots] = {};   // bytes, multiple of 8
  uint64_t stamps[kSlots] = {};  // step whose words the block holds
};

inline constexpr const char* kStampRootName = "stamp-root";

// Step v (>= 1) frees and reallocates slot i (with a new size and content).
inline bool StampReallocates(int slot, uint64_t v) {
  return v == 1 || StampMix(static_cast<uint64_t>(slot) + 1000, v) % 13 == 0;
}
// Step v rewrites slot i in place (every 6th step rewrites about half the slots).
inline bool StampRewrites(int slot, uint64_t v) {
  const uint64_t r = StampMix(v, static_cast<uint64_t>(slot) * 7 + 1);
  return v % 6 == 0 ? r % 2 == 0 : r % 5 == 0;
}
// Size of slot i when (re)allocated at step v: mostly small, some 1-3 pages.
inline uint64_t StampSize(int slot, uint64_t v) {
  const uint64_t r = StampMix(static_cast<uint64_t>(slot) + 100, v);
  const uint64_t bytes = r % 10 < 7 ? 16 + (r >> 8) % 1500 : 4096 + (r >> 8) % 8192;
  return (bytes + 7) / 8 * 8;
}
inline uint64_t StampWord(int slot, uint64_t stamp, uint64_t j) {
  return StampMix(StampMix(static_cast<uint64_t>(slot), stamp), j);
}

// A scratch directory for store files, in RAM (/dev/shm) when possible: crash and
// error models come from FaultInjectionEnv, so real syncs need not be slow.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = "/dev/shm/amber-test-XXXXXX";
    if (::access("/dev/shm", W_OK) != 0 || mkdtemp(tmpl.data()) == nullptr) {
      fallback_ = std::make_unique<TempDir>();
      path_ = fallback_->path();
    } else {
      path_ = tmpl;
    }
  }
  ~ScratchDir() {
    if (!fallback_) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  // Names of the files in the directory, sorted.
  std::vector<std::string> List() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(path_, ec))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  // Removes every file in the directory (the store and any creation leftovers).
  void Clear() const {
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(path_, ec)) std::filesystem::remove(e, ec);
  }

 private:
  std::unique_ptr<TempDir> fallback_;
  std::string path_;
};

// Sizes and stamps of every slot after step V (V = 0: nothing allocated).
struct StampModel {
  uint64_t sizes[kSlots] = {};
  uint64_t stamps[kSlots] = {};

  static StampModel At(uint64_t version) {
    StampModel m;
    for (uint64_t v = 1; v <= version; ++v) {
      for (int i = 0; i < kSlots; ++i) {
        if (StampReallocates(i, v)) {
          m.sizes[i] = StampSize(i, v);
          m.stamps[i] = v;
        } else if (StampRewrites(i, v)) {
          m.stamps[i] = v;
        }
      }
    }
    return m;
  }
};

inline void StampFill(uint64_t* block, int slot, uint64_t stamp, uint64_t bytes) {
  for (uint64_t j = 0; j < bytes / 8; ++j) block[j] = StampWord(slot, stamp, j);
}

// Applies step v inside one Section. False if the heap ran out of memory.
inline bool StampStep(Heap& heap, StampRoot* r, uint64_t v) {
  Section section(heap);
  for (int i = 0; i < kSlots; ++i) {
    if (StampReallocates(i, v)) {
      if (r->blocks[i] != nullptr) heap.Deallocate(r->blocks[i]);
      const uint64_t size = StampSize(i, v);
      r->blocks[i] = static_cast<uint64_t*>(heap.Allocate(size));
      if (r->blocks[i] == nullptr) return false;
      r->sizes[i] = size;
      StampFill(r->blocks[i], i, v, size);
      r->stamps[i] = v;
    } else if (StampRewrites(i, v)) {
      StampFill(r->blocks[i], i, v, r->sizes[i]);
      r->stamps[i] = v;
    }
  }
  r->version = v;
  return true;
}

// Checks that the heap's root holds exactly the state after step r->version:
// sizes, stamps, every word of every block, blocks inside the heap and disjoint,
// and the allocator's own structural check. Returns "" or what is wrong.
inline std::string StampCheck(Heap& heap, const StampRoot* r) {
  const uint64_t v = r->version;
  const StampModel m = StampModel::At(v);
  auto* base = static_cast<char*>(heap.base());
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (int i = 0; i < kSlots; ++i) {
    const std::string at = "version " + std::to_string(v) + " slot " + std::to_string(i) + ": ";
    if (v == 0) {
      if (r->blocks[i] != nullptr || r->sizes[i] != 0 || r->stamps[i] != 0)
        return at + "not empty at version 0";
      continue;
    }
    if (r->sizes[i] != m.sizes[i])
      return at + "size " + std::to_string(r->sizes[i]) + ", expected " +
             std::to_string(m.sizes[i]);
    if (r->stamps[i] != m.stamps[i])
      return at + "stamp " + std::to_string(r->stamps[i]) + ", expected " +
             std::to_string(m.stamps[i]);
    const auto* p = reinterpret_cast<const char*>(r->blocks[i]);
    if (p < base + kAllocatorOffset || p + r->sizes[i] > base + heap.capacity())
      return at + "block pointer outside the heap";
    for (uint64_t j = 0; j < r->sizes[i] / 8; ++j) {
      if (r->blocks[i][j] != StampWord(i, r->stamps[i], j))
        return at + "word " + std::to_string(j) + " does not hold stamp " +
               std::to_string(r->stamps[i]) + " (a mix of checkpoints or lost data)";
    }
    ranges.emplace_back(reinterpret_cast<uintptr_t>(p),
                        reinterpret_cast<uintptr_t>(p) + r->sizes[i]);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) return "two blocks overlap";
  auto alloc = HeapAllocator::Attach(base + kAllocatorOffset, heap.capacity() - kAllocatorOffset);
  if (!alloc.ok()) return "allocator: " + alloc.status().ToString();
  std::unique_ptr<HeapAllocator> owned(*alloc);
  Status s = owned->Check();
  if (!s.ok()) return "allocator: " + s.ToString();
  return "";
}

}  // namespace amber::testing
