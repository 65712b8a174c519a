"""The agent harness is package code now (``ops_agent.testing``); this suite's tests import it from here."""

from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for

__all__ = ["AgentProcess", "wait_for"]
