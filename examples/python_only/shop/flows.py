"""The sign-up workflow: two Python steps run by the node's workflow runner, one after the other.

Names follow Hephaestus's (``Elixir.`` module names), since the rows are the ones an Elixir app
would read; ``atoms`` lists every key the initial context and the steps' results hold.
"""

from typing import Any

from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, step


@step(name="Elixir.Shop.Steps.CreateAccount", events=["created"])
def create_account(instance: Instance, config: Any, context: Context) -> StepOk:
    """The first step: its updates land in ``context.steps.create_account``."""
    email = context.initial["email"]
    return StepOk("created", {"account": email.split("@")[0]})


@step(name="Elixir.Shop.Steps.Greet", events=["greeted"])
def greet(instance: Instance, config: Any, context: Context) -> StepOk:
    """Reads what the first step returned."""
    account = context.steps["create_account"]["account"]
    print(f"hello {account}!", flush=True)
    return StepOk("greeted", {"greeting": f"hello {account}"})


SIGNUP = Workflow(
    name="Elixir.Shop.Flows.Signup",
    start=create_account,
    transitions=[(create_account, "created", greet), (greet, "greeted", DONE)],
    atoms=["email", "account", "greeting"],
)

WORKFLOWS = [SIGNUP]
