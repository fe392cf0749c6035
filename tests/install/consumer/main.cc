// A program built against an installed amber: counts its own runs in a heap.
#include <amber/amber.h>

#include <cstdio>

struct Root {
  amber::vector<int> runs;
};

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  amber::Options o;
  o.capacity = 16 << 20;
  o.checkpoint_interval_ms = 0;
  auto heap = amber::Heap::Open(argv[1], o);
  if (!heap.ok()) {
    std::fprintf(stderr, "%s\n", heap.status().ToString().c_str());
    return 1;
  }
  auto root = (*heap)->Root<Root>();
  if (!root.ok()) return 1;
  {
    amber::Section s(**heap);
    (*root)->runs.push_back(static_cast<int>((*root)->runs.size()) + 1);
  }
  if (!(*heap)->Commit().ok()) return 1;
  std::printf("consumer: run %zu\n", (*root)->runs.size());
  return 0;
}
