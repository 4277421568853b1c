"""What a node runs besides its queues when ``bridge worker`` adds a workflow lifeline.

``NodeWorkflows.attach`` with ``--workflow-repair-after`` and no workflows used to set the node's
plugins to ``[]`` before adding the lifeline: the node then ran without its Stager, Peer and
Sonar (it never led, so neither the lifeline nor the rescue ran), and ``serve_workflows`` dropped
the gossip plugin asked for with ``--gossip``.
"""

from __future__ import annotations

from bridge.cli.worker import NodeWorkflows
from bridge.jobs.node import NodeConfig
from bridge.jobs.plugins.gossip import Gossip
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.sonar import Sonar
from bridge.jobs.plugins.stager import Stager
from bridge.workflows.run.lifeline import WorkflowLifeline


def kinds(config: NodeConfig) -> list[type]:
    assert config.plugins is not None
    return [type(plugin) for plugin in config.plugins]


def test_a_lifeline_alone_keeps_the_default_plugins() -> None:
    config = NodeConfig(url="postgresql://nowhere/db", queues={"default": 1})
    assert NodeWorkflows(repair_after=5.0).attach(config) is None
    assert kinds(config) == [Stager, Peer, Sonar, WorkflowLifeline]


def test_gossip_stays_when_a_lifeline_is_added() -> None:
    config = NodeConfig(url="postgresql://nowhere/db", queues={}, gossip=True)
    NodeWorkflows(repair_after=5.0).attach(config)
    assert kinds(config) == [Stager, Peer, Sonar, Gossip, WorkflowLifeline]


def test_plugins_a_program_chose_are_kept_as_given() -> None:
    config = NodeConfig(url="postgresql://nowhere/db", queues={}, plugins=[Peer()])
    NodeWorkflows(repair_after=5.0).attach(config)
    assert kinds(config) == [Peer, WorkflowLifeline]
