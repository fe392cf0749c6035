// main.cc — the `amber` command-line tool: inspect, verify and benchmark stores.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: amber COMMAND [options]\n"
               "\n"
               "  info STORE [--json]         capacity, use, generation, log, tracking method\n"
               "  verify STORE [--json]       check every checksum; exit 0 clean, 1 corrupt\n"
               "  checkpoints STORE [--json]  generations in the log with sizes and times\n"
               "  bench KIND [options]        benchmarks: pause, writeout, kv, commit, replay\n"
               "                              (amber bench --help for their options)\n"
               "\n"
               "Exit status: 0 success, 1 the store is damaged, 2 usage or other error.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    Usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  amber::cli::Args args;
  std::string error;
  if (!amber::cli::ParseArgs(argc, argv, 2, &args, &error)) {
    std::fprintf(stderr, "amber %s: %s\n", cmd.c_str(), error.c_str());
    return 2;
  }
  if (cmd == "info") return amber::cli::CmdInfo(args);
  if (cmd == "verify") return amber::cli::CmdVerify(args);
  if (cmd == "checkpoints") return amber::cli::CmdCheckpoints(args);
  if (cmd == "bench") return amber::cli::CmdBench(args);
  std::fprintf(stderr, "amber: unknown command '%s'\n\n", cmd.c_str());
  Usage(stderr);
  return 2;
}
