"""``bridge embedded …``: see, start, connect to and stop the embedded PostgreSQL of a
directory; and :func:`open_embedded`, how any command with ``--embedded`` (or ``bridge demo``
with no URL) starts it and says so.

The server keeps running after the command that started it (a worker and a later
``bridge jobs list`` must see the same rows), so every start is announced with how to stop it,
and ``status``/``url``/``stop`` here find it again. None of them needs a database URL.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from bridge import db
from bridge.cli.output import EXIT_FAILED, EXIT_NO_DATABASE, echo_json, fail


def note(message: str) -> None:
    """One ``bridge: …`` line on stderr: what the command did besides its job."""
    click.echo(f"bridge: {message}", err=True)


def stop_command_for(directory: Path) -> str:
    """The command that stops the server in ``directory``, as the user would type it (from
    this directory when it is the default one)."""
    if directory == Path(db.DEFAULT_EMBEDDED_DIR).resolve():
        return "bridge embedded stop"
    return f"bridge embedded stop --data-dir {shlex.quote(str(directory))}"


def stop_advice(directory: Path) -> str:
    """``stop it with `…``` for one line, saying where to run it when that matters."""
    command = stop_command_for(directory)
    here = " from this directory" if command == "bridge embedded stop" else ""
    return f"stop it with `{command}`{here}"


def open_embedded(data_dir: Path | None = None) -> str:
    """The URL of the embedded PostgreSQL in ``data_dir`` (``$BRIDGE_EMBEDDED_DIR``,
    ``./.bridge/pgdata``), started if it is not running; either way said on stderr, as is what
    pgserver does to the system when run as root."""
    directory = db.embedded_dir(data_dir)
    server = db.embedded_status(directory)
    if server.running:
        note(f"using the embedded PostgreSQL running in {directory} (pid {server.pid})")
        return server.url_or_fail()
    db.import_pgserver()  # a missing extra is said before anything is announced
    runs_as = db.embedded_system_user()
    if runs_as is not None:
        user, exists = runs_as
        how = f"the system user '{user}'" if exists else f"a new system user '{user}' (useradd)"
        note(
            f"running as root: pgserver runs PostgreSQL as {how}, makes it the owner of "
            f"{directory} and adds read and search permission for everyone on each directory "
            "above it"
        )
    note(
        f"starting an embedded PostgreSQL in {directory}; it keeps running after this "
        f"command: {stop_advice(directory)}"
    )
    return db.start_embedded(directory).url_or_fail()


_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=db.EMBEDDED_DIR_ENV,
    show_envvar=True,
    help="The embedded server's data directory. Default: ./.bridge/pgdata.",
)


@click.group("embedded")
def embedded_group() -> None:
    """The embedded PostgreSQL that `bridge demo` (or --embedded) starts in ./.bridge/pgdata.

    It keeps running after the command that started it; `bridge embedded stop` stops it (its
    data stays). For local trials only: production commands need a database URL."""


@embedded_group.command("status")
@_data_dir
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(data_dir: Path | None, as_json: bool) -> None:
    """Whether it runs, where its data is, its pid, socket and URL. Exit 1 when not running."""
    server = db.embedded_status(data_dir)
    if as_json:
        echo_json(server.as_json())
    elif server.running:
        state = f", {server.status}" if server.status else ""
        click.echo(f"running: yes (pid {server.pid}{state})")
        click.echo(f"data directory: {server.data_dir}")
        if server.socket_dir is not None:
            click.echo(f"socket: {server.socket_dir / f'.s.PGSQL.{server.port or 5432}'}")
        elif server.port is not None:
            click.echo(f"port: {server.port}")
        click.echo(f"url: {server.url}")
        click.echo(f"stop it with: {stop_command_for(server.data_dir)}")
    else:
        click.echo("running: no")
        earlier = (server.data_dir / "PG_VERSION").exists()
        kept = "holds data from an earlier run" if earlier else "no data yet"
        click.echo(f"data directory: {server.data_dir} ({kept})")
    if not server.running:
        raise click.exceptions.Exit(EXIT_FAILED)


@embedded_group.command("url")
@_data_dir
def url_command(data_dir: Path | None) -> None:
    """Print only its URL, for `psql "$(bridge embedded url)"`."""
    server = db.embedded_status(data_dir)
    if not server.running:
        raise fail(
            f"no embedded PostgreSQL is running in {server.data_dir}: start one with "
            "`bridge embedded start` (or any command with --embedded)",
            EXIT_NO_DATABASE,
        )
    click.echo(server.url_or_fail())


@embedded_group.command("start")
@_data_dir
def start_command(data_dir: Path | None) -> None:
    """Start it (or find it running) and print its URL."""
    click.echo(open_embedded(data_dir))


@embedded_group.command("stop")
@_data_dir
def stop_command(data_dir: Path | None) -> None:
    """Stop it (PostgreSQL's fast shutdown); its data stays for the next start."""
    server = db.stop_embedded(data_dir)
    if server.running:
        click.echo(
            f"stopped the embedded PostgreSQL in {server.data_dir} (pid {server.pid}); "
            "its data stays there"
        )
    else:
        click.echo(f"no embedded PostgreSQL is running in {server.data_dir}: nothing to stop")
