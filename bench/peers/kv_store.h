// bench/peers/kv_store.h — what the driver needs from each system under test.
//
// One object per process. The driver calls, in the run phase:
//   Open(true) → BeginLoad → Put… (Tick…) → EndLoad → Flush
//   → BeginUpdates → Put… (Tick…) → Flush → Get/MultiGet (spot check) → Report → Crash
// and, in a fresh process after the run process was killed, the recovery phase:
//   Open(false) → Get (the first read; the clock stops here) → MultiGet… → Close.
// Errors are fatal (Die): a benchmark that silently skips a failure lies.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common.h"

namespace peers {

struct Config {
  std::string system;    // e.g. "redis-aof": names the results file
  std::string mode;      // the program's --mode (a variant of one peer)
  std::string workload;  // e.g. "kv-update"
  std::string dir;       // this run's data directory (created empty by the driver)
  uint64_t keys = 0;     // N
  uint64_t updates = 0;  // M (the run may stop earlier at max_update_seconds)
  double theta = 0;      // 0 = uniform, else Zipf(theta)
  uint64_t seed = 42;
  uint32_t sync_interval_ms = 1000;
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  // One line: what the system is and how it is made durable.
  virtual std::string Describe() const = 0;
  // Library or server version.
  virtual std::string Version() const = 0;
  // False for the in-memory upper bound: no recovery phase.
  virtual bool Persistent() const { return true; }

  // Opens the store in config.dir: a new, empty store (create) or the one a killed
  // run left behind (recovery).
  virtual void Open(bool create) = 0;
  virtual void BeginLoad(uint64_t /*keys*/) {}
  virtual void Put(uint64_t key, const Value& value) = 0;
  // Called every 16 operations with Now(); a store syncs here once its interval
  // (one second) has passed since its last sync ended. (Measured from the end, so
  // a sync that takes longer than the interval cannot starve the updates.)
  virtual void Tick(double now) = 0;
  virtual void EndLoad() {}
  // Makes every Put so far durable (the end of the load and of the update phase).
  virtual void Flush() = 0;
  // The load is durable and the update phase starts: pause statistics restart here.
  virtual void BeginUpdates() {}

  // Reads `key`; false if absent. Get is the recovery's first read.
  virtual bool Get(uint64_t key, Value* value) = 0;
  virtual void MultiGet(const uint64_t* keys, size_t n, Value* values, bool* found) {
    for (size_t i = 0; i < n; i++) found[i] = Get(keys[i], &values[i]);
  }

  // The process holding the data, when it is not this one (a server), else 0.
  virtual pid_t ServerPid() const { return 0; }
  // Extra figures for the results file (pauses, forks, library statistics).
  virtual void AddReport(Report* /*report*/) {}
  // The run is over: simulate a crash of the store (a server gets SIGKILL; for an
  // in-process store the driver then kills its own process).
  virtual void Crash() {}
  // Orderly close after the recovery phase.
  virtual void Close() {}
};

using StoreFactory = std::unique_ptr<KvStore> (*)(const Config& config);

// The program's main: parses flags, runs the phases, writes the results.
// `default_mode` is used when --mode is not given; `system_for_mode` maps a mode
// to the system name (e.g. "aof" → "redis-aof").
int Main(int argc, char** argv, const char* program, StoreFactory factory,
         std::string (*system_for_mode)(const std::string& mode));

}  // namespace peers
