"""Blinded reader studies (engine; the app tab comes later): can readers tell real from synthetic?

- :mod:`.study`: create a study (balanced, shuffled, blinded sample; reader codes), serve blinded images,
  save answers as they are given (SQLite WAL under CHEXGEN_HOME).
- :mod:`.results`: accuracy with Wilson intervals and a binomial test, ROC AUC of confidence, finding
  sensitivity/specificity, Cohen's/Fleiss' kappa, quality (pure functions of the answers).
- :mod:`.export`: JSON/CSV export and results-store rows (kind ``reader-study``).
- ``python -m evaluators reader-study create|status|results|list``: :mod:`evaluators.cli.readerstudy`.
"""

from __future__ import annotations
