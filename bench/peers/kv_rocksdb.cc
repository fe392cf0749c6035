// bench/peers/kv_rocksdb.cc — RocksDB with default options (what a user gets),
// the write-ahead log on, unsynced writes, and DB::SyncWAL() once per second.
// Keys are 8 bytes big-endian.
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/statistics.h>
#include <rocksdb/version.h>

#include <cstring>
#include <memory>
#include <string>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

void Check(const rocksdb::Status& s, const char* what) {
  if (!s.ok()) Die("rocksdb %s: %s", what, s.ToString().c_str());
}

class RocksStore : public KvStore {
 public:
  explicit RocksStore(const Config& cfg) : cfg_(cfg) {}

  std::string Describe() const override {
    return "RocksDB, default options, WAL on, unsynced writes, SyncWAL() once per second";
  }
  std::string Version() const override {
    return "RocksDB " + std::to_string(ROCKSDB_MAJOR) + "." + std::to_string(ROCKSDB_MINOR) + "." +
           std::to_string(ROCKSDB_PATCH);
  }

  void Open(bool create) override {
    rocksdb::Options options;
    options.create_if_missing = create;
    options.error_if_exists = create;
    rocksdb::DB* db = nullptr;
    Check(rocksdb::DB::Open(options, cfg_.dir, &db), "open");
    db_.reset(db);
    last_sync_ = Now();
  }

  void Put(uint64_t key, const Value& value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    Check(db_->Put(write_options_, rocksdb::Slice(k, sizeof(k)),
                   rocksdb::Slice(value.data(), value.size())),
          "put");
  }

  void Tick(double now) override {
    if (now - last_sync_ >= cfg_.sync_interval_ms / 1e3) {
      Check(db_->SyncWAL(), "SyncWAL");
      last_sync_ = Now();  // the next interval starts when this sync ends
    }
  }
  void Flush() override {
    Check(db_->SyncWAL(), "SyncWAL");
    last_sync_ = Now();
  }

  bool Get(uint64_t key, Value* value) override {
    char k[kKeyBytes];
    EncodeKey(key, k);
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(k, sizeof(k)), &buf_);
    if (s.IsNotFound()) return false;
    Check(s, "get");
    if (buf_.size() != value->size()) Die("rocksdb: value of %zu bytes", buf_.size());
    std::memcpy(value->data(), buf_.data(), value->size());
    return true;
  }

  void AddReport(Report* r) override {
    std::string v;
    if (db_->GetProperty("rocksdb.num-files-at-level0", &v)) r->Str("rocksdb_l0_files", v);
    uint64_t n = 0;
    if (db_->GetIntProperty("rocksdb.total-sst-files-size", &n)) r->Int("rocksdb_sst_bytes", n);
  }

  void Close() override {
    if (db_) Check(db_->Close(), "close");
    db_.reset();
  }

 private:
  Config cfg_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::WriteOptions write_options_;  // sync=false, WAL enabled
  std::string buf_;
  double last_sync_ = 0;
};

std::unique_ptr<KvStore> Make(const Config& cfg) { return std::make_unique<RocksStore>(cfg); }
std::string SystemFor(const std::string& mode) { return mode.empty() ? "rocksdb" : ""; }

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-rocksdb", peers::Make, peers::SystemFor);
}
