"""The parts of tools/soak.py, the soak test of pyengine-server: what all of
them share (``common``: constants, options, findings, frame and session
helpers), the server under test (``server``), the clients that load and probe
it (``tracked_clients``, ``disconnect_clients``, ``hostile_clients``,
``slow_readers``, ``loadgen_runner``) and the checks at the end
(``end_checks``). tools/soak.py runs them; its docstring says what the soak
does and checks."""
