// bench/peers/kv_lmdb.cc — LMDB with MDB_NOSYNC: one write transaction per
// second, committed and followed by mdb_env_sync(force). Keys are 8 bytes
// big-endian (memcmp order); the map size is sized from the key count.
//
// Caveat (documented by LMDB): with MDB_NOSYNC the data pages and the meta page
// of a transaction reach the disk in no particular order until the sync, so a
// power cut in the middle of a sync may leave a damaged database; a process
// crash (what this benchmark does) cannot.
#include <lmdb.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

void Check(int rc, const char* what) {
  if (rc != MDB_SUCCESS) Die("lmdb %s: %s", what, mdb_strerror(rc));
}

class LmdbStore : public KvStore {
 public:
  explicit LmdbStore(const Config& cfg) : cfg_(cfg) {}
  ~LmdbStore() override { Close(); }

  std::string Describe() const override {
    return "LMDB, MDB_NOSYNC, one write transaction per second followed by "
           "mdb_env_sync(force)";
  }
  std::string Version() const override { return mdb_version(nullptr, nullptr, nullptr); }

  void Open(bool create) override {
    Check(mdb_env_create(&env_), "env_create");
    // B+tree of 8+100-byte items: about 160 bytes a key once pages split; room for
    // the copy-on-write pages of an open transaction.
    size_t map = std::max<size_t>(size_t{1} << 30, cfg_.keys * 512);
    Check(mdb_env_set_mapsize(env_, map), "set_mapsize");
    Check(mdb_env_open(env_, cfg_.dir.c_str(), MDB_NOSYNC, 0644), "env_open");
    Check(mdb_txn_begin(env_, nullptr, 0, &txn_), "txn_begin");
    Check(mdb_dbi_open(txn_, nullptr, create ? MDB_CREATE : 0, &dbi_), "dbi_open");
    last_sync_ = Now();
  }

  void Put(uint64_t key, const Value& value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    MDB_val mk{sizeof(k), k};
    MDB_val mv{value.size(), const_cast<char*>(value.data())};
    Check(mdb_put(txn_, dbi_, &mk, &mv, 0), "put");
  }

  void Tick(double now) override {
    if (now - last_sync_ >= cfg_.sync_interval_ms / 1e3) {
      Sync();
      last_sync_ = Now();  // the next interval starts when this sync ends
    }
  }
  void Flush() override {
    Sync();
    last_sync_ = Now();
  }

  bool Get(uint64_t key, Value* value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    MDB_val mk{sizeof(k), k};
    MDB_val mv;
    int rc = mdb_get(txn_, dbi_, &mk, &mv);
    if (rc == MDB_NOTFOUND) return false;
    Check(rc, "get");
    if (mv.mv_size != value->size()) Die("lmdb: value of %zu bytes", mv.mv_size);
    std::memcpy(value->data(), mv.mv_data, value->size());
    return true;
  }

  void Close() override {
    if (env_ == nullptr) return;
    if (txn_ != nullptr) Check(mdb_txn_commit(txn_), "txn_commit");
    txn_ = nullptr;
    mdb_env_sync(env_, 1);
    mdb_env_close(env_);
    env_ = nullptr;
  }

  void AddReport(Report* r) override {
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env_, &info);
    mdb_env_stat(env_, &st);
    r->Int("lmdb_last_pgno", info.me_last_pgno);
    r->Int("lmdb_depth", st.ms_depth);
  }

 private:
  void Sync() {
    Check(mdb_txn_commit(txn_), "txn_commit");
    txn_ = nullptr;
    Check(mdb_env_sync(env_, 1), "env_sync");
    Check(mdb_txn_begin(env_, nullptr, 0, &txn_), "txn_begin");
  }

  Config cfg_;
  MDB_env* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
  MDB_dbi dbi_ = 0;
  double last_sync_ = 0;
};

std::unique_ptr<KvStore> Make(const Config& cfg) { return std::make_unique<LmdbStore>(cfg); }
std::string SystemFor(const std::string& mode) { return mode.empty() ? "lmdb" : ""; }

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-lmdb", peers::Make, peers::SystemFor);
}
