"""A standalone node runs the code it always ran: nothing of cluster mode is even imported."""

from __future__ import annotations

import subprocess
import sys


def test_standalone_server_imports_neither_cluster_nor_redis() -> None:
    code = (
        "import sys, ferrymq.server, ferrymq.core.broker;"
        "bad = [m for m in sys.modules if m.startswith(('ferrymq.cluster', 'redis'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
