"""Escalation: a task whose raters disagree gets one more rater instead of completing.

When the judgement that fills a task's last slot arrives, the task's pair agreement is
measured; below `low_agreement_threshold` the task gets one more slot (at most
`max_extra_judgements` times) and stays open. This runs inside `record_judgement`'s
transaction, under the task's row lock, so the count and the extra slot change together.
Gold tasks are never escalated: they stay open for every rater anyway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import fmean

from sqlalchemy import Connection, bindparam, select

from app.config import Settings
from app.domain.preferences import expand_ranking, is_current
from app.models import Judgement


@dataclass(frozen=True)
class Escalation:
    """When a completed task gets one more rater."""

    threshold: float
    """Pair agreement below which the task gets another rater (0 never escalates)."""
    max_extra: int
    """Raters one task may gain this way, at most."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Escalation:
        return cls(settings.low_agreement_threshold, settings.max_extra_judgements)


def pair_agreement(rankings: Sequence[list]) -> float | None:
    """How much a task's raters agree: for each pair of its responses, the share of rater pairs
    that give it the same verdict (better, worse or tied), averaged over the response pairs.

    This is the per-item observed agreement of Fleiss' kappa, one item per response pair. With
    two raters it is simply the share of response pairs they order the same way; with three
    and a 2-1 split on a pairwise task it is 1/3. None with fewer than two rankings.
    """
    if len(rankings) < 2:
        return None
    verdicts = [_pair_verdicts(ranking) for ranking in rankings]
    raters = len(verdicts)
    shares = []
    for pair in verdicts[0]:
        counts = Counter(verdict[pair] for verdict in verdicts).values()
        shares.append(sum(n * (n - 1) for n in counts) / (raters * (raters - 1)))
    return fmean(shares) if shares else None


def _pair_verdicts(ranking: list) -> dict[tuple[int, int], int]:
    """(low id, high id) -> 1 when the lower id is ranked better, -1 when worse, 0 when tied."""
    responses = sorted(
        item for entry in ranking for item in (entry if isinstance(entry, list) else [entry])
    )
    verdicts = dict.fromkeys(combinations(responses, 2), 0)
    for better, worse, _ in expand_ranking(ranking):
        verdicts[tuple(sorted((better, worse)))] = 1 if better < worse else -1
    return verdicts


def needs_another_rater(
    connection: Connection,
    *,
    task_id: int,
    extra_judgements: int,
    new_ranking: list,
    escalation: Escalation,
) -> bool:
    """Whether a task whose last slot `new_ranking` is filling gets one more slot, because its
    raters disagree. The caller holds the task's row lock and has not stored `new_ranking` yet."""
    if extra_judgements >= escalation.max_extra or escalation.threshold <= 0:
        return False
    stored = connection.scalars(_CURRENT_RANKINGS, {"task": task_id}).all()
    agreement = pair_agreement([*stored, new_ranking])
    return agreement is not None and agreement < escalation.threshold


_CURRENT_RANKINGS = select(Judgement.ranking).where(
    Judgement.task_id == bindparam("task"), is_current()
)
"""Built once: building it per submit (an aliased correction chain) cost more than running it."""
