// Umbrella header: every public alloy header except the opt-in adapters.
#pragma once

#include <alloy/config.hpp>
#include <alloy/error.hpp>
#include <alloy/version.hpp>

#include <alloy/core/bf16.hpp>
#include <alloy/core/dtype.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/fp16.hpp>
#include <alloy/core/matrix_ref.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/core/random.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>

#include <alloy/methods/breadcrumbs.hpp>
#include <alloy/methods/dare.hpp>
#include <alloy/methods/della.hpp>
#include <alloy/methods/magnitude_prune.hpp>
#include <alloy/methods/soup.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <alloy/align/linear_assignment.hpp>
