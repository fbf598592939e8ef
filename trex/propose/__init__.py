"""Proposing: the one search space, the baseline proposers, the LLM Researcher.

* :mod:`trex.propose.space` — the search space, declared once; samplers, optuna distributions,
  the LLM's schema and prompt text and the distiller's dimensions are derived from it.
* :mod:`trex.propose.baselines` — the ``random`` and ``optuna`` proposers.
* :mod:`trex.propose.researcher` — the ``llm`` proposer, its tools, and :func:`propose`, the
  Researcher's one entry point for any proposer.
"""
from __future__ import annotations

from trex.propose import space
from trex.propose.baselines import (LR, PROPOSERS, RANKS, SCHEDULES, TARGETS, Proposal, finish, propose_optuna,
                                    propose_random)
from trex.propose.researcher import PlanChoice, make_client, prior_insights, propose, propose_llm
from trex.propose.space import DEFAULT_TRIAL_STEPS, SPACE

__all__ = ["DEFAULT_TRIAL_STEPS", "LR", "PROPOSERS", "PlanChoice", "Proposal", "RANKS", "SCHEDULES", "SPACE",
           "TARGETS", "finish", "make_client", "prior_insights", "propose", "propose_llm", "propose_optuna",
           "propose_random", "space"]
