"""Events the labeling core announces. Listeners live in other apps
(rewardmodel.triggers); labeling never imports them."""

from django.dispatch import Signal

# Sent after the transaction that stored a judgment commits.
# kwargs: judgment_id: int, project_id: int, comparison_id: int
judgment_recorded = Signal()
