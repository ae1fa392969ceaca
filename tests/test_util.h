// Kept for existing includes; see testutil.h.
#pragma once
#include "testutil.h"
