"""What a fresh broker holds at start: the modules its configuration uses, nothing more.

A broker nobody manages stays at the memory of its MQTT side: the API's and the
dashboard's servers (aiohttp) are built on their first connection, the other
subcommands, pathlib, shutil, ipaddress, datetime, random and ctypes are not imported;
without TLS anywhere OpenSSL is never loaded
(uvloop beside a stand-in ssl, asyncio without it, no hashlib). ``bench/run.py``'s S0
row measures the same.
"""

from __future__ import annotations

import time
from pathlib import Path

from brokers import BrokerProcess, rss_kib, wait_port

# KiB of RSS once started, the API's port bound (not yet used), no dashboard: about
# 23,700 compiled (22,750 pure) on this kind of machine, with the bytecode cached; 25,200
# before the parser, datetime, zlib and ctypes went; 29,700 with OpenSSL loaded, 31,900
# before the imports were cut, 47,300 with the API's server built. 24,400 is 25 MB.
BOUND_KIB = 24_400


def test_a_fresh_broker_starts_small(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path)
    broker.launch()  # not start(): its connection to the API's port would build the API
    try:
        wait_port(broker.port)
        assert broker.proc is not None
        assert broker.wait_log("restored 0 retained messages", timeout=20), broker.log()
        # Right after that line start-up ends: poll, a loaded machine is slow.
        deadline = time.monotonic() + 20
        while (rss := rss_kib(broker.proc.pid)) > BOUND_KIB and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss <= BOUND_KIB, f"{rss} KiB of RSS at start"
        maps = Path(f"/proc/{broker.proc.pid}/maps").read_text()
        assert "libcrypto" not in maps and "libssl" not in maps
        assert "_ctypes" not in maps and "_datetime" not in maps
        assert "uvloop" in maps  # the loop it runs on
    finally:
        broker.stop()
