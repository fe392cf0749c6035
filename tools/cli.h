// cli.h — shared pieces of the `amber` command-line tool: a tiny JSON object
// writer, size/time formatting, and the subcommand entry points.
// Single-threaded.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace amber::cli {

// Builds one flat JSON object: Json().Str("a","x").Num("b",1).Done()
class Json {
 public:
  Json& Str(const std::string& key, const std::string& value);
  Json& Num(const std::string& key, double value);
  Json& Int(const std::string& key, uint64_t value);
  Json& Bool(const std::string& key, bool value);
  Json& Raw(const std::string& key, const std::string& json);  // nested JSON text
  std::string Done() const { return "{" + body_ + "}"; }

 private:
  void Key(const std::string& key);
  std::string body_;
};
std::string Quote(const std::string& s);

std::string Bytes(uint64_t n);         // "1.5 GiB"
std::string TimeUs(uint64_t wall_us);  // "2026-11-24 00:05:01 UTC" or "never"

struct Args {
  std::vector<std::string> positional;
  bool json = false;
  bool help = false;  // --help or -h
  // --name value pairs
  std::vector<std::pair<std::string, std::string>> flags;
  const std::string* Flag(const std::string& name) const;
};
// Parses argv[from..]; --json and --help (-h) are switches, every other --x
// takes a value (--x v or --x=v).
bool ParseArgs(int argc, char** argv, int from, Args* out, std::string* error);

int CmdInfo(const Args& args);
int CmdVerify(const Args& args);
int CmdCheckpoints(const Args& args);
int CmdBench(const Args& args);

}  // namespace amber::cli
