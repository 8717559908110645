"""The public API is a contract: pin it."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

import durable

EXPECTED = {
    "workflow", "activity", "RetryPolicy", "Limit", "sleep", "sleep_until", "activity_info", "workflow_info",
    "wait_signal", "all_of", "any_of", "now", "uuid4", "random", "side_effect", "patched", "continue_as_new",
    "set_status", "ActivityInfo", "WorkflowInfo", "Client", "WorkflowHandle", "WorkflowStatus", "Worker",
    "DurableError", "ActivityFailed", "ActivityTimeout", "WorkflowFailed", "Cancelled", "NonDeterminismError",
    "WorkflowNotFound", "WorkflowAlreadyExists", "SerializationError", "PayloadTooLarge", "SignatureError",
}


def test_all_is_pinned():
    assert set(durable.__all__) == EXPECTED
    assert len(durable.__all__) == len(set(durable.__all__))
    for name in durable.__all__:
        assert getattr(durable, name) is not None


ERRORS = [
    durable.ActivityFailed("m:f", "ValueError", "bad", "tb", ValueError("bad"), 3),
    durable.WorkflowFailed("wf-1", "KeyError", "'x'", "tb"),
    durable.Cancelled("wf"),
    durable.NonDeterminismError("at 3"),
    durable.WorkflowNotFound("x"),
    durable.WorkflowAlreadyExists("x"),
    durable.SerializationError("x"),
    durable.PayloadTooLarge("x"),
    durable.SignatureError("x"),
    durable.ActivityTimeout("x"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_derives_from_the_root_and_pickles(error):
    assert isinstance(error, durable.DurableError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)


def test_activity_failed_keeps_its_cause():
    error = pickle.loads(pickle.dumps(ERRORS[0]))
    assert isinstance(error.cause, ValueError) and error.attempts == 3 and error.activity == "m:f"


def test_retry_policy_backoff_and_validation():
    policy = durable.RetryPolicy(max_attempts=5, initial_interval=1, backoff=2, max_interval=5)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.allows_retry(4, "ValueError", ValueError()) and not policy.allows_retry(5, "ValueError", None)
    strict = durable.RetryPolicy(non_retryable=(KeyError, "mod.Custom"))
    assert not strict.allows_retry(1, "KeyError", KeyError())
    assert not strict.allows_retry(1, "mod.Custom", None)
    assert durable.RetryPolicy(max_attempts=0).allows_retry(1000, "E", None)
    with pytest.raises(ValueError, match="backoff"):
        durable.RetryPolicy(backoff=0.5)


def test_activity_decorator_forms_and_options():
    @durable.activity
    def plain(x):
        return x

    @durable.activity(timeout=5, inline=True, queue="slack")
    def configured(x):
        return x

    assert plain.func(3) == 3  # the undecorated function stays reachable
    command = configured(1)
    assert (command.options.timeout, command.options.inline, command.options.queue) == (5, True, "slack")
    overridden = configured.options(timeout=9, inline=False)(2)
    assert (overridden.options.timeout, overridden.options.inline, overridden.args) == (9, False, (2,))
    assert configured(1).options.timeout == 5  # the override was for one call
    with pytest.raises(ValueError, match="positive number of seconds"):
        durable.activity(timeout=0)


def test_sleep_arguments():
    assert durable.sleep(timedelta(minutes=2)).seconds == 120
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert durable.sleep_until(when).until == when.timestamp()
    with pytest.raises(ValueError, match="timezone-aware"):
        durable.sleep_until(datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="seconds"):
        durable.sleep("10")


def test_info_outside_durable_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only available inside an activity"):
        durable.activity_info()
    with pytest.raises(RuntimeError, match="only available inside workflow code"):
        durable.workflow_info()
