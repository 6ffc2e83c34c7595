// alloy inspect PATH: the tensors of a checkpoint (dtype, shape, bytes), its files and metadata.
#include "cli_common.hpp"
#include "commands.hpp"

#include <alloy/io/checkpoint.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

namespace alloy_cli {

namespace {

std::string dims(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int run_inspect(const std::string& path) {
  const auto c = alloy::io::open_checkpoint(path);
  std::printf("checkpoint '%s': %zu tensors, %s of data in %zu file%s%s\n", path.c_str(), c.size(),
              human_bytes(static_cast<double>(c.total_bytes())).c_str(), c.file_count(), c.file_count() == 1 ? "" : "s",
              c.sharded() ? (" (index '" + c.index_path().string() + "')").c_str() : "");
  for (std::size_t i = 0; i < c.file_count(); ++i) {
    const auto& f = c.file(i);
    std::printf("  file %s: %zu tensors, header %llu bytes, %s\n", f.path().string().c_str(), f.size(),
                static_cast<unsigned long long>(f.header().header_size),
                human_bytes(static_cast<double>(f.header().file_size())).c_str());
  }
  if (!c.metadata().empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : c.metadata()) std::printf("  %s: %s\n", k.c_str(), v.c_str());
  }
  std::size_t width = 6;
  for (const auto& t : c.tensors()) width = std::max(width, t.name().size());
  width = std::min<std::size_t>(width, 70);
  std::printf("%-*s  %-5s %-20s %12s%s\n", static_cast<int>(width), "tensor", "dtype", "shape", "bytes",
              c.sharded() ? "  file" : "");
  struct totals {
    std::size_t tensors = 0;
    std::uint64_t elements = 0, bytes = 0;
  };
  std::map<std::string, totals> by_dtype;
  std::size_t misaligned = 0;
  for (const auto& t : c.tensors()) {
    const std::string dt(alloy::dtype_name(t.type()));
    std::printf("%-*s  %-5s %-20s %12llu%s%s\n", static_cast<int>(width), t.name().c_str(), dt.c_str(),
                dims(t.shape()).c_str(), static_cast<unsigned long long>(t.bytes()),
                c.sharded() ? ("  " + t.file->path().filename().string()).c_str() : "",
                t.is_aligned() ? "" : "  (misaligned)");
    auto& x = by_dtype[dt];
    ++x.tensors;
    x.elements += t.elements();
    x.bytes += t.bytes();
    misaligned += t.is_aligned() ? 0 : 1;
  }
  std::printf("by dtype:\n");
  for (const auto& [dt, x] : by_dtype)
    std::printf("  %-5s %zu tensors, %llu elements, %s\n", dt.c_str(), x.tensors,
                static_cast<unsigned long long>(x.elements), human_bytes(static_cast<double>(x.bytes)).c_str());
  if (misaligned)
    std::printf(
        "%zu tensors start at an offset that is not a multiple of their element size: alloy copies them "
        "before merging\n",
        misaligned);
  return exit_ok;
}

}  // namespace

command add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("inspect", "List the tensors, dtypes, shapes, bytes and metadata of a checkpoint");
  sub->add_option("PATH", *path, "A .safetensors file, an index file, or a folder holding either")->required();
  return {sub, [path] { return run_inspect(*path); }};
}

}  // namespace alloy_cli
