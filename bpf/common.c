/* Helpers shared by the entry files. The loader puts this first in the module's text: bcc rewrites
 * map calls (`counters.lookup`) only in the main text, so helpers cannot live in a header. */
#include "maps.h"

static __always_inline void count(int idx)
{
    __u64 *value = counters.lookup(&idx);
    if (value)
        __sync_fetch_and_add(value, 1);
}
