// Hostile-store test: stores that are truncated, from another format version,
// page size or architecture, or whose header fields were changed with their
// checksums recomputed (so only the field checks stand in the way) must get a
// clear error from Store::Open (read-only and read-write), Heap::Open and
// `amber verify` — never a crash, never an accepted store. And read-only
// inspection (`amber info`, `verify`, `checkpoints`, Store kReadOnly) must never
// modify a store, not even one whose log still needs replaying. (The libFuzzer
// target tests/fuzz/store_fuzzer.cc explores the same ground at random.)
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "amber/amber.h"
#include "env/fault_injection_env.h"
#include "stamp_workload.h"
#include "store/format.h"
#include "store/store.h"
#include "test_util.h"
#include "util/crc32c.h"

namespace amber {
namespace {

using format::kPageSize;
using format::Superblock;

const std::string kAmber = std::string(AMBER_BIN_DIR) + "/amber";

Options HostileOptions() {
  Options o;
  o.capacity = uint64_t{4} << 20;
  o.log_size = uint64_t{1} << 20;  // the test workload never has to migrate
  o.base_address = testing::TestBase(4);
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.create_if_missing = false;
  return o;
}

// A store with committed generations still in its log (as after a crash): a few
// workload steps, each checkpointed, and the heap closed without migrating.
void MakeStore(const std::string& path) {
  Options o = HostileOptions();
  o.create_if_missing = true;
  auto heap = Heap::Open(path, o);
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  auto r = (*heap)->Root<testing::StampRoot>(testing::kStampRootName);
  ASSERT_TRUE(r.ok());
  for (uint64_t v = 1; v <= 3; ++v) {
    ASSERT_TRUE(testing::StampStep(**heap, *r, v));
    ASSERT_TRUE((*heap)->Checkpoint().ok());
  }
  ASSERT_TRUE((*heap)->Close().ok());
}

std::string ReadAll(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

void WriteAt(const std::string& path, uint64_t off, const void* p, size_t n) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fseek(f, static_cast<long>(off), SEEK_SET), 0);
  ASSERT_EQ(std::fwrite(p, 1, n, f), n);
  std::fclose(f);
}

// Applies `edit` to both superblock slots (whichever is current) and reseals them.
void EditSuperblocks(const std::string& path, const std::function<void(Superblock*)>& edit) {
  const std::string bytes = ReadAll(path);
  for (uint64_t slot = 0; slot < 2; ++slot) {
    Superblock sb;
    std::memcpy(&sb, bytes.data() + slot * kPageSize, sizeof(sb));
    if (std::memcmp(sb.magic, format::kSuperMagic, 8) != 0) continue;
    edit(&sb);
    format::SealSuperblock(&sb);
    WriteAt(path, slot * kPageSize, &sb, sizeof(sb));
  }
}

// Runs `amber ARGS` and returns its exit status (or -1 if the CLI is not
// built); *out receives what it printed.
int RunCli(const std::string& args, std::string* out) {
  if (::access(kAmber.c_str(), X_OK) != 0) return -1;
  std::string cmd = "'" + kAmber + "' " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Runs `amber verify` on the store (see RunCli).
int CliVerify(const std::string& path, std::string* out) {
  return RunCli("verify '" + path + "'", out);
}

// The store must be refused everywhere with `code`, the message containing `says`.
void ExpectRefused(const std::string& path, Code code, const std::string& says) {
  for (auto mode : {Store::Mode::kReadOnly, Store::Mode::kReadWrite}) {
    auto s = Store::Open(Env::Default(), path, HostileOptions(), mode);
    if (s.ok()) {
      // Some damage shows only when the log or home image is read.
      Status r = (*s)->Recover(true);
      EXPECT_EQ(r.code(), code) << r.ToString();
      EXPECT_NE(r.message().find(says), std::string::npos) << r.ToString();
    } else {
      EXPECT_EQ(s.status().code(), code) << s.status().ToString();
      EXPECT_NE(s.status().message().find(says), std::string::npos) << s.status().ToString();
    }
  }
  auto heap = Heap::Open(path, HostileOptions());
  ASSERT_FALSE(heap.ok()) << "Heap::Open accepted a hostile store";
  EXPECT_EQ(heap.status().code(), code) << heap.status().ToString();
  std::string out;
  const int exit_code = CliVerify(path, &out);
  if (exit_code >= 0) {
    EXPECT_EQ(exit_code, code == Code::kCorruption ? 1 : 2) << out;
    EXPECT_NE(out.find(says), std::string::npos) << out;
  }
}

TEST(HostileStore, WrongVersionPageSizeArchitecture) {
  testing::TempDir dir;
  const std::string path = dir.File("h.amber");
  MakeStore(path);
  const std::string good = ReadAll(path);
  struct Case {
    std::function<void(Superblock*)> edit;
    const char* says;
  } cases[] = {
      {[](Superblock* sb) { sb->format_version = 0; }, "format version 0"},
      {[](Superblock* sb) { sb->format_version = 3; }, "format version 3"},
      {[](Superblock* sb) { sb->page_size = 8192; }, "page size 8192"},
      {[](Superblock* sb) { sb->page_size = 65536; }, "page size 65536"},
      {[](Superblock* sb) { sb->arch = 0x0aa64108; }, "another architecture"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.says);
    WriteAt(path, 0, good.data(), good.size());
    EditSuperblocks(path, c.edit);
    ExpectRefused(path, Code::kNotSupported, c.says);
  }
}

TEST(HostileStore, TruncatedAnywhere) {
  testing::TempDir dir;
  const std::string path = dir.File("h.amber");
  MakeStore(path);
  const std::string good = ReadAll(path);
  const uint64_t log = format::LogOffset(HostileOptions().capacity);
  const uint64_t home = format::HomeOffset(HostileOptions().capacity, HostileOptions().log_size);
  for (uint64_t size : {uint64_t{0}, uint64_t{100}, uint64_t{4096}, uint64_t{8191}, uint64_t{8192},
                        log - 4096, log + 12345, home, home + 4096, good.size() - 1}) {
    SCOPED_TRACE("truncated to " + std::to_string(size));
    WriteAt(path, 0, good.data(), good.size());
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0);
    ExpectRefused(path, Code::kCorruption, size < format::kTableOffset ? "too short" : "truncated");
  }
}

// Every superblock field: an impossible value with a valid checksum.
TEST(HostileStore, ImpossibleSuperblockFieldsWithValidChecksums) {
  testing::TempDir dir;
  const std::string path = dir.File("h.amber");
  MakeStore(path);
  const std::string good = ReadAll(path);
  struct Case {
    const char* field;
    std::function<void(Superblock*)> edit;
  } cases[] = {
      {"magic", [](Superblock* sb) { sb->magic[7] = '2'; }},
      {"base address 0", [](Superblock* sb) { sb->base_address = 0; }},
      {"base address low", [](Superblock* sb) { sb->base_address = 0x1000; }},
      {"base address unaligned", [](Superblock* sb) { sb->base_address += 8; }},
      {"base address high", [](Superblock* sb) { sb->base_address = uint64_t{1} << 47; }},
      {"capacity 0", [](Superblock* sb) { sb->capacity = 0; }},
      {"capacity unaligned", [](Superblock* sb) { sb->capacity += 100; }},
      {"capacity huge", [](Superblock* sb) { sb->capacity = uint64_t{1} << 50; }},
      {"capacity larger", [](Superblock* sb) { sb->capacity *= 2; }},
      {"log offset", [](Superblock* sb) { sb->log_offset += kPageSize; }},
      {"log size small", [](Superblock* sb) { sb->log_size = 4096; }},
      {"log size unaligned", [](Superblock* sb) { sb->log_size += 1; }},
      {"log size huge", [](Superblock* sb) { sb->log_size = uint64_t{1} << 60; }},
      {"home offset", [](Superblock* sb) { sb->home_offset += uint64_t{2} << 20; }},
      {"log tail outside", [](Superblock* sb) { sb->log_tail = sb->log_size; }},
      {"log head outside", [](Superblock* sb) { sb->log_head = sb->log_size + kPageSize; }},
      {"log head unaligned", [](Superblock* sb) { sb->log_head += 512; }},
      {"heap used", [](Superblock* sb) { sb->heap_used = sb->capacity + kPageSize; }},
      {"committed generation ahead", [](Superblock* sb) { sb->committed_gen += 5; }},
      {"committed generation behind", [](Superblock* sb) { sb->committed_gen -= 1; }},
      {"log head before its generation",
       [](Superblock* sb) { sb->log_head = sb->log_tail + kPageSize; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    WriteAt(path, 0, good.data(), good.size());
    EditSuperblocks(path, c.edit);
    ExpectRefused(path, Code::kCorruption, "");
  }
}

// Generation header fields at the log tail, with every checksum recomputed.
TEST(HostileStore, ImpossibleGenerationFieldsWithValidChecksums) {
  testing::TempDir dir;
  const std::string path = dir.File("h.amber");
  MakeStore(path);
  const std::string good = ReadAll(path);
  Superblock sb;
  std::memcpy(&sb, good.data() + kPageSize, sizeof(sb));  // slot 1 or 0: take the newer
  Superblock sb0;
  std::memcpy(&sb0, good.data(), sizeof(sb0));
  if (sb0.sequence > sb.sequence) sb = sb0;
  ASSERT_NE(sb.log_tail, sb.log_head) << "the store should have generations to replay";
  const uint64_t at = sb.log_offset + sb.log_tail;
  struct Case {
    const char* field;
    std::function<void(format::GenHeader*)> edit;
  } cases[] = {
      {"page count huge", [](format::GenHeader* h) { h->page_count = uint64_t{1} << 40; }},
      {"page count larger", [](format::GenHeader* h) { h->page_count += 1; }},
      {"descriptor pages", [](format::GenHeader* h) { h->descriptor_pages += 1; }},
      {"generation 0", [](format::GenHeader* h) { h->gen = 0; }},
      {"generation ahead", [](format::GenHeader* h) { h->gen += 100; }},
      {"heap used", [](format::GenHeader* h) { h->heap_used = uint64_t{1} << 50; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    WriteAt(path, 0, good.data(), good.size());
    format::GenHeader h;
    std::memcpy(&h, good.data() + at, sizeof(h));
    c.edit(&h);
    h.crc = 0;
    std::string desc = good.substr(at, kPageSize);
    std::memcpy(desc.data(), &h, sizeof(h));
    const size_t entries = std::min<uint64_t>(h.page_count, (kPageSize - sizeof(h)) / 16) * 16;
    h.crc = crc32c::Extend(crc32c::Value(&h, sizeof(h)), desc.data() + sizeof(h), entries);
    WriteAt(path, at, &h, sizeof(h));
    ExpectRefused(path, Code::kCorruption, "generation");
  }
  // A page entry pointing outside the heap.
  WriteAt(path, 0, good.data(), good.size());
  format::GenHeader h;
  std::memcpy(&h, good.data() + at, sizeof(h));
  ASSERT_GT(h.page_count, 0u);
  format::GenEntry e;
  std::memcpy(&e, good.data() + at + sizeof(h), sizeof(e));
  e.page = sb.capacity / kPageSize;
  WriteAt(path, at + sizeof(h), &e, sizeof(e));
  std::string desc = ReadAll(path).substr(at, kPageSize);
  h.crc = 0;
  h.crc = crc32c::Extend(crc32c::Value(&h, sizeof(h)), desc.data() + sizeof(h), h.page_count * 16);
  WriteAt(path, at, &h, sizeof(h));
  // The commit record repeats the descriptor checksum.
  const uint64_t commit = at + (format::GenerationPages(h.page_count) - 1) * kPageSize;
  format::GenCommit c;
  std::memcpy(&c, good.data() + commit, sizeof(c));
  c.descriptor_crc = h.crc;
  c.crc = crc32c::Value(&c, offsetof(format::GenCommit, crc));
  WriteAt(path, commit, &c, sizeof(c));
  ExpectRefused(path, Code::kCorruption, "out of range");
}

// Read-only inspection of a store whose log still needs replaying, and whose
// last generation no superblock names (its superblock lost in a power cut):
// the CLI's info, verify and checkpoints, and Store kReadOnly with a full
// verification, leave every byte (and the modification time) as it was, and
// take no lock; they count the unnamed generation, as a read-write open does.
TEST(HostileStore, ReadOnlyInspectionNeverModifiesTheStore) {
  testing::TempDir dir;
  const std::string path = dir.File("h.amber");
  MakeStore(path);
  {
    auto s = Store::Open(Env::Default(), path, HostileOptions(), Store::Mode::kReadOnly);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    std::vector<GenInfo> gens;
    ASSERT_TRUE((*s)->ForEachGeneration(false,
                                        [&](const GenInfo& g) {
                                          gens.push_back(g);
                                          return Status::OK();
                                        })
                    .ok());
    ASSERT_GE(gens.size(), 2u);
    const GenInfo last = gens.back(), prev = gens[gens.size() - 2];
    EditSuperblocks(path, [&](Superblock* sb) {
      sb->committed_gen = prev.gen;
      sb->log_head = last.log_pos;
      sb->heap_used = prev.heap_used;
      sb->commit_us = prev.capture_us;
    });
  }
  const std::string before = ReadAll(path);
  struct stat st0;
  ASSERT_EQ(::stat(path.c_str(), &st0), 0);
  {
    FaultInjectionEnv env(Env::Default());
    auto s = Store::Open(&env, path, HostileOptions(), Store::Mode::kReadOnly);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->adopted_at_open(), 1u);
    ASSERT_TRUE((*s)->Recover(true).ok());
    EXPECT_EQ((*s)->Migrate().code(), Code::kFailedPrecondition);
    EXPECT_EQ((*s)->AppendGeneration(99, {}, nullptr, 0, 0).code(), Code::kFailedPrecondition);
    using FI = FaultInjectionEnv;
    for (auto op : {FI::kPWrite, FI::kDataSync, FI::kSync, FI::kTruncate, FI::kAllocate, FI::kLock,
                    FI::kUnlink})
      EXPECT_EQ(env.CallCount(op), 0u) << FI::OpName(op);
  }
  if (::access(kAmber.c_str(), X_OK) == 0) {
    for (const char* cmd : {"info", "verify", "checkpoints"}) {
      std::string c = "'" + kAmber + "' " + cmd + " '" + path + "' >/dev/null 2>&1";
      EXPECT_EQ(std::system(c.c_str()), 0) << cmd;
      c = "'" + kAmber + "' " + cmd + " --json '" + path + "' >/dev/null 2>&1";
      EXPECT_EQ(std::system(c.c_str()), 0) << cmd << " --json";
    }
    std::string info;
    EXPECT_EQ(RunCli("info --json '" + path + "'", &info), 0) << info;
    EXPECT_NE(info.find("\"unnamed_generations\":1"), std::string::npos) << info;
  }
  struct stat st1;
  ASSERT_EQ(::stat(path.c_str(), &st1), 0);
  EXPECT_TRUE(ReadAll(path) == before) << "read-only inspection changed the store";
  EXPECT_EQ(st1.st_mtim.tv_sec, st0.st_mtim.tv_sec);
  EXPECT_EQ(st1.st_mtim.tv_nsec, st0.st_mtim.tv_nsec);
  // The store still opens read-write and replays its log.
  auto heap = Heap::Open(path, HostileOptions());
  ASSERT_TRUE(heap.ok()) << heap.status().ToString();
  auto r = (*heap)->Root<testing::StampRoot>(testing::kStampRootName);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->version, 3u);
  EXPECT_EQ(testing::StampCheck(**heap, *r), "");
}

}  // namespace
}  // namespace amber
