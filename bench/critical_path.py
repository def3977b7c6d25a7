"""The critical-path bound of an apply, computed from the apply's own JSON (`--json --stats`).

Model ("ideal schedule"): every AWS call takes exactly the proxy's latency L and nothing else costs
time (no CPU, no emulator time, no process start); an operation (one outcome of the apply) makes its
calls one after the other, as many as `aws_calls_by_resource` counted for it; it starts when every
operation in its `waited_for` has finished; parallelism is unlimited. API Gateway's account limits
are the only other cost:

* `CreateRestApi` (first call of a REST API create), `CreateDeployment` (first and only call of a
  deployment create) and `DeleteRestApi` (second call of a REST API delete, after `GetRestApi`) are
  issued no closer than 3 s / 5 s / 30 s apart, first come first served;
* API Gateway calls (every call of a REST API, deployment, stage or account operation) share a
  10/s bucket with a burst of 40, first come first served.

The bound is the makespan of that schedule, computed by a discrete-event simulation call by call.
With no API Gateway contention it is exactly the longest path through `waited_for` weighted by
calls x L; the limits add the waits they force. Calls counted outside any operation (the plan's
reads before the executor starts) are added in front as a serial prefix.

A run that starts while the account's limits are still spent by an earlier one (back to back) gets
that history (`history`: per limited operation, the times of the earlier successes relative to this
run's start, from the proxy's log): its first call of that operation cannot come before the last
earlier one plus the spacing, in the ideal schedule as in reality. The account bucket starts full
(an apply makes about 25 API Gateway calls in 7 s or more, which leaves the 40-token bucket all but
full).

The call counts come from a calibration apply of the same manifest through the same proxy with the
limits switched off: the calls each operation needs, without the attempts a 429 made it repeat
(those are overhead the bound must not absorb).
"""

import heapq
from collections import defaultdict

APIGW_KINDS = {"aws_api_gateway_rest_api", "aws_api_gateway_deployment", "aws_api_gateway_stage", "aws_api_gateway_account"}
SPACING = {"CreateRestApi": 3.0, "CreateDeployment": 5.0, "DeleteRestApi": 30.0}
RATE, BURST = 10.0, 40.0


def limited_call(kind, action):
    """(index of the call within the operation, operation name) of its rate-limited call, if any."""
    if kind == "aws_api_gateway_rest_api" and action == "create":
        return 0, "CreateRestApi"
    if kind == "aws_api_gateway_deployment" and action == "create":
        return 0, "CreateDeployment"
    if kind == "aws_api_gateway_rest_api" and action == "delete":
        return 1, "DeleteRestApi"
    return None


def bound(doc, latency_s, with_limits=True, calibration=None, history=None):
    """Returns a dict: bound_s, prefix_s, chain (list of steps), per-node model times.

    `calibration`: the JSON of an apply of the same manifest from empty that met no limit (no 429,
    so no retried call); its call counts are used instead of `doc`'s, which include the attempts
    that were answered 429.

    `history`: {operation: [seconds relative to this run's start of earlier successes]} (negative
    for calls before the run): the limits as the earlier runs left them."""
    plan_kinds = {r["name"]: r["type"] for r in doc["plan"]["resources"]}
    outcomes = doc["result"]["outcomes"] if doc.get("result") else []
    counts = calibration or doc
    by_res = counts.get("aws_calls_by_resource") or {}
    total_calls = sum(r["calls"] for r in counts.get("aws_calls") or [])
    unattributed = max(0, total_calls - sum(by_res.values()))
    prefix = unattributed * latency_s

    names = [o["name"] for o in outcomes]
    index = {n: i for i, n in enumerate(names)}
    kind = [plan_kinds.get(n.removesuffix(" (previous)"), "?") for n in names]
    ncalls = [by_res.get(n, 0) for n in names]
    deps = [[index[d] for d in o["waited_for"] if d in index] for o in outcomes]
    dependents = defaultdict(list)
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)
    remaining = [len(ds) for ds in deps]

    tokens, refilled = BURST, prefix
    next_free = {}
    last_issuer = {}
    for op, times in (history or {}).items():
        if times and op in SPACING:
            next_free[op] = max(times) + SPACING[op]
            last_issuer[op] = "the previous run"
    start = [None] * len(names)
    finish = [None] * len(names)
    why = [None] * len(names)  # ("dep", j) or None
    waits = defaultdict(float)  # node -> seconds waited for limits
    wait_cause = defaultdict(list)

    # Events: (time, seq, node, call index). A call event means "node wants to send call k now".
    events = []
    seq = 0

    def push(t, i, k):
        nonlocal seq
        heapq.heappush(events, (t, seq, i, k))
        seq += 1

    for i in range(len(names)):
        if remaining[i] == 0:
            start[i] = prefix
            push(prefix, i, 0)
    while events:
        t, _, i, k = heapq.heappop(events)
        if k >= ncalls[i]:
            finish[i] = t
            for d in dependents[i]:
                remaining[d] -= 1
                if remaining[d] == 0:
                    start[d] = t
                    why[d] = max(deps[d], key=lambda j: finish[j])
                    push(t, d, 0)
            continue
        at = t
        if with_limits and kind[i] in APIGW_KINDS:
            tokens = min(BURST, tokens + (t - refilled) * RATE)
            refilled = t
            tokens -= 1
            if tokens < 0:
                at = t + (-tokens) / RATE
                wait_cause[i].append(("10 rps bucket", at - t))
            lim = limited_call(kind[i], outcomes[i]["action"])
            if lim and lim[0] == k:
                op = lim[1]
                slot = max(next_free.get(op, at), at)
                if slot > at:
                    wait_cause[i].append((f"{op} spacing after {last_issuer[op]}", slot - at))
                next_free[op] = slot + SPACING[op]
                last_issuer[op] = names[i]
                at = slot
        waits[i] += at - t
        push(at + latency_s, i, k + 1)

    if not names:
        return {"bound_s": prefix, "prefix_s": prefix, "chain": [], "nodes": {}}
    end = max(range(len(names)), key=lambda i: finish[i] if finish[i] is not None else -1)
    chain = []
    i = end
    while i is not None:
        chain.append(i)
        i = why[i]
    chain.reverse()
    steps = [
        {
            "name": names[i],
            "calls": ncalls[i],
            "model_start_s": start[i],
            "model_finish_s": finish[i],
            "limit_wait_s": waits[i],
            "limit_causes": wait_cause[i],
        }
        for i in chain
    ]
    nodes = {names[i]: {"start": start[i], "finish": finish[i], "calls": ncalls[i], "kind": kind[i]} for i in range(len(names))}
    return {"bound_s": finish[end], "prefix_s": prefix, "unattributed_calls": unattributed, "chain": steps, "nodes": nodes}


def actual_chain(doc, steps):
    """For each step of the model's chain: when it really started, how long it really took, how many
    calls it really made."""
    by_name = {o["name"]: o for o in doc["result"]["outcomes"]}
    made = doc.get("aws_calls_by_resource") or {}
    out = []
    prev_end = 0.0
    for s in steps:
        o = by_name[s["name"]]
        st = (o.get("started_ms") or 0) / 1000
        el = o["elapsed_ms"] / 1000
        deps_end = max(
            [(by_name[d].get("started_ms") or 0) / 1000 + by_name[d]["elapsed_ms"] / 1000 for d in o["waited_for"] if d in by_name],
            default=0.0,
        )
        out.append({**s, "start_s": st, "elapsed_s": el, "calls_made": made.get(s["name"], 0), "start_delay_s": st - deps_end,
                    "after_prev_s": st - prev_end})
        prev_end = st + el
    return out
