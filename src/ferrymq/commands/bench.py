"""``ferrymq bench pub|sub|conn``: a load generator for any MQTT broker (emqtt-bench style)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ferrymq.loadgen.options import MIN_SIZE

EXAMPLES = """examples:
  ferrymq bench sub -c 10 -t 'bench/#'                 # 10 subscribers; latency per message
  ferrymq bench pub -c 20 -I 1 -t 'bench/%i' -s 64     # 20 publishers at 1,000 msg/s each
  ferrymq bench pub -c 50 -I 0 -q 1 -L 100000          # unlimited QoS 1, 100,000 per client
  ferrymq bench conn -c 10000 -i 1                     # 10,000 idle connections at 1,000/s
  ferrymq bench pub -c 10 -I 0 --ws -p 8083            # MQTT over WebSocket at /mqtt
"""

# (websocket, tls) -> the usual port, as the broker's listeners default to
DEFAULT_PORTS = {(False, False): 1883, (False, True): 8883, (True, False): 8083, (True, True): 8084}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", default="127.0.0.1", help="broker address")
    p.add_argument(
        "-p", "--port", type=int, help="broker port (default 1883, 8883 TLS, 8083 ws, 8084 wss)"
    )
    p.add_argument("-c", "--count", type=int, default=1, help="number of clients")
    p.add_argument("-n", "--startnumber", type=int, default=0, help="index of the first client")
    p.add_argument(
        "-i",
        "--interval",
        type=float,
        default=10.0,
        help="milliseconds between two connection starts (default 10: 100/s)",
    )
    p.add_argument("-V", "--version", type=int, choices=(3, 4, 5), default=4, help="MQTT level")
    p.add_argument("-k", "--keepalive", type=int, default=300, help="keep alive, s (0: none)")
    p.add_argument(
        "-C",
        "--clean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clean session / clean start",
    )
    p.add_argument("-u", "--username")
    p.add_argument("-P", "--password")
    p.add_argument("--prefix", default="", help="client id prefix (default: fb<pid>)")
    p.add_argument("-w", "--workers", type=int, default=0, help="processes (default: CPUs)")
    p.add_argument("-d", "--duration", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to be ready")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cafile", help="CA bundle that signs the broker certificate")
    p.add_argument("--insecure", action="store_true", help="TLS without certificate checks")
    p.add_argument("--ws", action="store_true", help="MQTT over WebSocket (wss with --tls)")
    p.add_argument("--ws-path", default="/mqtt", help="HTTP path of the WebSocket endpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="load generator: publishers, subscribers or idle connections",
        description="Load generator for any MQTT broker: several processes, pre-encoded "
        "packets, a live progress line, latency percentiles from send times carried in "
        "the payload (the same layout as the mqttbench C generator).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = bench.add_subparsers(dest="mode", required=True)
    pub = modes.add_parser("pub", add_help=False, help="publishers")
    _common(pub)
    pub.add_argument("-t", "--topic", default="bench/%i", help="%%i client index, %%c client id")
    pub.add_argument("-s", "--size", type=int, default=256, help=f"payload bytes (>= {MIN_SIZE})")
    pub.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0)
    pub.add_argument("-r", "--retain", action="store_true")
    pub.add_argument(
        "-I",
        "--interval-of-msg",
        type=float,
        default=1000.0,
        help="milliseconds between messages of one publisher (0: as fast as possible)",
    )
    pub.add_argument("--rate", type=float, help="total messages/s over all publishers")
    pub.add_argument("-L", "--limit", type=int, default=0, help="messages per publisher")
    pub.add_argument("--inflight", type=int, default=32, help="QoS 1/2 window per publisher")
    sub_p = modes.add_parser("sub", add_help=False, help="subscribers")
    _common(sub_p)
    sub_p.add_argument("-t", "--topic", default="bench/#", help="filter; %%i client index")
    sub_p.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0)
    sub_p.add_argument("-L", "--limit", type=int, default=0, help="messages per subscriber")
    conn = modes.add_parser("conn", add_help=False, help="idle connections")
    _common(conn)
    bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferrymq.loadgen.options import BenchOptions
    from ferrymq.loadgen.runner import run as run_bench

    if args.count < 1:
        print("ferrymq bench: --count must be at least 1", file=sys.stderr)
        return 2
    if not args.ws_path.startswith("/"):
        print("ferrymq bench: --ws-path must start with /", file=sys.stderr)
        return 2
    port = args.port
    if port is None:
        port = DEFAULT_PORTS[(args.ws, args.tls)]
    opts = BenchOptions(
        mode=args.mode,
        host=args.host,
        port=port,
        count=args.count,
        start_index=args.startnumber,
        conn_interval_ms=args.interval,
        version=args.version,
        keepalive=args.keepalive,
        clean=args.clean,
        username=args.username,
        password=args.password,
        prefix=args.prefix,
        workers=args.workers,
        duration=args.duration,
        tls=args.tls,
        cafile=args.cafile,
        insecure=args.insecure,
        ws=args.ws,
        ws_path=args.ws_path,
        connect_timeout=args.connect_timeout,
    )
    if args.mode in ("pub", "sub"):
        opts.topic = args.topic
        opts.qos = args.qos
        opts.limit = args.limit
    if args.mode == "pub":
        if args.size < MIN_SIZE:
            print(f"ferrymq bench: --size must be at least {MIN_SIZE}", file=sys.stderr)
            return 2
        opts.size = args.size
        opts.retain = args.retain
        opts.inflight = args.inflight
        opts.msg_interval_ms = args.interval_of_msg
        if args.rate:
            opts.msg_interval_ms = 1000.0 * args.count / args.rate
    if not args.duration and not (args.mode != "conn" and args.limit):
        print("ferrymq bench: running until Ctrl-C (set --duration or --limit)", file=sys.stderr)
    return run_bench(opts, as_json=args.json, quiet=args.quiet)
