"""A PostgreSQL restart while a run is in flight: the scheduler rides it out, reconnecting, and says so."""

from __future__ import annotations

from pathlib import Path

from pipeline.testing import wait_for
from site_scheduler.testing import Site
from tests.site_scheduler.postgres import postgres_cluster, restart

#: Seconds the database is down: several of the scheduler's retries, well past a single blip.
DOWN_S = 4.0


def test_a_postgresql_restart_mid_run_is_ridden_out(tmp_path: Path) -> None:
    with postgres_cluster() as url, Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", db_url=url) as site:
        site.start_worker("w1")
        run_id = site.client.submit_probe(120)
        wait_for(lambda: sum(s["status"] == "done" for s in (site.client.run(run_id) or {"stages": []})["stages"])
                 >= 10, "the run under way", 60)
        restart(url, DOWN_S)
        assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler exited"
        assert site.wait(run_id, timeout=120)["status"] == "completed"
        assert site.scheduler.poll() is None, "the scheduler exited"
        log = (tmp_path / "logs" / "scheduler.log").read_text()
        assert "unavailable" in log, "the outage is in the scheduler's log"
        # The outbox has no gap and no double across the outage
        seqs = [event["seq"] for event in site.client.outbox(0)]
        assert seqs == list(range(1, len(seqs) + 1))
