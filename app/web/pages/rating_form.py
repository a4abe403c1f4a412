"""The rater page's form, read into a `JudgementIn` (the same body the JSON API takes).

Two responses are compared with one choice (`preference`: `better:<id>`, `tie`, `all_bad`)
and a strength; three or four are ranked with a number per response (`rank_<id>`, equal
numbers tie). Ratings are `rating_<id>_<aspect>`, flags `flag_<id>` (several values).
"""

from __future__ import annotations

from itertools import groupby

from pydantic import ValidationError
from starlette.datastructures import FormData

from app.errors import InvalidInput
from app.schemas import JudgementIn


class FormProblem(InvalidInput):
    """A problem the rater can fix; `key` names the interface text that explains it."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(detail)
        self.key = key


def judgement_from_form(
    form: FormData, *, response_ids: list[int], aspects: list[str]
) -> JudgementIn:
    ranking, all_bad = _ranking(form, response_ids)
    body = {
        "ranking": ranking,
        "all_bad": all_bad,
        "strength": _integer(form.get("strength")),
        "ratings": _ratings(form, response_ids, aspects) or None,
        "flags": {
            response_id: flags
            for response_id in response_ids
            if (flags := [flag for flag in form.getlist(f"flag_{response_id}") if flag])
        }
        or None,
        "critique": _text(form.get("critique")),
        "rewrite": _text(form.get("rewrite")),
        "rewrite_of": _integer(form.get("rewrite_of")),
        "time_spent_ms": _integer(form.get("time_spent_ms")),
        "guideline_version": _integer(form.get("guideline_version")),
    }
    if len(response_ids) != 2 or isinstance(ranking[0], list):
        body["strength"] = None
    try:
        return JudgementIn.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def _ranking(form: FormData, response_ids: list[int]) -> tuple[list, bool]:
    if len(response_ids) == 2:
        choice = form.get("preference") or ""
        if choice in ("tie", "all_bad"):
            return [sorted(response_ids)], choice == "all_bad"
        best = _integer(choice.removeprefix("better:"))
        if best not in response_ids:
            raise FormProblem("rate.error.choose", "Choose which response is better.")
        return [best, *(rid for rid in response_ids if rid != best)], False
    ranks = {response_id: _integer(form.get(f"rank_{response_id}")) for response_id in response_ids}
    if any(rank is None for rank in ranks.values()):
        raise FormProblem("rate.error.rank_all", "Give every response a rank.")
    ordered = sorted(response_ids, key=lambda response_id: ranks[response_id])
    ranking = []
    for _, group in groupby(ordered, key=lambda response_id: ranks[response_id]):
        tied = sorted(group)
        ranking.append(tied if len(tied) > 1 else tied[0])
    return ranking, form.get("all_bad") == "on"


def _ratings(form: FormData, response_ids: list[int], aspects: list[str]) -> dict:
    ratings: dict[int, dict[str, int]] = {}
    for response_id in response_ids:
        for aspect in aspects:
            if (value := _integer(form.get(f"rating_{response_id}_{aspect}"))) is not None:
                ratings.setdefault(response_id, {})[aspect] = value
    return ratings


def _integer(value: object) -> int | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"Expected a whole number, got {value[:20]!r}") from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
