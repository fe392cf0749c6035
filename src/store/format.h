// format.h — the byte layout of a store file (documented for humans in
// docs/format.md; keep the two in step). All integers little-endian; every
// structure starts on a 4 KiB boundary and is checksummed with CRC-32C.
//
//   [0, 4 KiB)            superblock slot 0
//   [4 KiB, 8 KiB)        superblock slot 1
//   [8 KiB, log_offset)   home checksum table: uint32 CRC-32C per heap page
//                         (0 = page never migrated, must read as zeros)
//   [log_offset, +log_size)     checkpoint log: a ring of generations
//   [home_offset, +capacity)    home image: heap page i at home_offset + i * 4 KiB
//
// A generation in the log: one or more descriptor pages (GenHeader followed by
// `page_count` GenEntry), then the page images in entry order, then one commit
// page (GenCommit). It occupies descriptor_pages + page_count + 1 pages, starts at
// a page-aligned log offset and never wraps: if it does not fit before the end
// of the log region it starts at log offset 0.
//
// Thread-safety: plain structs and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "amber/status.h"

namespace amber::format {

inline constexpr uint32_t kPageSize = 4096;
// Version 2: a generation counts once it is complete and synced (see
// docs/format.md); version 1 also needed a synced superblock naming it, so a
// version-1 reader would drop generations a version-2 writer reported durable.
// Version-1 stores are read (their rules are a special case) and upgraded when
// opened for writing.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kOldestReadableVersion = 1;
// Architecture tag: x86-64, little-endian, 8-byte pointers. A store written on
// another architecture is refused (the heap holds raw pointers and native layouts).
inline constexpr uint32_t kArchX86_64 = 0x8664'0108;
inline constexpr uint64_t kSuperblockSlots = 2;
inline constexpr uint64_t kTableOffset = kSuperblockSlots * kPageSize;  // 8 KiB
inline constexpr uint64_t kHomeAlign = uint64_t{2} << 20;               // 2 MiB

inline constexpr char kSuperMagic[8] = {'A', 'M', 'B', 'E', 'R', 'S', 'B', '1'};
inline constexpr char kGenMagic[8] = {'A', 'M', 'B', 'E', 'R', 'G', 'H', '1'};
inline constexpr char kCommitMagic[8] = {'A', 'M', 'B', 'E', 'R', 'C', 'M', '1'};

// One superblock slot. The valid slot with the higher `sequence` is current.
// Written to slot (sequence % 2), so the other slot always holds the previous one.
struct Superblock {
  char magic[8];
  uint32_t format_version;
  uint32_t page_size;
  uint32_t arch;
  uint32_t flags;          // bits 0-1: tracking method of the last writer
                           // (0 unknown, 1 uffd-wp-async, 2 full); bit 2:
                           // kFlagUnnamedCount; rest 0
  uint64_t sequence;       // +1 on every superblock write
  uint64_t base_address;   // where the heap is mapped
  uint64_t capacity;       // heap bytes (multiple of kPageSize)
  uint64_t log_offset;     // file offset of the log region (== LogOffset(capacity))
  uint64_t log_size;       // bytes (multiple of kPageSize)
  uint64_t home_offset;    // file offset of heap page 0 (multiple of kHomeAlign)
  uint64_t committed_gen;  // newest generation it names (0 = none yet); complete
                           // newer ones may follow at log_head (docs/format.md)
  uint64_t log_tail;       // log-relative offset of the oldest unmigrated generation
  uint64_t log_head;       // log-relative offset where the next generation goes;
                           // log_tail == log_head: nothing to replay
  uint64_t heap_used;      // heap high-water bytes at committed_gen
  uint64_t created_us;     // wall clock, microseconds since the epoch
  uint64_t commit_us;      // wall clock of committed_gen's capture
  uint32_t crc;            // CRC-32C of all bytes before this field
  uint32_t pad;
};
static_assert(sizeof(Superblock) == 128);

struct GenHeader {
  char magic[8];
  uint64_t gen;
  uint64_t page_count;
  uint64_t descriptor_pages;  // pages holding this header and the entries
  uint64_t heap_used;         // heap high-water bytes at capture
  uint64_t capture_us;        // wall clock at capture
  uint32_t crc;               // CRC-32C of the descriptor (header+entries) with crc = 0
  uint32_t pad;
  uint64_t reserved;
};
static_assert(sizeof(GenHeader) == 64);

struct GenEntry {
  uint64_t page;  // heap page number (byte offset / kPageSize)
  uint32_t crc;   // CRC-32C of the page image
  uint32_t pad;
};
static_assert(sizeof(GenEntry) == 16);

struct GenCommit {
  char magic[8];
  uint64_t gen;
  uint64_t page_count;
  uint64_t total_pages;     // descriptor_pages + page_count + 1
  uint32_t descriptor_crc;  // equals GenHeader::crc
  uint32_t crc;             // CRC-32C of the bytes before this field
};
static_assert(sizeof(GenCommit) == 40);

inline constexpr uint64_t DescriptorPages(uint64_t page_count) {
  return (sizeof(GenHeader) + page_count * sizeof(GenEntry) + kPageSize - 1) / kPageSize;
}
inline constexpr uint64_t GenerationPages(uint64_t page_count) {
  return DescriptorPages(page_count) + page_count + 1;
}
inline constexpr uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
inline constexpr uint64_t TableBytes(uint64_t capacity) {
  return RoundUp(capacity / kPageSize * sizeof(uint32_t), kPageSize);
}
inline constexpr uint64_t LogOffset(uint64_t capacity) {
  return kTableOffset + TableBytes(capacity);
}
inline constexpr uint64_t HomeOffset(uint64_t capacity, uint64_t log_size) {
  return RoundUp(LogOffset(capacity) + log_size, kHomeAlign);
}

inline constexpr uint32_t kFlagTrackingMask = 3;
// Bit 2: the writer did not sync its superblocks on their own (one sync per
// generation), so complete generations past log_head count (docs/format.md).
// Clear: every generation it reported is named by a synced superblock.
inline constexpr uint32_t kFlagUnnamedCount = 4;
inline const char* TrackingName(uint32_t flags) {
  switch (flags & kFlagTrackingMask) {
    case 1:
      return "uffd-wp-async";
    case 2:
      return "full";
    default:
      return "unknown";
  }
}

// Fills crc; returns the superblock's checksum-valid bytes.
void SealSuperblock(Superblock* sb);
// Whether `bytes` of log at log offset `pos` lie wholly in the free part of
// the ring that `sb` describes, so that a generation there leaves the head off
// the tail. The writer places a generation only where this holds (at the head,
// else at 0), and recovery adopts an unnamed generation only where it holds.
bool FreeInLog(const Superblock& sb, uint64_t pos, uint64_t bytes);
// Checks magic, crc, version, page size, architecture and internal consistency
// (offsets and sizes line up, fit in file_size when file_size != 0, head/tail
// inside the log). kCorruption / kNotSupported with a precise message.
Status ValidateSuperblock(const Superblock& sb, uint64_t file_size);

}  // namespace amber::format
