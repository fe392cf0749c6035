// amber/allocator.h — a stateless C++ allocator that places memory in the
// current amber heap, and container aliases that keep all their memory there.
//
//   struct Root { amber::unordered_map<uint64_t, amber::string> users; };
//
// "Current" heap: the heap of the innermost Section open on this thread, else the
// most recently opened heap (see Heap::Current). Deallocation always returns the
// block to the heap that contains it.
//
// Failure: like std::allocator, allocate() throws std::bad_alloc when no heap is
// open or the heap is full (the standard containers rely on that). Nothing else
// in amber throws.
//
// Thread-safety: as thread-safe as the heap's allocator (fully).
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <new>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "amber/heap.h"

namespace amber {

template <class T>
class allocator {
 public:
  using value_type = T;
  using is_always_equal = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;

  allocator() noexcept = default;
  template <class U>
  allocator(const allocator<U>&) noexcept {}  // NOLINT: converting by design

  T* allocate(size_t n) {
    Heap* heap = Heap::Current();
    if (heap == nullptr || n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    void* p = heap->Allocate(n * sizeof(T), alignof(T) < 16 ? 16 : alignof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept {
    if (p == nullptr) return;
    if (Heap* heap = Heap::Containing(p); heap != nullptr) {
      heap->Deallocate(p);
    }
  }

  template <class U>
  bool operator==(const allocator<U>&) const noexcept {
    return true;
  }
};

using string = std::basic_string<char, std::char_traits<char>, allocator<char>>;
template <class T>
using vector = std::vector<T, allocator<T>>;
template <class T>
using deque = std::deque<T, allocator<T>>;
template <class K, class V, class Compare = std::less<K>>
using map = std::map<K, V, Compare, allocator<std::pair<const K, V>>>;
template <class K, class Compare = std::less<K>>
using set = std::set<K, Compare, allocator<K>>;
template <class K, class V, class Hash = std::hash<K>, class Eq = std::equal_to<K>>
using unordered_map = std::unordered_map<K, V, Hash, Eq, allocator<std::pair<const K, V>>>;
template <class K, class Hash = std::hash<K>, class Eq = std::equal_to<K>>
using unordered_set = std::unordered_set<K, Hash, Eq, allocator<K>>;

}  // namespace amber

// amber::string hashes like std::string so it can key an amber::unordered_map.
template <>
struct std::hash<amber::string> {
  size_t operator()(const amber::string& s) const noexcept {
    return std::hash<std::string_view>()(std::string_view(s.data(), s.size()));
  }
};
