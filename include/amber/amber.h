// amber/amber.h — everything a program needs: the heap, sections, containers.
#pragma once

#include "amber/allocator.h"
#include "amber/heap.h"
#include "amber/options.h"
#include "amber/status.h"
