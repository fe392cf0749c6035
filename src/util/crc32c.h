// crc32c.h — CRC-32C (Castagnoli), the checksum of every on-disk record.
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
// Thread-safe (pure).
#pragma once

#include <cstddef>
#include <cstdint>

namespace amber::crc32c {

// Extends `crc` (0 to start) over n bytes.
uint32_t Extend(uint32_t crc, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// out[i] = Value(pages[i], page_size) for n pages. Three pages at a time run as
// independent instruction chains: the crc32 instruction's latency, not its
// throughput, limits a single chain, so this is about three times faster.
void ValuePages(const char* const* pages, size_t n, size_t page_size, uint32_t* out);

}  // namespace amber::crc32c
