"""Inter-rater agreement: our alpha against the `krippendorff` package, and from judgements."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest

from app.domain.agreement import agreement_report, krippendorff_alpha
from app.domain.quality import refresh_quality
from app.models import Judgement, Prompt
from tests.helpers import api_key_for, create_task


def reference_alpha(units: list[list[float]], level: str) -> float:
    """The package's alpha; it takes a raters x units matrix with nan where nobody rated."""
    raters = max(len(values) for values in units)
    matrix = np.full((raters, len(units)), np.nan)
    for column, values in enumerate(units):
        matrix[: len(values), column] = values
    return krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_equals_the_reference_implementation(level, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 8, size=40)
    units = [
        [float(np.clip(value + rng.integers(-1, 2), 1, 7)) for _ in range(rng.integers(1, 5))]
        for value in truth
    ]
    assert krippendorff_alpha(units, level) == pytest.approx(reference_alpha(units, level))


def test_krippendorffs_own_worked_example():
    # Krippendorff (2011), section C: four coders, twelve units, nominal alpha = 0.743
    data = [
        [1, 1, None, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [None, 5, 5, 5],
        [None, None, 1, 1],
        [None, None, 3, None],
    ]
    units = [[value for value in unit if value is not None] for unit in data]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)


def test_perfect_agreement_is_one_and_no_pairable_unit_is_nan():
    assert krippendorff_alpha([[1, 1], [2, 2, 2], [3]], "nominal") == 1.0
    assert math.isnan(krippendorff_alpha([[1], [2]], "nominal"))


def test_the_report_reads_preferences_ratings_and_tags(client, db, settings, admin, make_user):
    raters = [make_user(username=f"r{n}") for n in range(3)]
    for number in range(4):
        task = create_task(db, overlap=3)
        db.get(Prompt, task.prompt_id).tags = ["code"] if number < 2 else ["chat"]
        a, b = (link.response_id for link in task.responses)
        for index, rater in enumerate(raters):
            ranking = [b, a] if (number == 3 and index == 2) else [a, b]  # one dissent
            db.add(
                Judgement(
                    task_id=task.id,
                    rater_id=rater.id,
                    ranking=ranking,
                    ratings={str(a): {"honesty": 6 + (index == 0)}, str(b): {"honesty": 2}},
                )
            )
    db.commit()
    report = agreement_report(db)
    expected = reference_alpha([[1, 1, 1]] * 3 + [[1, 1, -1]], "ordinal")
    assert report["preferences"] == {"alpha": pytest.approx(expected, abs=1e-4), "units": 4}
    # every "code" judgement says the same thing: no variation, so alpha is undefined
    assert report["by_tag"]["code"] == {"alpha": None, "units": 2}
    chat = reference_alpha([[1, 1, 1], [1, 1, -1]], "ordinal")
    assert report["by_tag"]["chat"]["alpha"] == pytest.approx(chat, abs=1e-4)
    honesty = reference_alpha([[7, 6, 6], [2, 2, 2]] * 4, "interval")
    assert report["aspects"]["honesty"]["alpha"] == pytest.approx(honesty, abs=1e-4)
    refresh_quality(db, settings)  # /api/stats reads the report stored by the last refresh
    db.commit()
    stats = client.get("/api/stats", headers=api_key_for(db, admin)).json()
    assert stats["judgements"] == 12 and stats["tasks"] == {"open": 4, "complete": 0}
    assert stats["agreement"]["preferences"]["units"] == 4
