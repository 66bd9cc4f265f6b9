"""The scenarios S1-S4, S4b and S8 as mqttbench arguments (S5 adds its own steps, see s5.py).

Timings: 2 s warm-up, 10 s measured, up to 3 s drain. S2 runs at the knee of
a per-broker sweep of the publisher rate (``KNEE``), found once per campaign.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# S2 publisher rate per broker: set by the sweep; a profile uses the default.
KNEE: dict[str, int] = {}
S2_DEFAULT_RATE = 8000

PUBSUB = ["-d", "10", "-w", "2", "--drain", "3", "--settle", "15", "--connect-timeout", "20"]
S1_ARGS = [
    "-P",
    "20",
    "-S",
    "1",
    "-t",
    "bench/%i",
    "-f",
    "bench/#",
    "-q",
    "0",
    "-s",
    "64",
    "-r",
    "0",
]
# S1's shape with large messages: 8 publishers of 16 KiB payloads, bytes rather than packets.
S8_ARGS = ["-P", "8", *S1_ARGS[2:10], "-s", "16384", "-r", "0"]  # S1 but -P and -s
S2_ARGS = ["-P", "1", "-S", "100", "-t", "bench/x", "-f", "bench/x", "-q", "0", "-s", "64"]
S3_ARGS = [
    "-P",
    "50",
    "-S",
    "50",
    "-t",
    "pair/%i",
    "-f",
    "pair/%i",
    "-q",
    "1",
    "-s",
    "256",
    "-i",
    "32",
]
S4_ARGS = [
    "-m",
    "conn",
    "-n",
    "10000",
    "-c",
    "1000",
    "-k",
    "300",
    "--hold",
    "5",
    "--connect-timeout",
    "30",
    "--settle",
    "15",
]

# S4 at the connect rate of issue 13's target (p99 within 3x Mosquitto's at 2,000/s).
S4B_ARGS = [*S4_ARGS[:4], "-c", "2000", *S4_ARGS[6:]]


@dataclass
class Scenario:
    name: str
    base: list[str]
    rate: list[str] = field(default_factory=list)
    timing: list[str] = field(default_factory=lambda: list(PUBSUB))

    def args(self, broker: str) -> list[str]:
        """Arguments without timing (the caller adds them) for this broker."""
        if self.name == "S2":
            return [*self.base, "-r", str(KNEE.get(broker, S2_DEFAULT_RATE))]
        return [*self.base, *self.rate]

    def full_args(self, broker: str) -> list[str]:
        return [*self.args(broker), *self.timing]


SCENARIOS = {
    "S1": Scenario("S1", S1_ARGS),
    "S2": Scenario("S2", S2_ARGS),
    "S3a": Scenario("S3a", S3_ARGS, ["-R", "5000"]),
    "S3b": Scenario("S3b", S3_ARGS, ["-r", "0"]),
    "S4": Scenario("S4", S4_ARGS, timing=[]),
    "S4b": Scenario("S4b", S4B_ARGS, timing=[]),
    "S8": Scenario("S8", S8_ARGS),
}


def sweep_args(rate: int) -> list[str]:
    """One short S2 sweep step at ``rate`` publisher messages/s."""
    return [
        *S2_ARGS,
        "-r",
        str(rate),
        "-d",
        "3",
        "-w",
        "1",
        "--drain",
        "1",
        "--settle",
        "10",
        "--connect-timeout",
        "20",
    ]
