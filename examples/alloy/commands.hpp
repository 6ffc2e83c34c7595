// The subcommands of the `alloy` tool, one translation unit each (main.cpp wires them up).
//
// Adding a subcommand: write examples/alloy/<name>_command.cpp defining
//   alloy_cli::command alloy_cli::add_<name>_command(CLI::App& app)
// which calls app.add_subcommand("<name>", "...") , declares its options on the returned
// CLI::App* and returns {that pointer, a function running the command and returning its exit
// status}; declare it below, call it in main.cpp's list and add the file to ALLOY_TOOL_SOURCES
// in examples/CMakeLists.txt. Errors: throw usage_error (exit 2), alloy::io::recipe_error
// (exit 2) or alloy::error (exit 1); main.cpp prints them as one line.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace alloy_cli {

struct command {
  CLI::App* app = nullptr;   // nullptr: nothing registered
  std::function<int()> run;  // runs the command when app was the parsed subcommand
};

command add_merge_command(CLI::App& app);    // merge_command.cpp
command add_inspect_command(CLI::App& app);  // inspect_command.cpp
command add_analyze_command(CLI::App& app);  // analyze_command.cpp

// `alloy align` (permutation alignment of checkpoints): align_command.cpp. The file shipped
// here registers nothing and returns {}; the alignment work replaces that file with one that
// registers the `align` subcommand. Nothing else needs to change.
command add_align_command(CLI::App& app);

}  // namespace alloy_cli
