"""``bridge queues ...`` and ``bridge nodes`` as a user runs them (the installed script, from a
scratch directory): signals say what they sent and to whom, '*' only where Oban means it, the
Python node logs what it did with each signal, and the live nodes of both languages are seen —
a real Python node, and an Elixir node played by the NOTIFY payloads and ``oban_peers`` rows the
genuine Oban 2.23.1 wrote (tests/data/golden)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import psycopg
import pytest
from psycopg import sql

from bridge.cli import main
from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.gossip import Gossip
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.sonar import Sonar
from tests.jobs.support import golden_examiner_payload, running_node
from tests.support.cli import run_bridge
from tests.support.worker import spawn_worker

Conn = psycopg.Connection[tuple[object, ...]]
Run = subprocess.CompletedProcess[str]
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def golden_payload(path: str, channel: str) -> str:
    """The first raw payload the genuine stack sent on ``public.oban_<channel>``."""
    for line in (GOLDEN / path).read_text().splitlines():
        record = json.loads(line)
        if record.get("channel") == f"public.oban_{channel}":
            return str(record["payload"])
    raise AssertionError(f"no {channel} payload in {path}")


ELIXIR_SONAR = golden_payload("peers-and-leader/s8_notify.jsonl", "sonar")
# A Z: payload of one check, sent by hand with Oban's notifier in the golden capture (the shape
# of Oban's Gossip plugin before 2.23; 2.23 itself sends none).
ELIXIR_GOSSIP = golden_payload("elixir-notifications-2.jsonl", "gossip")
HEADER = [
    "queue",
    "node",
    "limit",
    "paused",
    "executing",
    "available",
    "scheduled",
    "retryable",
    "source",
]
ELIXIR_PEER = json.loads(
    (GOLDEN / "peers-and-leader/s8_oban_peers_snapshots.jsonl")
    .read_text()
    .split(" ", 1)[1]
    .splitlines()[0]
)


def bridge(url: str, prefix: str, tmp_path: Path, *args: str) -> Run:
    return run_bridge("--database-url", url, "--prefix", prefix, *args, cwd=tmp_path)


def error_line(result: Run, status: int) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def ok(result: Run) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@contextmanager
def signals_heard(url: str, prefix: str) -> Iterator[list[str]]:
    """The raw payloads sent on the signal channel while the block runs."""
    heard: list[str] = []
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{prefix}.oban_signal")))
        yield heard
        heard.extend(n.payload for n in listener.notifies(timeout=0.5))


# -- signals: what is sent, in words ---------------------------------------------------------------


@pytest.mark.parametrize("action", ["scale", "start", "stop"])
def test_star_is_refused_where_oban_has_no_all_queues_call(
    database_url: str, oban_prefix: str, tmp_path: Path, action: str
) -> None:
    limit = ["--limit", "2"] if action in ("scale", "start") else []
    with signals_heard(database_url, oban_prefix) as heard:
        result = bridge(database_url, oban_prefix, tmp_path, "queues", action, "*", *limit)
    assert error_line(result, 2) == (
        f"Error: '*' means every queue only for pause and resume; {action} takes one queue name"
    )
    assert heard == []


def test_pause_all_is_oban_pause_all_queues(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    with signals_heard(database_url, oban_prefix) as heard:
        out = ok(bridge(database_url, oban_prefix, tmp_path, "queues", "pause", "*", "--wait", "0"))
    assert out == 'sent pause for every queue ("*") to every node (ident any)\n'
    assert heard == ['{"action":"pause","ident":"any","queue":"*"}']


def test_targeted_scale_says_whom_and_json_prints_the_payload(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    args = ("queues", "scale", "badges", "--limit", "5", "--node", "vm", "--wait", "0")
    with signals_heard(database_url, oban_prefix) as heard:
        out = ok(bridge(database_url, oban_prefix, tmp_path, *args))
        as_json = ok(
            bridge(database_url, oban_prefix, tmp_path, *args, "--instance", ":b", "--json")
        )
    assert out == (
        'sent scale to limit 5 for queue "badges" to node "vm" of instance Oban (ident Oban.vm)\n'
    )
    assert json.loads(as_json) == {
        "action": "scale",
        "queue": "badges",
        "ident": ":b.vm",
        "limit": 5,
        "node": "vm",
    }
    assert heard == [
        '{"action":"scale","ident":"Oban.vm","limit":5,"node":"vm","queue":"badges"}',
        '{"action":"scale","ident":":b.vm","limit":5,"node":"vm","queue":"badges"}',
    ]


def test_signal_usage_errors(database_url: str, oban_prefix: str, tmp_path: Path) -> None:
    def run(*args: str) -> Run:
        return bridge(database_url, oban_prefix, tmp_path, "queues", *args, "--wait", "0")

    with signals_heard(database_url, oban_prefix) as heard:
        assert error_line(run("pause", "q", "--instance", "X"), 2) == (
            "Error: --instance only applies with --node"
        )
        assert error_line(run("pause", ""), 2) == "Error: the queue name is empty"
        assert error_line(run("scale", "q"), 2) == "Error: Missing option '--limit'."
        assert error_line(run("start", "q", "--limit", "0"), 2).startswith(
            "Error: Invalid value for '--limit'"
        )
        assert error_line(run("pause", "q", "--limit", "3"), 2).startswith(
            "Error: No such option '--limit'"
        )
        negative = bridge(
            database_url, oban_prefix, tmp_path, "queues", "pause", "q", "--wait", "-1"
        )
        assert error_line(negative, 2).startswith("Error: Invalid value for '--wait'")
    assert heard == []


def test_a_queue_no_live_node_serves_is_warned_about(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    with signals_heard(database_url, oban_prefix) as heard:
        result = bridge(
            database_url, oban_prefix, tmp_path, "queues", "resume", "nowhere", "--wait", "0.5"
        )
    assert ok(result) == 'sent resume for queue "nowhere" to every node (ident any)\n'
    assert result.stderr.splitlines() == [
        'Warning: no live node reported serving queue "nowhere" in 0.5 s (nodes on OSS Oban '
        "2.23 send no check-ins); sending anyway"
    ]
    assert heard == ['{"action":"resume","ident":"any","queue":"nowhere"}']


# -- a real Python node ----------------------------------------------------------------------------


async def test_python_node_is_seen_and_logs_the_signals_it_gets(
    database_url: str, oban_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.node")

    async def cli(*args: str) -> Run:
        return await asyncio.to_thread(bridge, database_url, oban_prefix, tmp_path, *args)

    plugins = [Peer(), Sonar(interval=0.5), Gossip(interval=0.3)]
    async with running_node(
        database_url,
        oban_prefix,
        {"badges": 3, "default": 1},
        Registry(),
        node="py-cli",
        plugins=plugins,
    ) as node:
        nodes = json.loads(ok(await cli("nodes", "--wait", "1.5", "--json")))
        assert nodes["waited"] == 1.5
        [entry] = nodes["nodes"]
        assert entry["node"] == "py-cli" and entry["idents"] == ["Oban.py-cli"]
        assert entry["leads"] == ["Bridge"] and entry["sonar_pings"] >= 2
        assert entry["executing"] == 0
        assert [(q["queue"], q["limit"], q["paused"], q["running"]) for q in entry["queues"]] == [
            ("badges", 3, False, 0),
            ("default", 1, False, 0),
        ]
        assert [p["name"] for p in nodes["peers"]] == ["Bridge"] and nodes["peers"][0]["live"]

        table = ok(await cli("nodes", "--wait", "1")).splitlines()
        assert table[0].split() == ["node", "ident", "leads", "pings", "queues", "executing"]
        assert table[1].split()[:3] == ["py-cli", "Oban.py-cli", "Bridge"]
        assert table[1].split()[4:] == ["badges:3,", "default:1", "0"]

        result = await cli("queues", "pause", "badges", "--wait", "1")
        assert ok(result).splitlines() == [
            'live nodes serving queue "badges": py-cli: limit 3',
            'sent pause for queue "badges" to every node (ident any)',
        ]
        assert result.stderr == ""
        await wait_for(lambda: node.producers["badges"].paused, "the pause to be obeyed")

        queues = json.loads(ok(await cli("queues", "list", "--wait", "1", "--json")))
        assert [
            (r["queue"], r["node"], r["ident"], r["limit"], r["paused"], r["source"])
            for r in queues["queues"]
        ] == [
            ("badges", "py-cli", "Oban.py-cli", 3, True, "check-in"),
            ("default", "py-cli", "Oban.py-cli", 1, False, "check-in"),
        ]

        ok(await cli("queues", "resume", "badges", "--node", "elsewhere", "--wait", "0"))
        ok(
            await cli(
                "queues", "scale", "badges", "--limit", "4", "--node", "py-cli", "--wait", "0"
            )
        )
        await wait_for(lambda: node.producers["badges"].limit == 4, "the targeted scale")
        assert node.producers["badges"].paused  # the resume was for another node
        ok(await cli("queues", "stop", "nowhere", "--wait", "0"))
        await wait_for(lambda: len(signal_lines(caplog)) == 4, "four signals logged")

    assert signal_lines(caplog) == [
        "signal pause queue=badges ident=any: obeyed",
        "signal resume queue=badges ident=Oban.elsewhere: ignored (not ours)",
        "signal scale queue=badges limit=4 node=py-cli ident=Oban.py-cli: obeyed",
        "signal stop queue=nowhere ident=any: ignored (queue not served here)",
    ]


def signal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bridge.node" and r.getMessage().startswith("signal ")
    ]


async def wait_for(check: object, what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- an Elixir node, as the genuine Oban 2.23.1 announces itself -----------------------------------


@contextmanager
def elixir_node(
    url: str, prefix: str, *, gossip: bool, payload: str = ELIXIR_GOSSIP
) -> Iterator[None]:
    """Node ``vm`` leading ``Oban`` in oban_peers and pinging sonar (and, with ``gossip``,
    sending ``payload`` on oban_gossip: by default the golden capture's one check of queue
    ``elixir``) with the genuine payloads, until the block ends."""
    stop = threading.Event()

    def announce() -> None:
        with psycopg.connect(url, autocommit=True) as sender:
            while not stop.is_set():
                sender.execute("SELECT pg_notify(%s, %s)", (f"{prefix}.oban_sonar", ELIXIR_SONAR))
                if gossip:
                    sender.execute("SELECT pg_notify(%s, %s)", (f"{prefix}.oban_gossip", payload))
                stop.wait(0.2)

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.oban_peers VALUES (%s, %s, now() at time zone 'utc', "
                "now() at time zone 'utc' + interval '30 seconds')"
            ).format(sql.Identifier(prefix)),
            (ELIXIR_PEER["name"], ELIXIR_PEER["node"]),
        )
    thread = threading.Thread(target=announce, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_an_elixir_node_that_gossips_is_seen_with_its_queues(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    with elixir_node(database_url, oban_prefix, gossip=True):
        nodes = json.loads(
            ok(bridge(database_url, oban_prefix, tmp_path, "nodes", "--wait", "1.5", "--json"))
        )
        queues = ok(bridge(database_url, oban_prefix, tmp_path, "queues", "list", "--wait", "1"))
    [vm] = nodes["nodes"]
    assert vm["node"] == "vm" and vm["leads"] == ["Oban"] and vm["sonar_pings"] >= 2
    assert vm["idents"] == []  # the golden check-in carries no instance name
    assert vm["queues"] == [
        {
            "queue": "elixir",
            "limit": 10,
            "paused": False,
            "running": 150,
            "instance": None,
            "uuid": None,
        }
    ]
    assert [line.split() for line in queues.splitlines()] == [
        HEADER,
        ["elixir", "vm", "10", "no", "0", "0", "0", "0", "check-in"],
    ]


def test_an_elixir_node_with_oban_met_is_seen_with_its_queues(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    """Oban Web's oban_met sends {"checks": [...]} every 0.75 s, the instance name as inspect
    spells it: the golden node's check_queue in that form gives its ident and queue."""
    with elixir_node(database_url, oban_prefix, gossip=True, payload=golden_examiner_payload()):
        nodes = json.loads(
            ok(bridge(database_url, oban_prefix, tmp_path, "nodes", "--wait", "1", "--json"))
        )
    [vm] = nodes["nodes"]
    assert vm["idents"] == ["Oban.vm"]
    assert vm["queues"] == [
        {
            "queue": "golden",
            "limit": 2,
            "paused": False,
            "running": 1,
            "instance": "Oban",
            "uuid": "9439114f-11d9-470b-a7bf-5037b5cd1ead",
        }
    ]


def test_an_oss_elixir_node_shows_presence_and_unknown_queues(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    # It runs a job of queue "golden" (attempted_by names it) and one waits in "badges".
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, state, attempt, attempted_at, attempted_by)"
            " VALUES ('RealStack.Echo', 'golden', 'executing', 1, now(), ARRAY['vm', 'uuid']),"
            " ('badge_forge.generator.GenerateBadge', 'badges', 'available', 0, NULL, NULL)"
        ).format(sql.Identifier(oban_prefix))
    )
    with elixir_node(database_url, oban_prefix, gossip=False):
        nodes = ok(bridge(database_url, oban_prefix, tmp_path, "nodes", "--wait", "1"))
        queues = json.loads(
            ok(
                bridge(
                    database_url, oban_prefix, tmp_path, "queues", "list", "--wait", "1", "--json"
                )
            )
        )
        warned = bridge(
            database_url, oban_prefix, tmp_path, "queues", "pause", "golden", "--wait", "1"
        )
    header, row = (line.split() for line in nodes.splitlines())
    assert header == ["node", "ident", "leads", "pings", "queues", "executing"]
    node, ident, leads, pings, served, executing = row
    assert (node, ident, leads, served, executing) == ("vm", "unknown", "Oban", "unknown", "1")
    assert int(pings) >= 2  # its presence, from sonar
    assert [
        (r["queue"], r["node"], r["limit"], r["executing"], r["available"], r["source"])
        for r in queues["queues"]
    ] == [
        ("badges", None, None, 0, 1, "waiting jobs"),
        ("golden", "vm", None, 1, 0, "executing jobs"),
    ]
    assert ok(warned).splitlines() == [
        'live nodes serving queue "golden": vm: running its jobs now (no check-in)',
        'sent pause for queue "golden" to every node (ident any)',
    ]


def test_nodes_when_nothing_runs(database_url: str, oban_prefix: str, tmp_path: Path) -> None:
    result = bridge(database_url, oban_prefix, tmp_path, "nodes", "--wait", "0.3")
    assert ok(result).split() == ["node", "ident", "leads", "pings", "queues", "executing"]
    assert result.stderr == "no live node heard in 0.3 s, none leads in oban_peers\n"
    data = json.loads(
        ok(bridge(database_url, oban_prefix, tmp_path, "nodes", "--wait", "0", "--json"))
    )
    assert data == {"waited": 0.0, "nodes": [], "peers": []}


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "options"),
    [
        (["queues", "list"], ["--wait", "--json"]),
        (["queues", "pause"], ["--node", "--instance", "--wait", "--json"]),
        (["queues", "resume"], ["--node", "--instance", "--wait", "--json"]),
        (["queues", "scale"], ["--node", "--instance", "--wait", "--json", "--limit"]),
        (["queues", "start"], ["--node", "--instance", "--wait", "--json", "--limit"]),
        (["queues", "stop"], ["--node", "--instance", "--wait", "--json"]),
        (["nodes"], ["--wait", "--json"]),
    ],
)
def test_every_queues_and_nodes_command_has_help(
    tmp_path: Path, path: list[str], options: list[str]
) -> None:
    out = ok(run_bridge(*path, "--help", cwd=tmp_path))
    description = out.split("\n\n")[1].strip()
    assert not description.startswith("Options:") and len(description) > 20, out
    for option in options:
        assert f"  {option} " in out, out
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts} has no help"
    if "--wait" in options:
        assert "[default: " in out.split("--wait", 1)[1].split("--", 1)[0], out


# -- without gossip ------------------------------------------------------------------------------


async def test_queues_list_without_gossip_counts_from_oban_jobs(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    """A Python node as OSS Oban runs (no gossip): its queue still shows, with the jobs it is
    executing and every queue's waiting counts; limit and paused are unknown, and the one line
    on stderr says what they need."""
    from bridge import Job, insert_all, worker

    release = asyncio.Event()
    registry = Registry()

    @worker(name="held.Job", queue="held", registry=registry)
    async def held(job: object) -> None:
        await release.wait()

    insert_all(conn, [Job.new("held.Job", queue="held") for _ in range(3)], prefix=oban_prefix)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, state, scheduled_at) VALUES "
            "('Later', 'mail', 'scheduled', now() + interval '1 hour'), "
            "('Again', 'mail', 'retryable', now() + interval '1 hour'), "
            "('Again', 'mail', 'retryable', now() + interval '1 hour')"
        ).format(sql.Identifier(oban_prefix))
    )
    async with running_node(
        database_url, oban_prefix, {"held": 2}, registry, node="py-quiet"
    ) as node:
        await wait_for(lambda: len(node.producers["held"].running) == 2, "two jobs running")
        result = await asyncio.to_thread(
            bridge, database_url, oban_prefix, tmp_path, "queues", "list", "--wait", "1"
        )
        release.set()
    assert [line.split() for line in ok(result).splitlines()] == [
        HEADER,
        ["held", "py-quiet", "unknown", "unknown", "2", "1", "0", "0", "executing", "jobs"],
        ["mail", "unknown", "unknown", "unknown", "0", "0", "1", "2", "waiting", "jobs"],
    ]
    assert result.stderr == (
        "listened 1 s: check-ins from 0 nodes; limit and paused need check-ins (bridge worker "
        "--gossip, or Oban Web's oban_met on an Elixir node), the job counts come from "
        "oban_jobs\n"
    )


def gossip_heard(url: str, prefix: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """What a ``bridge worker`` started with ``args`` sends on oban_gossip in its first ~2.5 s
    of serving."""
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{prefix}.oban_gossip")))
        process = spawn_worker(url, prefix, "--queues", "mail:3", "--node", "w1", *args, env=env)
        try:
            heard = [n.payload for n in listener.notifies(timeout=6.0)]
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    return heard


def test_bridge_worker_gossips_only_when_asked(database_url: str, oban_prefix: str) -> None:
    assert gossip_heard(database_url, oban_prefix) == []  # as OSS Oban 2.23.1: nothing
    heard = gossip_heard(database_url, oban_prefix, env={"BRIDGE_GOSSIP": "1"})
    assert len(heard) >= 3  # every 0.75 s
    checks = [json.loads(raw)["checks"] for raw in heard]
    assert all(len(c) == 1 for c in checks)
    check = checks[-1][0]
    assert (check["name"], check["node"], check["queue"], check["limit"]) == (
        "Oban",
        "w1",
        "mail",
        3,
    )
    assert gossip_heard(database_url, oban_prefix, "--gossip", "--name", ":second")[0].startswith(
        '{"checks":[{"limit":3,"name":":second","node":"w1"'
    )
