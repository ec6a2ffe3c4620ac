// Empty on purpose: this target only exposes include/ferry.h (symlinked) to Swift, so the
// @_cdecl exports in FerryC use the very structs and constants C callers compile against.
#include "ferry.h"
