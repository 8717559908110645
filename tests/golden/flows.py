"""Workflows whose recorded histories are kept in tests/golden/*.json.

Do not change these functions: the golden histories were recorded from them,
and the point of the test is that *the kernel* keeps replaying them. To cover
new behaviour, add a new workflow and record a new golden file.
"""

from __future__ import annotations

from datetime import timedelta

import durable


@durable.activity
def charge(order: str, cents: int) -> dict:
    return {"order": order, "charged": cents}


@durable.activity(inline=True)
def render(template: str, **values: object) -> str:
    return template.format(**values)


@durable.activity(retry=durable.RetryPolicy(max_attempts=3, initial_interval=10.0))
def flaky_lookup(key: str) -> str:
    if durable.activity_info().attempt < 2:
        raise ConnectionError("lookup service unavailable")
    return key.upper()


@durable.activity(retry=durable.RetryPolicy(max_attempts=2, initial_interval=1.0))
def refuse(reason: str) -> None:
    raise PermissionError(reason)


@durable.workflow
def order_flow(order: str, cents: int):
    """Queued and inline activities, a retry, a caught failure, a durable sleep."""
    receipt = yield charge(order, cents)
    text = yield render("order {order}: {charged} cents", **receipt)
    key = yield flaky_lookup(order)
    try:
        yield refuse("no refunds")
    except durable.ActivityFailed as exc:
        refused = exc.error_type
    yield durable.sleep(timedelta(days=1))
    return text, key, refused


@durable.workflow
def approval_flow(request: str):
    """Signals racing timers, fan-out and a race."""
    decision = yield durable.wait_signal("decision", timeout=3600)
    reminded = 0
    while decision is None and reminded < 2:
        reminded += 1
        decision = yield durable.wait_signal("decision", timeout=3600)
    parts = yield durable.all_of(charge(request, 1), charge(request, 2), durable.sleep(5))
    index, first = yield durable.any_of(durable.wait_signal("extra"), durable.sleep(60))
    return decision, reminded, [p["charged"] for p in parts[:2]], index, first


@durable.workflow
def child_flow(n: int):
    value = yield charge(f"child-{n}", n)
    return value["charged"] * 10


@durable.workflow
def family_flow():
    """Child workflows, recorded values, a patch, custom status."""
    started = yield durable.now()
    token = yield durable.uuid4()
    roll = yield durable.random()
    answer = yield durable.side_effect(lambda: 42)
    if (yield durable.patched("children-in-parallel")):
        kids = yield durable.all_of(child_flow(1), child_flow(2))
    else:
        kids = [(yield child_flow(1)), (yield child_flow(2))]
    durable.set_status({"kids": len(kids)})
    return started.isoformat(), str(token), roll, answer, kids


@durable.workflow
def cancellable_flow():
    """Cancellation with a compensating activity."""
    try:
        yield durable.wait_signal("never", timeout=86400)
    except durable.Cancelled:
        refund = yield charge("refund", -1)
        return f"compensated {refund['charged']}"
    return "not cancelled"


@durable.workflow
def looping_flow(n: int):
    """continue_as_new (the golden file holds the first run)."""
    yield charge(f"loop-{n}", n)
    if n < 2:
        yield durable.continue_as_new(n + 1)
    return n


@durable.workflow
def failing_flow():
    yield charge("x", 1)
    raise LookupError("no such customer")
