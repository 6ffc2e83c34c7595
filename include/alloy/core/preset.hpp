// Named presets: which reference implementation a method's options reproduce.
//
//   mergekit  arcee-ai/mergekit (the default, and what recipes mean)
//   peft      huggingface/peft's merge utilities (utils/merge_utils.py)
//   paper     the original authors' code for the method (for TIES: prateeky2806/ties-merging,
//             which FusionBench follows)
//
// Each method's options struct has a static `preset(alloy::preset)` returning the bundle;
// docs/methods/<method>.md tabulates the differences.
#pragma once

#include <string_view>

namespace alloy {

enum class preset { mergekit, peft, paper };

constexpr std::string_view preset_name(preset p) noexcept {
  switch (p) {
    case preset::mergekit: return "mergekit";
    case preset::peft: return "peft";
    case preset::paper: return "paper";
  }
  return "?";
}

}  // namespace alloy
