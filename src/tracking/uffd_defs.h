// uffd_defs.h — the kernel UAPI definitions the dirty tracker needs but older
// installed headers lack: userfaultfd's asynchronous write-protect features
// (Linux 6.7) and the PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap (Linux 6.7).
//
// This is the ONLY place amber spells these out. Each definition is guarded so
// that when the system headers are new enough, theirs win; the values below
// are the kernel's stable UAPI (include/uapi/linux/userfaultfd.h and
// include/uapi/linux/fs.h) and can never change. Support is still detected at
// run time (UFFDIO_API answers which features the running kernel has), so a
// binary built here runs correctly on an older kernel, just with the "full"
// tracker.
//
// Note: <linux/fs.h> drags in <linux/mount.h>, which clashes with glibc's
// <sys/mount.h>; include this header only from the tracker's own files.
//
// Thread-safety: definitions only.
#pragma once

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

// --- userfaultfd(2) --------------------------------------------------------

// Flag for userfaultfd(2) itself: handle faults from user mode only. An
// unprivileged process (vm.unprivileged_userfaultfd = 0) may still create such
// a descriptor; it is all async write-protect needs, since it never handles a
// fault taken inside the kernel.
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

// UFFDIO_WRITEPROTECT may install "write-protected" markers on page table
// entries that are still empty (never-touched pages), so a page's first write
// is noticed too. Linux 6.4.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

// A write to a write-protected page is resolved by the kernel itself (the
// protection is dropped and the page counts as written) instead of waking a
// handler thread. Linux 6.7.
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

// --- PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap ------------------------------

#ifndef PAGEMAP_SCAN

// Category bits: masks in pm_scan_arg, and reported in page_region.categories.
#define PAGE_IS_WPALLOWED (1 << 0)  // the page's VMA has async write-protect
#define PAGE_IS_WRITTEN (1 << 1)    // written since it was last write-protected
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

// One run of consecutive pages [start, end) sharing the same categories.
struct page_region {
  __u64 start;
  __u64 end;  // exclusive
  __u64 categories;
};

// Operation flags.
#define PM_SCAN_WP_MATCHING (1 << 0)    // write-protect the pages that matched
#define PM_SCAN_CHECK_WPASYNC (1 << 1)  // fail (EPERM) on a VMA without async WP

struct pm_scan_arg {
  __u64 size;                 // sizeof(struct pm_scan_arg)
  __u64 flags;                // PM_SCAN_*
  __u64 start;                // first address to scan (page aligned)
  __u64 end;                  // end of the scan (exclusive)
  __u64 walk_end;             // written by the kernel: where the walk stopped
  __u64 vec;                  // user address of a struct page_region array
  __u64 vec_len;              // its length in entries
  __u64 max_pages;            // report at most this many pages (0 = no limit)
  __u64 category_inverted;    // categories that match when the bit is 0
  __u64 category_mask;        // a page matches only if all of these match
  __u64 category_anyof_mask;  // ... and at least one of these (if non-zero)
  __u64 return_mask;          // categories copied into page_region.categories
};

// The ioctl returns the number of page_region entries it filled.
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#endif  // PAGEMAP_SCAN

// The layout is UAPI; a mismatch here would mean a typo above.
static_assert(sizeof(struct page_region) == 24, "page_region layout");
static_assert(sizeof(struct pm_scan_arg) == 96, "pm_scan_arg layout");
