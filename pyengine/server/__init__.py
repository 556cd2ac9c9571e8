"""pyengine-server: a gevent TCP daemon in front of the engine thread.

Modules, each importing only those listed before it: ``config`` (TOML and
the embedded default), ``codes`` (the engine's codes as the protocol spells
them), ``protocol`` (framing, message validation, replies), ``limits``,
``unclaimed``, ``commands`` (the command queue), ``engine_thread`` (the C
runner), ``seam`` (what the C per-order path, ``pyengine._server``, calls in
Python), ``marketdata``, ``session`` (a connection's socket I/O),
``requests`` (the requests that are not per-order), ``dispatch`` (the
engine's events), ``app`` (the server), ``cluster_node``, ``cli`` (the
console script). The wire protocol: docs/protocol.md.
"""
