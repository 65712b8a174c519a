"""The alert configuration: defaults without a file, and every bad file refused naming file, line, field, value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.alerts.config import AlertConfig, ConfigError, load, parse

GOOD = """\
public_url: https://centre.example
dedup_window: 5m
flap_wait: 45s
types:
  disk_full: {severity: critical, threshold: 0.8}
  excessive_retries: {threshold: 5}
receivers:
  - name: phone
    urls: ["ntfy://ntfy.example/oncall"]
    fallback: mail
  - name: mail
    urls: ["json://hooks.example/alerts"]
routes:
  - match: {type: [host_down], site: [s1]}
    receivers: [phone]
    continue: true
    escalation:
      - after: 10m
        receivers: [mail]
    repeat: 2
  - receivers: [mail]
maintenance:
  - site: s2
    start: 2026-12-01T02:00:00Z
    end: 2026-12-01T04:00:00Z
deadman:
  url: https://hc.example/ping/abc
  interval: 1m
"""


def test_embedded_defaults_run_without_a_file() -> None:
    config = load(None)
    assert config == AlertConfig()
    assert config.dedup_window == 300 and config.receivers == [] and config.routes == []
    assert config.severity("host_down") == "critical" and config.severity("job_failed") == "warning"
    assert [(r.source, r.targets) for r in config.inhibit] == [("host_down", ["job_failed", "disk_full"]),
                                                               ("site_disconnected", ["host_down"])]


def test_a_full_file_is_read_with_its_durations_and_overrides() -> None:
    config = parse(GOOD, "alerts.yaml")
    assert (config.dedup_window, config.flap_wait) == (300, 45)
    assert config.severity("disk_full") == "critical" and config.threshold("disk_full") == 0.8
    assert config.threshold("excessive_retries") == 5 and config.severity("excessive_retries") == "warning"
    assert config.routes[0].continue_ and config.routes[0].escalation[0].after == 600 and config.routes[0].repeat == 2
    assert config.deadman is not None and config.deadman.interval == 60
    assert config.link("/runs/s1/r1") == "https://centre.example/runs/s1/r1"


@pytest.mark.parametrize(("edit", "line", "words"), [
    (("flap_wait: 45s", "flap_wait: soon"), 3, ["flap_wait", "'soon'", "30s"]),
    (("disk_full: {severity: critical", "disk_full: {severity: loud"), 5, ["types.disk_full.severity", "'loud'"]),
    (("  excessive_retries:", "  excessive_retry:"), 6, ["types.excessive_retry", "excessive_retries"]),
    (("    fallback: mail", "    fallback: pager"), 10, ["receivers.0.fallback", "'pager'", "name of a receiver"]),
    (('urls: ["json://hooks.example/alerts"]', 'urls: ["nosuch://x/y"]'), 12,
     ["receivers.1.urls.0", "nosuch://", "apprise URL"]),
    (("    receivers: [phone]", "    receivers: [phone, sms]"), 15, ["routes.0.receivers.1", "'sms'"]),
    (("    repeat: 2", "    repeat: -1"), 20, ["routes.0.repeat", "-1"]),
    (("    end: 2026-12-01T04:00:00Z", "    end: 2026-12-01T01:00:00Z"), 23, ["maintenance.0", "not after start"]),
    (("  url: https://hc.example/ping/abc", "  url: hc.example"), 27, ["deadman.url", "'hc.example'"]),
    (("dedup_window: 5m", "dedup_windo: 5m"), 2, ["dedup_windo", "Extra inputs"]),
    (("  - receivers: [mail]", "  - receivers: [mail"), 22, ["not valid YAML"]),  # where the parser noticed
])
def test_a_bad_file_names_its_line_field_value_and_expectation(edit: tuple[str, str], line: int,
                                                               words: list[str]) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(ConfigError) as refused:
        parse(text, "alerts.yaml")
    message = str(refused.value)
    assert message.startswith(f"alerts.yaml: line {line}: "), message
    for word in words:
        assert word in message, (word, message)


def test_alerts_serve_refuses_a_bad_file_before_doing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yaml"
    bad.write_text(GOOD.replace("flap_wait: 45s", "flap_wait: -3"))
    control = tmp_path / "centre"
    control.mkdir()
    result = subprocess.run([sys.executable, "-m", "cinefleet", "alerts", "serve", "--control-dir", str(control),
                             "--config", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert f"{bad}: line 3: flap_wait: value -3" in result.stderr
    assert list(control.iterdir()) == [], "nothing written"
    missing = subprocess.run([sys.executable, "-m", "cinefleet", "alerts", "serve", "--control-dir", str(control),
                              "--config", str(tmp_path / "absent.yaml")], capture_output=True, text=True, timeout=60,
                             check=False)
    assert missing.returncode == 2 and "absent.yaml: cannot be read" in missing.stderr


def test_the_documented_example_is_a_valid_configuration() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "alerts.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse(example, "docs/alerts.md")
    assert [r.name for r in config.receivers] == ["oncall", "lead", "mail"]
    assert config.budgets == {"tenant-a": 200.0} and config.backlog() == 50000
