// Named tensor sets: a model's state dict.
//
// tensor_set owns its tensors (name, dtype, shape, 64-byte-aligned data) and keeps
// insertion order, so a merge writes tensors in the order of its first input.
//
// named_tensors<R>: what model-level functions accept. Models: tensor_set; any range of
// pair-like (name, tensor) elements such as std::map<std::string, std::vector<float>> or
// std::vector<std::pair<std::string, xt::xtensor<float, 2>>> (with the adapter).
// Non-models: std::vector<std::vector<float>> (no names), std::map<int, std::vector<float>>.
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/error.hpp>

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace alloy {

// Element count of a shape; throws errc::invalid_argument when it overflows.
inline std::size_t shape_elements(const std::vector<std::size_t>& shape, std::string_view name = {}) {
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (d != 0 && n > static_cast<std::size_t>(-1) / d)
      throw error(errc::invalid_argument, "tensor '" + std::string(name) + "': element count of its shape overflows");
    n *= d;
  }
  return n;
}

inline std::string shape_string(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// One named tensor without ownership: what model-level code iterates over.
struct named_view {
  std::string_view name;
  tensor_view view;
  std::vector<std::size_t> shape;
};

// Tag for tensor_set::add: leave the new tensor's contents unspecified, for a caller that
// overwrites every element (a merge output), saving a pass over memory.
struct no_init_t {
  explicit no_init_t() = default;
};
inline constexpr no_init_t no_init{};

class tensor_set {
 public:
  class entry {
   public:
    const std::string& name() const noexcept { return name_; }
    dtype type() const noexcept { return type_; }
    const std::vector<std::size_t>& shape() const noexcept { return shape_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t bytes() const noexcept { return size_ * dtype_size(type_); }
    tensor_view view() const noexcept { return {data_.get(), size_, type_}; }
    mutable_tensor_view view() noexcept { return {data_.get(), size_, type_}; }
    template <storage_scalar T>
    std::span<const T> values() const {
      check_type(dtype_of<T>);
      return {reinterpret_cast<const T*>(data_.get()), size_};
    }
    template <storage_scalar T>
    std::span<T> values() {
      check_type(dtype_of<T>);
      return {reinterpret_cast<T*>(data_.get()), size_};
    }

   private:
    friend class tensor_set;
    struct free_aligned {
      void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    void check_type(dtype t) const {
      if (t != type_)
        throw error(errc::dtype_mismatch, "tensor '" + name_ + "' holds " + std::string(dtype_name(type_)) +
                                              ", not " + std::string(dtype_name(t)));
    }
    std::string name_;
    dtype type_{};
    std::vector<std::size_t> shape_;
    std::size_t size_ = 0;
    std::unique_ptr<std::byte[], free_aligned> data_;
  };

  tensor_set() = default;
  tensor_set(tensor_set&&) noexcept = default;
  tensor_set& operator=(tensor_set&&) noexcept = default;
  tensor_set(const tensor_set& o) : tensor_set() {
    for (const auto& e : o) copy_bytes(add(e.name(), e.type(), e.shape(), no_init).data, e.view().data, e.bytes());
  }
  tensor_set& operator=(const tensor_set& o) {
    if (this != &o) *this = tensor_set(o);
    return *this;
  }

  // Adds a zero-filled tensor and returns a view to fill; throws errc::duplicate_name.
  mutable_tensor_view add(std::string name, dtype type, std::vector<std::size_t> shape) {
    mutable_tensor_view v = add(std::move(name), type, std::move(shape), no_init);
    std::memset(v.data, 0, v.bytes());
    return v;
  }
  mutable_tensor_view add(std::string name, dtype type, std::vector<std::size_t> shape, no_init_t) {
    if (index_.count(name)) throw error(errc::duplicate_name, "tensor_set: tensor '" + name + "' added twice");
    entry e;
    e.size_ = shape_elements(shape, name);
    const std::size_t bytes = e.size_ * dtype_size(type);
    if (e.size_ != 0 && bytes / e.size_ != dtype_size(type))
      throw error(errc::invalid_argument, "tensor '" + name + "': byte size overflows");
    e.data_.reset(new (std::align_val_t{64}) std::byte[bytes == 0 ? 1 : bytes]);
    e.name_ = std::move(name);
    e.type_ = type;
    e.shape_ = std::move(shape);
    index_.emplace(e.name_, entries_.size());
    entries_.push_back(std::move(e));
    return entries_.back().view();
  }

  // Adds a copy of t; the shape defaults to shape_of(t) and must match its size.
  template <tensor_like T>
  void add(std::string name, const T& t, std::vector<std::size_t> shape = {}) {
    const tensor_view v = t;
    if (shape.empty()) shape = shape_of(t);
    if (shape_elements(shape, name) != v.size)
      throw error(errc::shape_mismatch, "tensor '" + name + "': shape " + shape_string(shape) + " does not hold " +
                                            std::to_string(v.size) + " elements");
    copy_bytes(add(std::move(name), v.type, std::move(shape), no_init).data, v.data, v.bytes());
  }

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  using iterator = std::vector<entry>::iterator;
  using const_iterator = std::vector<entry>::const_iterator;
  const_iterator begin() const noexcept { return entries_.begin(); }
  const_iterator end() const noexcept { return entries_.end(); }
  iterator begin() noexcept { return entries_.begin(); }
  iterator end() noexcept { return entries_.end(); }
  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  const entry* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  entry* find(std::string_view name) {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  const entry& at(std::string_view name) const {
    if (const entry* e = find(name)) return *e;
    throw error(errc::missing_tensor, "tensor_set: no tensor '" + std::string(name) + "'");
  }
  entry& at(std::string_view name) {
    if (entry* e = find(name)) return *e;
    throw error(errc::missing_tensor, "tensor_set: no tensor '" + std::string(name) + "'");
  }

 private:
  static void copy_bytes(void* dst, const void* src, std::size_t n) noexcept {
    if (n != 0) std::memcpy(dst, src, n);  // src may be null when n is 0
  }
  std::vector<entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

namespace detail {
template <class P>
concept name_tensor_pair = requires(const P& p) {
  { std::get<0>(p) } -> std::convertible_to<std::string_view>;
  requires tensor_like<std::tuple_element_t<1, std::remove_cvref_t<P>>>;
};
}  // namespace detail

template <class R>
concept named_tensors = std::same_as<std::remove_cvref_t<R>, tensor_set> ||
                        (std::ranges::input_range<const R> && detail::name_tensor_pair<std::ranges::range_value_t<R>>);

// The (name, view, shape) list of a named set, in its iteration order; throws
// errc::duplicate_name when a name repeats.
template <named_tensors R>
std::vector<named_view> named_views_of(const R& set) {
  std::vector<named_view> out;
  if constexpr (std::same_as<std::remove_cvref_t<R>, tensor_set>) {
    out.reserve(set.size());
    for (const auto& e : set) out.push_back({e.name(), e.view(), e.shape()});
  } else {
    for (const auto& p : set) out.push_back({std::string_view(std::get<0>(p)), tensor_view(std::get<1>(p)), shape_of(std::get<1>(p))});
    std::unordered_map<std::string_view, int> seen;
    for (const auto& v : out)
      if (seen[v.name]++) throw error(errc::duplicate_name, "tensor '" + std::string(v.name) + "' appears twice in one model");
  }
  return out;
}

}  // namespace alloy
