// Debian's libzstd (libzstd-dev): the lossless tcp:// tensor compression.
#include <zstd.h>
