from tests.conftest import drain
from tests import workflows


def test_arithmetic(client):
    h = client.start(workflows.arithmetic, 1, workflow_id="a1")
    assert drain(client, h) == "completed"
    assert h.result(timeout=1) == (1 + 1) * 2 + 100
