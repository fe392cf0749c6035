// heap_allocator_test.cc — tests of the in-region allocator: sizes and alignments,
// no overlaps, reuse, coalescing, exhaustion, re-attach at the same address,
// structural checks and a multi-threaded stress run.
//
// Thread-safety: each test owns its regions; the stress test shares one allocator
// between its threads on purpose. Regions are mapped where the kernel chooses
// (never a fixed address of our own), so the tests also run under TSan.
#include "alloc/heap_allocator.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace amber {
namespace {

constexpr size_t kPage = 4096;

// An anonymous, zero-filled, lazily backed mapping.
class Region {
 public:
  explicit Region(size_t len, void* at = nullptr) : len_(len) {
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    if (at != nullptr) flags |= MAP_FIXED_NOREPLACE;
    void* p = mmap(at, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~Region() {
    if (base_ != nullptr) munmap(base_, len_);
  }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  char* base() const { return base_; }
  size_t len() const { return len_; }

 private:
  char* base_;
  size_t len_;
};

std::unique_ptr<HeapAllocator> FormatOrDie(const Region& r) {
  auto a = HeapAllocator::Format(r.base(), r.len());
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return std::unique_ptr<HeapAllocator>(a.ok() ? *a : nullptr);
}

struct Block {
  char* p;
  size_t size;
  uint8_t tag;
};

void Fill(const Block& b) { std::memset(b.p, b.tag, b.size); }

bool Intact(const Block& b) {
  for (size_t i = 0; i < b.size; ++i) {
    if (static_cast<uint8_t>(b.p[i]) != b.tag) return false;
  }
  return true;
}

// No two blocks' usable extents overlap.
void ExpectDisjoint(const HeapAllocator& a, std::vector<Block> blocks) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& x, const Block& y) { return x.p < y.p; });
  for (size_t i = 1; i < blocks.size(); ++i) {
    ASSERT_LE(blocks[i - 1].p + a.UsableSize(blocks[i - 1].p), blocks[i].p)
        << "blocks " << static_cast<void*>(blocks[i - 1].p) << " and "
        << static_cast<void*>(blocks[i].p) << " overlap";
  }
}

size_t RandomSize(std::mt19937_64& rng) {
  unsigned pick = rng() % 100;
  if (pick < 70) return 1 + rng() % 256;
  if (pick < 92) return 257 + rng() % (16384 - 256);
  return 16385 + rng() % 300000;
}

TEST(HeapAllocator, FormatRejectsBadArguments) {
  Region r(1 << 20);
  ASSERT_NE(r.base(), nullptr);
  EXPECT_EQ(HeapAllocator::Format(r.base() + 8, 64 * kPage).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(HeapAllocator::Format(r.base(), 64 * kPage + 100).status().code(),
            Code::kInvalidArgument);
  // Header + page map + chunk table + one 64 KiB chunk do not fit in 16 pages.
  EXPECT_EQ(HeapAllocator::Format(r.base(), 16 * kPage).status().code(), Code::kInvalidArgument);
  auto ok = HeapAllocator::Format(r.base(), 20 * kPage);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  delete *ok;
}

TEST(HeapAllocator, ManySizesAndAlignmentsDoNotOverlap) {
  Region r(size_t{512} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  std::mt19937_64 rng(1);
  std::vector<Block> live;
  uint8_t tag = 0;
  for (int i = 0; i < 20000; ++i) {
    size_t size = RandomSize(rng);
    size_t align = rng() % 2 ? 16 : size_t{1} << (rng() % 17);  // 1 .. 64 KiB
    void* p = a->Allocate(size, align);
    ASSERT_NE(p, nullptr) << "size " << size << " align " << align;
    auto addr = reinterpret_cast<uintptr_t>(p);
    EXPECT_EQ(addr % std::max<size_t>(align, 16), 0u) << "size " << size << " align " << align;
    EXPECT_GE(a->UsableSize(p), size);
    EXPECT_GE(static_cast<char*>(p), r.base());
    EXPECT_LE(static_cast<char*>(p) + size, r.base() + a->HighWater());
    Block b{static_cast<char*>(p), size, ++tag};
    Fill(b);
    live.push_back(b);
    if (rng() % 3 == 0) {  // free a random live block
      size_t k = rng() % live.size();
      ASSERT_TRUE(Intact(live[k])) << "block " << static_cast<void*>(live[k].p) << " damaged";
      a->Deallocate(live[k].p);
      live[k] = live.back();
      live.pop_back();
    }
  }
  size_t usable = 0;
  for (const Block& b : live) {
    ASSERT_TRUE(Intact(b)) << "block " << static_cast<void*>(b.p) << " damaged";
    usable += a->UsableSize(b.p);
  }
  ExpectDisjoint(*a, live);
  EXPECT_EQ(a->AllocatedBytes(), usable);
  Status s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (const Block& b : live) a->Deallocate(b.p);
  EXPECT_EQ(a->AllocatedBytes(), 0u);
  s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(HeapAllocator, UsableSizeFollowsClasses) {
  Region r(size_t{64} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  for (size_t size = 1; size <= 40000; size += (size < 512 ? 1 : 97)) {
    void* p = a->Allocate(size);
    ASSERT_NE(p, nullptr);
    size_t u = a->UsableSize(p);
    EXPECT_GE(u, size);
    if (size <= 16384) {
      EXPECT_LE(u, std::max<size_t>(16, size + size / 4 + 16)) << "size " << size;
    } else {
      EXPECT_EQ(u, (size + kPage - 1) / kPage * kPage) << "size " << size;
    }
    a->Deallocate(p);
  }
  EXPECT_EQ(a->UsableSize(nullptr), 0u);
  void* z = a->Allocate(0);
  EXPECT_NE(z, nullptr);
  EXPECT_EQ(a->UsableSize(z), 16u);
  a->Deallocate(z);
  a->Deallocate(nullptr);  // no-op
  EXPECT_EQ(a->AllocatedBytes(), 0u);
}

TEST(HeapAllocator, LargeAlignments) {
  Region r(size_t{256} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  std::vector<void*> ps;
  for (size_t align = 8192; align <= (size_t{4} << 20); align <<= 1) {
    for (size_t size : {size_t{1}, size_t{5000}, size_t{100000}}) {
      void* p = a->Allocate(size, align);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u);
      std::memset(p, 0x5a, size);
      ps.push_back(p);
    }
  }
  Status s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (void* p : ps) a->Deallocate(p);
  s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(a->AllocatedBytes(), 0u);
}

TEST(HeapAllocator, FreedBlocksAreReused) {
  Region r(size_t{64} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  void* p = a->Allocate(64);
  a->Deallocate(p);
  EXPECT_EQ(a->Allocate(64), p);
  void* big = a->Allocate(100000);
  size_t hw = a->HighWater();
  a->Deallocate(big);
  EXPECT_EQ(a->HighWater(), hw);  // the high-water mark never goes down
  EXPECT_EQ(a->Allocate(100000), big);
  EXPECT_EQ(a->HighWater(), hw);
}

TEST(HeapAllocator, HighWaterCoversMetadataAndHandedOutPages) {
  Region r(size_t{1} << 30);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  size_t meta = a->HighWater();
  // 1 header page + 1 MiB page map + 512 KiB chunk table.
  EXPECT_EQ(meta, kPage + (size_t{1} << 20) + (size_t{512} << 10));
  void* p = a->Allocate(16);
  EXPECT_EQ(static_cast<char*>(p), r.base() + meta);
  EXPECT_EQ(a->HighWater(), meta + 65536);  // one chunk
  void* q = a->Allocate(size_t{1} << 20);
  EXPECT_EQ(static_cast<char*>(q), r.base() + meta + 65536);
  EXPECT_EQ(a->HighWater(), meta + 65536 + (size_t{1} << 20));
}

TEST(HeapAllocator, TouchesOnlyPagesInUse) {
  Region r(size_t{8} << 30);  // the page map alone is 8 MiB: it must be written lazily
  ASSERT_NE(r.base(), nullptr);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  void* p = a->Allocate(16);
  void* q = a->Allocate(size_t{64} << 20);  // a large run, never written by the caller
  ASSERT_NE(p, nullptr);
  ASSERT_NE(q, nullptr);
  a->Deallocate(a->Allocate(40));
  size_t pages = a->HighWater() / kPage;
  std::vector<unsigned char> vec(pages);
  ASSERT_EQ(mincore(r.base(), pages * kPage, vec.data()), 0);
  size_t resident = 0;
  for (unsigned char v : vec) resident += v & 1;
  // Header; the page-map pages holding the two chunks' entries and the large run's
  // first and last entries (2); one chunk-table page; the two chunks' first pages.
  EXPECT_LE(resident, 6u);
}

TEST(HeapAllocator, LargeRunsCoalesce) {
  Region r(size_t{64} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  const size_t run = 5 * kPage;
  char* A = static_cast<char*>(a->Allocate(run));
  char* B = static_cast<char*>(a->Allocate(run));
  char* C = static_cast<char*>(a->Allocate(run));
  char* D = static_cast<char*>(a->Allocate(run));  // keeps C off the top
  ASSERT_EQ(B, A + run);
  ASSERT_EQ(C, B + run);
  ASSERT_EQ(D, C + run);
  a->Deallocate(A);
  a->Deallocate(C);
  Status s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  // 15 pages only fit once B merges with both neighbours.
  EXPECT_EQ(a->Allocate(3 * run), D + run);  // from the top, for now
  a->Deallocate(D + run);
  a->Deallocate(B);
  s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  size_t hw = a->HighWater();
  EXPECT_EQ(a->Allocate(3 * run), A);
  a->Deallocate(A);
  // Splitting: the front of the merged run first, then the rest of it.
  EXPECT_EQ(a->Allocate(run), A);
  EXPECT_EQ(a->Allocate(2 * run), A + run);
  EXPECT_EQ(a->HighWater(), hw);
  a->Deallocate(A);
  a->Deallocate(A + run);
  // Freeing the top run gives everything back to the never-used space.
  a->Deallocate(D);
  s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(a->Allocate(40 * kPage), A);
  EXPECT_EQ(a->HighWater(), hw + 5 * kPage);  // the top was 35 pages above A
}

TEST(HeapAllocator, EmptyChunksReturnToPageRuns) {
  Region r(size_t{64} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  std::vector<void*> ps;
  for (int i = 0; i < 10000; ++i) ps.push_back(a->Allocate(32));  // 5 chunks
  size_t hw = a->HighWater();
  for (void* p : ps) a->Deallocate(p);
  Status s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  // One empty chunk stays with the class; the other 4 (256 KiB) are free pages.
  void* big = a->Allocate(4 * 65536);
  EXPECT_LT(static_cast<char*>(big), r.base() + hw);
  EXPECT_EQ(a->HighWater(), hw);
  a->Deallocate(big);
  EXPECT_TRUE(a->Check().ok());
}

TEST(HeapAllocator, ExhaustionReturnsNull) {
  Region r(1 << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->Allocate(SIZE_MAX), nullptr);
  EXPECT_EQ(a->Allocate(r.len()), nullptr);
  EXPECT_EQ(a->Allocate(16, 3), nullptr);  // not a power of two
  EXPECT_EQ(a->Allocate(16, size_t{1} << 40), nullptr);
  std::vector<Block> blocks;
  uint8_t tag = 0;
  for (;;) {
    void* p = a->Allocate(1000);
    if (p == nullptr) break;
    blocks.push_back({static_cast<char*>(p), 1000, ++tag});
    Fill(blocks.back());
  }
  EXPECT_GT(blocks.size(), 200u);
  EXPECT_EQ(a->Allocate(65536), nullptr);
  EXPECT_EQ(a->Allocate(16), nullptr);  // a new chunk no longer fits
  EXPECT_LE(a->HighWater(), r.len());
  Status s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (const Block& b : blocks) {
    ASSERT_TRUE(Intact(b));
    a->Deallocate(b.p);
  }
  s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  // All but the class's one kept chunk merged back: a big run fits again.
  void* big = a->Allocate(r.len() / 2);
  EXPECT_NE(big, nullptr);
  EXPECT_NE(a->Allocate(16), nullptr);
}

TEST(HeapAllocatorAttach, SeesTheSameStateAtTheSameAddress) {
  const size_t len = size_t{256} << 20;
  auto region = std::make_unique<Region>(len);
  char* addr = region->base();
  ASSERT_NE(addr, nullptr);
  auto a = FormatOrDie(*region);
  ASSERT_TRUE(a);
  std::mt19937_64 rng(7);
  std::vector<Block> live;
  uint8_t tag = 0;
  for (int i = 0; i < 5000; ++i) {
    size_t size = RandomSize(rng);
    void* p = a->Allocate(size);
    ASSERT_NE(p, nullptr);
    live.push_back({static_cast<char*>(p), size, ++tag});
    Fill(live.back());
    if (rng() % 2 == 0) {  // leave free lists and free runs behind
      size_t k = rng() % live.size();
      a->Deallocate(live[k].p);
      live[k] = live.back();
      live.pop_back();
    }
  }
  const size_t allocated = a->AllocatedBytes();
  const size_t hw = a->HighWater();
  // Everything the allocator needs lies below the high-water mark: save just
  // that, map a fresh zero region at the same address, and put it back.
  std::vector<char> saved(addr, addr + hw);
  a.reset();
  region.reset();
  region = std::make_unique<Region>(len, addr);
  ASSERT_EQ(region->base(), addr) << "could not map the same address again";
  std::memcpy(addr, saved.data(), hw);

  auto attached = HeapAllocator::Attach(addr, len);
  ASSERT_TRUE(attached.ok()) << attached.status().ToString();
  a.reset(*attached);
  Status s = a->Check();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(a->AllocatedBytes(), allocated);
  EXPECT_EQ(a->HighWater(), hw);
  for (const Block& b : live) ASSERT_TRUE(Intact(b));
  for (int i = 0; i < 5000; ++i) {
    size_t size = RandomSize(rng);
    void* p = a->Allocate(size);
    ASSERT_NE(p, nullptr);
    live.push_back({static_cast<char*>(p), size, ++tag});
    Fill(live.back());
  }
  for (const Block& b : live) ASSERT_TRUE(Intact(b));
  ExpectDisjoint(*a, live);
  for (const Block& b : live) a->Deallocate(b.p);
  EXPECT_EQ(a->AllocatedBytes(), 0u);
  s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(HeapAllocatorAttach, RejectsBadHeaders) {
  const size_t len = size_t{16} << 20;
  Region r(len);
  ASSERT_NE(r.base(), nullptr);
  auto never = HeapAllocator::Attach(r.base(), len);
  ASSERT_EQ(never.status().code(), Code::kCorruption);
  EXPECT_NE(never.status().message().find("bad magic"), std::string::npos)
      << never.status().ToString();

  delete *HeapAllocator::Format(r.base(), len);
  auto wrong_len = HeapAllocator::Attach(r.base(), len / 2);
  ASSERT_EQ(wrong_len.status().code(), Code::kCorruption);
  EXPECT_NE(wrong_len.status().message().find("bytes"), std::string::npos);

  // Same bytes at another address: the stored pointers would be wrong.
  Region other(len);
  std::memcpy(other.base(), r.base(), kPage);
  auto moved = HeapAllocator::Attach(other.base(), len);
  ASSERT_EQ(moved.status().code(), Code::kCorruption);
  EXPECT_NE(moved.status().message().find("formatted at"), std::string::npos);

  uint32_t version;
  std::memcpy(&version, r.base() + 8, 4);
  uint32_t bad_version = version + 1;
  std::memcpy(r.base() + 8, &bad_version, 4);
  auto v = HeapAllocator::Attach(r.base(), len);
  ASSERT_EQ(v.status().code(), Code::kCorruption);
  EXPECT_NE(v.status().message().find("version"), std::string::npos);
  std::memcpy(r.base() + 8, &version, 4);

  r.base()[0] ^= 1;  // damage the magic
  auto m = HeapAllocator::Attach(r.base(), len);
  ASSERT_EQ(m.status().code(), Code::kCorruption);
  EXPECT_NE(m.status().message().find("bad magic"), std::string::npos);
  r.base()[0] ^= 1;
  auto ok = HeapAllocator::Attach(r.base(), len);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  delete *ok;
}

TEST(HeapAllocatorCheck, DetectsCorruptFreeListPointer) {
  Region r(size_t{16} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  std::vector<void*> ps;
  for (int i = 0; i < 10; ++i) ps.push_back(a->Allocate(48));
  a->Deallocate(ps[2]);
  a->Deallocate(ps[5]);
  a->Deallocate(ps[7]);  // head of the chunk's free list; links to ps[5]
  ASSERT_TRUE(a->Check().ok());
  uint64_t saved;
  std::memcpy(&saved, ps[7], 8);
  uint64_t junk = reinterpret_cast<uintptr_t>(ps[7]) + 8;  // inside the chunk, misaligned
  std::memcpy(ps[7], &junk, 8);
  Status s = a->Check();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("free-list entry"), std::string::npos) << s.ToString();
  junk = 0x1234;  // outside the region
  std::memcpy(ps[7], &junk, 8);
  EXPECT_EQ(a->Check().code(), Code::kCorruption);
  junk = reinterpret_cast<uintptr_t>(ps[7]);  // a cycle
  std::memcpy(ps[7], &junk, 8);
  s = a->Check();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("cycle"), std::string::npos) << s.ToString();
  std::memcpy(ps[7], &saved, 8);
  EXPECT_TRUE(a->Check().ok());
}

TEST(HeapAllocatorCheck, DetectsCorruptPageMapAndRunLinks) {
  Region r(size_t{16} << 20);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  // Sizes above 16 KiB are page runs.
  char* x = static_cast<char*>(a->Allocate(5 * kPage));
  char* y = static_cast<char*>(a->Allocate(5 * kPage));
  ASSERT_NE(a->Allocate(5 * kPage), nullptr);  // keeps y's run below the top once freed
  // Page map: one uint32 per page of the region, starting at byte 4096.
  auto* page_map = reinterpret_cast<uint32_t*>(r.base() + kPage);
  size_t last = static_cast<size_t>(x - r.base()) / kPage + 4;
  uint32_t saved = page_map[last];
  page_map[last] ^= 1;
  Status s = a->Check();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("last page"), std::string::npos) << s.ToString();
  page_map[last] = saved;
  ASSERT_TRUE(a->Check().ok());

  a->Deallocate(y);  // a free run: its first page holds {next, prev}
  ASSERT_TRUE(a->Check().ok());
  void* saved_prev;
  std::memcpy(&saved_prev, y + 8, 8);
  void* junk = x;
  std::memcpy(y + 8, &junk, 8);
  s = a->Check();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("back link"), std::string::npos) << s.ToString();
  std::memcpy(y + 8, &saved_prev, 8);
  EXPECT_TRUE(a->Check().ok());

  // The header is re-validated too: a frontier beyond the region (offset 52).
  uint32_t frontier;
  std::memcpy(&frontier, r.base() + 52, 4);
  uint32_t bad_frontier = static_cast<uint32_t>(r.len() / kPage) + 1;
  std::memcpy(r.base() + 52, &bad_frontier, 4);
  s = a->Check();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("frontier"), std::string::npos) << s.ToString();
  std::memcpy(r.base() + 52, &frontier, 4);
  EXPECT_TRUE(a->Check().ok());
}

TEST(HeapAllocatorStress, FourThreads) {
  Region r(size_t{1} << 30);
  auto a = FormatOrDie(r);
  ASSERT_TRUE(a);
  constexpr int kThreads = 4;
  constexpr int kOps = 60000;
  std::mutex mailbox_mu;  // blocks handed to another thread to free
  std::vector<Block> mailbox;
  std::atomic<int> damaged{0};
  std::atomic<bool> done{false};

  auto worker = [&](int id) {
    std::mt19937_64 rng(100 + id);
    std::vector<Block> live;
    uint8_t tag = static_cast<uint8_t>(id * 50);
    for (int i = 0; i < kOps; ++i) {
      unsigned pick = rng() % 100;
      if (pick < 55 || live.empty()) {
        size_t size = rng() % 10 == 0 ? 1 + rng() % 70000 : 1 + rng() % 512;
        void* p = a->Allocate(size, rng() % 8 == 0 ? 64 : 16);
        if (p == nullptr) {
          damaged++;
          continue;
        }
        live.push_back({static_cast<char*>(p), size, ++tag});
        Fill(live.back());
      } else {
        size_t k = rng() % live.size();
        if (!Intact(live[k])) damaged++;
        if (pick < 65) {
          std::lock_guard<std::mutex> lock(mailbox_mu);
          mailbox.push_back(live[k]);
        } else {
          a->Deallocate(live[k].p);
        }
        live[k] = live.back();
        live.pop_back();
      }
      if (i % 64 == 0) {  // free what other threads handed over
        std::vector<Block> mine;
        {
          std::lock_guard<std::mutex> lock(mailbox_mu);
          mine.swap(mailbox);
        }
        for (const Block& b : mine) {
          if (!Intact(b)) damaged++;
          a->Deallocate(b.p);
        }
      }
    }
    std::lock_guard<std::mutex> lock(mailbox_mu);
    mailbox.insert(mailbox.end(), live.begin(), live.end());
  };

  std::thread checker([&] {
    while (!done.load()) {
      if (!a->Check().ok()) damaged++;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  done = true;
  checker.join();
  EXPECT_EQ(damaged.load(), 0);
  ExpectDisjoint(*a, mailbox);
  Status s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (const Block& b : mailbox) {
    EXPECT_TRUE(Intact(b));
    a->Deallocate(b.p);
  }
  EXPECT_EQ(a->AllocatedBytes(), 0u);
  s = a->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace amber
