"""The claims table's classification rows with the schedule probe: the probe's longest schedule
is shown beside the sweep, and the claims are judged there once each cell has 2 or more seeds
(verdicts checked against numbers worked out here by hand)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import claim_row as _claim  # noqa: E402

from reproduction.claims import claims_table  # noqa: E402
from reproduction.report import collect  # noqa: E402
from reproduction.runner import load_study  # noqa: E402


@pytest.mark.parametrize("seeds", [1, 2])
def test_classification_claims_are_judged_at_the_longest_probe_schedule(tmp_path, seeds):
    """The sweep (8 epochs): GN 5 points behind BN at 32 and BN +10 at 2. At 32 epochs GN is
    0.6 behind (noise hypot(0.3, 0.3) = 0.42, within 1 + noise) and BN's rise is 0.2 (within
    the noise). With one seed there the sweep's verdicts stand and the probe is shown beside
    them; with two seeds each the claims are judged at 32 epochs."""
    rows = [{"label": "BN", "batch": b, "n": 3, "mean": m, "std": 0.5}
            for b, m in ((32, 20.0), (4, 20.2), (2, 30.0))]  # fmt: skip
    rows += [{"label": "GN", "batch": b, "n": 3, "mean": 25.0, "std": 0.5} for b in (32, 2)]
    std = 0.3 if seeds > 1 else None

    def points(last):
        return [{"epochs": 8, "mean": 99.0, "std": 0.5, "n": 3},
                {"epochs": 16, "mean": 50.0, "std": None, "n": 1},
                {"epochs": 32, "mean": last, "std": std, "n": seeds}]  # fmt: skip

    schedule = [{"label": "BN", "batch": 32, "points": points(19.0)},
                {"label": "GN", "batch": 32, "points": points(19.6)},
                {"label": "BN", "batch": 2, "points": points(19.2)}]  # fmt: skip
    cls = tmp_path / "classification.json"
    cls.write_text(json.dumps({"rows": rows, "schedule": schedule}))
    study = load_study()
    text = claims_table(study, collect(study, tmp_path / "runs"), cls)
    at = f"at 32 epochs ({seeds} seed{'s' * (seeds > 1)}): "
    gn_vs_bn = _claim(text, "Classification: GN within")
    rises = _claim(text, "Classification: BN's error rises")
    flat = _claim(text, "Classification: GN's error")
    assert rises[2].endswith(f"; {at}19.0 → 19.2 % (32 → 2)")
    assert flat[2] == "25.0 → 25.0 % (32 → 2)"  # no GN 2-image probe runs: the sweep alone
    if seeds == 1:
        assert gn_vs_bn[2].endswith(f"; {at}GN 19.6 against BN 19.0 %")
        assert (gn_vs_bn[3], rises[3]) == ("does not agree", "partly")
    else:
        assert gn_vs_bn[2].endswith(f"; {at}GN 19.6 against BN 19.0 % (+0.6 ± 0.4)")
        assert (gn_vs_bn[3], rises[3]) == ("agrees", "does not agree")
