// crc32c.cc — CRC-32C, hardware-accelerated where available.
#include "util/crc32c.h"

#include <nmmintrin.h>

#include <array>
#include <cstring>

namespace amber::crc32c {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = MakeTable();

uint32_t Software(uint32_t crc, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t Hardware(uint32_t crc, const unsigned char* p,
                                                    size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return c32;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}

__attribute__((target("sse4.2"))) void Hardware3(const unsigned char* a, const unsigned char* b,
                                                 const unsigned char* c, size_t n, uint32_t* out) {
  uint64_t ca = 0xFFFFFFFFu, cb = 0xFFFFFFFFu, cc = 0xFFFFFFFFu;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t va, vb, vc;
    std::memcpy(&va, a + i, 8);
    std::memcpy(&vb, b + i, 8);
    std::memcpy(&vc, c + i, 8);
    ca = _mm_crc32_u64(ca, va);
    cb = _mm_crc32_u64(cb, vb);
    cc = _mm_crc32_u64(cc, vc);
  }
  uint32_t ra = static_cast<uint32_t>(ca), rb = static_cast<uint32_t>(cb),
           rc = static_cast<uint32_t>(cc);
  for (; i < n; ++i) {
    ra = _mm_crc32_u8(ra, a[i]);
    rb = _mm_crc32_u8(rb, b[i]);
    rc = _mm_crc32_u8(rc, c[i]);
  }
  out[0] = ~ra;
  out[1] = ~rb;
  out[2] = ~rc;
}

}  // namespace

void ValuePages(const char* const* pages, size_t n, size_t page_size, uint32_t* out) {
  size_t i = 0;
  if (HaveSse42()) {
    for (; i + 3 <= n; i += 3) {
      Hardware3(reinterpret_cast<const unsigned char*>(pages[i]),
                reinterpret_cast<const unsigned char*>(pages[i + 1]),
                reinterpret_cast<const unsigned char*>(pages[i + 2]), page_size, out + i);
    }
  }
  for (; i < n; ++i) out[i] = Value(pages[i], page_size);
}

uint32_t Extend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  crc = HaveSse42() ? Hardware(crc, p, n) : Software(crc, p, n);
  return ~crc;
}

}  // namespace amber::crc32c
