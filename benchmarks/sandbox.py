"""LocalSandbox against a fresh ``python -c`` process per snippet (what ToRA/ReTool-style executors pay).

Measures, in one run on this machine: latency (p50/p99) and throughput of a trivial snippet, a sympy snippet and a
5-cell stateful session, at concurrency 1 and 2; session cell overhead; how long after its deadline a runaway
execution is killed; and a soak of mixed executions (adversarial ones included) checking for leaked processes and
supervisor memory growth. Prints a markdown report (paste it into docs/benchmarks.md).

    python benchmarks/sandbox.py            # full run (~3 minutes on 2 cores)
    python benchmarks/sandbox.py --quick    # smaller counts
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning_cort.sandbox import LocalSandbox

TRIVIAL = "print(1 + 1)"
SYMPY = "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x))"
SESSION = [
    "import sympy as sp",
    "x = sp.symbols('x')",
    "f = x**3 - 6*x**2 + 11*x - 6",
    "r = sp.solve(f, x)",
    "print(r)",
]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fresh_python(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    return time.perf_counter() - t


def fresh_session(cells: list[str]) -> float:
    # A fresh interpreter cannot keep state between calls: replay the earlier cells each time (CoRT's approach).
    t = time.perf_counter()
    for i in range(len(cells)):
        subprocess.run([sys.executable, "-c", "\n".join(cells[: i + 1])], capture_output=True, check=True)
    return time.perf_counter() - t


def sandbox_session(sb: LocalSandbox, cells: list[str]) -> float:
    t = time.perf_counter()
    sid = sb.open_session()
    for c in cells:
        r = sb.run(c, session=sid)
        assert r.ok, r
    sb.close_session(sid)
    return time.perf_counter() - t


def measure(fn, n: int, concurrency: int) -> tuple[list[float], float]:
    """Per-call latencies and calls per second over ``n`` calls at ``concurrency``."""
    start = time.perf_counter()
    if concurrency == 1:
        lat = [fn() for _ in range(n)]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            lat = list(pool.map(lambda _: fn(), range(n)))
    return lat, n / (time.perf_counter() - start)


def sandbox_exec(sb: LocalSandbox, code: str) -> float:
    t = time.perf_counter()
    r = sb.run(code)
    assert r.ok, r
    return time.perf_counter() - t


def uid_processes(exclude: set[int]) -> int:
    """Live processes under the sandbox's execution uids, except ``exclude`` (the pre-forked idle children)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(status.split("Uid:")[1].split()[0])
            state = status.split("State:")[1].split()[0]
            if 61000 <= uid < 61000 + 4096 and state != "Z":
                n += 1
    return n


def rss_kb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])


SOAK_MIX = [
    TRIVIAL,
    "print(sum(i * i for i in range(1000)))",
    SYMPY,
    "1 / 0",
    "import numpy as np\nprint(np.arange(10).sum())",
    "print('x' * 200000)",
    "import subprocess\nsubprocess.Popen(['sleep', '100'], start_new_session=True)",
    "import os\nos._exit(1)",
    "x = bytearray(10**10)",
    "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()",
    "while True:\n    pass",  # times out (timeout 0.2 s in the soak)
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--soak", type=int, default=10_000, help="executions in the soak")
    args = ap.parse_args()
    n_triv, n_sym, n_sess, n_base = (300, 60, 20, 20) if args.quick else (2000, 300, 60, 60)
    soak_n = 1000 if args.quick else args.soak

    rows = []
    with LocalSandbox(timeout=10) as sb:
        for _ in range(20):  # warm up
            sb.run(TRIVIAL)
        for conc in (1, 2):
            base_t, base_rate = measure(lambda: fresh_python(TRIVIAL), n_base, conc)
            box_t, box_rate = measure(lambda: sandbox_exec(sb, TRIVIAL), n_triv, conc)
            rows.append(("trivial `print(1+1)`", conc, base_t, base_rate, box_t, box_rate))
            base_t, base_rate = measure(lambda: fresh_python(SYMPY), max(10, n_base // 3), conc)
            box_t, box_rate = measure(lambda: sandbox_exec(sb, SYMPY), n_sym, conc)
            rows.append(("sympy: solve a quadratic", conc, base_t, base_rate, box_t, box_rate))
            base_t, base_rate = measure(lambda: fresh_session(SESSION), max(5, n_base // 10), conc)
            box_t, box_rate = measure(lambda: sandbox_session(sb, SESSION), n_sess, conc)
            rows.append(("5-cell stateful session", conc, base_t, base_rate, box_t, box_rate))

        # Session cell overhead: a trivial cell in a live session vs the same work in-process.
        sid = sb.open_session()
        sb.run("x = 0", session=sid)
        cell = [sandbox_exec_session(sb, "x += 1", sid) for _ in range(n_triv // 2)]
        sb.close_session(sid)
        one_shot = [sandbox_exec(sb, "x = 1") for _ in range(n_triv // 2)]

        # Sustained throughput at concurrency 2 with a mixed pool of trivial executions.
        t = time.perf_counter()
        results = sb.run_many([TRIVIAL] * (n_triv * 2))
        sustained = len(results) / (time.perf_counter() - t)
        assert all(r.ok for r in results)
        # The same with the fork-cost optimisations off (one fork per execution, 4 KiB pages), alternated with the
        # default in this run: the ratio is what they buy on this machine, whatever its speed today.
        plain_rates, tuned_rates = [], []
        with LocalSandbox(timeout=10, fork_burst=1, huge_pages=False) as plain:
            for _ in range(20):
                plain.run(TRIVIAL)
            for _ in range(3):
                for box, rates in ((plain, plain_rates), (sb, tuned_rates)):
                    t = time.perf_counter()
                    box.run_many([TRIVIAL] * n_triv)
                    rates.append(n_triv / (time.perf_counter() - t))
        plain_rate, tuned_rate = statistics.median(plain_rates), statistics.median(tuned_rates)

        # Timeout: how long after the deadline a runaway is killed and reported.
        overshoot = []
        for code in (
            "while True:\n    pass",
            "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')",
            "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass",
        ):
            t = time.perf_counter()
            r = sb.run(code, timeout=1.0)
            overshoot.append(time.perf_counter() - t - 1.0)
            assert r.status == "timeout"

    # Soak: mixed and adversarial executions, fresh sandbox.
    with LocalSandbox(timeout=0.2) as sb:
        pid = sb.server_pid
        assert pid is not None
        sb.run_many(SOAK_MIX * 5)
        rss0 = rss_kb(pid)
        statuses: dict[str, int] = {}
        t = time.perf_counter()
        done = 0
        while done < soak_n:
            batch = [SOAK_MIX[(done + i) % len(SOAK_MIX)] for i in range(min(200, soak_n - done))]
            for r in sb.run_many(batch):
                statuses[r.status] = statuses.get(r.status, 0) + 1
            done += len(batch)
        soak_s = time.perf_counter() - t
        rss1 = rss_kb(pid)
        time.sleep(0.5)
        idle = set(sb.stats().get("idle", []))
        leaked = uid_processes(idle)
        restarts = sb.restarts

    print(f"## Sandbox ({platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()})\n")
    print("Command: `python benchmarks/sandbox.py`\n")
    print(
        "| snippet | concurrency | fresh `python -c` p50 / p99 ms | exec/s | LocalSandbox p50 / p99 ms | exec/s |"
        " speed-up (p50) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, conc, bt, br, st, sr in rows:
        print(
            f"| {name} | {conc} | {1e3 * pct(bt, 0.5):.1f} / {1e3 * pct(bt, 0.99):.1f} | {br:.0f} | "
            f"{1e3 * pct(st, 0.5):.2f} / {1e3 * pct(st, 0.99):.2f} | {sr:.0f} | {pct(bt, 0.5) / pct(st, 0.5):.1f}x |"
        )
    print()
    print(
        f"- session cell (`x += 1`) p50 {1e3 * statistics.median(cell):.2f} ms vs one-shot execution "
        f"p50 {1e3 * statistics.median(one_shot):.2f} ms"
    )
    print(f"- sustained trivial executions, `run_many` at 2 workers: {sustained:.0f} exec/s")
    print(
        f"- same, alternated 3× with the fork optimisations off (`fork_burst=1, huge_pages=False`): "
        f"{plain_rate:.0f} exec/s off vs {tuned_rate:.0f} exec/s on (median), {tuned_rate / plain_rate:.2f}x"
    )
    print(
        f"- timeout kill: reported {1e3 * max(overshoot):.0f} ms after the deadline at worst "
        f"(busy loop, catastrophic regex in C, SIGTERM-ignoring loop)"
    )
    print(
        f"- soak: {soak_n} mixed executions ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}) in "
        f"{soak_s:.0f} s; leaked processes after: {leaked} (the {len(idle)} pre-forked idle children not counted); "
        f"server restarts: {restarts}; supervisor RSS "
        f"{rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB ({100 * (rss1 - rss0) / rss0:+.1f}%)"
    )


def sandbox_exec_session(sb: LocalSandbox, code: str, sid: str) -> float:
    t = time.perf_counter()
    r = sb.run(code, session=sid)
    assert r.ok, r
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
