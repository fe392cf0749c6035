// log.cc — the checkpoint log: a ring of generations in the preallocated log
// region. Appending (writer thread) and walking/validating (recovery, migration,
// `amber verify`, `amber checkpoints`). Layout in format.h.
#include <algorithm>
#include <cstring>

#include "store/store.h"
#include "util/crc32c.h"

namespace amber {

using format::GenCommit;
using format::GenEntry;
using format::GenHeader;
using format::kPageSize;
using format::Superblock;

namespace {

std::string At(uint64_t gen, uint64_t pos) {
  return "generation " + std::to_string(gen) + " at log offset " + std::to_string(pos);
}

}  // namespace

Status Store::ReadLog(void* buf, size_t n, uint64_t off, bool from_device) const {
  if (from_device && direct_fd_ >= 0 && off % kPageSize == 0 &&
      !direct_reads_refused_.load(std::memory_order_relaxed)) {
    PageBuffer aligned;
    if (!aligned.Assign(format::RoundUp(n, kPageSize)))
      return ResourceExhausted("no memory to read the log");
    Status s = env_->PRead(direct_fd_, aligned.data, aligned.size, off);
    if (s.ok()) {
      std::memcpy(buf, aligned.data, n);
      return s;
    }
    if (s.code() != Code::kInvalidArgument && s.code() != Code::kNotSupported) return s;
    // O_DIRECT reads refused here: the page cache it is.
    direct_reads_refused_.store(true, std::memory_order_relaxed);
  }
  return env_->PRead(fd_, buf, n, off);
}

Status Store::ReadGeneration(uint64_t pos, uint64_t min_gen, bool verify_pages, GenInfo* info,
                             bool from_device) const {
  Superblock sb = superblock();
  const uint64_t log_pages = sb.log_size / kPageSize;
  if (pos % kPageSize != 0 || pos + kPageSize > sb.log_size)
    return Corruption("log position " + std::to_string(pos) + " outside the log");
  std::vector<char> buf(kPageSize);
  AMBER_RETURN_IF_ERROR(ReadLog(buf.data(), kPageSize, sb.log_offset + pos, from_device));
  GenHeader h;
  std::memcpy(&h, buf.data(), sizeof(h));
  if (std::memcmp(h.magic, format::kGenMagic, sizeof(h.magic)) != 0)
    return Corruption("no generation header at log offset " + std::to_string(pos));
  // Validate sizes before trusting them for any allocation or read.
  if (h.page_count >= log_pages || h.descriptor_pages != format::DescriptorPages(h.page_count))
    return Corruption(At(h.gen, pos) + ": implausible page count " + std::to_string(h.page_count));
  const uint64_t total = format::GenerationPages(h.page_count);
  if (pos + total * kPageSize > sb.log_size)
    return Corruption(At(h.gen, pos) + ": runs past the end of the log");
  if (h.gen < min_gen) return Corruption(At(h.gen, pos) + ": older than expected");
  if (h.heap_used > sb.capacity)
    return Corruption(At(h.gen, pos) + ": heap_used " + std::to_string(h.heap_used) +
                      " beyond the capacity");
  buf.resize(h.descriptor_pages * kPageSize);
  if (h.descriptor_pages > 1)
    AMBER_RETURN_IF_ERROR(ReadLog(buf.data() + kPageSize, (h.descriptor_pages - 1) * kPageSize,
                                  sb.log_offset + pos + kPageSize, from_device));
  const size_t desc_bytes = sizeof(GenHeader) + h.page_count * sizeof(GenEntry);
  GenHeader zeroed = h;
  zeroed.crc = 0;
  uint32_t crc = crc32c::Value(&zeroed, sizeof(zeroed));
  crc = crc32c::Extend(crc, buf.data() + sizeof(GenHeader), desc_bytes - sizeof(GenHeader));
  if (crc != h.crc) return Corruption(At(h.gen, pos) + ": descriptor checksum mismatch");

  char cpage[sizeof(GenCommit)];
  const uint64_t commit_pos = pos + (total - 1) * kPageSize;
  AMBER_RETURN_IF_ERROR(ReadLog(cpage, sizeof(cpage), sb.log_offset + commit_pos, from_device));
  GenCommit c;
  std::memcpy(&c, cpage, sizeof(c));
  if (std::memcmp(c.magic, format::kCommitMagic, sizeof(c.magic)) != 0 ||
      c.crc != crc32c::Value(&c, offsetof(GenCommit, crc)))
    return Corruption(At(h.gen, pos) + ": commit record missing or damaged (torn checkpoint)");
  if (c.gen != h.gen || c.page_count != h.page_count || c.total_pages != total ||
      c.descriptor_crc != h.crc)
    return Corruption(At(h.gen, pos) + ": commit record does not match its descriptor");

  info->gen = h.gen;
  info->log_pos = pos;
  info->page_count = h.page_count;
  info->total_pages = total;
  info->heap_used = h.heap_used;
  info->capture_us = h.capture_us;
  info->entries.resize(h.page_count);
  if (h.page_count > 0)  // an empty vector's data() may be null: no memcpy then
    std::memcpy(info->entries.data(), buf.data() + sizeof(GenHeader),
                h.page_count * sizeof(GenEntry));
  std::vector<uint64_t> seen;
  seen.reserve(h.page_count);
  for (uint64_t i = 0; i < h.page_count; ++i) {
    const GenEntry& e = info->entries[i];
    if (e.page >= sb.capacity / kPageSize)
      return Corruption(At(h.gen, pos) + ": page entry " + std::to_string(i) + " out of range");
    seen.push_back(e.page);
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end())
    return Corruption(At(h.gen, pos) + ": a page appears twice");
  return verify_pages ? CheckImages(*info, from_device) : Status::OK();
}

Status Store::CheckImages(const GenInfo& info, bool from_device) const {
  constexpr uint64_t kBatch = 256;
  const uint64_t first =
      superblock().log_offset + info.log_pos + format::DescriptorPages(info.page_count) * kPageSize;
  std::vector<char> data(std::min(kBatch, info.page_count) * kPageSize);
  for (uint64_t i = 0; i < info.page_count; i += kBatch) {
    const uint64_t n = std::min(kBatch, info.page_count - i);
    AMBER_RETURN_IF_ERROR(ReadLog(data.data(), n * kPageSize, first + i * kPageSize, from_device));
    for (uint64_t j = 0; j < n; ++j) {
      if (crc32c::Value(data.data() + j * kPageSize, kPageSize) != info.entries[i + j].crc)
        return Corruption(At(info.gen, info.log_pos) + ": image of heap page " +
                          std::to_string(info.entries[i + j].page) + " checksum mismatch");
    }
  }
  return Status::OK();
}

Status Store::ForEachGeneration(bool verify_pages,
                                const std::function<Status(const GenInfo&)>& fn) const {
  return ForEachGeneration(superblock(), verify_pages, fn);
}

Status Store::ForEachGeneration(const Superblock& sb, bool verify_pages,
                                const std::function<Status(const GenInfo&)>& fn) const {
  uint64_t pos = sb.log_tail;
  uint64_t min_gen = 0;
  uint64_t last_gen = 0;
  GenInfo info;
  // A generation that does not fit before the end of the log was written at 0,
  // so a position without the next generation means "continue at 0" (once).
  const uint64_t max_steps = 2 * sb.log_size / kPageSize + 2;
  for (uint64_t steps = 0; pos != sb.log_head; ++steps) {
    if (steps > max_steps) return Corruption("log walk does not reach the log head");
    Status s = ReadGeneration(pos, min_gen, verify_pages, &info);
    if (!s.ok() && pos != 0 && pos != sb.log_tail) {
      Status at_zero = ReadGeneration(0, min_gen, verify_pages, &info);
      if (at_zero.ok()) {
        pos = 0;
        s = at_zero;
      }
    }
    if (!s.ok()) return s.WithContext("committed log");
    if (info.gen > sb.committed_gen)
      return Corruption(At(info.gen, pos) + ": newer than the committed generation " +
                        std::to_string(sb.committed_gen));
    AMBER_RETURN_IF_ERROR(fn(info));
    last_gen = info.gen;
    min_gen = info.gen + 1;
    pos += info.total_pages * kPageSize;
    if (pos == sb.log_size) pos = 0;
  }
  if (sb.log_tail != sb.log_head && last_gen != sb.committed_gen)
    return Corruption("log ends at generation " + std::to_string(last_gen) +
                      " but the superblock names " + std::to_string(sb.committed_gen));
  return Status::OK();
}

Result<uint64_t> Store::PlaceGeneration(const Superblock& sb, uint64_t bytes) const {
  if (bytes >= sb.log_size)
    return NoSpace("checkpoint of " + std::to_string(bytes >> 10) + " KiB does not fit in the " +
                   std::to_string(sb.log_size >> 10) +
                   " KiB log; create the store with a larger log_size");
  if (sb.log_head == sb.log_tail) return uint64_t{0};  // empty: restart the ring at 0
  if (format::FreeInLog(sb, sb.log_head, bytes)) return sb.log_head;
  if (format::FreeInLog(sb, 0, bytes)) return uint64_t{0};
  return NoSpace("log full");
}

Status Store::AdoptCompleteGenerations(Superblock* sb, uint64_t* adopted) const {
  *adopted = 0;
  GenInfo info;
  // Read-write: from the device, not the page cache (ReadLog), since what is
  // adopted is then published.
  const bool from_device = mode_ == Mode::kReadWrite;
  for (;;) {
    // Where the writer would have put the next generation: at the head, or at
    // 0 when it did not fit there.
    uint64_t pos = sb->log_head;
    Status s =
        ReadGeneration(pos, sb->committed_gen + 1, /*verify_pages=*/false, &info, from_device);
    if (s.code() == Code::kCorruption && pos != 0) {
      // Nothing at the head that the ring walk would take for the next
      // generation (a writer that went to 0 zeroed the head in the same sync).
      // Only then may one at 0 count: if the head holds one the walk would
      // take, the walk would go through it, and a generation at 0 was never
      // reported (the zeroing of the head was part of its sync).
      pos = 0;
      s = ReadGeneration(pos, sb->committed_gen + 1, /*verify_pages=*/false, &info, from_device);
    }
    if (s.code() == Code::kCorruption) return Status::OK();  // none, or torn
    AMBER_RETURN_IF_ERROR(s);
    // Every image is checked: without a superblock naming it, nothing says
    // the generation's sync completed, so any page of it may be missing.
    s = CheckImages(info, from_device);
    if (s.code() == Code::kCorruption) return Status::OK();
    AMBER_RETURN_IF_ERROR(s);
    if (!format::FreeInLog(*sb, pos, info.total_pages * kPageSize)) return Status::OK();
    if (sb->log_head == sb->log_tail) sb->log_tail = info.log_pos;  // was empty
    sb->log_head = (info.log_pos + info.total_pages * kPageSize) % sb->log_size;
    sb->committed_gen = info.gen;
    sb->heap_used = info.heap_used;
    sb->commit_us = info.capture_us;
    ++*adopted;
  }
}

Status Store::AppendGeneration(uint64_t gen, std::span<const uint64_t> pages,
                               std::span<const ImageRun> images, uint64_t heap_used,
                               uint64_t capture_us) {
  if (mode_ != Mode::kReadWrite) return FailedPrecondition("store is open read-only");
  AMBER_RETURN_IF_ERROR(CheckNotPoisoned());
  {
    // A generation whose superblock write failed must count before the space
    // after it is reused.
    std::lock_guard<std::mutex> p(publish_mu_);
    AMBER_RETURN_IF_ERROR(FlushPendingLocked());
  }
  // Placement may use a stale tail: a concurrent migration only ever frees space.
  Superblock sb = superblock();
  if (gen <= sb.committed_gen) return Internal("generation numbers must increase");
  const uint64_t n = pages.size();
  const uint64_t dpages = format::DescriptorPages(n);
  const uint64_t total = dpages + n + 1;
  Result<uint64_t> place = PlaceGeneration(sb, total * kPageSize);
  if (!place.ok() && place.status().code() == Code::kNoSpace && sb.log_head != sb.log_tail &&
      total * kPageSize < sb.log_size) {
    // Back-pressure: wait for the migration in progress, if any, then migrate
    // whatever still stands in the way.
    std::lock_guard<std::mutex> m(migrate_mu_);
    sb = superblock();
    place = PlaceGeneration(sb, total * kPageSize);
    if (!place.ok() && place.status().code() == Code::kNoSpace) {
      AMBER_RETURN_IF_ERROR(MigrateLocked());
      sb = superblock();
      place = PlaceGeneration(sb, total * kPageSize);
    }
  }
  if (!place.ok()) return place.status();
  const uint64_t pos = *place;
  // Every write of this generation comes after this; see DataSyncSince.
  const uint64_t failures = sync_failures_.load();
  if (pos != sb.log_head) {
    // Not at the head (wrapping, or restarting an empty ring at 0): recovery
    // looks for a generation the superblock does not name yet at the head
    // first, then at 0, and the ring walk goes on at 0 when it finds none at
    // the head. Make sure neither finds one there: an earlier attempt whose
    // sync failed may have left a complete, valid-looking generation at the
    // head, which would be taken for this one. The page at the head is free
    // (the head never lands on the tail), and this write is synced with the
    // generation.
    AMBER_RETURN_IF_ERROR(ZeroLogPage(sb, sb.log_head));
  }

  // Descriptor: header + entries, checksummed together.
  if (!scratch_.Assign(dpages * kPageSize))
    return ResourceExhausted("no memory for a generation descriptor");
  GenHeader h{};
  std::memcpy(h.magic, format::kGenMagic, sizeof(h.magic));
  h.gen = gen;
  h.page_count = n;
  h.descriptor_pages = dpages;
  h.heap_used = heap_used;
  h.capture_us = capture_us;
  auto* entries = reinterpret_cast<GenEntry*>(scratch_.data + sizeof(GenHeader));
  uint64_t covered = 0;
  for (const ImageRun& run : images) covered += run.pages;
  if (covered != n) return Internal("image runs do not cover the generation's pages");
  const uint64_t base = sb.log_offset + pos;

  // Images first, in chunks: checksum a chunk, write it, and start its
  // writeback, so the device works while the next chunk is checksummed and
  // copied, instead of all of it waiting for the final fdatasync. (Write order
  // before that sync does not matter: nothing counts until the superblock
  // naming this generation is published after it.)
  constexpr uint64_t kChunkPages = 4096;  // 16 MiB
  // O_DIRECT pays for large generations (no copy into fresh page-cache pages);
  // a small one's few synchronous device writes would cost more than the
  // copies: `amber bench commit` (one dirty page) measured 3.6x an fdatasync
  // with them against 2.9-3.2x buffered.
  constexpr uint64_t kDirectMinPages = 256;  // 1 MiB
  const bool direct = direct_fd_ >= 0 && n >= kDirectMinPages;
  std::vector<uint32_t> crcs(n);
  std::vector<const char*> image_ptrs;
  image_ptrs.reserve(std::min(n, kChunkPages));
  uint64_t off = base + dpages * kPageSize, idx = 0;
  for (const ImageRun& run : images) {
    for (uint64_t j = 0; j < run.pages;) {
      const uint64_t k = std::min(kChunkPages, run.pages - j);
      image_ptrs.clear();
      for (uint64_t p = 0; p < k; ++p) image_ptrs.push_back(run.data + (j + p) * kPageSize);
      crc32c::ValuePages(image_ptrs.data(), k, kPageSize, crcs.data() + idx);
      AMBER_RETURN_IF_ERROR(WriteLog(run.data + j * kPageSize, k * kPageSize, off, direct));
      // Buffered (no O_DIRECT here): a hint only, errors surface at the
      // fdatasync below.
      if (!direct) env_->StartWriteback(fd_, off, k * kPageSize).IgnoreError();
      off += k * kPageSize;
      idx += k;
      j += k;
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    entries[i].page = pages[i];
    entries[i].crc = crcs[i];
    entries[i].pad = 0;
  }
  uint32_t crc = crc32c::Value(&h, sizeof(h));
  h.crc = crc32c::Extend(crc, entries, n * sizeof(GenEntry));
  std::memcpy(scratch_.data, &h, sizeof(h));

  AMBER_RETURN_IF_ERROR(WriteLog(scratch_.data, scratch_.size, base, direct));
  GenCommit c{};
  std::memcpy(c.magic, format::kCommitMagic, sizeof(c.magic));
  c.gen = gen;
  c.page_count = n;
  c.total_pages = total;
  c.descriptor_crc = h.crc;
  c.crc = crc32c::Value(&c, offsetof(GenCommit, crc));
  // The page after the generation, where the head moves, is zeroed in the
  // same sync (it is free: the head never lands on the tail). Recovery looks
  // for unnamed generations at a durable superblock's head, and this keeps
  // anything an earlier process left there (a failed attempt, numbered above
  // what is committed now) from being taken for one of this process's.
  const uint64_t end = pos + total * kPageSize;
  const bool zero_after = end < sb.log_size;  // else the head moves to 0: zeroed below
  if (!scratch_.Assign((zero_after ? 2 : 1) * kPageSize))
    return ResourceExhausted("no memory for a commit record");
  std::memcpy(scratch_.data, &c, sizeof(c));
  AMBER_RETURN_IF_ERROR(
      WriteLog(scratch_.data, scratch_.size, base + (dpages + n) * kPageSize, direct));
  if (!zero_after) AMBER_RETURN_IF_ERROR(ZeroLogPage(sb, 0));
  AMBER_RETURN_IF_ERROR(DataSyncSince(failures));

  // The generation is complete and durable: it counts (recovery adopts it
  // even if this superblock is lost), so the superblock is written without a
  // sync of its own; the next generation's or migration's sync carries it.
  // (Not where adoption cannot read the device: see sync_publishes_.)
  // Only this generation's fields: a migration may have moved the tail since sb.
  return PublishChange(/*sync=*/sync_publishes_, [&](Superblock* next) {
    next->committed_gen = gen;
    if (next->log_head == next->log_tail) next->log_tail = pos;  // was empty
    next->log_head = (pos + total * kPageSize) % next->log_size;
    next->heap_used = heap_used;
    next->commit_us = capture_us;
    appended_.emplace_back(gen, pos);
  });
}

}  // namespace amber
