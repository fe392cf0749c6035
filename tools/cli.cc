// cli.cc — helpers shared by the amber subcommands (see cli.h).
#include "cli.h"

#include <cinttypes>
#include <cmath>
#include <ctime>

namespace amber::cli {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

void Json::Key(const std::string& key) {
  if (!body_.empty()) body_ += ",";
  body_ += Quote(key) + ":";
}
Json& Json::Str(const std::string& key, const std::string& value) {
  Key(key);
  body_ += Quote(value);
  return *this;
}
Json& Json::Num(const std::string& key, double value) {
  Key(key);
  char buf[64];
  if (!std::isfinite(value)) value = 0;
  std::snprintf(buf, sizeof(buf), "%.6g", value);
  body_ += buf;
  return *this;
}
Json& Json::Int(const std::string& key, uint64_t value) {
  Key(key);
  body_ += std::to_string(value);
  return *this;
}
Json& Json::Bool(const std::string& key, bool value) {
  Key(key);
  body_ += value ? "true" : "false";
  return *this;
}
Json& Json::Raw(const std::string& key, const std::string& json) {
  Key(key);
  body_ += json;
  return *this;
}

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string TimeUs(uint64_t wall_us) {
  if (wall_us == 0) return "never";
  time_t t = static_cast<time_t>(wall_us / 1000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

const std::string* Args::Flag(const std::string& name) const {
  for (auto& [k, v] : flags)
    if (k == name) return &v;
  return nullptr;
}

bool ParseArgs(int argc, char** argv, int from, Args* out, std::string* error) {
  for (int i = from; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      out->json = true;
    } else if (a == "--help" || a == "-h") {
      out->help = true;
    } else if (a.rfind("--", 0) == 0 && a.size() > 2) {
      auto eq = a.find('=');
      if (eq != std::string::npos) {
        out->flags.emplace_back(a.substr(2, eq - 2), a.substr(eq + 1));
      } else if (i + 1 < argc) {
        out->flags.emplace_back(a.substr(2), argv[++i]);
      } else {
        *error = "option " + a + " needs a value";
        return false;
      }
    } else {
      out->positional.push_back(a);
    }
  }
  return true;
}

}  // namespace amber::cli
