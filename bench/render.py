"""Renders bench/results/latest.json into docs/benchmarks.md and docs/img/*.png."""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS = os.path.join(ROOT, "docs")
IMG = os.path.join(DOCS, "img")

FERRY_SWIFT = "Ferry: Swift"
COLD = "limit: cold in-process copy"
COLD_READ = "limit: cold copy + the model's read"


def is_ferry(name: str) -> bool:
    return name.startswith("Ferry")


def is_peer(name: str) -> bool:
    return not is_ferry(name) and not name.startswith("limit")


def fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def plots(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(IMG, exist_ok=True)
    systems = []
    for p in data["payloads"]:
        for k in p["results"]:
            if k not in systems:
                systems.append(k)
    # Latency by payload size.
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for s in systems:
        xs, ys = [], []
        for p in data["payloads"]:
            r = p["results"].get(s)
            if r and "p50_us" in r:
                xs.append(p["bytes"])
                ys.append(r["p50_us"])
        if xs:
            style = "-o" if is_ferry(s) else ("--" if s.startswith("limit") else ":s")
            ax.plot(xs, ys, style, label=s, linewidth=2.2 if is_ferry(s) else 1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payload bytes (digits, 224² image, 1080p frame, 1M×4 table)")
    ax.set_ylabel("round trip p50 (µs, log)")
    ax.set_title("Round-trip latency by payload size (client CPU 0, worker CPU 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "latency.png"), dpi=110)
    plt.close(fig)
    # Throughput per payload.
    fig, axes = plt.subplots(1, len(data["payloads"]), figsize=(14, 5))
    for ax, p in zip(axes, data["payloads"]):
        names = [s for s in systems if "throughput_per_s" in p["results"].get(s, {})]
        vals = [p["results"][s]["throughput_per_s"] for s in names]
        colors = ["tab:blue" if is_ferry(s) else ("tab:gray" if s.startswith("limit") else "tab:orange") for s in names]
        ax.barh(range(len(names)), vals, color=colors)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(names), fontsize=8)
        ax.set_xscale("log")
        ax.set_title(p["payload"], fontsize=9)
        ax.set_xlabel("calls/s (log)")
        ax.invert_yaxis()
    fig.suptitle("Throughput, one request in flight (blue: Ferry, orange: peers, grey: limit)")
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "throughput.png"), dpi=100)
    plt.close(fig)


FERRY_PY, FERRY_PY_FUTEX, FERRY_PY_SPIN = "Ferry (hybrid: spins 100 µs, then sleeps)", "Ferry wait=futex", "Ferry wait=spin"
FERRY_C, FERRY_C_FUTEX = "Ferry: C", "Ferry: C, wait=futex"
RAW_C = "raw shared memory + futex by hand (C)"
ICEORYX_POLL = "iceoryx2 request-response (polling)"


def ok_rows(res: dict, **want) -> dict:
    """Rows that ran, have no wrong reply, and match `want` (client=…, waits=…)."""
    return {k: r for k, r in res.items() if "p50_us" in r and not r.get("wrong") and all(r.get(a) == b for a, b in want.items())}


def table(res: dict, names: list[str]) -> list[str]:
    out = ["| system | waits | p50 µs | p99 µs | calls/s | MB/s | CPU µs per call | wrong |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in sorted(names, key=lambda k: res[k].get("p50_us", float("inf"))):
        r = res[k]
        if "error" in r:
            out.append(f"| {k} | {r.get('waits', '')} | — | — | — | — | — | failed: {r['error'][:70]} |")
            continue
        bold = "**" if is_ferry(k) else ""
        mark = " ❌ wrong replies" if r.get("wrong") else ""
        cpu = fmt(r["cpu_us_per_call"]) if r.get("cpu_us_per_call") is not None else "—"
        out.append(f"| {bold}{k}{bold}{mark} | {r.get('waits', '')} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | "
                   f"{fmt(r['throughput_per_s'])} | {fmt(r['mb_per_s'])} | {cpu} | {r.get('wrong', '—')} |")
    return out


#: Within this factor a ranking is not claimed either way (run-to-run noise is ±10–20 %).
TIE = 1.05


def first_line(res: dict, group: dict, label: str) -> str:
    """Who is first (p50) among rows that answered right, and by how much."""
    if not group:
        return ""
    ranked = sorted(group, key=lambda k: group[k]["p50_us"])
    best = ranked[0]
    ferry = [k for k in ranked if is_ferry(k)]
    peers = [k for k in ranked if not is_ferry(k)]
    if not ferry or not peers:
        return ""
    f, p = ferry[0], peers[0]
    ratio = group[p]["p50_us"] / group[f]["p50_us"]
    if 1 / TIE < ratio < TIE:
        return (f"{label}: **tied** — {f} p50 {fmt(group[f]['p50_us'])} µs and {p} {fmt(group[p]['p50_us'])} µs are "
                f"within {round((TIE - 1) * 100)} %, less than this machine's run-to-run noise.")
    if is_ferry(best):
        return f"{label}: **Ferry first** — {f} p50 {fmt(group[f]['p50_us'])} µs, {ratio:.2f}× faster than the best peer ({p}, {fmt(group[p]['p50_us'])} µs)."
    return (f"{label}: **Ferry is not first** — {p} p50 {fmt(group[p]['p50_us'])} µs against {f} {fmt(group[f]['p50_us'])} µs "
            f"({1 / ratio:.2f}× slower); see the notes below.")


def below_floor(group: dict, floor: dict) -> str:
    """When the sleeping row that beat Ferry ran below this run's two-wake-up floor (a C
    ping-pong through a pipe or a futex), says so: two sleeping processes cannot both sleep
    and be woken for less than that, so that row rode this VM's scheduling, not a cheaper
    mechanism (bench/notes.md)."""
    lows = [r["p50_us"] for k, r in floor.items() if k in ("pipe", "futex") and "p50_us" in r]
    best = min(group, key=lambda k: group[k]["p50_us"])
    if not lows or is_ferry(best) or group[best]["p50_us"] >= min(lows):
        return ""
    line = (f" That row ran below this run's C floor for a pipe or a futex ({fmt(min(lows))} µs back to back): "
            f"both its processes sleep in the kernel on every call")
    sock, fx = floor.get("socket+gap"), floor.get("futex+gap")
    if sock and fx:
        line += (f"; it sleeps on one duplex socketpair, whose extra wake-up (reading a message wakes its writer) "
                 f"this VM rewards when the client pauses between calls (C socketpair {fmt(sock['p50_us'])} µs against C futex {fmt(fx['p50_us'])} µs "
                 f"with 10 µs between calls, table above)")
    return line + "."


def render(data: dict) -> str:
    m = data["machine"]
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Ferry against what users would pick instead, measured **side by side in one run** on the same")
    w("payloads, **in groups that compare equals**: Python clients with Python clients, native clients")
    w("with native clients, sleeping waiters with sleeping waiters, spinning with spinning. Reproduce with:")
    w("")
    w("```sh\nmake bench            # full run; writes bench/results/*.json and this page\n"
      "make bench BENCH_ARGS=--quick   # counts ÷ 5\n"
      "python3 bench/run.py --payloads 0 --only ferry-python-hybrid,iceoryx2   # two rows, digits only\n"
      "bin/ferry bench --shape 9x28x28 --dtype uint8 --model bench/checksum_model.py --check   # one Ferry figure\n```")
    w("")
    w(f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['date']}. "
      f"Placement: {m['placement']}. Versions: Ferry {m['ferry']}, {m['swift']}, Python {m['python']}, "
      f"numpy {m['numpy']}, pyzmq {m['pyzmq']}, libzmq (C) {m.get('libzmq (C)', 'n/a')}, redis-py {m['redis-py']} with hiredis "
      f"{m['hiredis']}, libhiredis (C) {m.get('libhiredis (C)', 'n/a')}, {m['redis-server']}, iceoryx2 {m['iceoryx2']}, {m.get('gcc', '')}.")
    w("")
    w("## How to read these numbers")
    w("")
    w("* **What is measured**: a client sends the payload (a numpy array, or the same bytes from C or")
    w("  Swift) to a Python worker process, which gets it as an array, **reads every byte** (a checksum:")
    w("  the uint64 words summed, bench/checksum_model.py) and answers [checksum, size] as 16 bytes. Every")
    w("  call stamps its number into the payload's first 8 bytes, and **every reply is checked** against")
    w("  the expected checksum: a stale, misrouted or wrong reply counts in `wrong`, and a row with any is")
    w("  marked ❌ and never ranked. One request in flight. **p50/p99** are whole calls as the user sees")
    w("  them (for Ferry: claiming a slot, writing the payload, the round trip, reading the reply);")
    w("  **calls/s** is calls completed per second of wall time.")
    w("* **CPU µs per call** is the client's plus the worker's CPU time (getrusage and /proc) divided by")
    w("  the calls: spinning shows here. For C clients and `ferry bench` it includes the warm-up calls.")
    w("* **waits**: *sleeps* — the waiting side blocks in the kernel (pipe, socket, futex, Redis);")
    w("  *spins* — it polls memory (iceoryx2 polling; Ferry's default *hybrid* spins up to 100 µs, then")
    w("  sleeps, and so spins whenever replies come within 100 µs). Group (c) never ranks one against the other.")
    w("* **Why medians**: a shared 2-vCPU VM; one descheduling costs milliseconds. Run-to-run noise is")
    w("  ±10–20 %: compare ratios within one run. Sleeping pairs here are bistable (the same pipe pair")
    w("  measures ~28 or ~57 µs from one run to the next; see the notes), so the digits rows run in")
    w("  interleaved rounds and each row shows its median round (every round is in bench/results/latest.json).")
    w("* **Placement**: clients on CPU 0, workers on CPU 1 (waking a process on the other vCPU costs ~25 µs")
    w("  here and the scheduler otherwise flips placement between runs).")
    w("* **Limits**: the *cold in-process copy* copies the payload into buffers not in the cache (rotating")
    w("  over ≥ 256 MiB), timed by wall clock like every row; the wake-up floor is a C ping-pong between")
    w("  two processes through a pipe, an AF_UNIX socketpair, a futex, or by spinning on a cache line.")
    w("")
    fl = data.get("floor", {})
    if fl and "socket" in fl:
        w("Wake-up floor (two C processes, `bench/pingpong.c`, one byte each way, p50 µs): back to back, and with")
        w("10 µs of client work between calls (as every real client has):")
        w("")
        w("| | pipe | AF_UNIX socketpair | a socketpair per direction | futex | spinning |")
        w("|---|---:|---:|---:|---:|---:|")
        row = lambda suffix: " | ".join(fmt(fl[m + suffix]["p50_us"]) if m + suffix in fl else "—"
                                        for m in ("pipe", "socket", "socket2", "futex", "spin"))
        w(f"| back to back | {row('')} |")
        w(f"| 10 µs between calls | {row('+gap')} |")
        w("")
        w("With a pause between calls, one duplex socketpair wakes faster than a pipe, a futex, or a")
        w("socketpair per direction: reading a message also wakes its sender (the socket's \"room to")
        w("write\" wake-up shares the wait queue its reader sleeps on), and on this VM a vCPU woken a")
        w("few µs before the real message resumes faster. Sleeping Python rows built on one socketpair")
        w("(multiprocessing.Pipe, shared_memory + Pipe) ride that; Ferry's sleeping mode uses a futex.")
        w("See the notes.")
        w("")
    elif fl:
        w(f"Wake-up floor (two C processes): pipe p50 **{fmt(fl['pipe']['p50_us'])} µs**, futex p50 "
          f"**{fmt(fl['futex']['p50_us'])} µs**, spinning p50 **{fmt(fl['spin']['p50_us'])} µs**.")
        w("")
    w("![latency](img/latency.png)")
    w("")
    w("![throughput](img/throughput.png)")
    w("")
    for p in data["payloads"]:
        res = p["results"]
        w(f"## {p['payload']} ({p['bytes']:,} bytes)")
        w("")
        py = [k for k, r in res.items() if r.get("client") == "Python"]
        nat = [k for k, r in res.items() if r.get("client") == "native"]
        if py:
            w("### (a) Python client → Python worker")
            w("")
            out.extend(table(res, py))
            w("")
            w(first_line(res, ok_rows(res, client="Python"), "Python → Python"))
            w("")
        if nat:
            w("### (b) Native client (C, Swift) → Python worker")
            w("")
            out.extend(table(res, nat))
            w("")
            line = first_line(res, ok_rows(res, client="native"), "Native → Python")
            if line:
                w(line + " No native peer spins: the like-for-like pair here is Ferry: C, wait=futex against the by-hand futex.")
                w("")
        if py:
            w("### (c) Sleeping against sleeping, spinning against spinning (Python clients)")
            w("")
            for waits, label in (("sleeps", "Sleeping"), ("spins", "Spinning")):
                g = ok_rows(res, client="Python", waits=waits)
                line = first_line(res, g, label)
                if line and waits == "sleeps" and "not first" in line:
                    line += below_floor(g, data.get("floor", {}))
                if line:
                    w("* " + line)
            w("")
        cold, cread = res.get(COLD), res.get(COLD_READ)
        if cold and cread and "throughput_per_s" in cold:
            w(f"Limits (in one process): cold copy p50 {fmt(cold['p50_us'])} µs ({fmt(cold['throughput_per_s'])}/s); "
              f"cold copy + the model's read p50 {fmt(cread['p50_us'])} µs ({fmt(cread['throughput_per_s'])}/s).")
            w("")
    sc = data.get("scaling")
    if sc:
        w("## Scaling and wait strategies")
        w("")
        w("Digits payload, Swift clients (threads) → Python workers (processes), no pinning: the machine")
        w("has **2 cores**, so beyond one client and one worker, processes share cores and spinning")
        w("waiters compete with the work; the figures show that honestly rather than an ideal.")
        w("")
        w("| clients | workers | calls/s | p50 µs | p99 µs |")
        w("|---:|---:|---:|---:|---:|")
        for r in sc["clients_workers"]:
            w(f"| {r['clients']} | {r['workers']} | {fmt(r['throughput_per_s'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} |")
        w("")
        w("Wait strategy (client CPU 0, worker CPU 1): latency against CPU burnt per call (client +")
        w("worker, from /proc and getrusage) and an idle worker's CPU use over 2 s.")
        w("")
        w("| strategy | p50 µs | p99 µs | CPU µs per call | idle worker CPU % |")
        w("|---|---:|---:|---:|---:|")
        for r in sc["wait"]:
            idle = r.get("idle_worker_cpu_percent")
            w(f"| {r['wait']} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {fmt(r['cpu_us_per_call'])} | {fmt(idle) if idle is not None else '—'} |")
        w("")
    w("## Targets, per group")
    w("")
    w(targets(data))
    return "\n".join(out) + "\n"


def targets(data: dict) -> str:
    lines = []
    digits = data["payloads"][0]["results"]
    frame = next((p["results"] for p in data["payloads"] if "1080" in p["payload"]), {})

    def check(label, ok, detail, tie=False):
        # A p50 comparison that fails by less than TIE is reported as a tie: neither met
        # nor missed, the difference is below this machine's run-to-run noise.
        mark = "✅ met" if ok else ("🟰 tied (within 5 %, below the run-to-run noise)" if tie else "❌ missed")
        lines.append(f"* {mark} — {label}: {detail}")

    def tied(a, b):
        return a <= b * TIE

    def good(res, k):
        r = res.get(k, {})
        return r if "p50_us" in r and not r.get("wrong") else None

    # (a) Python → Python.
    f, iox = good(digits, FERRY_PY), good(digits, ICEORYX_POLL)
    if f and iox:
        check("(a) Python → Python, digits: Ferry p50 at or below iceoryx2's polling request-response pair",
              f["p50_us"] <= iox["p50_us"], f"Ferry {fmt(f['p50_us'])} µs vs iceoryx2 {fmt(iox['p50_us'])} µs",
              tied(f["p50_us"], iox["p50_us"]))
    if f:
        py = ok_rows(digits, client="Python")
        best = min((k for k in py if not is_ferry(k)), key=lambda k: py[k]["p50_us"], default=None)
        if best:
            check("(a) Python → Python, digits: Ferry first of every Python pair", f["p50_us"] <= py[best]["p50_us"],
                  f"Ferry {fmt(f['p50_us'])} µs vs best peer {best} {fmt(py[best]['p50_us'])} µs", tied(f["p50_us"], py[best]["p50_us"]))
    ff, cold, cread = good(frame, FERRY_PY), frame.get(COLD), frame.get(COLD_READ)
    if ff and cread and "throughput_per_s" in cread:
        ratio = ff["throughput_per_s"] / cread["throughput_per_s"]
        check("(a) 1080p frames from a Python client ≥ 0.9× the cold in-process copy (+ the model's read of it)", ratio >= 0.9,
              f"{fmt(ff['throughput_per_s'])} frames/s = {ratio:.2f}× {fmt(cread['throughput_per_s'])}/s "
              f"({ff['throughput_per_s'] / cold['throughput_per_s']:.2f}× the bare copy, which leaves out the read every row's model does)")
    # (b) native → Python.
    fc, raw = good(digits, FERRY_C_FUTEX), good(digits, RAW_C)
    if fc and raw:
        check("(b) native, sleeping: Ferry C wait=futex p50 ≤ 1.1× shared memory + futex by hand (C)",
              fc["p50_us"] <= raw["p50_us"] * 1.1, f"Ferry {fmt(fc['p50_us'])} µs vs by hand {fmt(raw['p50_us'])} µs")
    fs = good(digits, FERRY_SWIFT) or good(digits, FERRY_C)
    if fs:
        check("(b) native: small request p50 ≤ 10 µs (Ferry from Swift)", fs["p50_us"] <= 10, f"{fmt(fs['p50_us'])} µs")
    fsf = good(frame, FERRY_SWIFT)
    if fsf:
        check("(b) native: 1080p frames ≥ 1000/s (Ferry from Swift)", fsf["throughput_per_s"] >= 1000, f"{fmt(fsf['throughput_per_s'])} frames/s")
    # (c) sleeping with sleeping, spinning with spinning.
    fz = good(digits, FERRY_PY_FUTEX)
    sleepers = {k: r for k, r in ok_rows(digits, client="Python", waits="sleeps").items() if not is_ferry(k)}
    if fz and sleepers:
        best = min(sleepers, key=lambda k: sleepers[k]["p50_us"])
        check("(c) sleeping, Python, digits: Ferry wait=futex p50 at or below the best sleeping peer",
              fz["p50_us"] <= sleepers[best]["p50_us"], f"Ferry {fmt(fz['p50_us'])} µs vs {best} {fmt(sleepers[best]['p50_us'])} µs"
              + below_floor({best: sleepers[best], FERRY_PY_FUTEX: fz}, data.get("floor", {})).replace(" That row", ". The peer", 1),
              tied(fz["p50_us"], sleepers[best]["p50_us"]))
    for res, what in ((digits, "digits"), (frame, "1080p frames")):
        spinners = [good(res, k) for k in (FERRY_PY, FERRY_PY_SPIN)]
        spinners = [x for x in spinners if x]
        peer = good(res, ICEORYX_POLL)
        if spinners and peer:
            fb = min(spinners, key=lambda x: x["p50_us"])
            name = FERRY_PY_SPIN if fb is good(res, FERRY_PY_SPIN) else "hybrid"
            check(f"(c) spinning, Python, {what}: Ferry (best of hybrid and wait=spin) p50 at or below iceoryx2 polling",
                  fb["p50_us"] <= peer["p50_us"], f"{name} {fmt(fb['p50_us'])} µs vs {fmt(peer['p50_us'])} µs; CPU per call "
                  f"{fmt(fb['cpu_us_per_call'])} µs vs {fmt(peer['cpu_us_per_call'])} µs", tied(fb["p50_us"], peer["p50_us"]))
    wait = {r["wait"]: r for r in data.get("scaling", {}).get("wait", [])}
    if "hybrid" in wait and wait["hybrid"].get("idle_worker_cpu_percent") is not None:
        v = wait["hybrid"]["idle_worker_cpu_percent"]
        check("idle worker ≈ 0 % CPU (default wait)", v < 1, f"{fmt(v)} %")
    return "\n".join(lines)


def render_tcp(r: dict) -> str:
    """The tcp:// section, from bench/results/tcp.json (bench/tcp.py)."""
    def f(v):
        return "–" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")
    out = ["## Across hosts: `tcp://` over loopback", "",
           f"Measured {r['date']} with `{r['command']}` (bench/tcp.py), one run, side by side. "
           f"Placement: {r['placement']}. Every model reads every byte of its input and answers its checksum (bench/checksum_model.py); "
           "every reply is checked (`wrong` counts replies that did not match; a row with any is failed). "
           "\"Gateway spin, then sleep\" is `ferry serve`'s default wait (hybrid, 100 µs); \"sleeping\" is `--wait futex`, "
           "like the raw socket and ZeroMQ rows, which sleep in the kernel. The gateway gives each plain-TCP connection a thread "
           "of its own (`--io threads`, the default); the rows marked `--io event-loop` are the SwiftNIO event loop that TLS "
           "connections use (bench/notes.md says where the difference comes from).", ""]
    for group, title, unit in (("small", "Small requests (digits, 7 056 bytes → 16 bytes), one call at a time", "calls/s"),
                               ("frames", "1080p frames (6 220 800 bytes → 16 bytes), one at a time", "frames/s")):
        out += [f"### {title}", "", f"| system | p50 µs | p99 µs | {unit} | wrong |", "|---|---:|---:|---:|---:|"]
        for name, v in r[group].items():
            if "error" in v:
                out.append(f"| {name} | failed: {v['error']} | | | |")
                continue
            mark = " ❌" if v.get("wrong") else ""
            out.append(f"| {name}{mark} | {f(v.get('p50_us'))} | {f(v.get('p99_us'))} | {f(v.get('throughput_per_s'))} | {v.get('wrong', '–')} |")
        out.append("")
    small, frames = r["small"], r["frames"]
    raw_s = small.get("raw TCP ping-pong, C (blocking, TCP_NODELAY)", {})
    raw_f = frames.get("raw TCP, C (same bytes, one at a time)", {})
    lines = ["### Targets (issue 10), computed from the rows above", "", "| target | measured | |", "|---|---|---|"]

    def check(label, ok, text):
        lines.append(f"| {label} | {text} | {'✅' if ok else '❌'} |")
    for tag in ("gateway spin, then sleep", "gateway sleeping"):
        c = small.get(f"Ferry tcp://, C client ({tag})")
        if c and raw_s:
            ratio = c["p50_us"] / raw_s["p50_us"]
            check(f"small p50 ≤ 2× raw TCP ping-pong (C client, {tag})", ratio <= 2 and not c.get("wrong"), f"{ratio:.2f}×")
        c = frames.get(f"Ferry tcp://, C client ({tag})")
        if c and raw_f:
            ratio = c["throughput_per_s"] / raw_f["throughput_per_s"]
            check(f"frames ≥ 0.6× raw TCP throughput (C client, {tag})", ratio >= 0.6 and not c.get("wrong"), f"{ratio:.2f}×")
    zmq_s, zmq_f = small.get("pyzmq REQ/REP tcp://, Python client"), frames.get("pyzmq REQ/REP tcp://, Python client")
    py_s = small.get("Ferry tcp://, Python client (gateway spin, then sleep)")
    py_f = frames.get("Ferry tcp://, Python client (gateway spin, then sleep)")
    if zmq_s and py_s and "error" not in zmq_s:
        ratio = py_s["p50_us"] / zmq_s["p50_us"]
        check("issue 23: small p50 at or below pyzmq's (Python clients, default gateway)", ratio <= 1 and not py_s.get("wrong"), f"{ratio:.2f}×")
    if zmq_f and py_f and "error" not in zmq_f:
        ratio = py_f["p50_us"] / zmq_f["p50_us"]
        check("issue 23: frames p50 at or below pyzmq's (Python clients, default gateway)", ratio <= 1 and not py_f.get("wrong"), f"{ratio:.2f}×")
    p = r.get("pipelined")
    if p:
        ratio = p["16 in flight"]["throughput_per_s"] / p["1 in flight"]["throughput_per_s"]
        check("pipelined calls/s, 16 in flight ≥ 5× one at a time (Swift client, ferry bench)", ratio >= 5,
              f"{f(p['16 in flight']['throughput_per_s'])} vs {f(p['1 in flight']['throughput_per_s'])} calls/s = {ratio:.1f}×")
    seed = frames.get("seed-002 recipe (JPEG, one send() per byte)")
    best = frames.get("Ferry tcp://, C client (gateway spin, then sleep)")
    if seed and best and "error" not in seed:
        lines.append(f"| the seed-002 recipe, for scale | {seed['throughput_per_s']:.2f} frames/s of a {seed['jpeg_bytes']:,}-byte JPEG "
                     f"vs Ferry's {best['throughput_per_s']:.0f} raw frames/s ({best['throughput_per_s'] / seed['throughput_per_s']:,.0f}×) | |")
    return "\n".join(out + lines) + "\n"


def render_redis(r: dict) -> str:
    """The redis:// section, from bench/results/redis.json (bench/redis_bench.py)."""
    def f(v):
        return "–" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")
    out = ["## Many machines: `redis://` through a real redis-server", "",
           f"Measured {r['date']} with `{r['command']}` (bench/redis_bench.py), one run, side by side. "
           f"Placement: {r['placement']}. Every model reads every byte of its input and answers its checksum (bench/checksum_model.py); every reply is "
           "checked (`wrong` counts replies that did not match; a row with any is failed). The nodes are `ferry serve --redis` "
           "with one Python worker each; every client and worker here sleeps in the kernel while it waits for Redis.", ""]
    for group, title in (("small", "Small requests (digits, 7 056 bytes → 16 bytes), one call at a time"),
                         ("cache", "Result cache hits against a raw GET")):
        out += [f"### {title}", "", "| system | p50 µs | p99 µs | calls/s | wrong |", "|---|---:|---:|---:|---:|"]
        for name, v in r[group].items():
            if "error" in v:
                out.append(f"| {name} | failed: {v['error']} | | | |")
                continue
            mark = " ❌" if v.get("wrong") else ""
            out.append(f"| {name}{mark} | {f(v.get('p50_us'))} | {f(v.get('p99_us'))} | {f(v.get('throughput_per_s'))} | {v.get('wrong', '–')} |")
        out.append("")
    sc = r.get("scaling", {})
    if sc:
        out += ["### Scaling out: calls/s on a model that takes 5 ms per call", "",
                "One Python client keeps 12 calls in flight; each node runs one worker.", "",
                "| nodes | calls/s | × one node | wrong |", "|---|---:|---:|---:|"]
        one = sc.get("1 node", {}).get("throughput_per_s")
        for name, v in sc.items():
            out.append(f"| {name} | {f(v['throughput_per_s'])} | {v['throughput_per_s'] / one:.2f}× | {v.get('wrong', '–')} |")
        out.append("")
    lines = ["### Targets (issue 11), computed from the rows above", "", "| target | measured | |", "|---|---|---|"]

    def check(label, ok, text):
        lines.append(f"| {label} | {text} | {'✅' if ok else '❌'} |")
    small, cache = r["small"], r["cache"]
    ferry_c = small.get("Ferry redis://, C client → node → Python worker")
    seed = small.get("seed 000 recipe: image list + polled flag, C hiredis → redis-py worker")
    if ferry_c and seed and "error" not in seed:
        ratio = seed["p50_us"] / ferry_c["p50_us"]
        check("small p50 ≥ 2× faster than the seed's list-and-flag recipe (C clients)", ratio >= 2 and not ferry_c.get("wrong"), f"{ratio:.2f}×")
    better = small.get("seed recipe improved: SET + LPUSH + BRPOP (blocking pops), C hiredis → redis-py worker")
    if ferry_c and better and "error" not in better:
        lines.append(f"| for scale: the recipe improved with blocking pops (not the seed's; no target) | "
                     f"{better['p50_us'] / ferry_c['p50_us']:.2f}× faster (see the notes below) | |")
    raw_py = small.get("raw round trip from Python: redis-py RPUSH + BLPOP → redis-py worker (BLPOP, RPUSH)")
    ferry_py = small.get("Ferry redis://, Python client → node → Python worker")
    if raw_py and ferry_py and "error" not in raw_py:
        ratio = ferry_py["p50_us"] / raw_py["p50_us"]
        check("issue 23: small p50 ≤ 1.5× the raw Python round trip (Python clients)", ratio <= 1.5 and not ferry_py.get("wrong"), f"{ratio:.2f}×")
    raw_get = cache.get("raw Redis GET of a 16-byte value, C hiredis")
    hit = cache.get("Ferry redis:// cache hit, C client (7 056-byte request hashed, 16-byte reply)")
    if raw_get and hit:
        ratio = hit["p50_us"] / raw_get["p50_us"]
        check("cache hit p50 ≤ 2× a raw GET (C clients)", ratio <= 2 and not hit.get("wrong"), f"{ratio:.2f}×")
    if one:
        for k, target in (("2 nodes", 1.8), ("3 nodes", 2.5)):
            if k in sc:
                ratio = sc[k]["throughput_per_s"] / one
                check(f"{k}: ≥ {target}× the calls/s of one", ratio >= target and not sc[k].get("wrong"), f"{ratio:.2f}×")
    return "\n".join(out + lines) + "\n"


def render_tables(r: dict) -> str:
    """The tables section from bench/results/tables.json (bench/tables.py)."""
    m = r["methods"]
    names = {"ferry": "**Ferry** (`client.call(df)`)", "pickle_pipe": "pickle over `multiprocessing.Pipe`",
             "arrow_ipc_pipe": "Arrow IPC over a pipe", "seed_csv_shm": "seed 004: length + CSV in shared memory"}
    out = [f"## Tables ({r['when']}, `{r['command']}`)", "",
           f"{r['rows']:,} rows × ({r['table']}) one way and back: a DataFrame to a Python worker whose model "
           f"returns it; {r['placement']}; best of 3; every reply compared with what was sent "
           f"(pandas {r['pandas']}, pyarrow {r['pyarrow']}).", "",
           "| method | one way and back | Ferry is | reply |", "|---|---|---|---|"]
    f = m["ferry"]["s"]
    for k, v in m.items():
        ratio = "—" if k == "ferry" else f"{v['s'] / f:.1f}× faster"
        out.append(f"| {names.get(k, k)} | {v['s'] * 1e3:.1f} ms | {ratio} | {'checked' if v['ok'] else '**wrong**'} |")
    oc = r["one_column"]
    ok = oc["ratio"] <= 10 and oc["ok"]
    out += ["", f"String column against a float64 column of the same rows (Ferry, one way and back): "
            f"{oc['string_s'] * 1e3:.1f} ms against {oc['float64_s'] * 1e3:.1f} ms, **{oc['ratio']:.1f}×** "
            f"(target ≤ 10×: {'✅' if ok else '❌'}).", "",
            "Numeric columns cross as views of the slot. A string column crosses in the wire's own layout, "
            "u64 offsets + UTF-8 bytes, which is Arrow's `large_string`: with pyarrow installed, pandas keeps "
            "strings in Arrow, and Ferry hands those buffers over and rebuilds an Arrow-backed column on the "
            "other side without a Python object per value (the library validates the UTF-8). Without pyarrow, "
            "strings fall back to whole-array numpy conversions."]
    return "\n".join(out) + "\n"


def render_batching(r: dict) -> str:
    """The batching section from bench/results/batching.json (bench/batching.py)."""
    rows = {(x["inflight"], x["max_batch"]): x for x in r["rows"]}
    out = [f"## Dynamic batching ({r['when']}, `python3 bench/batching.py`)", "",
           f"{r['model']}; {r['placement']}; `ferry bench` with `--max-batch 32` (gathering up to 500 µs, "
           "but only while a request is queued or being written) against no batching, in one run.", "",
           "| calls in flight per client | batching | calls/s | p50 | p99 | batching gives |", "|---|---|---|---|---|---|"]
    for inflight in (1, 4):
        off, on = rows.get((inflight, 1)), rows.get((inflight, 32))
        if not off or not on:
            continue
        ratio = on["throughput_per_s"] / off["throughput_per_s"]
        for x, label in ((off, "off"), (on, "max 32")):
            out.append(f"| {inflight} | {label} | {x['throughput_per_s']:,.0f} | {x['p50_us']:.0f} µs | {x['p99_us']:.0f} µs | "
                       + (f"**{ratio:.2f}×** {'✅' if ratio >= 2 else '(target 2× not met)'}" if x is on else "") + " |")
    out += ["", "Target: ≥ 2× calls/s with 4 clients. Met when each client keeps calls in flight (4 × 4: the "
            "worker finds ~10 requests to merge). With strictly synchronous clients (4 × 1) at most four "
            "requests exist at once: the worker answers them in two interleaved pairs, and the model's fixed "
            "cost (8 µs of numpy calls for any batch size) plus each client's turnaround bound the gain; "
            "waiting for all four would idle the worker for that turnaround. Two mechanisms made batching "
            "pay here: the worker takes a whole batch and answers every caller with one C call each "
            "(`ferry_worker_next_batch`, `ferry_jobs_reply_rows`), and a serving process keeps numpy "
            "temporaries off mmap (`ferry.serving.tune_malloc`: glibc's 128 KiB threshold page-faulted a "
            "72-image batch in on every call, 6× slower)."]
    return "\n".join(out) + "\n"


def render_streams(r: dict) -> str:
    """The streams section from bench/results/streams.json (bench/streams.py)."""
    out = [f"## Streams ({r['when']}, `{r['command']}`)", "",
           f"One {r['frame']} publisher (1080p BGR, 6.2 MB a frame), Python subscribers in latest-frame mode; "
           f"{r['placement']}. Each subscriber reads every byte of every frame it takes (a sum compared with the "
           "expected one); age is receipt time minus capture time.", "",
           "| publisher | subscribers | published fps | fps per subscriber | dropped per subscriber | age p50 | age p99 | wrong |",
           "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        pace = f"paced {row['paced_fps']:.0f} fps" if row.get("paced_fps") else "as fast as it can"
        fps = ", ".join(f"{x:.0f}" for x in row["subscriber_fps"])
        drops = ", ".join(str(x) for x in row["dropped"])
        out.append(f"| {pace} | {row['subscribers']} | {row['published_fps']:.0f} | {fps} | {drops} | "
                   f"{row['age_p50_ms']:.2f} ms | {row['age_p99_ms']:.2f} ms | {row['wrong']} |")
    out += ["", "The publisher never waits for a latest-frame subscriber: its rate is the same with 1, 2 or 4. "
            "Subscribers all share CPU 1, so each gets its share of one core and skips (drops, counted) the "
            "frames it has no time for; paced like a camera, every subscriber takes every frame."]
    return "\n".join(out) + "\n"


def render_strings(r: dict) -> str:
    """The strings section from bench/results/strings.json (bench/strings.py)."""
    out = [f"## Strings ({r['measured']}, `{r['command']}`)", "",
           f"{r['rows'][0]['elements']:,} elements one way: a client call to a Python worker whose model reads "
           f"its whole input with one numpy reduction (the sum of the numbers, code units or bytes) and answers "
           f"a checksum the client checks; {r['placement']}; median of interleaved rounds. The ratio is to the "
           "1M-element float64 value of the same kind (target ≤ 5×); per byte, to the same row's bytes.", "",
           "| kind | value | bytes | one way | × float64 | × float64 per byte | target ≤ 5× |",
           "|---|---|---:|---:|---:|---:|---|"]
    for x in r["rows"]:
        ok = x["ratio"] <= 5
        mark = "—" if x["value"].startswith("float64") else ("✅" if ok else "❌ (6× the bytes: see below)")
        out.append(f"| {x['kind']} | {x['value']} | {x.get('bytes', 0) / 1e6:.1f} MB | {x['p50_ms']:.1f} ms | "
                   f"{x['ratio']:.1f}× | {x.get('ratio_per_byte', 0):.1f}× | {mark} |")
    out += ["", "A numpy `<U` or `S` array crosses in numpy's own fixed-width layout (wire dtypes `UTF32` and "
            "`FIXED_BYTES`, the width as a last dimension): the client's bytes are copied into the slot by "
            "the library, which checks in the same pass that every UTF-32 code unit is a Unicode scalar, and "
            "the model gets a read-only view of the slot like any numeric array (the library checks the code "
            "units of a message it reads once more: another process wrote them). So a string array costs what "
            "a numeric array of the same bytes costs, plus that check. The one row over 5× is `<U12`: 1M "
            "strings of 12 characters are 48 MB in numpy (4 bytes a character), six times the float64 "
            "array's 8 MB, and any layout that hands the model numpy's own array moves them; per byte it is "
            "within 2× of float64 (compare the 48 MB float64 row). A DataFrame string column crosses as its "
            "Arrow buffers (u64 offsets and UTF-8, validated once per message) and is rebuilt as an "
            "Arrow-backed column without transcoding. Before this (issue 26's measurement) a `<U4` array took "
            "~530 ms one way, ≈200× its float64 row; UTF-8 transcoding in C brought it to 27 ms (12.5×)."]
    return "\n".join(out) + "\n"


def render_shapes(r: dict) -> str:
    """The message-shapes section from bench/results/shapes.json (bench/shapes.py)."""
    out = [f"## Message shapes ({r['measured']}, `{r['command']}`)", "",
           "p50 round trip of one call from a Python client to a Python worker, by the shape of the "
           f"message, over shm:// and over tcp:// (through a `ferry serve --listen` gateway); {r['placement']}; "
           f"{r['calls']} timed calls a row per client process, compiled and ctypes client processes "
           f"alternating {r['repeat']}×, median of their p50s. The model returns replies it made once, "
           "chosen by one element of the request, so the rows differ only in what Ferry does; every reply is "
           "checked. *compiled*: `_fastcall.c` on both sides (what `make build` gives); *ctypes*: "
           "`FERRY_PURE_PYTHON=1` in client and worker, message.py's general path for every shape — what "
           "every shape but the one array cost before plain messages took the compiled path.", "",
           "| transport | request → reply | compiled | × one array | + over one array | ctypes (general path) |",
           "|---|---|---:|---:|---:|---:|"]
    for x in r["rows"]:
        out.append(f"| {x['transport']} | {x['shape']} | {x['compiled_us']:.1f} µs | {x['x_one_array']:.2f}× | "
                   f"{x['over_one_array_us']:+.1f} µs | {x['ctypes_us']:.1f} µs |")
    out += ["", "Where the time goes. *Before* (the ctypes column, profiled with cProfile and perf): each "
            "extra tensor cost ~30 µs of Python across the four steps — the client's `write_value` (name "
            "encoded, dtype looked up, one ctypes crossing to reserve and one `memmove`), the worker's "
            "`MessageReader.convert` (a descriptor read attribute by attribute, `string_at` for the name, "
            "`np.ndarray` over the slot), its kept-input check (a list and a generator of refcounts), "
            "`write_message` for the reply and the client's `convert` again. *After*: a message of up to 16 "
            "C-contiguous numeric arrays (a dict, or a model's tuple/list) is planned, written and read in "
            "C (`_fastcall.call_many`, `.next`, `.reply`, `.held`), one library crossing a side; what is "
            "left per extra tensor (~1 µs) is the library's own work (the writer's entry, the decoder's "
            "checks of name, dtype, shape and bounds), one numpy object on each side and the copy of its "
            "bytes (21 KB more in the dict-of-4 row). A view costs what an owned array costs: the reply is "
            "written after the request in the slot, never over it, so a view of the input is copied "
            "intact, and the worker preserves the request only when the model still holds part of it "
            "after the reply is written.", "",
            "The DataFrame row is pandas: the library's part is the same ~4 µs as four arrays, the rest is "
            "building the frame on the worker side (pandas 3 spends ~250 µs in `DataFrame(dict of arrays)`, "
            "~120 µs of it making the column index of `str` names) and, on the client, reading the columns "
            "(now from the frame's own arrays: 63 µs, was ~370 µs through `df[name]`). A model that "
            "wants speed takes `inputs=\"dict\"`-style named arrays instead of a DataFrame.", ""]
    return "\n".join(out) + "\n"


def render_aio(r: dict) -> str:
    """The asyncio section from bench/results/aio.json (bench/aio.py)."""
    out = [f"## asyncio ({r['measured']}, `{r['command']}`)", "",
           f"Calls per second from one event loop (`ferry.AsyncClient`) with 1, 8 and 64 calls in flight, beside the "
           f"synchronous client from one thread; {r['placement']}; the model sums 64 float64 and every reply is checked; "
           "median of interleaved rounds.", "", "| client | calls/s |", "|---|---:|"]
    for x in r["rows"]:
        out.append(f"| {x['client']} | {x['calls_per_s']:,} |")
    out += ["", "One call in flight from asyncio costs a few event-loop rounds more than a blocking call (the poller "
            "yields to the loop between zero-wait polls); with several in flight the loop overlaps writing, "
            "the workers' service and reading, and no thread is used per call.", ""]
    return "\n".join(out) + "\n"


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results", "latest.json")
    with open(path) as f:
        data = json.load(f)
    plots(data)
    text = render(data)
    # The other benchmark scripts' results, each rendered when its script has run.
    for name, section in (("tcp", render_tcp), ("redis", render_redis), ("batching", render_batching),
                          ("tables", render_tables), ("strings", render_strings), ("shapes", render_shapes), ("aio", render_aio),
                          ("streams", render_streams)):
        part = os.path.join(HERE, "results", f"{name}.json")
        if os.path.exists(part):
            with open(part) as f:
                text += "\n" + section(json.load(f))
    notes = os.path.join(HERE, "notes.md")
    if os.path.exists(notes):
        text += "\n" + open(notes).read()
    with open(os.path.join(DOCS, "benchmarks.md"), "w") as f:
        f.write(text)
    print(f"wrote docs/benchmarks.md and docs/img/*.png from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
