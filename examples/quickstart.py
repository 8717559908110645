import durable


@durable.activity(retry=durable.RetryPolicy(max_attempts=5), timeout=30)
def post(channel: str, text: str) -> str:
    key = durable.activity_info().idempotency_key  # the same on every retry: pass it to the real API
    print(f"#{channel}: {text}  (key {key})")
    return text


@durable.workflow
def remind(pr: int, every: float = 24 * 3600):
    channel = f"pr-{pr}"
    yield post(channel, f"Please review #{pr}")  # runs once; its result is recorded in Redis
    reminders = 0
    while True:
        closed = yield durable.wait_signal("closed", timeout=every)  # a durable timer
        if closed is not None:
            return f"#{pr} {closed} after {reminders} reminder(s)"
        reminders += 1
        yield post(channel, f"Reminder {reminders}: #{pr} is still open")
