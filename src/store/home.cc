// home.cc — migration of committed generations to the home image, the home
// checksum table, recovery and home verification. Layout in format.h.
#include <algorithm>
#include <map>

#include "store/store.h"
#include "util/crc32c.h"

namespace amber {

using format::kPageSize;
using format::Superblock;

Result<Store::NewestList> Store::NewestImages(const Superblock& sb) const {
  std::map<uint64_t, std::pair<uint64_t, uint32_t>> newest;
  AMBER_RETURN_IF_ERROR(ForEachGeneration(sb, false, [&](const GenInfo& g) {
    const uint64_t data =
        sb.log_offset + g.log_pos + format::DescriptorPages(g.page_count) * kPageSize;
    for (uint64_t i = 0; i < g.page_count; ++i)
      newest[g.entries[i].page] = {data + i * kPageSize, g.entries[i].crc};
    return Status::OK();
  }));
  return NewestList(newest.begin(), newest.end());
}

Status Store::CopyImagesHome(const Superblock& sb, const NewestList& newest, bool check_crc) {
  // In log order: the log was written sequentially (and with O_DIRECT, so it
  // is not in the page cache): read it in large windows at device speed,
  // skipping only long stretches of superseded images, instead of a small
  // random read per run of pages in heap order. Within a generation images
  // are in page order, so the home writes come out mostly ascending too.
  std::vector<std::pair<uint64_t, uint64_t>> order;  // (file offset, index in newest)
  order.reserve(newest.size());
  for (uint64_t i = 0; i < newest.size(); ++i) {
    if ((newest[i].first + 1) * kPageSize > sb.capacity)
      return Corruption("log image of heap page " + std::to_string(newest[i].first) +
                        " lies beyond the heap's capacity");
    order.emplace_back(newest[i].second.first, i);
  }
  std::sort(order.begin(), order.end());
  constexpr uint64_t kWindow = uint64_t{8} << 20;  // bytes read at once
  constexpr uint64_t kMaxGap = 64 * kPageSize;     // superseded bytes read through
  // When the log wraps, its free part lies between the images before the head
  // and those after the tail. A window must not read through it: appends
  // (O_DIRECT ones among them) may be writing there, and a buffered read
  // racing a direct write can leave stale pages in the cache that a later
  // migration would copy home.
  const uint64_t head = sb.log_offset + sb.log_head;
  PageBuffer buf;
  if (!buf.Assign(kWindow)) return ResourceExhausted("no memory for migration");
  size_t i = 0;
  uint64_t drop_from = order.empty() ? 0 : order[0].first;  // see DropCache below
  while (i < order.size()) {
    // A window: images from order[i] on, each within kMaxGap of the previous.
    const uint64_t start = order[i].first;
    size_t j = i + 1;
    while (j < order.size() && order[j].first + kPageSize - start <= kWindow &&
           order[j].first - order[j - 1].first <= kMaxGap &&
           !(order[j - 1].first < head && order[j].first >= head))
      ++j;
    const uint64_t len = order[j - 1].first + kPageSize - start;
    // Buffered: the kernel's readahead fetches the next window while this one
    // is copied (O_DIRECT reads, which do not overlap, were slower for a
    // 190 MiB log; docs/engine.md, "When the disk is slower").
    AMBER_RETURN_IF_ERROR(env_->PRead(fd_, buf.data, len, start));
    // Home writes: runs consecutive both in the window and at home.
    for (size_t k = i; k < j;) {
      size_t e = k + 1;
      while (e < j && order[e].first == order[e - 1].first + kPageSize &&
             newest[order[e].second].first == newest[order[e - 1].second].first + 1)
        ++e;
      if (check_crc) {
        for (size_t q = k; q < e; ++q) {
          const auto& img = newest[order[q].second];
          if (crc32c::Value(buf.data + (order[q].first - start), kPageSize) != img.second.second)
            return Corruption("log image of heap page " + std::to_string(img.first) +
                              " (file offset " + std::to_string(img.second.first) +
                              ") does not match its checksum");
        }
      }
      AMBER_RETURN_IF_ERROR(Write(buf.data + (order[k].first - start), (e - k) * kPageSize,
                                  sb.home_offset + newest[order[k].second].first * kPageSize));
      k = e;
    }
    // Nothing reads these log pages again: dropped at once, rather than left
    // to fill the page cache (with up to half the log per migration), which
    // made a 3.6 GB replay three times slower here. Up to the next window
    // (readahead may have read the superseded stretch before it), unless the
    // free part of the log lies in between; and from the previous window's
    // start, because the kernel evicts only whole folios inside the range, and
    // one may straddle the windows' boundary.
    const bool to_next = j < order.size() && !(order[j - 1].first < head && order[j].first >= head);
    const uint64_t drop_end = to_next ? order[j].first : start + len;
    env_->DropCache(fd_, drop_from, drop_end - drop_from).IgnoreError();
    drop_from = to_next ? start : j < order.size() ? order[j].first : drop_end;
    i = j;
  }
  return Status::OK();
}

Status Store::Migrate() {
  std::lock_guard<std::mutex> m(migrate_mu_);
  return MigrateLocked();
}

Status Store::MigrateLocked() {
  if (mode_ != Mode::kReadWrite) return FailedPrecondition("store is open read-only");
  AMBER_RETURN_IF_ERROR(CheckNotPoisoned());
  // The generations committed now; appends may continue into the free part of
  // the ring while they are copied.
  const Superblock sb = superblock();
  if (sb.log_head == sb.log_tail) return Status::OK();
  // Before the first home write: the writer's log syncs run concurrently, and
  // one of them may be where a writeback error of these pages is reported.
  const uint64_t failures = sync_failures_.load();
  // Newest image of each page: heap page -> (file offset of image, crc).
  AMBER_ASSIGN_OR_RETURN(NewestList newest, NewestImages(sb));
  AMBER_RETURN_IF_ERROR(CopyImagesHome(sb, newest, /*check_crc=*/false));
  // Checksum table: read-modify-write each table page that changes.
  constexpr uint64_t kPerTablePage = kPageSize / sizeof(uint32_t);
  std::vector<uint32_t> tpage(kPerTablePage);
  auto it = newest.begin();
  while (it != newest.end()) {
    const uint64_t tp = it->first / kPerTablePage;
    const uint64_t off = format::kTableOffset + tp * kPageSize;
    AMBER_RETURN_IF_ERROR(env_->PRead(fd_, tpage.data(), kPageSize, off));
    for (; it != newest.end() && it->first / kPerTablePage == tp; ++it)
      tpage[it->first % kPerTablePage] = it->second.second;
    AMBER_RETURN_IF_ERROR(Write(tpage.data(), kPageSize, off));
  }
  AMBER_RETURN_IF_ERROR(DataSyncSince(failures));
  recovered_unsynced_ = false;  // every recovered image was in this migration

  // The new tail: the first generation appended after sb's, or the head when
  // there is none (the log is then empty).
  // Synced: the space the tail leaves is reused at once, so this superblock
  // must be durable before any generation overwrites what it no longer names.
  AMBER_RETURN_IF_ERROR(PublishChange(/*sync=*/true, [&](Superblock* next) {
    auto first_after = std::find_if(appended_.begin(), appended_.end(),
                                    [&](const auto& a) { return a.first > sb.committed_gen; });
    next->log_tail = first_after == appended_.end() ? next->log_head : first_after->second;
    appended_.erase(appended_.begin(), first_after);
  }));
  ++migrations_;
  return Status::OK();
}

Status Store::RecoverInPlace(bool verify_home) {
  if (mode_ != Mode::kReadWrite) return FailedPrecondition("store is open read-only");
  const Superblock sb = superblock();
  AMBER_ASSIGN_OR_RETURN(NewestList newest, NewestImages(sb));
  // The first half of a migration: what a crash in the middle of one leaves
  // (home pages rewritten, not synced, table and superblock untouched), which
  // any later recovery replays again. The mapping then reads the committed
  // state from the page cache.
  AMBER_RETURN_IF_ERROR(CopyImagesHome(sb, newest, /*check_crc=*/true));
  if (!newest.empty()) recovered_unsynced_ = true;
  if (verify_home) AMBER_RETURN_IF_ERROR(VerifyHome(superblock().heap_used));
  return Status::OK();
}

Status Store::Recover(bool verify_home) {
  if (mode_ == Mode::kReadWrite) {
    AMBER_RETURN_IF_ERROR(Migrate().WithContext("recovery"));
  } else {
    AMBER_RETURN_IF_ERROR(ForEachGeneration(true, [](const GenInfo&) { return Status::OK(); }));
  }
  if (verify_home) AMBER_RETURN_IF_ERROR(VerifyHome(superblock().heap_used));
  return Status::OK();
}

Status Store::VerifyHome(uint64_t used_bytes,
                         const std::function<void(uint64_t, uint64_t)>& progress) const {
  Superblock sb = superblock();
  // Pages with an image in an unmigrated generation are not checked here: their
  // home copy is superseded by the log (recovery copies the log image over it), and
  // a migration cut short by a crash may have written it before its table entry.
  // ForEachGeneration(verify_pages) checks their log images instead.
  std::vector<uint64_t> superseded;
  if (sb.log_tail != sb.log_head) {
    AMBER_RETURN_IF_ERROR(ForEachGeneration(false, [&](const GenInfo& g) {
      for (const format::GenEntry& e : g.entries) superseded.push_back(e.page);
      return Status::OK();
    }));
    std::sort(superseded.begin(), superseded.end());
  }
  const uint64_t pages = std::min(format::RoundUp(used_bytes, kPageSize), sb.capacity) / kPageSize;
  constexpr uint64_t kBatch = 1024;                             // 4 MiB of images, one table page
  std::vector<char> data(std::min(kBatch, pages) * kPageSize);  // no 4 MiB for a small heap
  std::vector<uint32_t> table(kBatch);
  static const std::vector<char> kZero(kPageSize, 0);
  for (uint64_t p = 0; p < pages; p += kBatch) {
    const uint64_t n = std::min(kBatch, pages - p);
    AMBER_RETURN_IF_ERROR(env_->PRead(fd_, table.data(), n * sizeof(uint32_t),
                                      format::kTableOffset + p * sizeof(uint32_t)));
    AMBER_RETURN_IF_ERROR(
        env_->PRead(fd_, data.data(), n * kPageSize, sb.home_offset + p * kPageSize));
    for (uint64_t i = 0; i < n; ++i) {
      const char* img = data.data() + i * kPageSize;
      const uint32_t crc = crc32c::Value(img, kPageSize);
      // Table entry 0: never migrated, so the page must still be zero.
      bool ok =
          crc == table[i] || (table[i] == 0 && std::equal(img, img + kPageSize, kZero.data()));
      if (!ok && !std::binary_search(superseded.begin(), superseded.end(), p + i))
        return Corruption("home image: heap page " + std::to_string(p + i) + " (file offset " +
                          std::to_string(sb.home_offset + (p + i) * kPageSize) +
                          ") does not match its checksum");
    }
    if (progress) progress(p + n, pages);
  }
  return Status::OK();
}

}  // namespace amber
