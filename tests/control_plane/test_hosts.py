"""Host telemetry on real processes: agents report to a real centre; silence is judged as the issue says."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from control_plane.fleet import Fleet
from control_plane.testing import Centre
from ops_agent import keys
from ops_agent.testing import AgentProcess
from site_scheduler.testing import Site

#: Seconds between reports in these tests (the default is 5 s); offline comes after 3 of them.
INTERVAL_S = 1.0
HOSTS = ("h1", "h2", "h3")
#: Loose health thresholds: a busy test machine is not what these tests are about.
LOOSE = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]


@pytest.fixture
def fleet_of_three(tmp_path: Path) -> Iterator[tuple[Centre, dict[str, AgentProcess]]]:
    with Centre(data_dir=tmp_path / "centre", logs=tmp_path / "logs", interval_s=INTERVAL_S) as centre:
        data_dir = tmp_path / "site"
        data_dir.mkdir(mode=0o700)
        centre.add_site("t1", data_dir / "control.token")
        keys.init(tmp_path / "keys")
        agents = {host: AgentProcess(host, "t1", data_dir, tmp_path / host, keys.KeyFolder(tmp_path / "keys").bundle,
                                     tmp_path / "logs" / f"{host}.log",
                                     options=[*LOOSE, "--interval", "0.25", "--control", centre.address,
                                              "--report-interval", str(INTERVAL_S)])
                  for host in HOSTS}
        with Site(data_dir=data_dir, logs=tmp_path / "logs", options=["--control", centre.address]):
            try:
                with ThreadPoolExecutor(len(agents)) as starting:  # three interpreters start at once
                    list(starting.map(AgentProcess.start, agents.values()))
                yield centre, agents
            finally:
                for agent in agents.values():
                    if agent.process is not None:
                        os.kill(agent.process.pid, signal.SIGCONT)
                    agent.close()


def _states(fleet: Fleet) -> dict[str, str]:
    return {h.host: h.state for h in fleet.hosts()}


def test_a_killed_host_goes_offline_and_a_site_silenced_at_once_is_disconnected_not_offline(
        fleet_of_three: tuple[Centre, dict[str, AgentProcess]]) -> None:
    centre, agents = fleet_of_three
    centre.wait_until(lambda f: set(_states(f)) == set(HOSTS) and "offline" not in _states(f).values(),
                      "every host reporting", timeout=30)
    with centre.fleet() as fleet:
        [h1] = [h for h in fleet.hosts() if h.host == "h1"]
        assert h1.agent_address == agents["h1"].address, "the centre knows where to send h1's commands"

    agent = agents["h1"]
    assert agent.process is not None
    os.killpg(agent.process.pid, signal.SIGKILL)
    agent.process.wait(timeout=10)
    agent.process = None
    offline = centre.wait_until(lambda f: next((h for h in f.hosts() if h.host == "h1" and h.state == "offline"),
                                               None), "h1 offline", timeout=15)
    assert "intervals" in offline.reasons[0] and offline.silent_for_s > 3 * INTERVAL_S
    with centre.fleet() as fleet:
        assert _states(fleet)["h2"] in ("healthy", "degraded") and fleet.sites()[0].connection == "connected"
    # h1's silence is old news, h2 and h3 report on time: what follows is a new silence.
    centre.wait_until(lambda f: all(h.silent_for_s > 5 * INTERVAL_S if h.host == "h1" else h.silent_for_s < INTERVAL_S
                                    for h in f.hosts()), "h1 long silent, h2 and h3 fresh", timeout=30)

    # Every remaining host falls silent at once (frozen, as a partition would look): the centre
    # suspects itself, marks the site disconnected, and no host offline.
    for host in ("h2", "h3"):
        process = agents[host].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
    centre.wait_until(lambda f: _states(f)["h2"] == _states(f)["h3"] == "disconnected", "h2 and h3 disconnected",
                      timeout=15)
    with centre.fleet() as fleet:
        [site] = fleet.sites()
        assert site.connection == "disconnected" and "observer suspect" in site.reason
        h1 = next(h for h in fleet.hosts() if h.host == "h1")
        # Its silence began long before: still offline.
        assert h1.state == "offline", (h1, [(h.host, h.last_report_at) for h in fleet.hosts()], fleet.sites())
    # Held: still disconnected, never offline, many intervals later.
    with centre.fleet(now=time.time() + 20 * INTERVAL_S) as later:
        assert (_states(later)["h2"], _states(later)["h3"]) == ("disconnected", "disconnected")
    for host in ("h2", "h3"):
        process = agents[host].process
        assert process is not None
        os.kill(process.pid, signal.SIGCONT)
    centre.wait_until(lambda f: _states(f)["h2"] in ("healthy", "degraded") and f.sites()[0].connection == "connected",
                      "h2 back and the site connected", timeout=15)
