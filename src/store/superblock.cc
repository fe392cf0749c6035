// superblock.cc — sealing and validating superblocks (see format.h, docs/format.md).
// Pure functions; thread-safe.
#include <cinttypes>
#include <cstdio>

#include "store/format.h"
#include "util/crc32c.h"
#include "util/hex.h"

namespace amber::format {
void SealSuperblock(Superblock* sb) {
  sb->pad = 0;
  sb->crc = crc32c::Value(sb, offsetof(Superblock, crc));
}

Status ValidateSuperblock(const Superblock& sb, uint64_t file_size) {
  if (std::memcmp(sb.magic, kSuperMagic, sizeof(kSuperMagic)) != 0)
    return Corruption("superblock: bad magic (not an amber store)");
  uint32_t crc = crc32c::Value(&sb, offsetof(Superblock, crc));
  if (crc != sb.crc) return Corruption("superblock: checksum mismatch");
  if (sb.format_version < kOldestReadableVersion || sb.format_version > kFormatVersion)
    return NotSupported("store format version " + std::to_string(sb.format_version) +
                        ", this build reads versions " + std::to_string(kOldestReadableVersion) +
                        " to " + std::to_string(kFormatVersion));
  if (sb.page_size != kPageSize)
    return NotSupported("store page size " + std::to_string(sb.page_size) + ", this build uses " +
                        std::to_string(kPageSize));
  if (sb.arch != kArchX86_64)
    return NotSupported("store was written on another architecture (tag " + Hex(sb.arch) + ")");
  if (sb.base_address < (uint64_t{1} << 24) || sb.base_address % kPageSize != 0)
    return Corruption("superblock: base address " + Hex(sb.base_address) +
                      " not page aligned or below 16 MiB");
  if (sb.capacity == 0 || sb.capacity % kPageSize != 0 || sb.capacity > (uint64_t{1} << 46))
    return Corruption("superblock: capacity " + std::to_string(sb.capacity) + " invalid");
  if (sb.base_address > (uint64_t{1} << 47) - sb.capacity)
    return Corruption("superblock: heap range beyond the user address space");
  if (sb.log_offset != LogOffset(sb.capacity)) return Corruption("superblock: log offset invalid");
  if (sb.log_size < 16 * kPageSize || sb.log_size % kPageSize != 0 ||
      sb.log_size > (uint64_t{1} << 44))
    return Corruption("superblock: log size " + std::to_string(sb.log_size) + " invalid");
  if (sb.home_offset != HomeOffset(sb.capacity, sb.log_size))
    return Corruption("superblock: home offset " + std::to_string(sb.home_offset) +
                      " does not follow the log");
  if (sb.log_tail % kPageSize != 0 || sb.log_tail >= sb.log_size || sb.log_head % kPageSize != 0 ||
      sb.log_head >= sb.log_size)
    return Corruption("superblock: log head/tail outside the log");
  if (sb.heap_used > sb.capacity) return Corruption("superblock: heap_used beyond capacity");
  if (file_size != 0 && file_size < sb.home_offset + sb.capacity)
    return Corruption("store file is truncated: " + std::to_string(file_size) +
                      " bytes, expected " + std::to_string(sb.home_offset + sb.capacity));
  return Status::OK();
}

bool FreeInLog(const Superblock& sb, uint64_t pos, uint64_t bytes) {
  const uint64_t L = sb.log_size, head = sb.log_head, tail = sb.log_tail;
  if (bytes >= L || pos >= L) return false;
  if (head == tail) return pos + bytes <= L;  // empty: anywhere it does not wrap
  if (head > tail) {
    // Free: [head, L) and [0, tail). The new head must not land on the tail.
    if (pos == head) return head + bytes < L || (head + bytes == L && tail != 0);
    return pos == 0 && bytes < tail;
  }
  return pos == head && head + bytes < tail;  // free: [head, tail)
}

}  // namespace amber::format
