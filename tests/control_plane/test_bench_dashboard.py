"""``cinefleet bench dashboard`` run tiny: it seeds, signs in, fetches every page and prints its figures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from cinefleet.bench import dashboard
from cinefleet.cli import app
from control_plane.server import _HttpServer


def test_the_benchmark_times_every_page_beside_its_baselines(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    figures = dashboard.run_benchmark(workdir=tmp_path, runs=300, hosts=10, requests=3)
    printed = capsys.readouterr().out
    names = dashboard.pages({"pair": ("s/a", "s/b"), "run": "s/r"})
    for label in names:
        assert figures[f"{label} p95_ms"] >= figures[f"{label} p50_ms"] > 0, label
        assert label in printed
    assert figures["static file /static/dash.css p95_ms"] > 0 and figures["GET /api/v1/fleet (JSON) p95_ms"] > 0
    assert figures["worst_page_p95_ms"] == max(figures[f"{label} p95_ms"] for label in names)
    assert "300 runs, 1,800 stages" in printed and "ratio to the goal" in printed


def test_bad_options_are_refused_naming_them() -> None:
    result = CliRunner().invoke(app, ["bench", "dashboard", "--runs", "0"])
    assert result.exit_code == 2 and "--runs 0" in result.output


def test_the_centres_http_socket_sends_small_answers_at_once(tmp_path: Path) -> None:
    """TCP_NODELAY on the listening socket (accepted ones inherit it): asyncio does not set it on a socket
    whose proto is 0, and without it each answer waited for the client's delayed ACK (~40 ms)."""
    server = _HttpServer(FastAPI(), "127.0.0.1:0")
    try:
        assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        with socket.create_connection(server.socket.getsockname()) as client:
            accepted, _ = server.socket.accept()
            with accepted:
                assert client and accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.socket.close()
