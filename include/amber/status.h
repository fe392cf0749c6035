// amber/status.h — the error values every public amber function returns.
//
// Status carries a code and a human message; Result<T> is a value or a Status.
// Both are plain values: copying them is thread-safe, sharing one mutable object
// between threads is not. No exception ever leaves the amber library; failures
// come back as these values.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace amber {

enum class Code : int {
  kOk = 0,
  kInvalidArgument,     // the caller passed something unusable (bad path, bad option)
  kNotFound,            // the store (or a named object) does not exist
  kAlreadyExists,       // asked to create something that is already there
  kCorruption,          // a checksum or structural check failed: the data is not trusted
  kIOError,             // the operating system reported an I/O failure (EIO, ...)
  kNoSpace,             // the device or the configured log is full (ENOSPC)
  kBusy,                // the store is open (locked) by another process
  kAddressInUse,        // the heap's fixed virtual address range is already mapped
  kNotSupported,        // format version, page size or architecture this build cannot use
  kPermissionDenied,    // EACCES/EPERM, or a store owned by another user
  kFailedPrecondition,  // the call is not allowed in the current state
  kResourceExhausted,   // out of heap capacity or memory
  kInternal,            // a bug in amber; please report
};

// Short stable name of a code, e.g. "Corruption".
const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context: `.
  Status WithContext(std::string_view context) const;

  // Marks a deliberately ignored status (e.g. in a destructor).
  void IgnoreError() const {}

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return Status(Code::kInvalidArgument, std::move(m));
}
inline Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
inline Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
inline Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
inline Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
inline Status NotSupported(std::string m) { return Status(Code::kNotSupported, std::move(m)); }
inline Status FailedPrecondition(std::string m) {
  return Status(Code::kFailedPrecondition, std::move(m));
}
inline Status ResourceExhausted(std::string m) {
  return Status(Code::kResourceExhausted, std::move(m));
}
inline Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }

// A T, or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "a Result built from a Status must carry an error");
    if (status_.ok()) status_ = Internal("Result constructed from an OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Precondition: ok().
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace amber

// Internal convenience: return early on error.
#define AMBER_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::amber::Status amber_status_ = (expr);        \
    if (!amber_status_.ok()) return amber_status_; \
  } while (0)

#define AMBER_CONCAT_INNER(a, b) a##b
#define AMBER_CONCAT(a, b) AMBER_CONCAT_INNER(a, b)
#define AMBER_ASSIGN_OR_RETURN(lhs, expr)                  \
  auto AMBER_CONCAT(amber_result_, __LINE__) = (expr);     \
  if (!AMBER_CONCAT(amber_result_, __LINE__).ok())         \
    return AMBER_CONCAT(amber_result_, __LINE__).status(); \
  lhs = std::move(AMBER_CONCAT(amber_result_, __LINE__)).value()
