// store_fuzzer — libFuzzer target over opening, recovering and verifying hostile
// store files (build: -DAMBER_BUILD_FUZZERS=ON with clang; run: scripts/fuzz.sh).
//
// An input is a patch over one of three real stores that the target builds at
// start-up with amber itself (a deterministic clock makes them identical in every
// process): "fresh" (just created), "busy" (several unmigrated generations in a
// wrapped log, some pages migrated home) and "clean" (everything migrated).
//
//   byte 0      which base store
//   byte 1      flags: 1 reseal superblock checksums, 2 reseal generations (image,
//               descriptor and commit checksums), 4 reseal the home checksum table,
//               8 resize the file to `param`, 16 also Heap::Open it read-write,
//               32 ... with verify_on_open off
//   bytes 2-5   param (little-endian u32)
//   then patches: region (0 superblocks, 1 table, 2 log, 3 home, else the whole
//               file), a 24-bit offset into it, a length byte, that many bytes.
//
// Resealing lets the fuzzer reach the checks behind the checksums (sizes, offsets,
// generation numbers, page entries) instead of stopping at the first CRC. For each
// input: Store::Open read-only, ForEachGeneration(verify_pages), VerifyHome — which
// must not write or sync anything — then optionally Heap::Open (recovery replays the
// log's newest images home) and a check that the heap was mapped exactly at the recorded
// address and range and unmapped again at Close. Errors are fine; crashes,
// out-of-bounds reads, huge allocations (libFuzzer's -malloc_limit_mb) and stray
// mappings are findings.
//
//   AMBER_FUZZ_WRITE_CORPUS=DIR store_fuzzer   writes the seed corpus to DIR and exits.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "amber/amber.h"
#include "env/env.h"
#include "env/fault_injection_env.h"
#include "store/format.h"
#include "store/store.h"
#include "util/crc32c.h"

namespace {

using amber::format::GenCommit;
using amber::format::GenEntry;
using amber::format::GenHeader;
using amber::format::kPageSize;
using amber::format::Superblock;

constexpr uint64_t kCapacity = uint64_t{1} << 20;  // the smallest store there is
constexpr uint64_t kLogSize = 64 << 10;

// A store image in memory: only pages that were ever written are kept.
class SparseImage {
 public:
  uint64_t size = 0;
  std::map<uint64_t, std::array<char, kPageSize>> pages;

  void Read(uint64_t off, void* buf, size_t n) const {
    auto* out = static_cast<char*>(buf);
    for (size_t i = 0; i < n;) {
      const uint64_t at = off + i, page = at / kPageSize, in = at % kPageSize;
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - i, kPageSize - in));
      auto it = pages.find(page);
      if (it == pages.end() || at >= size) {
        std::memset(out + i, 0, chunk);
      } else {
        std::memcpy(out + i, it->second.data() + in, chunk);
      }
      i += chunk;
    }
  }
  void Write(uint64_t off, const void* buf, size_t n) {
    const auto* in = static_cast<const char*>(buf);
    for (size_t i = 0; i < n;) {
      const uint64_t at = off + i, page = at / kPageSize, o = at % kPageSize;
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - i, kPageSize - o));
      if (at >= size) return;
      auto [it, fresh] = pages.try_emplace(page);
      if (fresh) it->second.fill(0);
      std::memcpy(it->second.data() + o, in + i, chunk);
      i += chunk;
    }
  }
  void Resize(uint64_t n) {
    size = n;
    for (auto it = pages.begin(); it != pages.end();) {
      if (it->first * kPageSize >= n) {
        it = pages.erase(it);
      } else {
        if ((it->first + 1) * kPageSize > n)
          std::memset(it->second.data() + (n - it->first * kPageSize), 0,
                      (it->first + 1) * kPageSize - n);
        ++it;
      }
    }
  }
  static SparseImage Load(const std::string& path) {
    SparseImage img;
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) std::abort();
    struct stat st;
    ::fstat(fd, &st);
    img.size = static_cast<uint64_t>(st.st_size);
    std::array<char, kPageSize> buf;
    static const std::array<char, kPageSize> kZero{};
    for (uint64_t p = 0; p * kPageSize < img.size; ++p) {
      ssize_t n = ::pread(fd, buf.data(), kPageSize, static_cast<off_t>(p * kPageSize));
      if (n <= 0) break;
      if (static_cast<size_t>(n) < kPageSize) std::memset(buf.data() + n, 0, kPageSize - n);
      if (buf != kZero) img.pages[p] = buf;
    }
    ::close(fd);
    return img;
  }
  // Rewrites `fd` to hold exactly this image (holes stay holes).
  void Store(int fd) const {
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) std::abort();
    for (const auto& [p, data] : pages) {
      const uint64_t n = std::min<uint64_t>(kPageSize, size - p * kPageSize);
      if (::pwrite(fd, data.data(), n, static_cast<off_t>(p * kPageSize)) !=
          static_cast<ssize_t>(n))
        std::abort();
    }
  }
};

// A deterministic wall clock, so that the base stores are byte-identical in every run.
class FixedClockEnv : public amber::EnvWrapper {
 public:
  FixedClockEnv() : EnvWrapper(amber::Env::Default()) {}
  uint64_t WallMicros() override { return 1700000000000000ull; }
};

struct FuzzRoot {
  uint64_t rounds = 0;
  uint64_t* blocks[12] = {};
};

std::string g_dir;  // this process's scratch directory
std::vector<SparseImage> g_bases;
int g_fd = -1;  // the file each input is written to
std::string g_path;

amber::Options BaseOptions(amber::Env* env) {
  amber::Options o;
  o.capacity = kCapacity;
  o.log_size = kLogSize;
  o.base_address = amber::kDefaultBaseAddress;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.env = env;
  return o;
}

void Check(const amber::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "store_fuzzer: building the base stores: %s: %s\n", what,
                 s.ToString().c_str());
    std::abort();
  }
}

// One round of the base workload: rewrites a few blocks (some reallocated).
void Round(amber::Heap& heap, FuzzRoot* r) {
  amber::Section s(heap);
  const uint64_t k = ++r->rounds;
  for (uint64_t i = 0; i < 12; ++i) {
    if ((i + k) % 3 != 0) continue;
    if (r->blocks[i] != nullptr && (i + k) % 4 == 0) {
      heap.Deallocate(r->blocks[i]);
      r->blocks[i] = nullptr;
    }
    const uint64_t bytes = 64 + ((i * 977 + k * 131) % 6000);
    if (r->blocks[i] == nullptr) r->blocks[i] = static_cast<uint64_t*>(heap.Allocate(6200));
    if (r->blocks[i] == nullptr) std::abort();
    for (uint64_t j = 0; j < bytes / 8; ++j) r->blocks[i][j] = (k << 32) ^ (i << 16) ^ j;
  }
}

void BuildBases() {
  const char* t = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (t && *t ? t : "/tmp")) +
      "/amber-fuzz-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  g_dir = tmpl;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  });
  const std::string base = g_dir + "/base.amber";
  FixedClockEnv env;
  {
    auto heap = amber::Heap::Open(base, BaseOptions(&env));
    Check(heap.status(), "create");
    Check((*heap)->Close(), "close fresh");
  }
  g_bases.push_back(SparseImage::Load(base));  // fresh: one generation in the log
  {
    auto heap = amber::Heap::Open(base, BaseOptions(&env));
    Check(heap.status(), "reopen");
    auto root = (*heap)->Root<FuzzRoot>("fuzz");
    Check(root.status(), "root");
    for (int i = 0; i < 9; ++i) {
      Round(**heap, *root);
      Check((*heap)->Checkpoint(), "checkpoint");
    }
    Check((*heap)->Close(), "close busy");
  }
  g_bases.push_back(SparseImage::Load(base));  // busy: wrapped log, unmigrated generations
  {
    auto heap = amber::Heap::Open(base, BaseOptions(&env));  // recovery: log copied home, unsynced
    Check(heap.status(), "recover");
    Check((*heap)->Close(), "close clean");
  }
  {
    // Recovery leaves migration to the writer (only when the log is half full):
    // migrate here, so that this base really has an empty log.
    auto store = amber::Store::Open(&env, base, BaseOptions(&env), amber::Store::Mode::kReadWrite);
    Check(store.status(), "open to migrate");
    Check((*store)->Migrate(), "migrate");
    if ((*store)->LogUsed() != 0) Check(amber::Internal("log not empty after Migrate"), "migrate");
  }
  g_bases.push_back(SparseImage::Load(base));  // clean: empty log
  std::filesystem::remove(base);
  g_path = g_dir + "/input.amber";
  g_fd = ::open(g_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (g_fd < 0) std::abort();
}

// The current superblock of an image (the valid slot with the higher sequence), or
// nullopt-like false.
bool CurrentSuperblock(const SparseImage& img, Superblock* out) {
  bool found = false;
  for (int i = 0; i < 2; ++i) {
    Superblock sb;
    img.Read(uint64_t(i) * kPageSize, &sb, sizeof(sb));
    if (!amber::format::ValidateSuperblock(sb, img.size).ok()) continue;
    if (!found || sb.sequence > out->sequence) *out = sb;
    found = true;
  }
  return found;
}

void ResealSuperblocks(SparseImage* img) {
  for (int i = 0; i < 2; ++i) {
    Superblock sb;
    img->Read(uint64_t(i) * kPageSize, &sb, sizeof(sb));
    if (std::memcmp(sb.magic, amber::format::kSuperMagic, 8) != 0) continue;
    amber::format::SealSuperblock(&sb);
    img->Write(uint64_t(i) * kPageSize, &sb, sizeof(sb));
  }
}

// Recomputes every checksum of every plausible generation header in the log.
void ResealGenerations(SparseImage* img, const Superblock& geometry) {
  const uint64_t log_off = amber::format::LogOffset(geometry.capacity);
  const uint64_t log_pages = kLogSize / kPageSize;
  for (uint64_t p = 0; p < log_pages; ++p) {
    GenHeader h;
    img->Read(log_off + p * kPageSize, &h, sizeof(h));
    if (std::memcmp(h.magic, amber::format::kGenMagic, 8) != 0) continue;
    if (h.page_count >= log_pages) continue;
    const uint64_t dpages = amber::format::DescriptorPages(h.page_count);
    const uint64_t total = dpages + h.page_count + 1;
    if (p + total > log_pages) continue;
    std::vector<GenEntry> entries(h.page_count);
    img->Read(log_off + p * kPageSize + sizeof(GenHeader), entries.data(),
              entries.size() * sizeof(GenEntry));
    std::array<char, kPageSize> page;
    for (uint64_t i = 0; i < h.page_count; ++i) {
      img->Read(log_off + (p + dpages + i) * kPageSize, page.data(), kPageSize);
      entries[i].crc = amber::crc32c::Value(page.data(), kPageSize);
    }
    img->Write(log_off + p * kPageSize + sizeof(GenHeader), entries.data(),
               entries.size() * sizeof(GenEntry));
    h.crc = 0;
    uint32_t crc = amber::crc32c::Value(&h, sizeof(h));
    h.crc = amber::crc32c::Extend(crc, entries.data(), entries.size() * sizeof(GenEntry));
    img->Write(log_off + p * kPageSize, &h, sizeof(h));
    GenCommit c{};
    std::memcpy(c.magic, amber::format::kCommitMagic, 8);
    c.gen = h.gen;
    c.page_count = h.page_count;
    c.total_pages = total;
    c.descriptor_crc = h.crc;
    c.crc = amber::crc32c::Value(&c, offsetof(GenCommit, crc));
    img->Write(log_off + (p + total - 1) * kPageSize, &c, sizeof(c));
  }
}

void ResealTable(SparseImage* img) {
  Superblock sb;
  if (!CurrentSuperblock(*img, &sb)) return;
  const uint64_t pages = std::min(sb.heap_used, sb.capacity) / kPageSize;
  std::array<char, kPageSize> page;
  static const std::array<char, kPageSize> kZero{};
  for (uint64_t p = 0; p < pages; ++p) {
    img->Read(sb.home_offset + p * kPageSize, page.data(), kPageSize);
    const uint32_t crc = page == kZero ? 0 : amber::crc32c::Value(page.data(), kPageSize);
    img->Write(amber::format::kTableOffset + p * 4, &crc, 4);
  }
}

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// Builds the image an input describes.
SparseImage Shape(const uint8_t* data, size_t size, uint8_t* flags) {
  SparseImage img = g_bases[data[0] % g_bases.size()];
  *flags = data[1];
  const uint32_t param = Le32(data + 2);
  const uint64_t log_off = amber::format::LogOffset(kCapacity);
  const uint64_t home_off = amber::format::HomeOffset(kCapacity, kLogSize);
  const uint64_t regions[5][2] = {{0, amber::format::kTableOffset},
                                  {amber::format::kTableOffset, log_off},
                                  {log_off, log_off + kLogSize},
                                  {home_off, home_off + kCapacity},
                                  {0, img.size}};
  for (size_t i = 6; i + 5 <= size;) {
    const uint8_t region = std::min<uint8_t>(data[i], 4);
    const uint32_t off =
        uint32_t{data[i + 1]} | uint32_t{data[i + 2]} << 8 | uint32_t{data[i + 3]} << 16;
    size_t len = data[i + 4];
    i += 5;
    len = std::min(len, size - i);
    const uint64_t lo = regions[region][0], hi = regions[region][1];
    img.Write(lo + off % (hi - lo), data + i, len);
    i += len;
  }
  Superblock geometry;
  const bool have_sb = CurrentSuperblock(img, &geometry);
  if ((*flags & 4) != 0) ResealTable(&img);
  if ((*flags & 2) != 0) {
    if (!have_sb) {
      geometry.capacity = kCapacity;
      geometry.log_size = kLogSize;
    }
    ResealGenerations(&img, geometry);
  }
  if ((*flags & 1) != 0) ResealSuperblocks(&img);
  if ((*flags & 8) != 0) img.Resize(param % (2 * img.size + 1));
  return img;
}

bool Mapped(uintptr_t addr) {
  unsigned char v;
  return ::mincore(reinterpret_cast<void*>(addr & ~uintptr_t{kPageSize - 1}), kPageSize, &v) == 0;
}

void Fail(const char* what) {
  std::fprintf(stderr, "store_fuzzer: %s\n", what);
  std::abort();
}

void WriteCorpus(const std::string& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  auto put = [&](std::vector<uint8_t> in) {
    std::string name = dir + "/seed-" + std::to_string(n++);
    FILE* f = std::fopen(name.c_str(), "wb");
    if (f == nullptr) std::abort();
    std::fwrite(in.data(), 1, in.size(), f);
    std::fclose(f);
  };
  auto patch = [](std::vector<uint8_t>* in, uint8_t region, uint32_t off,
                  std::vector<uint8_t> bytes) {
    in->insert(in->end(), {region, uint8_t(off), uint8_t(off >> 8), uint8_t(off >> 16),
                           uint8_t(bytes.size())});
    in->insert(in->end(), bytes.begin(), bytes.end());
  };
  auto u64 = [](uint64_t v) {
    std::vector<uint8_t> b(8);
    for (int i = 0; i < 8; ++i) b[i] = uint8_t(v >> (8 * i));
    return b;
  };
  for (uint8_t b = 0; b < g_bases.size(); ++b) {
    for (uint8_t flags : {0, 16, 16 | 32, 7, 7 | 16}) put({b, flags, 0, 0, 0, 0});
    // Superblock fields, resealed (both slots: the current one is either).
    const std::pair<uint32_t, std::vector<uint8_t>> fields[] = {
        {8, {2, 0, 0, 0}},                // format version
        {12, {0, 32, 0, 0}},              // page size 8192
        {16, {0x78, 0x56, 0x34, 0x12}},   // architecture
        {32, u64(0x1000)},                // base address
        {40, u64(uint64_t{1} << 46)},     // capacity
        {56, u64(12345)},                 // log size
        {72, u64(0)},                     // committed generation
        {80, u64(kLogSize - kPageSize)},  // log tail
        {88, u64(kLogSize + kPageSize)},  // log head
        {96, u64(kCapacity * 2)},         // heap used
    };
    for (const auto& [off, bytes] : fields) {
      for (uint32_t slot : {0u, 4096u}) {
        std::vector<uint8_t> in = {b, 1 | 16, 0, 0, 0, 0};
        patch(&in, 0, slot + off, bytes);
        put(in);
      }
    }
    // Generation header fields at log offset 0, resealed.
    const std::pair<uint32_t, std::vector<uint8_t>> gen_fields[] = {
        {8, u64(0)}, {16, u64(1u << 30)}, {16, u64(3)}, {24, u64(7)}, {32, u64(~0ull)}};
    for (const auto& [off, bytes] : gen_fields) {
      std::vector<uint8_t> in = {b, 2 | 16, 0, 0, 0, 0};
      patch(&in, 2, off, bytes);
      put(in);
    }
    // A damaged page image, resealed or not; a damaged home page; truncations.
    put({b, 0, 0, 0, 0, 0, 2, 0x10, 0x20, 0, 4, 1, 2, 3, 4});
    put({b, 2 | 16, 0, 0, 0, 0, 2, 0x10, 0x20, 0, 4, 1, 2, 3, 4});
    put({b, 16, 0, 0, 0, 0, 3, 0x00, 0x10, 0, 4, 9, 9, 9, 9});
    put({b, 4 | 16, 0, 0, 0, 0, 3, 0x00, 0x10, 0, 4, 9, 9, 9, 9});
    for (uint32_t len : {0u, 100u, 8192u, 20000u, 2u << 20, (3u << 20) - 4096})
      put({b, 8 | 16, uint8_t(len), uint8_t(len >> 8), uint8_t(len >> 16), uint8_t(len >> 24)});
  }
  std::printf("store_fuzzer: wrote %d seed inputs to %s\n", n, dir.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  BuildBases();
  if (const char* dir = std::getenv("AMBER_FUZZ_WRITE_CORPUS")) {
    WriteCorpus(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  uint8_t flags = 0;
  SparseImage img = Shape(data, size, &flags);
  img.Store(g_fd);

  // Read-only inspection: what `amber verify` does. It must not modify the store.
  {
    amber::FaultInjectionEnv env(amber::Env::Default());
    amber::Options o;
    o.create_if_missing = false;
    o.allow_foreign_owner = true;
    auto store = amber::Store::Open(&env, g_path, o, amber::Store::Mode::kReadOnly);
    if (store.ok()) {
      amber::Store& st = **store;
      uint64_t gens = 0;
      amber::Status s = st.ForEachGeneration(true, [&](const amber::GenInfo& g) {
        if (g.entries.size() != g.page_count) Fail("generation entries do not match page_count");
        ++gens;
        return amber::Status::OK();
      });
      if (s.ok()) st.VerifyHome(st.superblock().heap_used).IgnoreError();
    }
    using FI = amber::FaultInjectionEnv;
    for (auto op : {FI::kPWrite, FI::kDataSync, FI::kSync, FI::kTruncate, FI::kAllocate, FI::kLock,
                    FI::kUnlink}) {
      if (env.CallCount(op) != 0) Fail("read-only inspection modified or locked the store");
    }
  }

  if ((flags & 16) == 0) return 0;
  // Read-write open: replays the log into the file. The heap goes to the address
  // the superblock records (kDefaultBaseAddress in the base stores, safe under ASan;
  // a patched address is refused by validation or by MAP_FIXED_NOREPLACE).
  Superblock sb{};
  const bool have_sb = CurrentSuperblock(img, &sb);
  amber::Options o;
  o.create_if_missing = false;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.verify_on_open = (flags & 32) == 0;
  o.tracking = amber::TrackingMode::kFull;  // the tracker is not under test: fewer syscalls
  auto heap = amber::Heap::Open(g_path, o);
  if (heap.ok()) {
    if (!have_sb) Fail("Heap::Open accepted a store without a valid superblock");
    const auto base = reinterpret_cast<uintptr_t>((*heap)->base());
    if (base != sb.base_address || (*heap)->capacity() != sb.capacity)
      Fail("heap mapped outside the range the superblock records");
    (*heap)->Close().IgnoreError();
    if (Mapped(base) || Mapped(base + sb.capacity - 1)) Fail("heap still mapped after Close");
  } else if (heap.status().code() == amber::Code::kInternal) {
    std::fprintf(stderr, "%s\n", heap.status().ToString().c_str());
    Fail("Heap::Open returned kInternal");
  }
  return 0;
}
