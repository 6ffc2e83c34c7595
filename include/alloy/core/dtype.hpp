// Element types. Floating dtypes (f32, f64, bf16, f16) are what methods merge; the integer
// and bool dtypes exist so that checkpoints holding them (step counters, masks) can be
// carried through unmerged.
//
// storage_scalar: a C++ type alloy reads and writes as tensor elements. Models: float,
// double, alloy::bf16, alloy::fp16. Others can opt in by specializing scalar_traits with a
// `static constexpr dtype value`. Non-models: int, long double, std::complex<float>.
#pragma once

#include <alloy/core/bf16.hpp>
#include <alloy/core/fp16.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace alloy {

enum class dtype : std::uint8_t { f32, f64, bf16, f16, i8, i16, i32, i64, u8, boolean };

constexpr std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::f64: case dtype::i64: return 8;
    case dtype::f32: case dtype::i32: return 4;
    case dtype::bf16: case dtype::f16: case dtype::i16: return 2;
    case dtype::i8: case dtype::u8: case dtype::boolean: return 1;
  }
  return 0;
}

// Names as safetensors spells them, so messages and files agree.
constexpr std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f64: return "F64";
    case dtype::bf16: return "BF16";
    case dtype::f16: return "F16";
    case dtype::i8: return "I8";
    case dtype::i16: return "I16";
    case dtype::i32: return "I32";
    case dtype::i64: return "I64";
    case dtype::u8: return "U8";
    case dtype::boolean: return "BOOL";
  }
  return "?";
}

constexpr bool is_floating(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f64 || t == dtype::bf16 || t == dtype::f16;
}

template <class T>
struct scalar_traits {};
template <>
struct scalar_traits<float> { static constexpr dtype value = dtype::f32; };
template <>
struct scalar_traits<double> { static constexpr dtype value = dtype::f64; };
template <>
struct scalar_traits<bf16> { static constexpr dtype value = dtype::bf16; };
template <>
struct scalar_traits<fp16> { static constexpr dtype value = dtype::f16; };

template <class T>
concept storage_scalar = requires {
  { scalar_traits<std::remove_cv_t<T>>::value } -> std::convertible_to<dtype>;
};

template <storage_scalar T>
inline constexpr dtype dtype_of = scalar_traits<std::remove_cv_t<T>>::value;

// Calls f(T{}) with the storage type of a floating dtype; the caller has checked is_floating.
template <class F>
decltype(auto) visit_floating(dtype t, F&& f) {
  switch (t) {
    case dtype::f64: return f(double{});
    case dtype::bf16: return f(bf16{});
    case dtype::f16: return f(fp16{});
    default: return f(float{});
  }
}

}  // namespace alloy
