// bench/peers/kv_sqlite.cc — SQLite in WAL mode, synchronous=NORMAL, one
// transaction per second: `CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)`,
// prepared INSERT for the load and UPDATE for the overwrites.
//
// Durability: with synchronous=NORMAL a commit is not synced by itself; the WAL
// is synced before each checkpoint (automatic at 1000 WAL pages, which this
// workload passes within every one-second transaction) and the final Flush runs
// `PRAGMA wal_checkpoint(FULL)`.
#include <sqlite3.h>

#include <cstring>
#include <string>

#include "common.h"
#include "kv_store.h"

namespace peers {
namespace {

class SqliteStore : public KvStore {
 public:
  explicit SqliteStore(const Config& cfg) : cfg_(cfg) {}
  ~SqliteStore() override { Close(); }

  std::string Describe() const override {
    return "SQLite, WAL journal, synchronous=NORMAL, one transaction per second, "
           "INTEGER PRIMARY KEY table";
  }
  std::string Version() const override { return std::string("SQLite ") + sqlite3_libversion(); }

  void Open(bool create) override {
    std::string path = cfg_.dir + "/kv.db";
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      Die("sqlite3_open %s: %s", path.c_str(), sqlite3_errmsg(db_));
    }
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=NORMAL");
    if (create) Exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    Prepare("INSERT INTO kv(k, v) VALUES(?1, ?2)", &insert_);
    Prepare("UPDATE kv SET v = ?2 WHERE k = ?1", &update_);
    Prepare("SELECT v FROM kv WHERE k = ?1", &select_);
    if (create) {
      Exec("BEGIN");
      in_txn_ = true;
      last_sync_ = Now();
    }
  }

  void BeginLoad(uint64_t) override { loading_ = true; }
  void EndLoad() override { loading_ = false; }

  void Put(uint64_t key, const Value& value) override {
    sqlite3_stmt* st = loading_ ? insert_ : update_;
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(key));
    sqlite3_bind_blob(st, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) Die("sqlite put: %s", sqlite3_errmsg(db_));
    sqlite3_reset(st);
  }

  void Tick(double now) override {
    if (now - last_sync_ >= cfg_.sync_interval_ms / 1e3) {
      Exec("COMMIT");
      Exec("BEGIN");
      last_sync_ = Now();  // the next interval starts when this sync ends
    }
  }

  void Flush() override {
    Exec("COMMIT");
    Exec("PRAGMA wal_checkpoint(FULL)");
    Exec("BEGIN");
    last_sync_ = Now();
  }

  bool Get(uint64_t key, Value* value) override {
    sqlite3_bind_int64(select_, 1, static_cast<sqlite3_int64>(key));
    int rc = sqlite3_step(select_);
    bool found = false;
    if (rc == SQLITE_ROW) {
      const void* blob = sqlite3_column_blob(select_, 0);
      int n = sqlite3_column_bytes(select_, 0);
      if (n != static_cast<int>(value->size())) Die("sqlite: value of %d bytes", n);
      std::memcpy(value->data(), blob, value->size());
      found = true;
    } else if (rc != SQLITE_DONE) {
      Die("sqlite get: %s", sqlite3_errmsg(db_));
    }
    sqlite3_reset(select_);
    return found;
  }

  void Close() override {
    if (db_ == nullptr) return;
    if (in_txn_) Exec("COMMIT");
    in_txn_ = false;
    for (sqlite3_stmt* st : {insert_, update_, select_}) sqlite3_finalize(st);
    insert_ = update_ = select_ = nullptr;
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  void Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      Die("sqlite %s: %s", sql, err ? err : "?");
    }
  }
  void Prepare(const char* sql, sqlite3_stmt** st) {
    if (sqlite3_prepare_v2(db_, sql, -1, st, nullptr) != SQLITE_OK) {
      Die("sqlite prepare %s: %s", sql, sqlite3_errmsg(db_));
    }
  }

  Config cfg_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* update_ = nullptr;
  sqlite3_stmt* select_ = nullptr;
  bool loading_ = false;
  bool in_txn_ = false;
  double last_sync_ = 0;
};

std::unique_ptr<KvStore> Make(const Config& cfg) { return std::make_unique<SqliteStore>(cfg); }
std::string SystemFor(const std::string& mode) { return mode.empty() ? "sqlite" : ""; }

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  return peers::Main(argc, argv, "kv-sqlite", peers::Make, peers::SystemFor);
}
