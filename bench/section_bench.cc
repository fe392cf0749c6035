// section_bench.cc — what one amber::Section costs around a small mutation.
//
//   amber-section-bench [--keys N] [--updates N] [--reps N] [--dir DIR] [--json]
//
// A 1M-key amber::unordered_map<uint64_t, 100-byte value> in a fresh store
// (automatic checkpoints off), then `reps` rounds of `updates` random
// overwrites, each round once without Sections and once with one Section per
// overwrite, interleaved in one process so both see the same machine state.
// Prints the medians and their ratio. A Section that costs a locked
// instruction or a call chain per update shows up here: random map updates
// overlap one update's cache misses with the next one's, and anything that
// serialises the CPU between updates stops that.
//
// Thread-safety: single-threaded.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "amber/amber.h"

namespace {

using Value = std::array<char, 100>;
struct Root {
  amber::unordered_map<uint64_t, Value> map;
};

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser: a bijection
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t keys = 1000000, updates = 2000000, reps = 7;
  std::string dir = "/tmp";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto count = [&](uint64_t* out) {
      const char* v = value();
      char* end = nullptr;
      *out = std::strtoull(v, &end, 10);
      if (end == v || *end != '\0' || *out == 0) {
        std::fprintf(stderr, "%s: expected a positive integer, got '%s'\n", a.c_str(), v);
        std::exit(2);
      }
    };
    if (a == "--keys") {
      count(&keys);
    } else if (a == "--updates") {
      count(&updates);
    } else if (a == "--reps") {
      count(&reps);
    } else if (a == "--dir") {
      dir = value();
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: %s [--keys N] [--updates N] [--reps N] [--dir DIR] [--json]\n",
                   argv[0]);
      return 2;
    }
  }

  const std::string path = dir + "/amber-section-bench-" + std::to_string(getpid()) + ".amber";
  amber::Options o;
  o.checkpoint_interval_ms = 0;
  o.checkpoint_on_close = false;
  o.capacity = (keys * 400 + (64 << 20) + (1 << 26) - 1) & ~uint64_t{(1 << 26) - 1};
  auto opened = amber::Heap::Open(path, o);
  if (!opened.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), opened.status().ToString().c_str());
    return 1;
  }
  amber::Heap& heap = **opened;
  auto root = heap.Root<Root>();
  if (!root.ok()) {
    std::fprintf(stderr, "Root: %s\n", root.status().ToString().c_str());
    return 1;
  }
  auto& map = (*root)->map;
  {
    amber::Section s(heap);
    map.reserve(keys);
    for (uint64_t i = 0; i < keys; ++i) map.emplace(Mix(i), Value{});
  }

  std::vector<double> plain, sectioned;
  uint64_t state = 1, missing = 0;
  for (uint64_t r = 0; r < reps; ++r) {
    for (int with_section = 0; with_section < 2; ++with_section) {
      Value v{};
      const auto t0 = std::chrono::steady_clock::now();
      for (uint64_t u = 0; u < updates; ++u) {
        state = Mix(state);
        const uint64_t key = Mix(state % keys);
        std::memcpy(v.data(), &u, sizeof(u));
        if (with_section != 0) {
          amber::Section s(heap);
          auto it = map.find(key);
          if (it == map.end())
            ++missing;
          else
            it->second = v;
        } else {
          auto it = map.find(key);
          if (it == map.end())
            ++missing;
          else
            it->second = v;
        }
      }
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      (with_section != 0 ? sectioned : plain).push_back(static_cast<double>(updates) / sec);
    }
    if (!json)
      std::fprintf(stderr, "round %llu of %llu\n", static_cast<unsigned long long>(r + 1),
                   static_cast<unsigned long long>(reps));
  }
  const amber::Status closed = heap.Close();
  opened->reset();
  unlink(path.c_str());
  if (!closed.ok()) {
    std::fprintf(stderr, "Close: %s\n", closed.ToString().c_str());
    return 1;
  }
  if (missing != 0) {
    std::fprintf(stderr, "%llu updated keys were missing\n",
                 static_cast<unsigned long long>(missing));
    return 1;
  }

  const double p = Median(plain), s = Median(sectioned);
  if (json) {
    std::printf(
        "{\"bench\":\"section\",\"keys\":%llu,\"updates\":%llu,\"reps\":%llu,"
        "\"updates_per_s_no_section\":%.0f,\"updates_per_s_section\":%.0f,\"ratio\":%.4f}\n",
        static_cast<unsigned long long>(keys), static_cast<unsigned long long>(updates),
        static_cast<unsigned long long>(reps), p, s, s / p);
  } else {
    std::printf("random overwrites in a %llu-key amber::unordered_map, median of %llu rounds\n",
                static_cast<unsigned long long>(keys), static_cast<unsigned long long>(reps));
    std::printf("  without Sections          %12.0f updates/s\n", p);
    std::printf("  one Section per update    %12.0f updates/s\n", s);
    std::printf("  ratio                     %12.3f\n", s / p);
  }
  return 0;
}
