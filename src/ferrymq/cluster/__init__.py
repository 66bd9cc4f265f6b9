"""Cluster mode: many ferrymq nodes joined into one broker through a Redis (docs/cluster.md).

Layer: above ``core`` (it substitutes the broker's route table and extends its
publish), below ``transport`` and ``api``; ``core`` never imports it and
``server.py`` wires it only when ``cluster_redis_url`` is set, so a
standalone node runs exactly the code it always ran.

- ``codec``: the forwarded-message frames (one Redis command carries many);
- ``routes``: the in-memory replica of the cluster route table and the
  pending local route changes (pure bookkeeping, no I/O);
- ``shared``: every node's shared-group member counts, and which node serves
  a group's next message;
- ``subacks``: SUBACKs held until every live node has the routes they follow;
- ``acks``: PUBACKs / PUBRECs held until the message they confirm is in Redis;
- ``outbox``: forwarded messages batched per destination node;
- ``router``: the local ``Router`` that reports a filter's first and last
  local subscriber;
- ``broker``: the ``Broker`` whose publish also forwards;
- ``node``: the node's Redis connection (membership, route sync, inboxes,
  retained messages, outages) and the parts sharing it (``part``);
- ``clients``: the cluster-wide client registry and session hand-over (a part),
  with ``store`` (the node's ``Store``: persistent sessions go to Redis) and
  ``session_writes`` (their pending writes, pure bookkeeping).
"""
