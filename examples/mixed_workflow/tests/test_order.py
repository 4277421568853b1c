"""The order workflow across the language line, tested as its users test it: a Python node
runs the workflow, the Elixir app runs the warehouse step, and the rows and the app's log say so.

Fixtures (from the oban-bridge pytest plugin, nothing to import): ``bridge_db`` is a test
database with the shared tables, emptied before each test; ``bridge_node`` starts a Python
node; ``bridge_elixir_app`` is the Elixir app of ``[tool.bridge.testing]`` in ../pyproject.toml,
running on that same database.
"""

import pytest
from orders.flows import ORDER


@pytest.fixture
def shop(bridge_node):
    """The Python half: a node running the order workflow (its queue, bridge_workflows)."""
    return bridge_node(workflows=[ORDER], node="shop-1")


def test_an_order_is_priced_and_shipped_in_python_and_reserved_in_elixir(
    shop, bridge_elixir_app, bridge_db
):
    since = bridge_elixir_app.log_offset()
    bridge_db.start_workflow(ORDER, {"sku": "tea", "quantity": 2}, id="order-1")

    order = bridge_db.wait_for_instance("order-1", timeout=30)
    assert order.context["steps"] == {
        "price_order": {"total": 8},
        "reserve_stock": {"reservation": "R-order-1", "warehouse": "elixir"},
        "ship_order": {"tracking": "T-R-order-1"},
        "done": {},
    }
    reserved = bridge_db.wait_for_job(
        worker="ObanBridge.StepWorker", args={"instance_id": "order-1"}
    )
    assert reserved.queue == "warehouse"
    assert reserved.attempted_by[0] == bridge_elixir_app.node  # the Elixir app ran the step
    assert "[warehouse] reserved 2 x tea for order-1" in bridge_elixir_app.log_text(since)


def test_an_order_out_of_stock_ends_without_shipping(shop, bridge_elixir_app, bridge_db):
    bridge_db.start_workflow(ORDER, {"sku": "mug", "quantity": 1}, id="order-2")

    order = bridge_db.wait_for_instance("order-2", timeout=30)
    assert order.context["steps"]["price_order"] == {"total": 12}
    assert order.context["steps"]["reserve_stock"] == {}  # the event alone, no reservation
    assert "ship_order" not in order.context["steps"]
