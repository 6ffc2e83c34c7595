// alloy::error: the one exception type thrown by public entry points, with a code that
// says what kind of precondition failed and a message naming the model, tensor or value.
#pragma once

#include <stdexcept>
#include <string>

namespace alloy {

enum class errc {
  invalid_argument,  // a parameter out of its range (density, weight count, ...)
  empty_input,       // no models, or an empty tensor set
  size_mismatch,     // element counts differ
  shape_mismatch,    // shapes differ
  dtype_mismatch,    // a dtype that cannot be used here
  missing_tensor,    // a name present in one model and not in another
  duplicate_name,    // a name given twice
  non_finite,        // NaN or Inf where a finite number is required
  aliasing,          // an output overlapping an input in a way the method cannot handle
  malformed_file,    // a file that breaks its format
  io_error,          // the operating system refused a read or write
};

inline const char* to_string(errc c) noexcept {
  switch (c) {
    case errc::invalid_argument: return "invalid argument";
    case errc::empty_input: return "empty input";
    case errc::size_mismatch: return "size mismatch";
    case errc::shape_mismatch: return "shape mismatch";
    case errc::dtype_mismatch: return "dtype mismatch";
    case errc::missing_tensor: return "missing tensor";
    case errc::duplicate_name: return "duplicate name";
    case errc::non_finite: return "non-finite value";
    case errc::aliasing: return "aliasing";
    case errc::malformed_file: return "malformed file";
    case errc::io_error: return "I/O error";
  }
  return "unknown error";
}

class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

}  // namespace alloy
