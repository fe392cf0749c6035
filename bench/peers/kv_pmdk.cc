// bench/peers/kv_pmdk.cc — PMDK libpmemobj on a regular file (no persistent
// memory on this machine: libpmem falls back to msync for every flush), one
// transaction per update. The map is an open-addressing hash table (linear
// probing) of fixed 112-byte slots in one pool allocation.
//
// Load: the slots are written without transactions into a freshly zeroed
// allocation and persisted once at the end (a bulk load; a crash during the load
// leaves a partly filled table). Updates: pmemobj_tx_begin, snapshot of the
// 100-byte value (undo log), copy, commit: every update is durable when it
// returns — more than the one-second target asks, and the only crash-safe way
// libpmemobj offers to change data.
#include <libpmemobj.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

struct Slot {
  uint64_t key;
  uint32_t used;
  char value[kValueBytes];
};
static_assert(sizeof(Slot) == 112);

struct PoolRoot {
  uint64_t slots;
  uint64_t count;
  PMEMoid table;
};

class PmdkStore : public KvStore {
 public:
  explicit PmdkStore(const Config& cfg) : cfg_(cfg) {}
  ~PmdkStore() override { Close(); }

  std::string Describe() const override {
    return "PMDK libpmemobj on a regular file (msync as flush), one transaction per update "
           "(undo-logged 100-byte value), linear-probing hash table";
  }
  std::string Version() const override {
    return "libpmemobj " + std::to_string(PMEMOBJ_MAJOR_VERSION) + "." +
           std::to_string(PMEMOBJ_MINOR_VERSION) + " (Debian 1.12)";
  }

  void Open(bool create) override {
    std::string path = cfg_.dir + "/pool.obj";
    if (create) {
      uint64_t slots = cfg_.keys + cfg_.keys / 2 + 1;
      size_t size = std::max<size_t>(PMEMOBJ_MIN_POOL,
                                     slots * sizeof(Slot) + slots * sizeof(Slot) / 16 + (64 << 20));
      pop_ = pmemobj_create(path.c_str(), "kv-peers", size, 0644);
      if (pop_ == nullptr) Die("pmemobj_create %s: %s", path.c_str(), pmemobj_errormsg());
      root_ = static_cast<PoolRoot*>(pmemobj_direct(pmemobj_root(pop_, sizeof(PoolRoot))));
      if (pmemobj_zalloc(pop_, &root_->table, slots * sizeof(Slot), 1) != 0) {
        Die("pmemobj_zalloc: %s", pmemobj_errormsg());
      }
      root_->slots = slots;
      root_->count = 0;
      pmemobj_persist(pop_, root_, sizeof(*root_));
    } else {
      pop_ = pmemobj_open(path.c_str(), "kv-peers");
      if (pop_ == nullptr) Die("pmemobj_open %s: %s", path.c_str(), pmemobj_errormsg());
      root_ = static_cast<PoolRoot*>(pmemobj_direct(pmemobj_root(pop_, sizeof(PoolRoot))));
    }
    table_ = static_cast<Slot*>(pmemobj_direct(root_->table));
    slots_ = root_->slots;
    if (table_ == nullptr || slots_ == 0) Die("pmdk: pool has no table");
  }

  void BeginLoad(uint64_t) override { loading_ = true; }

  void EndLoad() override {
    loading_ = false;
    pmemobj_persist(pop_, table_, slots_ * sizeof(Slot));
    pmemobj_persist(pop_, &root_->count, sizeof(root_->count));
  }

  void Put(uint64_t key, const Value& value) override {
    Slot* s = Find(key);
    if (loading_) {
      if (s->used) Die("pmdk: duplicate key in load");
      s->key = key;
      s->used = 1;
      std::memcpy(s->value, value.data(), kValueBytes);
      root_->count++;
      return;
    }
    if (!s->used) Die("pmdk: update of a key that was never loaded");
    if (pmemobj_tx_begin(pop_, nullptr, TX_PARAM_NONE) != 0) {
      Die("pmemobj_tx_begin: %s", pmemobj_errormsg());
    }
    if (pmemobj_tx_xadd_range_direct(s->value, kValueBytes, POBJ_XADD_NO_ABORT) != 0) {
      Die("pmemobj_tx_add_range: %s", pmemobj_errormsg());
    }
    std::memcpy(s->value, value.data(), kValueBytes);
    pmemobj_tx_commit();
    if (pmemobj_tx_end() != 0) Die("pmemobj_tx_end: %s", pmemobj_errormsg());
  }

  void Tick(double) override {}
  void Flush() override {}

  bool Get(uint64_t key, Value* value) override {
    Slot* s = Find(key);
    if (!s->used) return false;
    std::memcpy(value->data(), s->value, kValueBytes);
    return true;
  }

  void Close() override {
    if (pop_ != nullptr) pmemobj_close(pop_);
    pop_ = nullptr;
  }

 private:
  // The slot holding key, or the empty slot where it belongs.
  Slot* Find(uint64_t key) {
    uint64_t h = Mix(key ^ 0x5bd1e995);
    uint64_t i = MulHi(h, slots_);
    for (;;) {
      Slot* s = &table_[i];
      if (!s->used || s->key == key) return s;
      if (++i == slots_) i = 0;
    }
  }

  Config cfg_;
  PMEMobjpool* pop_ = nullptr;
  PoolRoot* root_ = nullptr;
  Slot* table_ = nullptr;
  uint64_t slots_ = 0;
  bool loading_ = false;
};

std::unique_ptr<KvStore> Make(const Config& cfg) { return std::make_unique<PmdkStore>(cfg); }
std::string SystemFor(const std::string& mode) { return mode.empty() ? "pmdk" : ""; }

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-pmdk", peers::Make, peers::SystemFor);
}
