#include "util/crc32c.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace amber {
namespace {

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) test vectors.
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c::Value(zeros.data(), zeros.size()), 0x8A9136AAu);
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c::Value(ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(crc32c::Value("123456789", 9), 0xE3069283u);
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::string s = "hello, single-level store";
  uint32_t whole = crc32c::Value(s.data(), s.size());
  uint32_t part = crc32c::Extend(crc32c::Value(s.data(), 5), s.data() + 5, s.size() - 5);
  EXPECT_EQ(whole, part);
}

TEST(Crc32c, ValuePagesMatchesValue) {
  std::vector<std::string> pages;
  for (int i = 0; i < 7; ++i) {  // 7: two interleaved groups of three and one left over
    std::string p(4096, '\0');
    for (size_t j = 0; j < p.size(); ++j) p[j] = static_cast<char>((i * 131 + j * 7) & 0xff);
    pages.push_back(p);
  }
  std::vector<const char*> ptrs;
  for (auto& p : pages) ptrs.push_back(p.data());
  std::vector<uint32_t> out(7);
  crc32c::ValuePages(ptrs.data(), ptrs.size(), 4096, out.data());
  for (int i = 0; i < 7; ++i) EXPECT_EQ(out[i], crc32c::Value(pages[i].data(), 4096)) << i;
  crc32c::ValuePages(ptrs.data(), 3, 100, out.data());  // odd sizes use the byte tail
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], crc32c::Value(pages[i].data(), 100)) << i;
}

}  // namespace
}  // namespace amber
