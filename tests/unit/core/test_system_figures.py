"""``core.system``: the process figures the alarms and ``/nodes`` report."""

from __future__ import annotations

import socket

from ferrymq.core import system


def test_open_fds_counts_the_descriptors_this_process_opens() -> None:
    before = system.open_fds()
    socks = [socket.socket() for _ in range(50)]
    try:
        assert system.open_fds() == before + 50
    finally:
        for s in socks:
            s.close()
    assert system.open_fds() == before
