"""The agent's import boundaries: it uses ``protos`` and the site's public client only, and what a
control plane imports from it (client, envelope, keys) drags in neither the pipeline nor the site."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ops_agent

#: First-party packages, and which of their modules the agent may import.
FIRST_PARTY = {"cinefleet", "control_plane", "ops_agent", "pipeline", "protos", "site_scheduler", "tests"}
ALLOWED = {"ops_agent", "protos", "site_scheduler.client", "site_scheduler.config", "site_scheduler.errors"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (also inside functions and ``TYPE_CHECKING``), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_the_agent_imports_protos_and_the_sites_public_client_only() -> None:
    wrong = []
    for path in sorted(Path(ops_agent.__file__).parent.glob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top not in FIRST_PARTY:
                continue  # the standard library and third-party packages
            if not any(module == allowed or module.startswith(f"{allowed}.") for allowed in ALLOWED):
                # ``from site_scheduler import client`` names the package first, then the module
                if module in {"site_scheduler", "ops_agent", "protos"}:
                    continue
                wrong.append(f"{path.name}:{line}: {module}")
    assert wrong == []


def test_what_a_control_plane_imports_needs_neither_the_pipeline_nor_the_site() -> None:
    code = ("import sys, ops_agent.client, ops_agent.envelope, ops_agent.keys, protos.actions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'site_scheduler')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
