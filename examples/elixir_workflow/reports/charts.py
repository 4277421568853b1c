"""The Python body of the Elixir step ``Reports.Steps.RenderChart``.

The Elixir app declares the step (``use ObanBridge.DelegatedStep, worker:
"reports.charts.render_chart", queue: "charts", ...``); when its workflow reaches it, it enqueues
one job for this worker. ``bridge worker`` run in this folder (``[tool.bridge]`` names this
module) serves the ``charts`` queue, runs the body and completes the Elixir step: the result row
and HephaestusOban's AdvanceWorker job, written as the Elixir side would write them.

The body may only return the step's declared events and context keys (the Elixir step's
``events``/``context_keys``, checked before anything is written). Raising fails the attempt;
on the last one the Elixir step's failure policy applies: its ``failure_event``,
``:render_failed``, completes the step.
"""

from bridge.workflows import DelegatedCall, StepOk, delegated

WIDTH = 40  # characters of the longest bar


@delegated(
    worker="reports.charts.render_chart",
    queue="charts",
    steps=["Elixir.Reports.Steps.RenderChart"],  # only this Elixir step may use the worker
)
def render_chart(call: DelegatedCall) -> StepOk:
    """A text bar chart of the figures the Elixir step ``Gather`` found for the month."""
    figures = call.context.steps["gather"]["figures"]
    if not figures:
        raise ValueError(f"no figures for {call.context.initial['month']}: nothing to chart")
    top = max(figures)
    bars = ["#" * max(1, round(WIDTH * value / top)) for value in figures]
    return StepOk("rendered", {"chart": "\n".join(bars), "points": len(figures)})
