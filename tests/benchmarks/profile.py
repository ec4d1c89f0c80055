"""Where a mediator worker's CPU goes under load: py-spy on the gunicorn workers, grouped by step.

    .venv/bin/pip install py-spy        # not a dependency of the project
    .venv/bin/python tests/benchmarks/profile.py [claim|claim-openhim|search|eligibility] [--clients N]

Starts the benchmark upstream and one mediator (as `run.py` does), drives one family for a few
seconds, samples every worker with `py-spy record --gil` (only the thread holding the GIL, so
waiting is not counted) and prints the share of samples per step of the request and the hottest
frames. Shares, not times: compare them before and after a change, then measure the change with
`run.py`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks import fixtures as fixtures_mod  # noqa: E402
from tests.benchmarks import run as bench  # noqa: E402
from tests.benchmarks.loadgen import run_load  # noqa: E402

#: Steps of a request, by a frame that marks them (the first match wins).
STEPS = (
    ("validation (fhir.resources + profile)", ("claims/validation.py",)),
    ("openIMIS call (requests)", ("OpenImisClient._send",)),
    ("claim store", ("store/",)),
    ("classification", ("classification.py",)),
    ("normalisation", ("normalise.py",)),
    ("orchestrations + envelope", ("openhim/",)),
    ("summary log line", ("logging/", "pythonjsonlogger", "mediator/logs.py")),
    ("JSON", ("json/",)),
    ("other mediator code", ("mediator/",)),
    ("Flask / werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn", ("gunicorn/",)),
    (
        "threads, sockets, HTTP parsing",
        ("threading.py", "concurrent/", "socket", "selectors", "http/", "email/"),
    ),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", nargs="?", default="claim", choices=bench.FAMILIES)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mediator-profile-"))
    (work / "logs").mkdir()
    fx = fixtures_mod.build(work / "fixtures.json")
    upstream = bench.start_upstream(work / "fixtures.json", work / "logs")
    servers = [upstream]
    try:
        mediator = bench.spawn_mediator(
            "mediator", upstream, work / "state", work / "logs", {bench.CACHE_SETTING: "false"}
        )
        servers.append(mediator)
        bench.wait_ready(mediator, "/health", 60)
        plan = bench.plan_for(args.family, bench.Config("mediator", mediator, "mediator", bench.FAMILIES), fx)
        run_load(plan, args.clients, 2.0, 10**9)  # warm up (logins, insuree memo, pools)
        workers = [pid for pid, role in mediator.pids().items() if role == "worker"]
        outputs = [work / f"py-spy-{pid}.txt" for pid in workers]
        spies = [
            subprocess.Popen(
                [
                    *(py_spy, "record", "--gil", "--format", "raw", "-r", "250"),
                    *("-d", str(int(args.seconds)), "-p", str(pid), "-o", str(out)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, out in zip(workers, outputs, strict=True)
        ]
        result = run_load(plan, args.clients, args.seconds - 1, 10**9)
        for spy in spies:
            spy.wait()
        report(outputs, result)
    finally:
        for server in reversed(servers):
            server.stop()
    return 0


def report(outputs: list[Path], result: dict) -> None:
    steps: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    total = 0
    for out in outputs:
        if not out.exists():
            continue
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames[stack.split(";")[-1]] += n
            step = next((name for name, marks in STEPS if any(m in stack for m in marks)), "other")
            steps[step] += n
    print(f"{result['rps']:.0f} req/s, {result['failed']} failed; {total} samples holding the GIL")
    for name, n in steps.most_common():
        print(f"{100 * n / max(total, 1):5.1f} %  {name}")
    print("hottest frames:")
    for frame, n in frames.most_common(15):
        print(f"{100 * n / max(total, 1):5.1f} %  {frame}")


if __name__ == "__main__":
    sys.exit(main())
