"""How much each rater's judgments count: the one answer the TRL export (labeling/exporting.py) and the
reward model's dataset (rewardmodel/dataset.py) both use.

The project's judgment_weighting chooses:
  equal            every rater 1 (what every project did before);
  reliability      the rater's reliability from their latest RaterQuality row (MACE competence, in [0, 1]:
                   near 0 for random, always-left, adversarial and speeding raters);
  exclude_flagged  0 for a rater whose latest RaterQuality row is flagged, 1 otherwise.
Whatever the mode, a rater an admin excluded (RaterStanding.excluded, labeling/raters.py) weighs 0: an
exclusion takes their judgments out of training and export, and lifting it brings them back, since weights
are read afresh every time.

A rater without a reliability yet (no RaterQuality row, or one computed before they had judgments) weighs 1.
The figures are computed on a schedule, so a new rater's first judgments always arrive before their first
estimate: 0 would drop every new rater's work until the next computation (and, on a project whose figures
were never computed, all of it), while 1 is exactly the equal weighting the project had before; a careless
rater is down-weighted at the next computation, and can be flagged or excluded meanwhile.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from labeling.models import Project, RaterQuality
from labeling.raters import excluded_rater_ids


@dataclass(frozen=True)
class RaterWeights:
    """A weight per rater id: `of(rater_id)`; raters not in `weights` weigh 1."""

    mode: str  # Project.Weighting value
    weights: Mapping[int, float] = field(default_factory=dict)  # rater id -> weight, only where it is not 1
    excluded: frozenset[int] = frozenset()  # raters an admin excluded (weight 0, whatever the mode)

    def of(self, rater_id: int) -> float:
        return self.weights.get(rater_id, 1.0)

    @property
    def is_default(self) -> bool:
        """Equal weights and nobody excluded: every judgment counts once, as before weighting existed."""
        return self.mode == Project.Weighting.EQUAL and not self.excluded

    def description(self) -> dict:
        """What was used, for the record (a reward-model version's data snapshot)."""
        return {
            "mode": self.mode,
            "raters_excluded": len(self.excluded),
            # Weight 0 by the mode (flagged, or a reliability of 0), not counting the excluded.
            "raters_left_out": sum(1 for r, w in self.weights.items() if w == 0 and r not in self.excluded),
            "raters_down_weighted": sum(1 for w in self.weights.values() if 0 < w < 1),
        }

    def summary(self) -> str:
        """E.g. "equal", or "reliability (raters: 1 excluded, 3 down-weighted)"."""
        d = self.description()
        counts = [
            f"{d['raters_excluded']} excluded",
            f"{d['raters_left_out']} {'flagged, left out' if self.mode == 'exclude_flagged' else 'at weight 0'}",
            f"{d['raters_down_weighted']} down-weighted",
        ]
        keys = ("raters_excluded", "raters_left_out", "raters_down_weighted")
        said = [text for text, key in zip(counts, keys, strict=True) if d[key]]
        return self.mode + (f" (raters: {', '.join(said)})" if said else "")


def judgment_weights(*, project: Project) -> RaterWeights:
    """The weight of each rater's judgments in project, by its judgment_weighting (see the module docstring).
    One query for the exclusions, and one more for the reliability and exclude_flagged modes."""
    mode = project.judgment_weighting
    weights: dict[int, float] = {}
    if mode == Project.Weighting.RELIABILITY:
        # The report's vote weight: the reliability, but 0 below its floor or for a flagged rater
        # (report.rater_weights "reliability"); figures stored before it existed fall back to the reliability.
        rows = RaterQuality.objects.filter(project=project, reliability__isnull=False)
        for rater_id, stored, vote_weight in rows.values_list("rater_id", "reliability", "figures__vote_weight"):
            reliability = stored if vote_weight is None else float(vote_weight)
            if not 0.0 <= reliability <= 1.0:  # also catches NaN
                raise ValueError(f"Rater {rater_id}'s reliability {reliability!r} in {project} is not in [0, 1].")
            if reliability != 1.0:
                weights[rater_id] = reliability
    elif mode == Project.Weighting.EXCLUDE_FLAGGED:
        flagged = RaterQuality.objects.filter(project=project, flagged=True).values_list("rater_id", flat=True)
        weights = dict.fromkeys(flagged, 0.0)
    elif mode != Project.Weighting.EQUAL:
        raise ValueError(f"Unknown judgment weighting {mode!r} in {project}.")
    excluded = frozenset(excluded_rater_ids(project=project))
    weights.update(dict.fromkeys(excluded, 0.0))
    return RaterWeights(mode=str(mode), weights=weights, excluded=excluded)
