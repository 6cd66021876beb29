// The one error type of the runtime: a message (the same words as the Python runtime's
// EdgeCompressError) and an optional hint saying what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace edgecompress {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string hint = {})
      : std::runtime_error(message), hint_(std::move(hint)) {}
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string hint_;
};

}  // namespace edgecompress
