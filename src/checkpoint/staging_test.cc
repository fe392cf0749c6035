// staging_test.cc — the staging pool hands buffers back out instead of mapping
// fresh memory, and keeps no more than its peak use.
#include "checkpoint/staging.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace amber {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(StagingPool, ReturnedBufferIsHandedOutAgainWritable) {
  StagingPool pool(Env::Default());
  auto a = pool.Get(3 * kMiB);
  ASSERT_TRUE(a.ok());
  ASSERT_GE(a->capacity(), 3 * kMiB);
  std::memset(a->data(), 0x5a, a->capacity());  // populated for writing
  char* p = a->data();
  pool.Put(std::move(*a));
  auto b = pool.Get(2 * kMiB);  // smaller: the same buffer fits
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data(), p);
  EXPECT_EQ(static_cast<unsigned char>(b->data()[0]), 0x5au);
  pool.Put(std::move(*b));
}

TEST(StagingPool, KeepsAtMostItsPeakUse) {
  StagingPool pool(Env::Default());
  // Peak: 8 buffers of 2 MiB out at once.
  std::vector<StagingBuffer> out;
  for (int i = 0; i < 8; ++i) {
    auto b = pool.Get(kMiB);
    ASSERT_TRUE(b.ok());
    out.push_back(std::move(*b));
  }
  const size_t peak = pool.bytes();
  for (auto& b : out) pool.Put(std::move(b));
  EXPECT_EQ(pool.bytes(), peak) << "all kept: together they are the peak";
  // Reuse: as many buffers as at the peak come back without growing the pool.
  for (int i = 0; i < 8; ++i) {
    auto b = pool.Get(kMiB);
    ASSERT_TRUE(b.ok());
    out[i] = std::move(*b);
  }
  EXPECT_EQ(pool.bytes(), peak);
  for (auto& b : out) pool.Put(std::move(b));
  // A larger buffer later, alone: the peak is now that buffer, and the small
  // ones beyond kKeep are freed so that what is kept stays within it.
  auto big = pool.Get(20 * kMiB);
  ASSERT_TRUE(big.ok());
  const size_t big_bytes = big->capacity();
  pool.Put(std::move(*big));
  EXPECT_LE(pool.bytes(), big_bytes + StagingPool::kKeep * (peak / 8));
  EXPECT_LT(pool.bytes(), peak + big_bytes);
}

}  // namespace
}  // namespace amber
