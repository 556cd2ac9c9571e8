"""pyengine-server: a gevent TCP daemon in front of the engine thread.

Modules, each importing only those listed before it: ``config`` (TOML and
the embedded default), ``listen`` (binding a listening socket),
``descriptors`` (file descriptors for every connection), ``httpd``
(the HTTP servers of the metrics and the web view), ``codes`` (the engine's codes as the protocol spells
them), ``protocol`` (message validation, replies, the framing error), ``limits``,
``unclaimed``, ``commands`` (the command queue), ``engine_thread`` (the C
runner), ``handoff`` (a watcher handled in the hub, handing over to its
greenlet what may wait), ``latency_trace`` (the per-stage latency breakdown),
``session`` (a connection's socket I/O), ``settle`` (requests that wait for
the session's earlier commands), ``seam`` (what the C
per-order path, ``pyengine._server``, calls in Python), ``marketdata``,
``cluster_node``, ``order_status`` (the orders and order_status
requests), ``dead_man`` (the dead-man switch), ``shared_switches`` (a cluster
leader's switches on their way into the log), ``switch_file`` (a single
server's switches in its data directory), ``recovered_status`` (the
orders' status after a restart, from the journal), ``requests`` (the
requests that are not per-order),
``dispatch`` (the engine's events), ``stats`` (the periodic stats line),
``metrics`` (the Prometheus endpoint), ``webfeed`` (what the web view
shows), ``webview`` (its HTTP server and page, web/), ``app`` (the server),
``cli`` (the console script); ``process`` stands alone. The wire protocol:
docs/protocol.md.
"""
