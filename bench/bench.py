#!/usr/bin/env python3
"""reconcile benchmark (issue #6): moto behind the fault proxy with a fixed per-call latency and
API Gateway's account limits. Run it with `bench/run` (installs what it needs, builds, then runs this).

Sections (each against a freshly reset moto and a fresh state file unless said otherwise):
  1. apply of the seed stack from empty: wall time, AWS calls, ratio to the critical-path bound
     (bench/critical_path.py) computed from the apply's own JSON;
  2. the same creates done by a plain sequential boto3 script (bench/seq_boto3.py);
  3. no-op plan after that apply vs a sequential boto3 script reading the same resources;
  4. 1, 10 and 50 copies of the stack in one manifest (bench/copies.py): plan, apply, no-op plan,
     peak RSS, calls, 429s;
  5. `reconcile watch`: drift detection latency (boto3 change -> /metrics and `reconcile --json drift`)
     with --interval 1s and 5s, AWS calls per pass;
  6. shared pacing: three copies of the seed (different names) applied back to back on one state
     file, the first from a rested account (cold), each later one against a bound that starts from
     the limits the runs before it left; two copies applied at once by two processes sharing
     a state file; the same two with a state file each (each the other's outside client: what a 429
     it could not foresee costs).
  7. collection reads: the no-op plan of one stack holding N copies of the seed (--noop-copies,
     default 1,50), applied beforehand with the limits and pacing off; API Gateway calls per copy and
     wall time with collection reads (the default) and without (RECONCILE_COLLECTION_READS=off, the
     per-resource reads of before). Goals: at most 6 API Gateway calls per copy and 30 s at 50
     copies; the seed alone no more calls than per-resource reads and no slower.
  8. a fleet under watch: N stacks of one copy each (--fleet-stacks, default 50), applied beforehand
     with the limits and pacing off, watched by one `reconcile watch --api-share 0.5` (--fleet-interval,
     default 30 s); once every stack had its first pass, an apply of another stack at
     `--api-share 0.5` on a state file of its own, then the watch goes on (--fleet-tail, default 60 s).
     The watcher's API Gateway requests per second at the proxy (overall, during the apply, busiest
     10 s and 60 s windows), each process's 429s, the apply's wall time against the same apply alone
     (at 0.5 and at the whole budget). Goals: the watcher at or under 5 requests/s, the apply no 429.
     Each process signs with its own access key id, which the proxy's log names on every request.

Writes bench/results/<date>-<short sha>.md (+ .json with the raw numbers) and prints the markdown.
"""

import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import copies  # noqa: E402
import critical_path  # noqa: E402

SEED = ROOT / "manifests" / "apigw-lambda-basic.toml"
SEED_CODE = ROOT / "manifests" / "apigw-lambda-basic" / "lambda"
VENV = ROOT / ".venv"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# HTTP helpers


def http(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# Processes we start (and stop, by pid)


class Proc:
    """A child process: stderr (and stdout unless captured) go to `log_path`."""

    def __init__(self, name, argv, env, log_path, capture_stdout=True):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")
        stdout = subprocess.PIPE if capture_stdout else self.log
        self.p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=self.log, stdin=subprocess.DEVNULL, text=True)

    def stop(self, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def start_moto(work):
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "PYTHONUNBUFFERED": "1"}
    logf = work / "moto.log"
    proc = Proc("moto", [str(VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", "0"], env, logf, capture_stdout=False)
    deadline = time.time() + 60
    url = None
    while time.time() < deadline and not url:
        if proc.p.poll() is not None:
            raise RuntimeError(f"moto_server exited:\n{logf.read_text()}")
        m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", logf.read_text())
        url = m.group(1) if m else None
        time.sleep(0.1)
    if not url:
        proc.stop()
        raise RuntimeError("moto_server did not report its address within 60 s")
    proc.url = url
    reset_moto(url)
    return proc


def reset_moto(url):
    deadline = time.time() + 30
    while True:
        try:
            http("POST", f"{url}/moto-api/reset")
            status, _ = http("POST", f"{url}/moto-api/config", {"lambda": {"use_docker": False}})
            if status < 300:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"moto at {url} does not answer")
        time.sleep(0.2)
    warm_up(url)


def warm_up(url):
    """moto builds each service's backend on its first request after a reset (IAM loads the AWS
    managed policies: about 0.4 s; CloudWatch Logs about 1 s here). Pay that outside the measurements,
    straight to moto (not through the proxy: no latency, not counted)."""
    import seq_boto3

    aws = seq_boto3.clients(url, seq_boto3.Calls())
    aws["iam"].list_roles()
    aws["logs"].describe_log_groups()
    aws["lambda"].list_functions()
    aws["apigateway"].get_rest_apis()
    aws["wafv2"].list_web_acls(Scope="REGIONAL")
    aws["sts"].get_caller_identity()


def start_proxy(work, upstream, latency_ms):
    # -vv: one log line per request, with its time (the limited operations' timeline is read from it).
    argv = [str(ROOT / "target" / "release" / "faultproxy"), "--upstream", upstream, "--latency-ms", str(latency_ms), "--apigw-limits", "-vv"]
    proc = Proc("faultproxy", argv, dict(os.environ), work / "faultproxy.log")
    line = proc.p.stdout.readline().strip()
    m = re.match(r"listening on (http://\S+)", line)
    if not m:
        proc.stop()
        raise RuntimeError(f"faultproxy did not start: {line!r}\n{(work / 'faultproxy.log').read_text()}")
    proc.url = m.group(1)
    return proc


LIMITED_GAP = {"CreateRestApi": 3.0, "CreateDeployment": 5.0, "DeleteRestApi": 30.0}
PROXY_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(forwarded|API Gateway limit exceeded).*?request=(POST|DELETE) (\S+)(?:.*status=(\d+))?")


def limited_op(method, path):
    seg = path.split("?")[0].strip("/").split("/")
    if method == "POST" and seg == ["restapis"]:
        return "CreateRestApi"
    if method == "DELETE" and len(seg) == 2 and seg[0] == "restapis":
        return "DeleteRestApi"
    if method == "POST" and len(seg) == 3 and seg[0] == "restapis" and seg[2] == "deployments":
        return "CreateDeployment"
    return None


def limited_timeline(log_path, start_offset, end_offset):
    """From the proxy's -vv log between two offsets: per limited operation, the successes and 429s,
    and how much longer the successes were spread than the limit requires.

    `span_s`: first to last success; `min_span_s`: (successes - 1) x the operation's spacing;
    `idle_s`: the sum over consecutive successes of the time the operation's bucket held a token
    while some caller had already been refused (a 429 before the token came back) and was still
    waiting: time lost to the retry schedule, not to the limit."""
    with open(log_path, "rb") as f:
        f.seek(start_offset)
        text = f.read(end_offset - start_offset).decode(errors="replace")
    events = {}
    for line in text.splitlines():
        m = PROXY_LINE.match(line)
        if not m:
            continue
        op = limited_op(m.group(3), m.group(4))
        if not op:
            continue
        t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
        ok = m.group(2) == "forwarded" and (m.group(5) or "").startswith("2")
        events.setdefault(op, []).append((t, ok))
    out = {}
    for op, evs in events.items():
        evs.sort()
        gap = LIMITED_GAP[op]
        succ = [t for t, ok in evs if ok]
        refused = [t for t, ok in evs if not ok]
        idle = 0.0
        max_idle = 0.0
        for a, b in zip(succ, succ[1:]):
            ready = a + gap
            # someone was refused between the previous success and the moment the token came back
            if b > ready and any(a < r <= ready for r in refused):
                idle += b - ready
                max_idle = max(max_idle, b - ready)
        out[op] = {
            "successes": len(succ),
            "refused": len(refused),
            "span_s": (succ[-1] - succ[0]) if succ else 0.0,
            "min_span_s": max(0, len(succ) - 1) * gap,
            "idle_s": idle,
            "max_idle_s": max_idle,
            "success_at": succ,
        }
    return out


# Section 8: the watcher and the concurrent apply sign with these access key ids (moto takes any), and
# the proxy's log names the key id of each request: that tells their requests apart.
FLEET_WATCH_KEY = "AKIDBENCHFLEETWATCH"
FLEET_APPLY_KEY = "AKIDBENCHFLEETAPPLY"
PROXY_REQUEST = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*?)\s+service=(\S+)\s(.*)$")


def proxy_requests(log_path, start_offset, end_offset):
    """Every request the proxy answered between two offsets of its -vv log, forwarded or refused by
    the API Gateway limits: `t` its arrival (epoch s: the moment the limits judged it; the line is
    written at the answer, `in_ms` after), service, the signing access key id, refused (a 429 of
    the limits)."""
    with open(log_path, "rb") as f:
        f.seek(start_offset)
        text = f.read(end_offset - start_offset).decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = PROXY_REQUEST.match(line)
        if not m:
            continue
        msg, rest = m.group(2), m.group(4)
        refused = msg.startswith("API Gateway limit exceeded")
        if not (refused or msg == "forwarded"):
            continue
        k = re.search(r"\bkey_id=(\S*)", rest)
        took = re.search(r"\bin_ms=(\d+)", rest)
        t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
        out.append({"t": t - (int(took.group(1)) / 1000 if took else 0.0), "answered": t, "service": m.group(3),
                    "key_id": k.group(1) if k else "", "refused": refused})
    out.sort(key=lambda e: e["t"])
    return out


def max_window(times, width, origin=0.0):
    """The busiest `width`-second window over sorted event times: its count, the rate (count / width)
    and where it ends (seconds after `origin`)."""
    best, end, j = 0, None, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        if i - j + 1 > best:
            best, end = i - j + 1, t
    return {"count": best, "rate": best / width, "end_s": None if end is None else end - origin}


def per_second(times, origin):
    """Events per whole second since `origin`."""
    if not times:
        return []
    counts = [0] * (int(times[-1] - origin) + 1)
    for t in times:
        counts[max(0, int(t - origin))] += 1
    return counts


def proxy_stats(proxy):
    status, body = http("GET", f"{proxy.url}/__faultproxy/stats")
    return json.loads(body)


def stats_delta(before, after):
    d = {k: after.get(k, 0) - before.get(k, 0) for k in ["requests", "forwarded", "throttled", "errored", "dropped", "limited"]}
    d["apigw_limited"] = {k: v - before.get("apigw_limited", {}).get(k, 0) for k, v in after.get("apigw_limited", {}).items()}
    d["apigw_limited"] = {k: v for k, v in d["apigw_limited"].items() if v}
    return d


# ---------------------------------------------------------------------------------------------
# reconcile runs


def aws_env(endpoint):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "RUST_LOG", "RECONCILE_PACING")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        NO_COLOR="1",
    )
    return env


GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def peak_rss_poll(pid, stop, out):
    """Fallback when GNU time is missing: poll VmHWM of the process."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[0] = max(out[0], int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.05)


def run_reconcile(bin_path, args, endpoint, work, timeout, extra_env=None):
    """Runs reconcile; returns dict(wall_s, rc, doc (parsed stdout JSON or None), stderr, maxrss_kb, timed_out)."""
    argv = [str(bin_path), *args]
    timefile = work / "time.txt"
    if GNU_TIME:
        argv = [GNU_TIME, "-v", "-o", str(timefile), *argv]
    started_epoch = time.time()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env={**aws_env(endpoint), **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    rss = [0]
    stop = threading.Event()
    poller = None
    if not GNU_TIME:
        poller = threading.Thread(target=peak_rss_poll, args=(p.pid, stop, rss), daemon=True)
        poller.start()
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
    wall = time.monotonic() - t0
    stop.set()
    if GNU_TIME and timefile.exists():
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timefile.read_text())
        rss[0] = int(m.group(1)) if m else 0
    try:
        doc = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        doc = None
    return {"wall_s": wall, "rc": p.returncode, "doc": doc, "stdout": out, "stderr": err, "maxrss_kb": rss[0], "timed_out": timed_out,
            "started_epoch": started_epoch}


def calls_summary(doc):
    rows = (doc or {}).get("aws_calls") or []
    return {
        "calls": sum(r["calls"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "throttled": sum(r["throttled"] for r in rows),
        "by_op": {f"{r['service']}:{r['operation']}": r["calls"] for r in rows},
    }


def graph_span(doc):
    outs = (doc.get("result") or {}).get("outcomes") or []
    return max(((o.get("started_ms") or 0) + o["elapsed_ms"] for o in outs), default=0) / 1000


def merge_docs(a, b):
    """Two applies' JSON as one (for the bound of both together): their operations side by side, and
    the calls outside any operation (each process's plan reads, made at the same time) counted once,
    the larger."""
    def unattributed(doc):
        return sum(r["calls"] for r in doc.get("aws_calls") or []) - sum((doc.get("aws_calls_by_resource") or {}).values())

    by_res = {**(a.get("aws_calls_by_resource") or {}), **(b.get("aws_calls_by_resource") or {})}
    outcomes = ((a.get("result") or {}).get("outcomes") or []) + ((b.get("result") or {}).get("outcomes") or [])
    return {
        "plan": {"resources": a["plan"]["resources"] + b["plan"]["resources"]},
        "result": {"outcomes": outcomes},
        "aws_calls_by_resource": by_res,
        "aws_calls": [{"calls": sum(by_res.values()) + max(unattributed(a), unattributed(b))}],
    }


def apply_ok(r):
    return r["rc"] == 0 and r["doc"] is not None and r["doc"].get("success") is True


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def med(xs):
    return statistics.median(xs) if xs else None


def spread(xs, digits=2):
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt(xs[0], digits)
    return f"{fmt(med(xs), digits)} ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


# ---------------------------------------------------------------------------------------------
# Sections


class Bench:
    def __init__(self, args):
        self.args = args
        self.latency_s = args.latency_ms / 1000
        self.bin = Path(args.reconcile_bin) if args.reconcile_bin else ROOT / "target" / "release" / "reconcile"
        self.work = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
        self.results = {}
        self.notes = []

    def fresh(self):
        reset_moto(self.moto.url)

    def rec(self, manifest, state, *args, timeout=None, env=None):
        a = ["--json", "--stats", "-f", str(manifest), "--state", str(state), *args]
        return run_reconcile(self.bin, a, self.proxy.url, self.work, timeout or self.args.step_timeout, env)

    def new_state(self, tag):
        p = self.work / f"{tag}.db"
        for suffix in ["", "-shm", "-wal", "-journal"]:
            Path(str(p) + suffix).unlink(missing_ok=True)
        return p

    def proxy_log_offset(self):
        self.proxy.log.flush()
        return self.proxy.log_path.stat().st_size

    def set_limits(self, on):
        status, body = http("POST", f"{self.proxy.url}/__faultproxy/config", {"apigw_limits": on})
        if status != 200:
            raise RuntimeError(f"faultproxy refused apigw_limits={on}: {body}")

    def calibrate(self, manifest, tag):
        """An apply from empty with the proxy's API Gateway limits off and reconcile's pacing off (same
        latency): no 429, so its per-operation call counts are the calls each operation needs (for the
        bound), and its time without the limits shows what they cost."""
        self.fresh()
        state = self.new_state(f"calibrate-{tag}")
        self.set_limits(False)
        try:
            before = proxy_stats(self.proxy)
            r = self.rec(manifest, state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism),
                         env={"RECONCILE_PACING": "off"})
            after = proxy_stats(self.proxy)
        finally:
            self.set_limits(True)
        if not apply_ok(r):
            raise RuntimeError(f"calibration apply of {manifest} failed:\n{r['stdout'][-2000:]}\n{r['stderr'][-2000:]}")
        s = calls_summary(r["doc"])
        if s["throttled"] or stats_delta(before, after)["limited"]:
            raise RuntimeError("calibration apply met throttling with the limits off")
        log(f"calibration ({tag}, limits off): {r['wall_s']:.2f} s, {s['calls']} calls")
        return r["doc"], {"wall_s": r["wall_s"], "calls": s["calls"], "span_s": graph_span(r["doc"]),
                          "bound_s": critical_path.bound(r["doc"], self.latency_s, with_limits=False)["bound_s"]}

    # 1 + 3 (reconcile side)
    def seed_apply(self):
        runs = []
        cal_doc, cal = self.calibrate(SEED, "seed")
        self.results["seed_calibration"] = {**cal, "by_resource": cal_doc.get("aws_calls_by_resource")}
        last_apply_end = None
        for i in range(self.args.repeat):
            self.fresh()
            state = self.new_state(f"seed-{i}")
            # Cold by default: each run starts `--rest-between` (5.5 s) after the previous apply ended,
            # from a rested account, as the bound assumes (each run has a fresh state file, so its pacer
            # could not know what the previous one spent). `--rest-between 0` runs them back to back
            # on separate state files; back to back on one state file is section 6.
            if last_apply_end is not None and self.args.rest_between > 0:
                rest = self.args.rest_between - (time.monotonic() - last_apply_end)
                if rest > 0:
                    time.sleep(rest)
            before = proxy_stats(self.proxy)
            off0 = self.proxy_log_offset()
            r = self.rec(SEED, state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism))
            last_apply_end = time.monotonic()
            after = proxy_stats(self.proxy)
            timeline = limited_timeline(self.proxy.log_path, off0, self.proxy_log_offset())
            if not apply_ok(r):
                raise RuntimeError(f"seed apply failed (rc {r['rc']}):\n{r['stdout'][-3000:]}\n{r['stderr'][-3000:]}")
            b = critical_path.bound(r["doc"], self.latency_s, calibration=cal_doc)
            chain = critical_path.actual_chain(r["doc"], b["chain"])
            # The no-op plan right after, on the same state.
            before_plan = proxy_stats(self.proxy)
            p = self.rec(SEED, state, "plan")
            after_plan = proxy_stats(self.proxy)
            if p["rc"] != 0 or p["doc"] is None or any(x["action"] != "no_op" for x in p["doc"]["resources"]):
                raise RuntimeError(f"no-op plan after the seed apply is not empty:\n{p['stdout'][-3000:]}\n{p['stderr'][-2000:]}")
            resources = [(x["type"], x["physical_id"]) for x in p["doc"]["resources"]]
            runs.append(
                {
                    "wall_s": r["wall_s"],
                    "span_s": graph_span(r["doc"]),
                    "maxrss_kb": r["maxrss_kb"],
                    **calls_summary(r["doc"]),
                    "proxy": stats_delta(before, after),
                    "limited_ops": timeline,
                    "bound": {k: v for k, v in b.items() if k != "nodes"},
                    "chain": chain,
                    "outcomes": r["doc"]["result"]["outcomes"],
                    "by_resource": r["doc"].get("aws_calls_by_resource"),
                    "plan": {
                        "wall_s": p["wall_s"],
                        "maxrss_kb": p["maxrss_kb"],
                        **calls_summary(p["doc"]),
                        "proxy": stats_delta(before_plan, after_plan),
                    },
                }
            )
            log(f"seed apply {i + 1}/{self.args.repeat}: {r['wall_s']:.2f} s, bound {b['bound_s']:.2f} s; no-op plan {p['wall_s']:.2f} s")
        self.results["seed"] = runs
        if self.args.rest_between > 0:
            self.notes.append(f"Section 1: seed applies started {self.args.rest_between:g} s after the previous one ended (`--rest-between`), "
                              "from a rested account (cold); back to back on one state file is section 6.")
        else:
            self.notes.append("Section 1: seed applies run back to back (`--rest-between 0`), each on a fresh state file: a run's "
                              "pacer cannot know what the previous process spent.")
        self.seed_resources = resources

    # 2 + 3 (boto3 side)
    def boto3_side(self):
        import seq_boto3

        applies, reads = [], []
        for i in range(self.args.repeat):
            self.fresh()
            before = proxy_stats(self.proxy)
            secs, calls = seq_boto3.apply_seed(self.proxy.url, str(SEED_CODE))
            after = proxy_stats(self.proxy)
            applies.append({"wall_s": secs, "calls": sum(calls.count.values()), "spacing_wait_s": calls.waited,
                            "by_op": {f"{s}:{o}": n for (s, o), n in sorted(calls.count.items())}, "proxy": stats_delta(before, after)})
            # Read what reconcile's plan read: the ids come from a reconcile-made stack, so make one.
            self.fresh()
            state = self.new_state(f"boto-read-{i}")
            r = self.rec(SEED, state, "apply", "--auto-approve")
            if not apply_ok(r):
                raise RuntimeError(f"apply before the boto3 read failed:\n{r['stderr'][-3000:]}")
            p = self.rec(SEED, state, "plan")
            resources = [(x["type"], x["physical_id"]) for x in p["doc"]["resources"]]
            before = proxy_stats(self.proxy)
            secs, calls = seq_boto3.read_resources(self.proxy.url, resources)
            after = proxy_stats(self.proxy)
            reads.append({"wall_s": secs, "calls": sum(calls.count.values()),
                          "by_op": {f"{s}:{o}": n for (s, o), n in sorted(calls.count.items())}, "proxy": stats_delta(before, after)})
            log(f"boto3 {i + 1}/{self.args.repeat}: sequential apply {applies[-1]['wall_s']:.2f} s, reads {secs:.2f} s")
        self.results["boto3_apply"] = applies
        self.results["boto3_read"] = reads

    # 6
    def shared_pacing(self):
        """Back-to-back applies of three copies of the seed on one state file (the first cold, from a
        rested account and an empty ledger), then two copies applied at once by two processes on one
        state file, then the same with a state file each."""
        d = self.work / "shared"
        shutil.rmtree(d, ignore_errors=True)
        # Copy 1 holds the region-wide API Gateway account setting; the others, in the same state
        # file, leave it to copy 1 (a state file has one owner of it).
        manifests = {k: copies.generate(SEED, 1, d / f"c{k}", first=k, shared=(k == 1), stack=f"bench-seed-{k}") for k in range(1, 6)}
        # Each calibration starts from an empty endpoint, where a stage that logs needs the account
        # setting: calibrate each copy as it would be if it held the setting.
        held = {k: copies.generate(SEED, 1, d / f"cal{k}", first=k, shared=True, stack=f"bench-seed-{k}") for k in range(1, 6)}
        cals = {k: self.calibrate(m, f"seed-copy-{k}") for k, m in held.items()}
        # The pair runs from an empty endpoint too: another stack sets the account first.
        account_holder = copies.generate(SEED, 1, d / "account", first=9, shared=True, stack="bench-account")
        res = {}

        def one(k, r, before, after, off0, off1, earlier=None):
            """`earlier`: {operation: [epoch seconds]} of the limited calls earlier runs made (back to
            back: the limits as they left them bound this run too)."""
            if not apply_ok(r):
                raise RuntimeError(f"apply of seed copy {k} failed (rc {r['rc']}):\n{r['stdout'][-3000:]}\n{r['stderr'][-3000:]}")
            cold = critical_path.bound(r["doc"], self.latency_s, calibration=cals[k][0])
            history = {op: [t - r["started_epoch"] for t in ts] for op, ts in (earlier or {}).items()}
            b = critical_path.bound(r["doc"], self.latency_s, calibration=cals[k][0], history=history) if earlier else cold
            ops = limited_timeline(self.proxy.log_path, off0, off1) if off0 is not None else None
            # How long after the previous run's last success of each limited operation this run's first
            # one came (at least the spacing; more is time pacing lost).
            carry = {}
            for op, t in (ops or {}).items():
                prev = [x for x in (earlier or {}).get(op, []) if t["success_at"] and x < t["success_at"][0]]
                if prev and t["success_at"]:
                    carry[op] = t["success_at"][0] - max(prev)
            return {
                "copy": k,
                "wall_s": r["wall_s"],
                "bound_s": b["bound_s"],
                "cold_bound_s": cold["bound_s"],
                "ratio": r["wall_s"] / b["bound_s"],
                "carry_gap_s": carry,
                "chain": b["chain"],
                **calls_summary(r["doc"]),
                "pacing": r["doc"].get("pacing"),
                "proxy": stats_delta(before, after) if before is not None else None,
                "limited_ops": ops,
            }

        # Back to back on one state file.
        self.fresh()
        self.rest()
        state = self.new_state("shared-b2b")
        runs = []
        earlier = {}
        for k in (1, 2, 3):
            before, off0 = proxy_stats(self.proxy), self.proxy_log_offset()
            r = self.rec(manifests[k], state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism))
            runs.append(one(k, r, before, proxy_stats(self.proxy), off0, self.proxy_log_offset(), earlier if k > 1 else None))
            for op, t in (runs[-1]["limited_ops"] or {}).items():
                earlier.setdefault(op, []).extend(t["success_at"])
            log(f"back to back, copy {k}: {runs[-1]['wall_s']:.2f} s, bound {runs[-1]['bound_s']:.2f} s, "
                f"{runs[-1]['proxy']['limited']} x 429")
        res["back_to_back"] = runs

        # Two processes at once: one state file, then a state file each.
        for tag in ("one_state", "two_states"):
            self.fresh()
            r = self.rec(account_holder, self.new_state(f"account-{tag}"), "apply", "--auto-approve")
            if not apply_ok(r):
                raise RuntimeError(f"apply of the account holder failed:\n{r['stderr'][-3000:]}")
            self.rest()
            if tag == "one_state":
                shared_state = self.new_state("pair-shared")
                paths = {4: shared_state, 5: shared_state}
            else:
                paths = {k: self.new_state(f"pair-{k}") for k in (4, 5)}
            before, off0 = proxy_stats(self.proxy), self.proxy_log_offset()
            results = {}
            t0 = time.monotonic()

            def go(k):
                results[k] = self.rec(manifests[k], paths[k], "apply", "--auto-approve", "--parallelism", str(self.args.parallelism))
                results[k]["end_s"] = time.monotonic() - t0

            threads = [threading.Thread(target=go, args=(k,)) for k in (4, 5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after, off1 = proxy_stats(self.proxy), self.proxy_log_offset()
            pair_s = max(results[k]["end_s"] for k in (4, 5))
            each = [one(k, results[k], None, None, None, None) for k in (4, 5)]
            both = critical_path.bound(merge_docs(results[4]["doc"], results[5]["doc"]), self.latency_s,
                                       calibration=merge_docs(cals[4][0], cals[5][0]))
            res[tag] = {
                "pair_s": pair_s,
                "bound_s": both["bound_s"],
                "ratio": pair_s / both["bound_s"],
                "runs": each,
                "proxy": stats_delta(before, after),
                "limited_ops": limited_timeline(self.proxy.log_path, off0, off1),
            }
            log(f"two processes ({tag}): pair {pair_s:.2f} s, bound of both {both['bound_s']:.2f} s, "
                f"{res[tag]['proxy']['limited']} x 429")
        self.results["shared_pacing"] = res

    def rest(self):
        """Waits out API Gateway's limits at the proxy (the 5 s CreateDeployment spacing, the 4 s the
        account bucket needs to refill): the next apply starts from a rested account."""
        time.sleep(5.5)

    # 4
    def copies(self):
        rows = []
        for n in self.args.copies:
            self.fresh()
            d = self.work / f"copies-{n}"
            shutil.rmtree(d, ignore_errors=True)
            manifest = copies.generate(SEED, n, d)
            cal_doc, cal = self.calibrate(manifest, f"{n}x")
            self.fresh()
            state = self.new_state(f"copies-{n}")
            before = proxy_stats(self.proxy)
            off0 = self.proxy_log_offset()
            plan = self.rec(manifest, state, "plan")
            log(f"{n} copies: plan {plan['wall_s']:.1f} s (rc {plan['rc']}); applying")
            apply = self.rec(manifest, state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism))
            after = proxy_stats(self.proxy)
            timeline = limited_timeline(self.proxy.log_path, off0, self.proxy_log_offset())
            ok = apply_ok(apply)
            row = {
                "copies": n,
                "resources": len((apply["doc"] or plan["doc"] or {}).get("plan", {}).get("resources", []))
                or len((plan["doc"] or {}).get("resources", [])),
                "plan_s": plan["wall_s"],
                "plan_rss_kb": plan["maxrss_kb"],
                "plan_rc": plan["rc"],
                "apply_s": apply["wall_s"],
                "apply_rss_kb": apply["maxrss_kb"],
                "apply_rc": apply["rc"],
                "apply_timed_out": apply["timed_out"],
                "success": ok,
                "calibration": cal,
                "limited_ops": timeline,
                **calls_summary(apply["doc"]),
                "proxy": stats_delta(before, after),
            }
            if apply["doc"] and apply["doc"].get("result"):
                outs = apply["doc"]["result"]["outcomes"]
                row["failed"] = [(o["name"], o["error"]) for o in outs if o["status"] != "done"][:10]
                row["span_s"] = graph_span(apply["doc"])
                b = critical_path.bound(apply["doc"], self.latency_s, calibration=cal_doc)
                row["bound_s"] = b["bound_s"]
                row["bound_chain"] = [s["name"] for s in b["chain"]]
                row["outcomes"] = outs
            else:
                row["failed"] = [("(no result)", apply["stderr"][-2000:])]
            log(f"{n} copies: apply {apply['wall_s']:.1f} s ok={ok} calls={row['calls']} throttled={row['throttled']} "
                f"limited={row['proxy']['limited']} rss={apply['maxrss_kb'] / 1024:.0f} MB")
            if apply["doc"] is not None:
                b0 = proxy_stats(self.proxy)
                noop = self.rec(manifest, state, "plan")
                b1 = proxy_stats(self.proxy)
                row["noop_plan_s"] = noop["wall_s"]
                row["noop_plan_rss_kb"] = noop["maxrss_kb"]
                row["noop_plan_calls"] = calls_summary(noop["doc"])["calls"] if noop["doc"] else None
                row["noop_plan_throttled"] = calls_summary(noop["doc"])["throttled"] if noop["doc"] else None
                row["noop_plan_limited"] = stats_delta(b0, b1)["limited"]
                row["noop_plan_empty"] = bool(noop["doc"]) and all(x["action"] == "no_op" for x in noop["doc"]["resources"])
                log(f"{n} copies: no-op plan {noop['wall_s']:.1f} s")
            rows.append(row)
            if apply["timed_out"]:
                self.notes.append(f"{n} copies: apply did not finish within {self.args.step_timeout} s and was stopped; larger counts skipped.")
                break
        self.results["copies"] = rows

    # 7
    def noop_copies(self):
        rows = []
        for n in self.args.noop_copies:
            self.fresh()
            d = self.work / f"noop-copies-{n}"
            shutil.rmtree(d, ignore_errors=True)
            manifest = copies.generate(SEED, n, d)
            state = self.new_state(f"noop-copies-{n}")
            # The apply only sets the stage: limits and pacing off, so 50 copies take minutes, not ten.
            self.set_limits(False)
            try:
                setup = self.rec(manifest, state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism),
                                 env={"RECONCILE_PACING": "off"})
            finally:
                self.set_limits(True)
            if not apply_ok(setup):
                self.notes.append(f"section 7, {n} copies: the setup apply failed; not measured.")
                break
            row = {"copies": n}
            modes = [("collection", {})] + ([("single", {"RECONCILE_COLLECTION_READS": "off"})] if self.args.noop_baseline else [])
            for mode, env in modes:
                self.rest()
                b0 = proxy_stats(self.proxy)
                r = self.rec(manifest, state, "plan", env=env)
                b1 = proxy_stats(self.proxy)
                doc = r["doc"] or {}
                s = calls_summary(doc)
                apigw = sum(c["calls"] for c in doc.get("aws_calls") or [] if c["service"] == "apigateway")
                # Once per run, not per copy: the REST API list and the region's account setting.
                shared = sum(c["calls"] for c in doc.get("aws_calls") or []
                             if c["service"] == "apigateway" and c["operation"] in ("GetRestApis", "GetAccount"))
                row[mode] = {
                    "wall_s": r["wall_s"],
                    "rc": r["rc"],
                    "calls": s["calls"],
                    "apigw_calls": apigw,
                    "apigw_per_copy": apigw / n,
                    "apigw_shared": shared,
                    "apigw_per_copy_own": (apigw - shared) / n,
                    "throttled": s["throttled"],
                    "limited": stats_delta(b0, b1)["limited"],
                    "empty": bool(doc) and all(x["action"] == "no_op" for x in doc.get("resources") or []),
                    "by_op": s["by_op"],
                }
                log(f"{n} copies, {mode} reads: no-op plan {r['wall_s']:.1f} s, {s['calls']} calls "
                    f"({apigw} API Gateway: {(apigw - shared) / n:.1f} per copy + {shared} shared), throttled {s['throttled']}")
            rows.append(row)
        self.results["noop_copies"] = rows

    # 8
    def fleet_watch(self):
        """One `reconcile watch` of N one-copy stacks at --api-share 0.5 (default 0.5), and while it
        runs an apply of another stack at --api-share 0.5 on a separate state file (no shared ledger:
        the case the share is for). The proxy's log names the access key id of each request, and each
        process signs with its own, so the watcher's API Gateway requests are told from the apply's."""
        n, interval, share = self.args.fleet_stacks, self.args.fleet_interval, self.args.fleet_share
        d = self.work / "fleet"
        shutil.rmtree(d, ignore_errors=True)
        stacks_dir = d / "stacks"
        # Stack 1 holds the region-wide API Gateway account setting; the others, in the same state
        # file, leave it to stack 1 (a state file has one owner of it).
        fleet = [copies.generate(SEED, 1, stacks_dir, first=k, shared=(k == 1), stack=f"bench-fleet-{k:02d}") for k in range(1, n + 1)]
        # The applies measured: other stacks of the same shape, on state files of their own (the
        # account setting is the fleet's).
        others = {tag: copies.generate(SEED, 1, d / tag, first=n + i, shared=False, stack=f"bench-fleet-{tag}")
                  for i, tag in enumerate(("concurrent", "alone", "alone-full"), start=1)}
        self.fresh()
        state = self.new_state("fleet")
        # Set-up only: limits and pacing off, so fifty applies take a few minutes.
        self.set_limits(False)
        t0 = time.monotonic()
        try:
            for k, m in enumerate(fleet, start=1):
                r = self.rec(m, state, "apply", "--auto-approve", "--parallelism", str(self.args.parallelism),
                             env={"RECONCILE_PACING": "off"})
                if not apply_ok(r):
                    raise RuntimeError(f"set-up apply of fleet stack {k} failed (rc {r['rc']}):\n{r['stdout'][-2000:]}\n{r['stderr'][-2000:]}")
        finally:
            self.set_limits(True)
        setup_s = time.monotonic() - t0
        log(f"fleet: {n} stacks applied in {setup_s:.0f} s (limits off)")
        self.rest()

        argv = [str(self.bin), "--log-format", "json", "--state", str(state), "--api-share", f"{share:g}",
                "watch", "--interval", f"{interval}s", "--listen", "127.0.0.1:0", str(stacks_dir)]
        logpath = self.work / "fleet-watch.log"
        off0 = self.proxy_log_offset()
        watch_env = {**aws_env(self.proxy.url), "AWS_ACCESS_KEY_ID": FLEET_WATCH_KEY}
        proc = Proc("watch", argv, watch_env, logpath)
        samples = []
        stop_sampling = threading.Event()
        try:
            watch_started = time.time()
            line = proc.p.stdout.readline().strip()
            m = re.match(r"listening on (http://\S+)", line)
            if not m:
                raise RuntimeError(f"watch did not start: {line!r}\n{logpath.read_text()[-3000:]}")
            base = m.group(1)

            def sample():
                while not stop_sampling.is_set():
                    try:
                        samples.append((time.time(), metrics_raw(base)))
                    except OSError:
                        pass
                    stop_sampling.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            # "A pass or so": every stack's first pass is over (they all start at once).
            deadline = time.time() + max(600, 10 * interval)
            while True:
                passes = sum(v for k, v in metrics_raw(base).items() if k.startswith("reconcile_passes_total{"))
                if passes >= n:
                    break
                if time.time() > deadline or proc.p.poll() is not None:
                    raise RuntimeError(f"watch did not finish a pass of every stack ({passes}/{n}):\n{logpath.read_text()[-3000:]}")
                time.sleep(0.5)
            first_round_s = time.time() - watch_started
            log(f"fleet: watch's first pass of every stack done after {first_round_s:.0f} s; applying another stack concurrently")
            apply_env = {"AWS_ACCESS_KEY_ID": FLEET_APPLY_KEY}
            conc = self.rec(others["concurrent"], self.new_state("fleet-concurrent"), "apply", "--auto-approve",
                            "--parallelism", str(self.args.parallelism), "--api-share", f"{share:g}", env=apply_env)
            apply_end = time.time()
            if not apply_ok(conc):
                raise RuntimeError(f"concurrent apply failed (rc {conc['rc']}):\n{conc['stdout'][-3000:]}\n{conc['stderr'][-3000:]}")
            log(f"fleet: concurrent apply {conc['wall_s']:.2f} s; watch goes on for {self.args.fleet_tail} s")
            time.sleep(self.args.fleet_tail)
            final_metrics = metrics_raw(base)
            watch_stopped = time.time()
        finally:
            stop_sampling.set()
            proc.stop()
        off1 = self.proxy_log_offset()
        events = proxy_requests(self.proxy.log_path, off0, off1)

        # The same apply alone (the watcher stopped, the account rested), at the same share, and at the
        # whole budget (what the share itself costs).
        alone = {}
        for tag, extra in (("alone", ["--api-share", f"{share:g}"]), ("alone-full", [])):
            self.rest()
            before = proxy_stats(self.proxy)
            r = self.rec(others[tag], self.new_state(f"fleet-{tag}"), "apply", "--auto-approve",
                         "--parallelism", str(self.args.parallelism), *extra, env={"AWS_ACCESS_KEY_ID": FLEET_APPLY_KEY})
            r["proxy_429"] = stats_delta(before, proxy_stats(self.proxy))["limited"]
            if not apply_ok(r):
                raise RuntimeError(f"apply ({tag}) failed (rc {r['rc']}):\n{r['stdout'][-3000:]}\n{r['stderr'][-3000:]}")
            alone[tag] = r
            log(f"fleet: apply {tag}: {r['wall_s']:.2f} s")

        passes = []
        warnings = 0
        for line in logpath.read_text().splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            msg = ev.get("message") or (ev.get("fields") or {}).get("message") or ""
            fields = ev.get("fields") or ev
            if msg == "pass finished":
                passes.append({"stack": fields.get("stack"), "duration_ms": fields.get("duration_ms"), "aws_calls": fields.get("aws_calls"),
                               "complete": fields.get("complete"), "at": ev.get("timestamp")})
            elif msg.startswith("pass still running"):
                warnings += 1

        apigw = [e for e in events if e["service"] == "apigateway"]
        w_times = [e["t"] for e in apigw if e["key_id"] == FLEET_WATCH_KEY]
        a_times = [e["t"] for e in apigw if e["key_id"] == FLEET_APPLY_KEY]
        all_times = [e["t"] for e in apigw]
        apply_start = conc["started_epoch"]
        w_first = w_times[0] if w_times else watch_started
        during = [t for t in w_times if apply_start <= t <= apply_end]
        after_burst = [t for t in w_times if t >= w_first + 60]

        def apply_row(r, tag):
            s = calls_summary(r["doc"])
            return {
                "tag": tag,
                "wall_s": r["wall_s"],
                "calls": s["calls"],
                "apigw_calls": sum(c["calls"] for c in (r["doc"] or {}).get("aws_calls") or [] if c["service"] == "apigateway"),
                "throttled": s["throttled"],
                "pacing": (r["doc"] or {}).get("pacing"),
                "api_budget": (r["doc"] or {}).get("api_budget"),
            }

        alone_rows = [{**apply_row(alone[tag], tag), "proxy_429": alone[tag]["proxy_429"]} for tag in ("alone", "alone-full")]
        conc_row = apply_row(conc, "concurrent")
        conc_row["proxy_requests"] = len(a_times)
        conc_row["proxy_429"] = sum(1 for e in apigw if e["key_id"] == FLEET_APPLY_KEY and e["refused"])
        throttled_metric = sum(v for k, v in final_metrics.items() if k.startswith("reconcile_pacing_throttled_total{"))
        watch_apigw_metric = sum(v for k, v in final_metrics.items() if k.startswith("reconcile_aws_service_calls_total{") and 'service="apigateway"' in k)
        res = {
            "stacks": n,
            "interval_s": interval,
            "share": share,
            "setup_s": setup_s,
            "first_round_s": first_round_s,
            "watch_s": watch_stopped - watch_started,
            "apply_window": [apply_start - watch_started, apply_end - watch_started],
            "watcher": {
                "requests": len(w_times),
                "requests_metric": watch_apigw_metric,
                "span_s": (w_times[-1] - w_first) if w_times else 0.0,
                "rate_overall": len(w_times) / (watch_stopped - w_first) if w_times else None,
                "rate_during_apply": len(during) / (apply_end - apply_start) if apply_end > apply_start else None,
                "max_10s": max_window(w_times, 10.0, watch_started),
                "max_60s": max_window(w_times, 60.0, watch_started),
                "max_10s_after_first_minute": max_window(after_burst, 10.0, watch_started),
                "max_60s_after_first_minute": max_window(after_burst, 60.0, watch_started),
                "first_10s": sum(1 for t in w_times if t < w_first + 10),
                "proxy_429": sum(1 for e in apigw if e["key_id"] == FLEET_WATCH_KEY and e["refused"]),
                "throttled_metric": throttled_metric,
                "passes": len(passes),
                "complete_passes": sum(1 for p in passes if p["complete"]),
                "pass_ms": [p["duration_ms"] for p in passes],
                "pass_calls": [p["aws_calls"] for p in passes],
                "still_running_warnings": warnings,
                "per_second": per_second(w_times, w_first),
            },
            "combined": {
                "max_10s": max_window(all_times, 10.0, watch_started),
                "max_1s": max_window(all_times, 1.0, watch_started),
                "proxy_429": sum(1 for e in apigw if e["refused"]),
                "other_keys": sorted({e["key_id"] for e in apigw} - {FLEET_WATCH_KEY, FLEET_APPLY_KEY}),
            },
            "applies": [conc_row, *alone_rows],
            "metrics_samples": [(t - watch_started, {k: v for k, v in m.items() if 'service="apigateway"' in k and k.startswith("reconcile_aws_service_calls_total")})
                                for t, m in samples],
        }
        wr = res["watcher"]
        log(f"fleet: watcher {wr['requests']} API Gateway requests, {fmt(wr['rate_overall'])}/s overall, "
            f"{fmt(wr['rate_during_apply'])}/s during the apply, max 10 s {fmt(wr['max_10s']['rate'])}/s, "
            f"max 60 s {fmt(wr['max_60s']['rate'])}/s; 429s: watcher {wr['proxy_429']}, apply {conc_row['proxy_429']}")
        self.results["fleet_watch"] = res

    # 5
    def watch(self):
        help_rc = subprocess.run([str(self.bin), "watch", "--help"], capture_output=True).returncode
        if help_rc != 0:
            self.results["watch"] = {"available": False}
            self.notes.append("`reconcile watch` is not available in this build: section 5 not measured.")
            return
        import seq_boto3

        out = {"available": True, "runs": []}
        self.fresh()
        state = self.new_state("watch")
        r = self.rec(SEED, state, "apply", "--auto-approve")
        if not apply_ok(r):
            raise RuntimeError(f"apply before watch failed:\n{r['stderr'][-3000:]}")
        logs = seq_boto3.clients(self.proxy.url, seq_boto3.Calls())["logs"]
        for interval in self.args.watch_intervals:
            out["runs"].append(self.watch_one(state, interval, logs))
        self.results["watch"] = out

    def watch_one(self, state, interval, logs):
        argv = [str(self.bin), "--log-format", "json", "-f", str(SEED), "--state", str(state),
                "watch", "--interval", f"{interval}s", "--listen", "127.0.0.1:0"]
        logpath = self.work / f"watch-{interval}s.log"
        before = proxy_stats(self.proxy)
        proc = Proc("watch", argv, aws_env(self.proxy.url), logpath)
        try:
            line = proc.p.stdout.readline().strip()
            m = re.match(r"listening on (http://\S+)", line)
            if not m:
                raise RuntimeError(f"watch did not start: {line!r}\n{logpath.read_text()[-3000:]}")
            base = m.group(1)
            deadline = time.time() + 120
            while http("GET", f"{base}/readyz")[0] != 200:
                if time.time() > deadline or proc.p.poll() is not None:
                    raise RuntimeError(f"watch never got ready:\n{logpath.read_text()[-3000:]}")
                time.sleep(0.1)
            m0 = metrics(base)
            t_ready = time.monotonic()
            trials = []
            group = "DevLogGroupAccessLog"
            for k in range(self.args.watch_trials):
                time.sleep(random.uniform(0, interval))  # a random phase against the pass cadence
                for value, want_open in [(30, True), (731, False)]:
                    logs.put_retention_policy(logGroupName=group, retentionInDays=value)
                    t0 = time.monotonic()
                    seen_metrics, seen_cli = detect(base, self.bin, state, self.proxy.url, want_open, t0,
                                                    timeout=interval * 4 + 30)
                    trials.append({"trial": k, "change": "drift" if want_open else "revert", "metrics_s": seen_metrics, "cli_s": seen_cli})
                log(f"watch {interval}s trial {k + 1}: detected via /metrics {fmt(trials[-2]['metrics_s'])} s, "
                    f"drift CLI {fmt(trials[-2]['cli_s'])} s; resolved {fmt(trials[-1]['metrics_s'])} s")
            m1 = metrics(base)
            t_end = time.monotonic()
        finally:
            proc.stop()
        after = proxy_stats(self.proxy)
        passes = []
        for line in logpath.read_text().splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("message") == "pass finished":
                passes.append(ev)
        calls_delta = m1["calls"] - m0["calls"]
        passes_delta = m1["passes"] - m0["passes"]
        return {
            "interval_s": interval,
            "trials": trials,
            "passes_logged": len(passes),
            "calls_per_pass_log": [p.get("aws_calls") for p in passes],
            "pass_ms": [p.get("duration_ms") for p in passes],
            "metrics_calls_per_pass": calls_delta / passes_delta if passes_delta else None,
            "metrics_window_s": t_end - t_ready,
            "metrics_passes": passes_delta,
            "metrics_calls": calls_delta,
            "proxy": stats_delta(before, after),
        }


def metrics_raw(base):
    """Every sample of /metrics: {'name{labels}': value}."""
    status, body = http("GET", f"{base}/metrics")
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def metrics(base):
    status, body = http("GET", f"{base}/metrics")
    calls = passes = 0
    drift = {}
    for line in body.splitlines():
        if line.startswith("reconcile_aws_calls_total{"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("reconcile_passes_total{"):
            passes += float(line.rsplit(" ", 1)[1])
        elif line.startswith("reconcile_drift{"):
            m = re.search(r'resource="([^"]+)"\}\s+(\S+)', line)
            if m:
                drift[m.group(1)] = float(m.group(2))
    return {"calls": calls, "passes": passes, "drift": drift}


def detect(base, bin_path, state, endpoint, want_open, t0, timeout):
    """Polls /metrics (every 20 ms) and `reconcile --json drift` (back to back) until both show the
    dev_access_logs drift open (want_open) or closed; returns their delays from t0."""
    found = {"metrics": None, "cli": None}
    stop = threading.Event()

    def poll_metrics():
        while not stop.is_set() and time.monotonic() - t0 < timeout:
            d = metrics(base)["drift"].get("dev_access_logs", 0)
            if (d > 0) == want_open:
                found["metrics"] = time.monotonic() - t0
                return
            time.sleep(0.02)

    def poll_cli():
        env = aws_env(endpoint)
        while not stop.is_set() and time.monotonic() - t0 < timeout:
            p = subprocess.run([str(bin_path), "--json", "--state", str(state), "drift", "--stack", "apigw-lambda-basic"],
                               capture_output=True, text=True, env=env)
            try:
                events = json.loads(p.stdout) if p.stdout.strip() else []
            except json.JSONDecodeError:
                events = []
            is_open = any(e["resource"] == "dev_access_logs" and e.get("resolved_at") is None for e in events)
            if is_open == want_open:
                found["cli"] = time.monotonic() - t0
                return

    threads = [threading.Thread(target=poll_metrics), threading.Thread(target=poll_cli)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    return found["metrics"], found["cli"]


# ---------------------------------------------------------------------------------------------
# Report


def machine(args):
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    py = str(VENV / "bin" / "python")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": out(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": bool(out(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"])),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "moto": out([py, "-c", "import moto; print(moto.__version__)"]),
        "boto3": out([py, "-c", "import boto3; print(boto3.__version__)"]),
        "rustc": out(["rustc", "--version"]),
        "latency_ms": args.latency_ms,
        "parallelism": args.parallelism,
        "loadavg_start": os.getloadavg(),
    }


def render(m, res, notes, args):
    L = []
    w = L.append
    w(f"# reconcile benchmark — {m['date']}, {m['git']}{' (+ uncommitted changes in src/)' if m['dirty'] else ''}")
    w("")
    w(f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}; {m['rustc']}, release build. "
      f"Endpoint: moto {m['moto']} behind `faultproxy --latency-ms {m['latency_ms']} --apigw-limits` "
      f"(every call +{m['latency_ms']} ms; API Gateway: 10 rps burst 40, CreateRestApi 1/3 s, CreateDeployment 1/5 s, "
      f"DeleteRestApi 1/30 s, else 429). boto3 {m['boto3']}. `--parallelism {m['parallelism']}`, pacing on (default). "
      f"Times are wall-clock seconds, median (min–max) of {args.repeat} runs where repeated. "
      f"Load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in m['loadavg_start'])}, "
      f"at end {'/'.join(f'{x:.1f}' for x in m['loadavg_end'])} (other work on the machine competes for the CPUs).")
    w("")
    seed = res.get("seed") or []
    if seed:
        walls = [r["wall_s"] for r in seed]
        bounds = [r["bound"]["bound_s"] for r in seed]
        ratios = [r["wall_s"] / r["bound"]["bound_s"] for r in seed]
        spans = [r["span_s"] / r["bound"]["bound_s"] for r in seed]
        w("## 1. Apply of the seed stack from empty (17 resources)" + (", cold" if args.rest_between > 0 else ", back to back on fresh state files"))
        w("")
        w("| Wall time | Executor span | AWS calls | Throttled (reconcile) | 429 from the limits | Critical-path bound | Wall / bound | Span / bound | Peak RSS |")
        w("|---|---|---|---|---|---|---|---|---|")
        w(f"| {spread(walls)} s | {spread([r['span_s'] for r in seed])} s | {spread([r['calls'] for r in seed], 0)} "
          f"| {spread([r['throttled'] for r in seed], 0)} | {spread([r['proxy']['limited'] for r in seed], 0)} | {spread(bounds)} s "
          f"| **{spread(ratios)}×** | {spread(spans)}× | {med([r['maxrss_kb'] for r in seed]) / 1024:.0f} MB |")
        w("")
        best = min(seed, key=lambda r: r["wall_s"] / r["bound"]["bound_s"])
        b = best["bound"]
        w(f"Bound = makespan of the ideal schedule (bench/critical_path.py): each call exactly {m['latency_ms']} ms, "
          f"operations start when everything in `waited_for` is done, unlimited parallelism, API Gateway limits "
          f"first come first served; {b['unattributed_calls']} call(s) outside any operation (plan phase) added in front. "
          f"Its longest chain (from the median run; model start → finish, then what really happened):")
        w("")
        med_run = sorted(seed, key=lambda r: r["wall_s"])[len(seed) // 2]
        w("| Operation | Calls needed / made | Model start–finish | Limit wait (model) | Actual start | Actual elapsed | Start after deps done |")
        w("|---|---|---|---|---|---|---|")
        for s in med_run["chain"]:
            causes = "; ".join(f"{c} {v:.2f} s" for c, v in s["limit_causes"]) or "–"
            w(f"| {s['name']} | {s['calls']} / {s['calls_made']} | {s['model_start_s']:.2f}–{s['model_finish_s']:.2f} s | {causes} "
              f"| {s['start_s']:.2f} s | {s['elapsed_s']:.2f} s | {s['start_delay_s'] * 1000:.0f} ms |")
        w("")
        tl = med_run.get("limited_ops") or {}
        if tl:
            w("Rate-limited API Gateway operations in that run, as the proxy saw them (spread = first to last success; "
              "the limit needs (successes − 1) × spacing; idle = time the operation's bucket had a token back while a "
              "refused caller was still waiting for its retry):")
            w("")
            w("| Operation | Successes | 429s | Spread | Needed by the limit | Idle after a 429 |")
            w("|---|---|---|---|---|---|")
            for op, t in sorted(tl.items()):
                w(f"| {op} | {t['successes']} | {t['refused']} | {t['span_s']:.2f} s | {t['min_span_s']:.2f} s | {t['idle_s']:.2f} s |")
            w("")
        cal = res.get("seed_calibration")
        if cal:
            w(f"Calibration apply with the proxy's API Gateway limits and reconcile's pacing switched off (same latency; "
              f"gives the calls each operation needs, and what the limits cost): {fmt(cal['wall_s'])} s wall, {cal['calls']} calls, no 429; its bound without limits "
              f"{fmt(cal['bound_s'])} s (wall / that bound {cal['wall_s'] / cal['bound_s']:.2f}×).")
            w("")
        w(f"Calls by operation (median run): " + ", ".join(f"{k} {v}" for k, v in sorted(med_run["by_op"].items())))
        w("")
    ba = res.get("boto3_apply") or []
    if seed and ba:
        w("## 2. The same creates as a plain sequential boto3 script")
        w("")
        w("| | Wall time | AWS calls | 429 from the limits |")
        w("|---|---|---|---|")
        w(f"| reconcile apply (parallel, paced) | {spread(walls)} s | {spread([r['calls'] for r in seed], 0)} | {spread([r['proxy']['limited'] for r in seed], 0)} |")
        w(f"| bench/seq_boto3.py `apply_seed` (sequential; sleeps for the API Gateway spacing: {spread([r['spacing_wait_s'] for r in ba])} s) "
          f"| {spread([r['wall_s'] for r in ba])} s | {spread([r['proxy']['requests'] for r in ba], 0)} | {spread([r['proxy']['limited'] for r in ba], 0)} |")
        w(f"| **boto3 sequential / reconcile** | **{med([r['wall_s'] for r in ba]) / med(walls):.2f}×** | | |")
        w("")
        w("(boto3 calls counted by the proxy: requests it received during the script.)")
        w("")
    br = res.get("boto3_read") or []
    if seed and br:
        pw = [r["plan"]["wall_s"] for r in seed]
        w("## 3. No-op plan (everything in sync)")
        w("")
        w("| | Wall time | AWS calls |")
        w("|---|---|---|")
        w(f"| `reconcile plan` (whole process) | {spread(pw)} s | {spread([r['plan']['calls'] for r in seed], 0)} |")
        w(f"| bench/seq_boto3.py `read_resources` (same reads, sequential) | {spread([r['wall_s'] for r in br])} s "
          f"| {spread([r['proxy']['requests'] for r in br], 0)} |")
        w(f"| **boto3 sequential / reconcile** | **{med([r['wall_s'] for r in br]) / med(pw):.2f}×** | |")
        w("")
    cp = res.get("copies") or []
    if cp:
        w("## 4. N copies of the stack in one manifest (one `reconcile apply`)")
        w("")
        w("| Copies | Resources | Plan from empty | Apply | Apply bound | Apply / bound | Apply, limits off | No-op plan | Peak RSS plan / apply / no-op | Apply calls (needed) | Throttled (reconcile) | 429 from the limits | Apply succeeded |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in cp:
            bound_s = r.get("bound_s")
            ratio = r["apply_s"] / bound_s if bound_s else None
            rss = f"{r['plan_rss_kb'] / 1024:.0f} / {r['apply_rss_kb'] / 1024:.0f} / " + (
                f"{r['noop_plan_rss_kb'] / 1024:.0f} MB" if r.get("noop_plan_rss_kb") else "– MB")
            noop = f"{fmt(r.get('noop_plan_s'), 1)} s ({r.get('noop_plan_calls')} calls)" if r.get("noop_plan_s") else "–"
            if r.get("noop_plan_s") and not r.get("noop_plan_empty"):
                noop += ", not empty: the failed part"
            status = "yes" if r["success"] else ("timed out" if r["apply_timed_out"] else f"**no** ({len(r.get('failed', []))} failed/skipped)")
            cal = r.get("calibration") or {}
            w(f"| {r['copies']} | {r['resources']} | {fmt(r['plan_s'], 1)} s | {fmt(r['apply_s'], 1)} s | {fmt(bound_s, 1)} s | {fmt(ratio)}× "
              f"| {fmt(cal.get('wall_s'), 1)} s | {noop} | {rss} | {r['calls']} ({cal.get('calls', '–')}) | {r['throttled']} | {r['proxy']['limited']} "
              f"{json.dumps(r['proxy']['apigw_limited']) if r['proxy']['apigw_limited'] else ''} | {status} |")
        w("")
        w("The bound for N copies uses the same model (calls × latency along `waited_for`, API Gateway limits first come first "
          "served, unlimited parallelism, call counts from the calibration apply); with many copies the `CreateDeployment` "
          "spacing (2 per copy, 5 s each) dominates it. \"Apply, limits off\": the calibration apply, same manifest and "
          "latency with the proxy's API Gateway limits and reconcile's pacing switched off (what the limits cost).")
        w("")
        w("Rate-limited operations during each apply (proxy log; columns as in section 1):")
        w("")
        w("| Copies | Operation | Successes | 429s | Spread | Needed by the limit | Idle after a 429 |")
        w("|---|---|---|---|---|---|---|")
        for r in cp:
            for op, t in sorted((r.get("limited_ops") or {}).items()):
                w(f"| {r['copies']} | {op} | {t['successes']} | {t['refused']} | {t['span_s']:.1f} s | {t['min_span_s']:.1f} s | {t['idle_s']:.1f} s |")
        w("")
    for r in cp:
        for name, err in r.get("failed") or []:
            w(f"- {r['copies']} copies, `{name}`: {err}")
    if any(r.get("failed") for r in cp):
        w("")
    wr = res.get("watch")
    if wr is not None:
        w("## 5. `reconcile watch`: drift detection")
        w("")
        if not wr.get("available"):
            w("`reconcile watch` is not available in this build: not measured (the code path is in bench/bench.py).")
        else:
            w("Out-of-band change: boto3 `PutRetentionPolicy` on `DevLogGroupAccessLog` (731 → 30 days); detection = from the "
              "moment that call returned to `reconcile_drift{resource=\"dev_access_logs\"} > 0` in `/metrics` (polled every 20 ms) "
              "and to an open event in `reconcile --json drift` (polled back to back). Then reverted, and the time to "
              "resolution measured the same way. A random wait (0–interval) before each change spreads the phase.")
            w("")
            w("| Interval | Trials | Detected in /metrics | Detected in `drift` | Resolved in /metrics | Passes | AWS calls per pass (log) | /metrics calls ÷ passes | Pass duration | 429 from the limits |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for r in wr["runs"]:
                det = [t["metrics_s"] for t in r["trials"] if t["change"] == "drift" and t["metrics_s"] is not None]
                cli = [t["cli_s"] for t in r["trials"] if t["change"] == "drift" and t["cli_s"] is not None]
                res_ = [t["metrics_s"] for t in r["trials"] if t["change"] == "revert" and t["metrics_s"] is not None]
                cpp = [c for c in r["calls_per_pass_log"] if c is not None]
                pm = [c for c in r["pass_ms"] if c is not None]
                missed = sum(1 for t in r["trials"] if t["metrics_s"] is None)
                w(f"| {r['interval_s']} s | {len([t for t in r['trials'] if t['change'] == 'drift'])}{f' ({missed} missed)' if missed else ''} "
                  f"| {spread(det)} s | {spread(cli)} s | {spread(res_)} s | {r['passes_logged']} "
                  f"| {spread(cpp, 0)} | {fmt(r['metrics_calls_per_pass'], 1)} | {spread([x / 1000 for x in pm])} s | {r['proxy']['limited']} |")
        w("")
    sp = res.get("shared_pacing")
    if sp:
        w("## 6. Shared pacing: back-to-back and concurrent applies")
        w("")
        w("Copies of the seed stack (different names) in one account. Back to back: three applies one after the other on one "
          "state file, the first from a rested account and an empty pacing ledger (cold), each next one started as soon as the "
          "previous process exited. Bound: the critical-path model of section 1, started from the account's limits as the "
          "earlier runs left them (their CreateRestApi and CreateDeployment calls, from the proxy's log: an operation's first "
          "call of a run cannot come before the previous run's last one plus the spacing, in the ideal schedule as in "
          "reality); the cold bound (a rested account) is shown for comparison.")
        w("")
        w("| Apply | Wall time | Bound | Wall / bound | Cold bound | Throttled (reconcile) | 429 from the limits | Waited for pacing (CreateRestApi / CreateDeployment / account rate) | After the previous run's last (CreateRestApi / CreateDeployment) |")
        w("|---|---|---|---|---|---|---|---|---|")

        def waited(r, op):
            row = next((x for x in (r.get("pacing") or []) if x["operation"] == op), None)
            return f"{row['waited_ms'] / 1000:.1f} s" if row else "–"

        def gap(r, op):
            g = (r.get("carry_gap_s") or {}).get(op)
            return f"{g:.2f} s" if g is not None else "–"

        for i, r in enumerate(sp.get("back_to_back") or []):
            label = "copy 1 (cold)" if i == 0 else f"copy {r['copy']} (back to back)"
            w(f"| {label} | {fmt(r['wall_s'])} s | {fmt(r['bound_s'])} s | **{fmt(r['ratio'])}×** | {fmt(r.get('cold_bound_s', r['bound_s']))} s "
              f"| {r['throttled']} | {r['proxy']['limited']} "
              f"| {waited(r, 'CreateRestApi')} / {waited(r, 'CreateDeployment')} / {waited(r, 'account rate')} "
              f"| {gap(r, 'CreateRestApi')} / {gap(r, 'CreateDeployment')} |")
        w("")
        w("After the previous run's last: from the previous run's last successful call of the operation to this run's first "
          "(the limit needs 3 s / 5 s; the client keeps 0.1 s of margin).")
        w("")
        w("Two applies of two different stacks started together by two processes: sharing a state file (one pacing budget), "
          "and with a state file each (each is the other's outside client: its 429s are the ones pacing cannot foresee). "
          "Bound: the same model for both stacks' operations together (one account's limits).")
        w("")
        w("| State | Pair done | Bound of both | Pair / bound | 429 from the limits | Throttled (reconcile, each) | Extra wait after a 429, max (limited operations) |")
        w("|---|---|---|---|---|---|---|")
        for tag, label in (("one_state", "one state file"), ("two_states", "a state file each")):
            r = sp.get(tag)
            if not r:
                continue
            extra = ", ".join(f"{op} {t['max_idle_s']:.2f} s ({t['refused']} x 429)" for op, t in sorted((r.get("limited_ops") or {}).items()) if t["refused"]) or "–"
            w(f"| {label} | {fmt(r['pair_s'])} s | {fmt(r['bound_s'])} s | **{fmt(r['ratio'])}×** | {r['proxy']['limited']} "
              f"{json.dumps(r['proxy']['apigw_limited']) if r['proxy']['apigw_limited'] else ''} | {' / '.join(str(x['throttled']) for x in r['runs'])} | {extra} |")
        w("")
        w("Extra wait after a 429: for a limited operation, how long after its limit allowed a call again a caller that had "
          "been refused got through (the proxy's log; at most the operation's spacing is the goal).")
        w("")
    nc = res.get("noop_copies")
    if nc:
        w("## 7. Collection reads: no-op plan of N copies of the seed in one stack")
        w("")
        w("Each copy has 2 REST APIs, 2 deployments, 3 stages, 3 roles (one shared), 2 log groups. Collection reads (default) "
          "against per-resource reads (`RECONCILE_COLLECTION_READS=off`). Goals: at most 6 API Gateway calls per copy and 30 s "
          "at 50 copies; the seed alone no more calls and no slower than per-resource reads.")
        w("")
        w("| Copies | Reads | Wall time | AWS calls | API Gateway calls | per copy (+ once per run) | Throttled (reconcile) | 429 from the limits | Plan empty |")
        w("|---|---|---|---|---|---|---|---|---|")
        for row in nc:
            for mode in ("collection", "single"):
                r = row.get(mode)
                if r:
                    w(f"| {row['copies']} | {mode} | {fmt(r['wall_s'])} s | {r['calls']} | {r['apigw_calls']} | **{r['apigw_per_copy_own']:.1f}** (+ {r['apigw_shared']}) "
                      f"| {r['throttled']} | {r['limited']} | {'yes' if r['empty'] else 'NO'} |")
        w("")
    fw = res.get("fleet_watch")
    if fw:
        wr, cb = fw["watcher"], fw["combined"]
        share = fw["share"]
        cap = 1000 / (math.ceil(1000 / 9.5) / share)
        burst = max(1, math.floor(38 * share))
        w(f"## 8. A watch of {fw['stacks']} stacks and a concurrent apply, `--api-share {share:g}` each")
        w("")
        w(f"{fw['stacks']} stacks of one seed copy each (one manifest each, a directory of them), applied beforehand with the "
          f"limits and pacing off ({fw['setup_s']:.0f} s), watched by one `reconcile watch --api-share {share:g} --interval "
          f"{fw['interval_s']}s` on their state file. Once every stack had had its first pass ({fw['first_round_s']:.0f} s after "
          f"the start), an apply of another stack (`apply --api-share {share:g}`, a state file of its own: no shared pacing "
          f"ledger) from {fw['apply_window'][0]:.0f} s to {fw['apply_window'][1]:.0f} s; the watch stopped at "
          f"{fw['watch_s']:.0f} s. Requests counted at the proxy, told apart by the access key id each process signs with, "
          f"at their arrival (when the proxy's limits judge them). A share of {share:g} caps a process at {cap:.2f} API Gateway requests/s "
          f"with a burst of {burst} (95 % of the account's 10/s and 38 of its 40, times the share), so a window right after "
          f"a rest can exceed the rate: at most ({burst} + {cap:.2f} × W) / W, i.e. {(burst + cap * 10) / 10:.2f}/s over "
          f"10 s and {(burst + cap * 60) / 60:.2f}/s over 60 s.")
        w("")
        w("| Watcher (goal: ≤ 5 API Gateway requests/s) | |")
        w("|---|---|")
        w(f"| API Gateway requests (proxy / the watcher's /metrics) | {wr['requests']} / {wr['requests_metric']:.0f} |")
        w(f"| Rate overall (first request to stop) | **{fmt(wr['rate_overall'])}/s** |")
        w(f"| Rate while the apply ran | **{fmt(wr['rate_during_apply'])}/s** |")
        w(f"| Busiest 10 s window / busiest 60 s window | {wr['max_10s']['rate']:.2f}/s (ending at {fmt(wr['max_10s']['end_s'], 0)} s) / "
          f"{wr['max_60s']['rate']:.2f}/s (ending at {fmt(wr['max_60s']['end_s'], 0)} s) |")
        if wr["max_10s_after_first_minute"]["count"]:
            w(f"| The same, windows starting a minute or more after its first request | {wr['max_10s_after_first_minute']['rate']:.2f}/s / "
              f"{wr['max_60s_after_first_minute']['rate']:.2f}/s |")
        w(f"| Requests in its first 10 s | {wr['first_10s']} |")
        w(f"| 429s (proxy / the watcher's `reconcile_pacing_throttled_total`) | {wr['proxy_429']} / {wr['throttled_metric']:.0f} |")
        pm = [x / 1000 for x in wr["pass_ms"] if x is not None]
        w(f"| Passes (complete), pass duration | {wr['passes']} ({wr['complete_passes']}), {spread(pm, 1)} s; "
          f"{wr['still_running_warnings']} `pass still running` warnings |")
        w("")
        w(f"All API Gateway requests at the proxy (watcher + apply): busiest 10 s {cb['max_10s']['rate']:.2f}/s, busiest 1 s "
          f"{cb['max_1s']['count']} requests (the proxy allows 10/s, burst 40); 429s {cb['proxy_429']}.")
        w("")
        w("| Apply of one seed copy (17 resources) | Wall time | AWS calls (API Gateway) | 429s: reconcile / proxy | Waited for pacing (CreateRestApi / CreateDeployment / account rate) |")
        w("|---|---|---|---|---|")
        labels = {"concurrent": f"`--api-share {share:g}` while the watch runs (goal: no 429)",
                  "alone": f"`--api-share {share:g}` alone (watch stopped, account rested)",
                  "alone-full": "whole budget (`--api-share 1`), alone"}

        def waited(r, op):
            row = next((x for x in (r.get("pacing") or []) if x["operation"] == op), None)
            return f"{row['waited_ms'] / 1000:.1f} s" if row else "–"

        for r in fw["applies"]:
            proxy429 = r.get("proxy_429", "–")
            w(f"| {labels[r['tag']]} | {fmt(r['wall_s'])} s | {r['calls']} ({r['apigw_calls']}) | {r['throttled']} / {proxy429} "
              f"| {waited(r, 'CreateRestApi')} / {waited(r, 'CreateDeployment')} / {waited(r, 'account rate')} |")
        w("")
    if notes:
        w("## Notes")
        w("")
        for n in notes:
            w(f"- {n}")
        w("")
    w(f"Reproduce: `bench/run` (options: `bench/run --help`). Raw numbers: the .json file next to this one.")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=int, default=100, help="latency the proxy adds to every call (default 100)")
    ap.add_argument("--parallelism", type=int, default=10, help="reconcile --parallelism (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of sections 1-3 (default 3)")
    ap.add_argument("--copies", default="1,10,50", help="stack copies for section 4 (default 1,10,50; empty to skip)")
    ap.add_argument("--watch-intervals", default="1,5", help="watch --interval values in seconds (default 1,5; empty to skip)")
    ap.add_argument("--watch-trials", type=int, default=5, help="changes per interval (default 5)")
    ap.add_argument("--step-timeout", type=int, default=900, help="seconds one reconcile run may take (default 900)")
    ap.add_argument("--noop-copies", default="1,50", help="stack copies for section 7 (default 1,50; empty to skip)")
    ap.add_argument("--no-noop-baseline", dest="noop_baseline", action="store_false",
                    help="section 7: skip the per-resource-reads run (RECONCILE_COLLECTION_READS=off) next to each measurement")
    ap.add_argument("--fleet-stacks", type=int, default=50, help="section 8: stacks the watch watches (default 50)")
    ap.add_argument("--fleet-interval", type=int, default=30, help="section 8: watch --interval in seconds (default 30)")
    ap.add_argument("--fleet-share", type=float, default=0.5, help="section 8: --api-share of the watch and of the apply (default 0.5)")
    ap.add_argument("--fleet-tail", type=int, default=60, help="section 8: seconds the watch goes on after the apply ends (default 60)")
    ap.add_argument("--sections", default="1,2,3,4,5,6,7,8", help="which sections to run (default all: 1,2,3,4,5,6,7,8)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results directory (default bench/results)")
    ap.add_argument("--reconcile-bin", help="reconcile binary to measure (default target/release/reconcile)")
    ap.add_argument("--rest-between", type=float, default=5.5,
                    help="seconds between the end of one measured seed apply of section 1 and the start of the next "
                         "(default 5.5: waits out API Gateway's CreateDeployment spacing, a cold start; 0: back to back "
                         "on separate state files; section 6 measures back to back on one state file)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, state files, manifests)")
    args = ap.parse_args()
    args.copies = [int(x) for x in args.copies.split(",") if x.strip()]
    args.watch_intervals = [int(x) for x in args.watch_intervals.split(",") if x.strip()]
    args.noop_copies = [int(x) for x in args.noop_copies.split(",") if x.strip()]
    sections = {int(x) for x in args.sections.split(",") if x.strip()}

    for b in ["reconcile", "faultproxy"]:
        if not (ROOT / "target" / "release" / b).exists():
            sys.exit(f"target/release/{b} is missing: run `cargo build --release -p reconcile -p faultproxy` (bench/run does)")
    bench = Bench(args)
    m = machine(args)
    log(f"work directory {bench.work}")
    started = time.monotonic()
    bench.moto = start_moto(bench.work)
    try:
        bench.proxy = start_proxy(bench.work, bench.moto.url, args.latency_ms)
        try:
            log(f"moto at {bench.moto.url}, proxy at {bench.proxy.url} (+{args.latency_ms} ms, API Gateway limits)")
            if sections & {1, 3}:
                bench.seed_apply()
            if sections & {2, 3}:
                bench.boto3_side()
            if 4 in sections and args.copies:
                bench.copies()
            if 5 in sections and args.watch_intervals:
                bench.watch()
            if 6 in sections:
                bench.shared_pacing()
            if 7 in sections and args.noop_copies:
                bench.noop_copies()
            if 8 in sections and args.fleet_stacks > 0:
                bench.fleet_watch()
        finally:
            bench.proxy.stop()
    finally:
        bench.moto.stop()
    m["total_s"] = time.monotonic() - started
    m["loadavg_end"] = os.getloadavg()
    bench.notes.append(f"Whole benchmark: {m['total_s'] / 60:.1f} minutes.")
    md = render(m, bench.results, bench.notes, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{m['git']}"
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps({"machine": m, "results": bench.results, "notes": bench.notes}, indent=1, default=str))
    print(md)
    log(f"wrote {out / (stem + '.md')}")
    if not args.keep:
        shutil.rmtree(bench.work, ignore_errors=True)
    else:
        log(f"kept {bench.work}")


if __name__ == "__main__":
    main()
