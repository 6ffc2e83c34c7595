#include "stream_cases.hpp"
