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

}  // namespace amber::crc32c
