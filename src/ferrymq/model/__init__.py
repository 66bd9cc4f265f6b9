"""The broker's data, free of any behaviour that needs the rest of the package.

``core/`` (which routes, queues and delivers these objects) and ``storage/``
(which writes them to disk and reads them back) both import this package, and
it imports neither: standard library only, plus ``ferrymq.mqtt.topics`` for
the shared-subscription syntax. That keeps the dependency graph a tree:
``core -> storage -> model -> mqtt``.
"""

from ferrymq.model.delivery import INFLIGHT, QUEUED, RELEASING, Delivery, fields_from_meta
from ferrymq.model.message import Message
from ferrymq.model.subscription import Subscription

__all__ = [
    "INFLIGHT",
    "QUEUED",
    "RELEASING",
    "Delivery",
    "Message",
    "Subscription",
    "fields_from_meta",
]
