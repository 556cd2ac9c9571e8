"""pyperf suite: the server's protocol module in Python, per message.

    python perf/bench_protocol.py [pyperf options]

- decode_validate_order: one ``new_order`` frame body through
  ``protocol.parse`` (orjson decode and every check);
- encode_fill: one ``fill`` reply through ``protocol.encode`` (orjson and the
  length prefix).

The server itself no longer takes these paths for orders: it decodes and
checks new orders, cancels and modifies in C (csrc/binding/form.c), and
writes acks and fills in C (route.c). ``parse`` is its path for the other
requests (login, subscribe, ...), and ``encode`` for market data and the
replies Python makes; the two figures are theirs, for a message of this
size.
"""

from __future__ import annotations

import orjson
import pyperf

from pyengine.server.protocol import encode, parse

ORDER = orjson.dumps(
    {"type": "new_order", "req_id": 1234, "symbol": "ESZ6", "side": "buy", "qty": 10, "price": 450_000,
     "tif": "gtc", "client_order_id": "b-000123"}
)
FILL = {"type": "fill", "order_id": 123456, "client_order_id": "b-000123", "symbol": "ESZ6", "side": "buy",
        "price": 450_000, "qty": 4, "leaves": 6, "trade_id": 98765, "liquidity": "taker", "seq": 456789}


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "pyengine-server protocol, per message"
    runner.bench_func("decode_validate_order", parse, ORDER)
    runner.bench_func("encode_fill", encode, FILL)


if __name__ == "__main__":
    main()
