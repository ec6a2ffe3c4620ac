// Debian's hiredis (libhiredis-dev): the Redis protocol for the redis:// transport's client
// and for `ferry serve --redis` nodes. Only its protocol half is used: commands formatted
// with redisFormatCommandArgv (binary-safe; Swift cannot call the variadic redisCommand) and
// replies parsed by a redisReader. The bytes travel on Ferry's own socket stream, so TLS
// works with hiredis 0.14, which has none.
#include <hiredis/hiredis.h>
