// Debian's hiredis (libhiredis-dev): the Redis protocol for the redis:// transport's client
// and for `ferry serve --redis` nodes. Only the blocking API with argv commands is used
// (binary-safe arguments; Swift cannot call the variadic redisCommand).
#include <hiredis/hiredis.h>
