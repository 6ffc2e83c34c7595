// alloy: merge, inspect and analyze checkpoints from the command line (docs/cli.md).
//
//   alloy merge RECIPE.yaml OUT_DIR [--threads N] [--dry-run] [--no-progress] [--out-shard-size SIZE]
//   alloy inspect PATH
//   alloy analyze RECIPE.yaml [--density D] [--threads N]
//
// Exit status: 0 success, 1 a merge or I/O error, 2 a usage or recipe error (CLI11's own
// exit codes are mapped to 2); every error is one line on stderr.
#include "cli_common.hpp"
#include "commands.hpp"

#include <alloy/version.hpp>

#include <CLI/CLI.hpp>

#include <iostream>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// OpenBLAS's pthreads build (Debian's default) starts a worker per extra core when the program
// loads, and each worker polls for work with sched_yield for about 2^28 cycles before it
// sleeps: on 2 cores that took 7.4 % of a task_arithmetic merge's samples (docs/cli.md). No
// command needs the pool at start, so it is stopped; OpenBLAS starts it again at its first
// threaded call (it does so after a fork too). Weak: other BLAS libraries lack the symbol.
extern "C" int blas_thread_shutdown_() __attribute__((weak));

// glibc returns a freed block of more than 128 KiB to the kernel (munmap, or a trimmed heap
// top) and raises its thresholds only as such blocks come back, so every tensor's selection
// buffers (ties' band entries, in blocks of 128-300 KiB: about 90 MB of pages written per
// 0.57B merge) were fresh pages, each faulted in anew; on a guest whose page faults are slow
// that was 0.25 of a ties merge's 0.62 s of system time (docs/performance.md). Blocks below 32 MiB now come
// from heaps kept across tensors, with at most 256 MiB of freed memory held back; larger
// ones (whole-tensor buffers) are still mapped and returned on free.
static void keep_freed_heap() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int main(int argc, char** argv) {
  if (blas_thread_shutdown_) blas_thread_shutdown_();
  keep_freed_heap();
  CLI::App app("alloy " + std::string(alloy::version_string) +
                   ": merge neural-network checkpoints (safetensors) with mergekit-style recipes",
               "alloy");
  app.set_version_flag("--version", std::string(alloy::version_string));
  app.require_subcommand(1);
  app.fallthrough(false);

  std::vector<alloy_cli::command> commands;
  int status = alloy_cli::exit_ok;
  status = alloy_cli::run_guarded([&] {
    commands.push_back(alloy_cli::add_merge_command(app));
    commands.push_back(alloy_cli::add_inspect_command(app));
    commands.push_back(alloy_cli::add_analyze_command(app));
    commands.push_back(alloy_cli::add_align_command(app));
    return alloy_cli::exit_ok;
  });
  if (status != alloy_cli::exit_ok) return status;

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    std::string msg = e.what();
    // CLI11 reports an unknown command word as a missing subcommand: name the word instead.
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::string known;
      for (const auto& c : commands)
        if (c.app) known += (known.empty() ? "" : ", ") + c.app->get_name();
      msg = "unknown command '" + std::string(argv[1]) + "' (alloy has " + known + ")";
    }
    for (auto& c : msg)
      if (c == '\n') c = ' ';
    std::cerr << "alloy: error: " << msg << " (run 'alloy --help')\n";
    return alloy_cli::exit_usage;
  }
  for (const auto& c : commands)
    if (c.app && c.app->parsed()) return alloy_cli::run_guarded(c.run);
  std::cerr << "alloy: error: no command given (run 'alloy --help')\n";
  return alloy_cli::exit_usage;
}
