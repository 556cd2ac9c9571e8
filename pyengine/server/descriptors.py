"""File descriptors enough for every connection the server may hold.

Each client connection takes a file descriptor, and so do the journal's
segments, a snapshot being written, the switches' file, the HTTP ports'
connections and the cluster's NATS link. Under a soft limit of 1,024 (a
common default) and the default ``max_connections`` of 1,024, clients could
take the last descriptors, and the next file the journal opened would fail
(EMFILE) and stop the server. So at start the server raises its soft limit
to what it needs, as far as the hard limit allows, and refuses to start
where the hard limit is lower.
"""

from __future__ import annotations

import errno
import logging
import resource

from ..log import fields

__all__ = ["RESERVED", "reserve_descriptors"]

log = logging.getLogger("pyengine.server")

# Descriptors beside the client and HTTP connections: standard streams, the
# listeners, the event loop's, the engine thread's eventfds, the journal's
# segments and the data directory, snapshots and the switches' file, NATS.
RESERVED = 256


def reserve_descriptors(connections: int) -> int:
    """Make room for `connections` at once beside RESERVED; the soft limit
    now. Raises OSError (EMFILE) when the hard limit is too low."""
    needed = connections + RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(errno.EMFILE, f"{connections} connections at once need {needed} file descriptors and the "
                                    f"process may open at most {hard} (its hard limit, `ulimit -Hn`): raise it, "
                                    "or lower max_connections")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except ValueError as exc:  # the kernel's EPERM or EINVAL (a hard limit above fs.nr_open, a sandbox)
        raise OSError(errno.EMFILE, f"{connections} connections at once need {needed} file descriptors and the "
                                    f"soft limit {soft} could not be raised: {exc}") from None
    log.info("descriptor_limit", extra=fields(was=soft, now=needed))
    return needed
