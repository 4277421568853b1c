"""Jobs of the shop. The stored worker name is ``module.QualName`` (``shop.workers.SendWelcome``),
the string ``bridge enqueue`` (or an Elixir app's ``Oban.insert``) names."""

from bridge import Cancel, Job, worker


@worker(queue="mail", max_attempts=3)
class SendWelcome:
    """Sends the welcome mail: here a line on the node's output."""

    def process(self, job: Job) -> Cancel | None:
        email = job.args.get("email", "")
        if "@" not in email:
            return Cancel(f"not an email address: {email!r}")  # retrying would not help
        print(f"welcome mail sent to {email}", flush=True)  # raise instead: retried with backoff
        return None


@worker(queue="default")
async def tidy_outbox(job: Job) -> None:
    """Run by the cron entry in pyproject.toml once a minute; async workers work the same way."""
    print(f"outbox tidied (cron job {job.id})", flush=True)
