"""pyengine-server: a gevent TCP daemon in front of the engine thread.

Modules: ``config`` (TOML and the embedded default), ``protocol`` (framing,
message validation, replies), ``engine_thread`` (the C runner),
``sessions`` and ``dispatch`` (routing), ``marketdata``, ``app`` (the
server), ``cli`` (the console script). The wire protocol: docs/protocol.md.
"""
