"""``Elixir.MixedWorkflow.Flows.Order``: price the order in Python, reserve the stock in Elixir,
ship it in Python.

The Python runner owns the instance (its jobs run in queue ``bridge_workflows``, served by
``bridge worker --workflows orders.flows``). ``RESERVE`` is no Python function: the runner
inserts one ``ObanBridge.StepWorker`` job in queue ``warehouse``, which the Elixir app serves;
that worker runs the Elixir module ``MixedWorkflow.Steps.ReserveStock`` and completes the step,
and the workflow goes on in Python with what it returned.
"""

from typing import Any

from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, elixir_step, step

PRICES = {"tea": 4, "mug": 12}


@step(name="Elixir.MixedWorkflow.Steps.PriceOrder", events=["priced"])
def price_order(instance: Instance, config: Any, context: Context) -> StepOk:
    """Python: the total, in ``context.steps.price_order``."""
    order = context.initial
    return StepOk("priced", {"total": PRICES[order["sku"]] * order["quantity"]})


RESERVE = elixir_step(
    name="Elixir.MixedWorkflow.Steps.ReserveStock",  # the Elixir module that runs it
    events=["reserved", "out_of_stock"],  # the events that module returns
    context_keys=["reservation", "warehouse"],  # every key it may put in its updates
    queue="warehouse",  # a queue the Elixir app serves (ObanBridge.StepWorker runs there)
    max_attempts=3,
    failure_event="out_of_stock",  # if it fails for good, go on as if out of stock
)


@step(name="Elixir.MixedWorkflow.Steps.ShipOrder", events=["shipped"])
def ship_order(instance: Instance, config: Any, context: Context) -> StepOk:
    """Python again, reading what the Elixir step returned."""
    reservation = context.steps["reserve_stock"]["reservation"]
    return StepOk("shipped", {"tracking": f"T-{reservation}"})


ORDER = Workflow(
    name="Elixir.MixedWorkflow.Flows.Order",
    start=price_order,
    transitions=[
        (price_order, "priced", RESERVE),
        (RESERVE, "reserved", ship_order),
        (RESERVE, "out_of_stock", DONE),
        (ship_order, "shipped", DONE),
    ],
    atoms=["sku", "quantity", "total", "tracking"],  # every other key its rows hold
)

WORKFLOWS = [ORDER]
