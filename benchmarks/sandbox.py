"""LocalSandbox against a fresh ``python -c`` process per snippet (what ToRA/ReTool-style executors pay), and the
zygote design against the previous server, in one run on this machine.

Measures latency (p50/p99) and throughput of a trivial snippet, a sympy snippet and a 5-cell stateful session at
concurrency 1 and 2; session cell overhead; sustained trivial executions (``run_many``, 2 workers) of the default
sandbox, then alternated with the previous server path (``LocalSandbox(zygote=False)``: children forked by the
server itself) with the CPU time and page faults each spends per execution; how long after its deadline a runaway
execution is killed; and a soak of mixed executions (adversarial ones included) checking for leaked processes and
memory growth. The load average is recorded at the start and end of the run and of the sustained part: the machine
is shared, and absolute rates follow what else runs on it (the same-run ratio does much less).

A full run writes its figures into docs/benchmarks.md ("## Sandbox", that section only); ``--sustained-only`` waits
for a quiet machine (load average < 0.5) and measures the sustained part alone, keeping the full run's figures.
Both render the section from the figures kept in it (an HTML comment), so neither loses the other's.

    python benchmarks/sandbox.py                    # full run (~4 minutes on 2 cores)
    python benchmarks/sandbox.py --sustained-only   # the sustained part alone, on a quiet machine (~1 minute)
    python benchmarks/sandbox.py --quick            # smaller counts; prints only
    python benchmarks/sandbox.py --render           # rewrite the section from the figures stored in it
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _docs import DOCS, write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.sandbox import LocalSandbox

HEADING = "Sandbox"
TARGET_RATE = 400
TRIVIAL = "print(1 + 1)"
SYMPY = "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x))"
SESSION = [
    "import sympy as sp",
    "x = sp.symbols('x')",
    "f = x**3 - 6*x**2 + 11*x - 6",
    "r = sp.solve(f, x)",
    "print(r)",
]
#: Execution uids away from the default range (61000+) other sandboxes on a shared machine use, e.g. a test run:
#: an execution's last act is to kill every process of its uid. (Live servers also reserve disjoint ranges.)
NEW_UIDS, PREVIOUS_UIDS = 200_000, 300_000
DATA_MARK = "<!-- sandbox benchmark data: "


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def load() -> float:
    return os.getloadavg()[0]


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


def sandbox_exec(sb: LocalSandbox, code: str, session: str | None = None) -> float:
    t = time.perf_counter()
    r = sb.run(code, session=session)
    assert r.ok, r
    return time.perf_counter() - t


def sandbox_session(sb: LocalSandbox, cells: list[str]) -> float:
    t = time.perf_counter()
    sid = sb.open_session()
    for c in cells:
        sandbox_exec(sb, c, sid)
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


# -- counters ------------------------------------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int | None) -> tuple[float, float, int, int]:
    """CPU seconds of ``pid`` itself and of its reaped children, its minor page faults and its children's."""
    if pid is None:
        return 0.0, 0.0, 0, 0
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK, int(f[7]), int(f[8])


def cpu_times() -> tuple[int, int]:
    """Busy and total jiffies of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def batch(sb: LocalSandbox, n: int) -> dict[str, float]:
    """``n`` trivial executions through ``run_many``: rate, and per execution the CPU milliseconds of every process
    involved (server, zygote, children, this client) and the page faults of the children and of the forking process."""
    server, zygote = sb.server_pid, sb.stats().get("zygote")
    s0, z0, c0 = proc_stat(server), proc_stat(zygote), os.times()
    t = time.perf_counter()
    results = sb.run_many([TRIVIAL] * n)
    dt = time.perf_counter() - t
    assert all(r.ok and r.stdout == "2\n" for r in results), [r for r in results if not r.ok][:3]
    time.sleep(0.2)  # the last children exit and are reaped
    s1, z1, c1 = proc_stat(server), proc_stat(zygote), os.times()
    cpu = (s1[0] - s0[0]) + (s1[1] - s0[1]) + (z1[0] - z0[0]) + (c1.user + c1.system - c0.user - c0.system)
    forker = (z1[2] - z0[2]) if zygote is not None else (s1[2] - s0[2])
    return {"rate": n / dt, "cpu_ms": 1e3 * cpu / n, "child_faults": (s1[3] - s0[3]) / n, "fork_faults": forker / n}


def sustained(sb: LocalSandbox, previous: LocalSandbox, n_big: int, n: int, reps: int) -> dict[str, Any]:
    """One long ``run_many`` on the default sandbox, then the two designs alternated ``reps`` times (the order flips
    every time: the second of a pair tends to run a little faster)."""
    out: dict[str, Any] = {"load_start": load()}
    busy0, total0 = cpu_times()
    out["big"] = batch(sb, n_big)
    out["n_big"] = n_big
    runs: dict[str, list[dict[str, float]]] = {"zygote": [], "previous": []}
    pair = (("previous", previous), ("zygote", sb))
    for i in range(reps):
        for name, box in pair if i % 2 == 0 else pair[::-1]:
            runs[name].append(batch(box, n))
    busy1, total1 = cpu_times()
    out.update(n=n, reps=reps, runs=runs, load_end=load(), busy=(busy1 - busy0) / max(1, total1 - total0))
    return out


# -- soak ----------------------------------------------------------------------------------------------------------
def uid_processes(uids: tuple[int, int], exclude: set[int]) -> int:
    """Live processes under the execution uids ``uids``, except ``exclude`` (the pre-forked idle children)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(status.split("Uid:")[1].split()[0])
            state = status.split("State:")[1].split()[0]
            if uids[0] <= uid < uids[1] and state != "Z":
                n += 1
    return n


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


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


def soak(n: int) -> dict[str, Any]:
    with LocalSandbox(timeout=0.2, uid_base=NEW_UIDS) as sb:
        sb.run_many(SOAK_MIX * 5)
        server, zygote = sb.server_pid, sb.stats().get("zygote")
        rss0, zrss0 = rss_mib(server), rss_mib(zygote)
        statuses: dict[str, int] = {}
        t = time.perf_counter()
        done = 0
        while done < n:
            chunk = [SOAK_MIX[(done + i) % len(SOAK_MIX)] for i in range(min(200, n - done))]
            for r in sb.run_many(chunk):
                statuses[r.status] = statuses.get(r.status, 0) + 1
            done += len(chunk)
        seconds = time.perf_counter() - t
        rss1, zrss1 = rss_mib(server), rss_mib(zygote)
        time.sleep(0.5)
        stats = sb.stats()
        idle = set(stats.get("idle", []))
        return {
            "n": n,
            "statuses": statuses,
            "seconds": seconds,
            "leaked": uid_processes(sb.uid_range, idle),
            "idle": len(idle),
            "restarts": sb.restarts,
            "zygote_restarts": stats.get("zygote_restarts", 0),
            "rss": [rss0, rss1],
            "zygote_rss": [zrss0, zrss1],
        }


# -- the full run --------------------------------------------------------------------------------------------------
def full_run(quick: bool, soak_n: int) -> dict[str, Any]:
    n_triv, n_sym, n_sess, n_base = (300, 60, 20, 20) if quick else (2000, 300, 60, 60)
    data: dict[str, Any] = {"load_start": load(), "started": time.strftime("%Y-%m-%d %H:%M"), "quick": quick}
    t0 = time.perf_counter()
    rows = []
    with LocalSandbox(timeout=10, uid_base=NEW_UIDS) as sb:
        for _ in range(20):  # warm up
            sb.run(TRIVIAL)
        for conc in (1, 2):
            for name, code, nb, ns in (
                ("trivial `print(1+1)`", TRIVIAL, n_base, n_triv),
                ("sympy: solve a quadratic", SYMPY, max(10, n_base // 3), n_sym),
            ):
                base_t, base_rate = measure(lambda c=code: fresh_python(c), nb, conc)
                box_t, box_rate = measure(lambda c=code: sandbox_exec(sb, c), ns, conc)
                rows.append((name, conc, base_t, base_rate, box_t, box_rate))
            base_t, base_rate = measure(lambda: fresh_session(SESSION), max(5, n_base // 10), conc)
            box_t, box_rate = measure(lambda: sandbox_session(sb, SESSION), n_sess, conc)
            rows.append(("5-cell stateful session", conc, base_t, base_rate, box_t, box_rate))
        data["rows"] = [
            {
                "name": name,
                "conc": conc,
                "base_p50": pct(bt, 0.5),
                "base_p99": pct(bt, 0.99),
                "base_rate": br,
                "p50": pct(st, 0.5),
                "p99": pct(st, 0.99),
                "rate": sr,
            }
            for name, conc, bt, br, st, sr in rows
        ]

        # Session cell overhead: a trivial cell in a live session vs a one-shot execution.
        sid = sb.open_session()
        sb.run("x = 0", session=sid)
        cell = [sandbox_exec(sb, "x += 1", sid) for _ in range(n_triv // 2)]
        sb.close_session(sid)
        one_shot = [sandbox_exec(sb, "x = 1") for _ in range(n_triv // 2)]
        data["cell_p50"], data["one_shot_p50"] = statistics.median(cell), statistics.median(one_shot)

        with LocalSandbox(timeout=10, zygote=False, uid_base=PREVIOUS_UIDS) as previous:
            for _ in range(20):
                previous.run(TRIVIAL)
            data["sustained"] = sustained(sb, previous, 2 * n_triv, n_triv, 4)

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
        data["overshoot"] = max(overshoot)
    data["soak"] = soak(soak_n)
    data["seconds"] = time.perf_counter() - t0
    data["load_end"] = load()
    return data


def quiet_run(wait_s: float, n: int, reps: int) -> dict[str, Any]:
    """The sustained part alone, started once the load average is below 0.5 (or after ``wait_s`` seconds)."""
    deadline = time.monotonic() + wait_s
    while load() >= 0.5 and time.monotonic() < deadline:
        print(f"waiting for a quiet machine (load average {load():.2f})", file=sys.stderr, flush=True)
        time.sleep(15)
    waited_out = load() >= 0.5
    with (
        LocalSandbox(timeout=10, uid_base=NEW_UIDS) as sb,
        LocalSandbox(timeout=10, zygote=False, uid_base=PREVIOUS_UIDS) as previous,
    ):
        for box in (sb, previous):
            box.run_many([TRIVIAL] * 50)
        data = sustained(sb, previous, 2 * n, n, reps)
    data["started"] = time.strftime("%Y-%m-%d %H:%M")
    data["quiet"] = not waited_out
    return data


# -- the report ----------------------------------------------------------------------------------------------------
def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def sustained_lines(s: dict[str, Any]) -> list[str]:
    z, p = s["runs"]["zygote"], s["runs"]["previous"]
    ratio = statistics.median(a["rate"] / b["rate"] for a, b in zip(z, p))
    return [
        f"- sustained trivial executions, `run_many` of {s['n_big']} at 2 workers: **{s['big']['rate']:.0f} exec/s** "
        f"(load average {s['load_start']:.2f} at the start of this part, {s['load_end']:.2f} at its end; the machine's "
        f"CPUs were {100 * s['busy']:.0f}% busy during it)",
        f"- alternated {s['reps']}× (order flipped each time) with the previous server (`LocalSandbox(zygote=False)`: "
        f"the server forks the children itself), {s['n']} executions each: {_med(p, 'rate'):.0f} exec/s previous vs "
        f"**{_med(z, 'rate'):.0f} exec/s** zygote (median; zygote min {min(r['rate'] for r in z):.0f}), "
        f"**{ratio:.2f}x** (median of the paired ratios)",
        f"- CPU per execution, every process counted (server, zygote, children, client): {_med(p, 'cpu_ms'):.2f} ms "
        f"previous vs {_med(z, 'cpu_ms'):.2f} ms zygote; page faults per execution in the child "
        f"{_med(p, 'child_faults'):.0f} vs {_med(z, 'child_faults'):.0f}, in the forking process (server, resp. "
        f"zygote) {_med(p, 'fork_faults'):.0f} vs {_med(z, 'fork_faults'):.0f}",
    ]


def render(data: dict[str, Any]) -> str:
    full, quiet = data.get("full"), data.get("quiet")
    out = [f"## {HEADING} ({platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()})", ""]
    if full:
        out += [
            f"Command: `python benchmarks/sandbox.py` (run {full['started']}, {full['seconds']:.0f} s; load average "
            f"{full['load_start']:.2f} at the start, {full['load_end']:.2f} at the end)",
            "",
            "| snippet | concurrency | fresh `python -c` p50 / p99 ms | exec/s | LocalSandbox p50 / p99 ms | exec/s "
            "| speed-up (p50) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in full["rows"]:
            out.append(
                f"| {r['name']} | {r['conc']} | {1e3 * r['base_p50']:.1f} / {1e3 * r['base_p99']:.1f} | "
                f"{r['base_rate']:.0f} | {1e3 * r['p50']:.2f} / {1e3 * r['p99']:.2f} | {r['rate']:.0f} | "
                f"{r['base_p50'] / r['p50']:.1f}x |"
            )
        sk = full["soak"]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(sk["statuses"].items()))
        rss0, rss1 = sk["rss"]
        out += [
            "",
            f"- session cell (`x += 1`) p50 {1e3 * full['cell_p50']:.2f} ms vs one-shot execution p50 "
            f"{1e3 * full['one_shot_p50']:.2f} ms",
            *sustained_lines(full["sustained"]),
            f"- timeout kill: reported {1e3 * full['overshoot']:.0f} ms after the deadline at worst (busy loop, "
            "catastrophic regex in C, SIGTERM-ignoring loop)",
            f"- soak: {sk['n']} mixed executions ({counts}) in {sk['seconds']:.0f} s; leaked processes after: "
            f"{sk['leaked']} (the {sk['idle']} pre-forked idle children not counted); server restarts: "
            f"{sk['restarts']}, zygote restarts: {sk['zygote_restarts']}; server RSS {rss0:.1f} → {rss1:.1f} MiB "
            f"({100 * (rss1 - rss0) / rss0:+.1f}%), zygote RSS {sk['zygote_rss'][0]:.1f} → {sk['zygote_rss'][1]:.1f} "
            "MiB",
        ]
    if quiet:
        q = "below 0.5" if quiet["quiet"] else "still ≥ 0.5 after waiting: not a quiet run"
        out += [
            "",
            "### Sustained throughput alone",
            "",
            f"Command: `python benchmarks/sandbox.py --sustained-only` (run {quiet['started']}; started once the load "
            f"average was {q})",
            "",
            *sustained_lines(quiet),
        ]
    if full:
        s = full["sustained"]
        z = s["runs"]["zygote"]
        loaded_ok = min([s["big"]["rate"], *(r["rate"] for r in z)]) >= TARGET_RATE
        rate_text = (
            f"{s['big']['rate']:.0f} exec/s sustained, {min(r['rate'] for r in z):.0f}–"
            f"{max(r['rate'] for r in z):.0f} in the alternated batches (load {s['load_start']:.2f} → "
            f"{s['load_end']:.2f})"
        )
        verdict = _verdict(loaded_ok)
        if quiet:
            qz = quiet["runs"]["zygote"]
            quiet_ok = min([quiet["big"]["rate"], *(r["rate"] for r in qz)]) >= TARGET_RATE
            rate_text += f"; alone: {quiet['big']['rate']:.0f} exec/s, batches {min(r['rate'] for r in qz):.0f}–"
            rate_text += f"{max(r['rate'] for r in qz):.0f} (load {quiet['load_start']:.2f} → {quiet['load_end']:.2f})"
            if quiet_ok and not loaded_ok:
                verdict = "met on a quiet machine; **not met** while other jobs kept the CPUs busy"
            else:
                verdict = _verdict(loaded_ok and quiet_ok)
        triv = next(r for r in full["rows"] if r["conc"] == 1 and r["name"].startswith("trivial"))
        sym = next(r for r in full["rows"] if r["conc"] == 1 and r["name"].startswith("sympy"))
        sym_x = sym["base_p50"] / sym["p50"]
        sk = full["soak"]
        growth = 100 * (sk["rss"][1] - sk["rss"][0]) / sk["rss"][0]
        cell = full["cell_p50"]
        out += [
            "",
            "What the figures mean against the targets of the sandbox issue (every figure from the runs above):",
            "",
            "| target | measured | |",
            "|---|---|---|",
            f"| trivial snippet p50 ≤ 5 ms, p99 ≤ 20 ms (concurrency 1) | {1e3 * triv['p50']:.2f} ms / "
            f"{1e3 * triv['p99']:.2f} ms | {_verdict(triv['p50'] <= 0.005 and triv['p99'] <= 0.02)} |",
            f"| ≥ {TARGET_RATE} executions/s sustained (`run_many`, 2 workers), every batch | {rate_text} | "
            f"{verdict} |",
            f"| sympy snippet p50 ≤ 50 ms and ≥ 5x faster than a fresh interpreter | {1e3 * sym['p50']:.1f} ms, "
            f"{sym_x:.0f}x | {_verdict(sym['p50'] <= 0.05 and sym_x >= 5)} |",
            f"| session cell overhead ≤ 1 ms | {1e3 * cell:.2f} ms | {_verdict(cell <= 0.001)} |",
            f"| timeout kill within timeout + 0.25 s | + {1e3 * full['overshoot']:.0f} ms worst case | "
            f"{_verdict(full['overshoot'] <= 0.25)} |",
            f"| {sk['n']:,} mixed executions: no leaked process, supervisor memory growth < 5 % | "
            f"{sk['leaked']} leaked, {growth:+.1f} % | {_verdict(sk['leaked'] == 0 and growth < 5)} |",
        ]
    out += ["", *EXPLANATION, "", DATA_MARK + json.dumps(data, separators=(",", ":")) + " -->"]
    return "\n".join(out) + "\n"


EXPLANATION = [
    "How the sandbox gets there: every execution is a fresh child of a process that has numpy and sympy loaded, so "
    "an execution costs mostly kernel work — copying the page tables of ~55 MB of private memory at `fork()`, tearing "
    "them down at exit, copying every page the child writes (copy-on-write). The children are forked by a *zygote*, "
    "a copy of the server made once after preloading that does nothing but fork: it collapses its memory into "
    "transparent huge pages, and as it writes few pages between forks (the server's event loop wrote hundreds, "
    "splitting its huge pages and copying each written page again after every fork) about half of that memory stays "
    "in huge pages, each one page-table entry to copy instead of 512. The zygote also prepares what every one-shot "
    "child needs (standard streams, limits, numpy's seeding, a binary code frame instead of JSON), so a child copies "
    "far fewer pages before it runs the code. Children are created with `clone3(CLONE_PARENT)`: they remain the "
    "server's children, isolated as before. Measurements behind each choice, and what did not help: "
    'docs/design-notes.md ("Sandbox throughput").',
]


def stored_data() -> dict[str, Any]:
    """The figures kept in the current section of docs/benchmarks.md (empty if there are none)."""
    text = DOCS.read_text() if DOCS.exists() else ""
    m = re.search(re.escape(DATA_MARK) + r"(.*?) -->", text)
    return json.loads(m.group(1)) if m else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; prints only")
    ap.add_argument("--sustained-only", action="store_true", help="only the sustained part, on a quiet machine")
    ap.add_argument("--wait", type=float, default=1800, help="seconds to wait for a quiet machine (--sustained-only)")
    ap.add_argument("--soak", type=int, default=10_000, help="executions in the soak")
    ap.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    ap.add_argument("--render", action="store_true", help="measure nothing: rewrite the section from its figures")
    args = ap.parse_args()
    data = stored_data()
    if args.render:
        pass
    elif args.sustained_only:
        data["quiet"] = quiet_run(args.wait, 300 if args.quick else 2000, 4)
    else:
        data["full"] = full_run(args.quick, 1000 if args.quick else args.soak)
    section = render(data)
    print(section)
    if not args.quick and not args.no_docs:
        write_section(HEADING, section)
        print("(written to docs/benchmarks.md)")


if __name__ == "__main__":
    main()
