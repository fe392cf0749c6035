// rate_limiter.h — holds the background writer to an average byte rate
// (Options::write_bandwidth_limit), so that checkpoint write-out does not starve
// the program's other I/O: DESIGN.md's "write it out slowly enough".
//
// A token bucket with a small burst (the lesser of 1/8 s of the rate and 1 MiB):
// Acquire(n) sleeps until n bytes may be written. Callers write in chunks no
// larger than burst() so the rate stays smooth.
//
// Thread-safety: Acquire may be called from several threads (it serialises them).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace amber {

class RateLimiter {
 public:
  // bytes_per_second == 0 means unlimited.
  explicit RateLimiter(uint64_t bytes_per_second)
      : rate_(static_cast<double>(bytes_per_second)),
        burst_(std::min<double>(rate_ / 8, 1 << 20)),
        last_(Clock::now()) {}

  bool unlimited() const { return rate_ <= 0; }
  // Largest chunk a caller should write between Acquire calls.
  uint64_t chunk() const {
    return unlimited() ? (uint64_t{8} << 20)
                       : std::max<uint64_t>(4096, static_cast<uint64_t>(burst_));
  }

  void Acquire(uint64_t bytes) {
    if (unlimited()) return;
    std::unique_lock<std::mutex> l(mu_);
    Refill();
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ < 0) {
      // Sleep until the debt is paid back at the configured rate.
      auto wait = std::chrono::duration<double>(-tokens_ / rate_);
      l.unlock();
      std::this_thread::sleep_for(wait);
    }
  }

 private:
  using Clock = std::chrono::steady_clock;
  void Refill() {
    auto now = Clock::now();
    tokens_ =
        std::min(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * rate_);
    last_ = now;
  }

  const double rate_;
  const double burst_;
  std::mutex mu_;
  double tokens_ = 0;
  Clock::time_point last_;
};

}  // namespace amber
