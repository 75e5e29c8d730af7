"""The comparison engine for issue #20: the same mentions as the rule labeler, with negspacy's NegEx deciding
negation and uncertainty (instead of the labeler's own list-aware scope rules).

    /path/to/venv/bin/python scripts/labeler_accuracy.py --engine negspacy --csv tests/labeler_report_sentences.csv

Needs ``spacy==3.8.*`` and ``negspacy==1.1.0`` (not in requirements: the rules won, see the README). Mentions
(including the heart/mediastinum subjects that the rule labeler found qualified, and CheXpert's other
findings) come from :mod:`evaluators.labeler`; spaCy's sentencizer splits sentences; one ``negex`` pipe with
negspacy's ``en_clinical`` termset plus radiology terms ("clear of", "... are not seen", "within normal
limits") marks negation, a second one with CheXpert's hedges as its terms marks uncertainty. A negated
mention is 0, else an uncertain one -1, else 1; labels aggregate and No Finding is derived as in the labeler.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluators import labeler as L  # noqa: E402
from evaluators.pathologies import INDEX, NEGATIVE, POSITIVE, UNCERTAIN, empty_labels  # noqa: E402

NEG_PRE_EXTRA = ["clear of", "free of", "resolution of", "interval resolution of", "removal of", "no new",
                 "no definite", "no focal", "no evidence of", "no radiographic evidence of", "normal",
                 "no residual", "without evidence of", "resolved", "interval removal of"]
NEG_FOLLOW_EXTRA = ["is normal", "are normal", "is unremarkable", "are unremarkable", "within normal limits",
                    "are within normal limits", "is within normal limits", "within limits of normal",
                    "appear within limits of normal", "is not seen", "are not seen", "not seen", "not identified",
                    "is not identified", "has resolved", "have resolved", "resolved", "has cleared", "removed",
                    "has been removed", "is absent", "are absent", "not present", "are not present",
                    "is no longer seen", "no longer seen", "at the upper limits of normal", "top normal",
                    "is ruled out", "is not enlarged", "not enlarged", "is not widened", "not widened",
                    "upper limits of normal", "is upper limits of normal", "top-normal", "no longer visualized",
                    "is no longer visualized", "are unchanged and normal", "normal in size", "is normal in size"]
UNC_PRE = ["possible", "possibly", "probable", "probably", "questionable", "question of", "suspicious for",
           "concerning for", "concern for", "worrisome for", "suspect", "suspected", "may", "might", "could",
           "cannot exclude", "can not exclude", "cannot rule out", "cannot be excluded", "differential",
           "versus", "vs", "borderline", "likely", "suggestive of", "suggest", "suggests", "consider",
           "presumed", "presumably", "equivocal", "indeterminate", "difficult to exclude", "?", "or",
           "rather than", "more likely than"]
UNC_FOLLOW = ["cannot be excluded", "can not be excluded", "is not excluded", "not excluded",
              "cannot be ruled out", "is possible", "is likely", "is difficult to exclude", "difficult to exclude",
              "is a consideration", "could be present", "if present", "versus", "vs", "is suspected",
              "could also have this appearance", "or", "is borderline enlarged", "borderline enlarged",
              "is possibly mildly enlarged", "possibly enlarged", "may be mildly enlarged", "questionably widened",
              "cannot be completely excluded", "?", "more likely than"]


class NegspacyLabeler:
    def __init__(self) -> None:
        import spacy
        from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
        from negspacy.termsets import termset

        ts = termset("en_clinical")
        neg = ts.get_patterns()
        drop = {"versus", "cannot", "evaluate for", "can't", "cant", "doubt", "not", "unlikely"}
        neg["preceding_negations"] = [t for t in neg["preceding_negations"] if t not in drop] + NEG_PRE_EXTRA
        neg["following_negations"] = [t for t in neg["following_negations"] if t not in drop] + NEG_FOLLOW_EXTRA
        neg["pseudo_negations"] += ["not excluded", "cannot be excluded", "not be excluded", "cannot exclude"]
        neg["termination"] += [";", "there is", "there are", "otherwise"]
        unc = {"pseudo_negations": ["most likely", "no change", "no significant change", "no interval change"],
               "preceding_negations": UNC_PRE, "following_negations": UNC_FOLLOW,
               "termination": neg["termination"]}
        self.labels = [*L.PATHOLOGIES, L.OTHER]
        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        self.neg = self.nlp.add_pipe("negex", name="negex", config={"neg_termset": neg, "ent_types": []})
        self.unc = self.nlp.add_pipe(
            "negex", name="hedge", config={"neg_termset": unc, "ent_types": [], "extension_name": "hedged"}
        )

    def mentions(self, text: str) -> list[tuple[str, int, int, bool]]:
        """(label, start, end, capped): capped mentions (heart failure's Cardiomegaly, aspiration, blunting,
        vascular prominence) are at most uncertain, as in the rule labeler."""
        spans = []
        for m in L._analyse(text)[0]:
            a, b = m.start, m.end
            if m.label in L._SUBJECT_RE:  # anatomy: the subject only, its qualifier is a cue
                s = L._SUBJECT_RE[m.label].search(text.lower(), a, b)
                if s:
                    a, b = s.span()
            capped = "at most uncertain" in m.rule or "heart failure" in m.rule
            spans.append((m.label, a, b, capped))
        return spans

    def label(self, text: str) -> np.ndarray:
        from spacy.util import filter_spans

        if not isinstance(text, str) or not text.strip():
            return empty_labels()
        low = L._blank_sections(text.lower())
        doc = self.nlp.make_doc(low)
        doc = self.nlp.get_pipe("sentencizer")(doc)
        ents, by_span = [], {}
        for lab, a, b, capped in self.mentions(text):
            sp = doc.char_span(a, b, label="M", alignment_mode="expand")
            if sp is not None:
                ents.append(sp)
                by_span.setdefault((sp.start, sp.end), []).append((lab, capped))
        doc.ents = filter_spans(ents)
        doc = self.unc(self.neg(doc))
        out, other = empty_labels(), False
        for e in doc.ents:
            v = NEGATIVE if e._.negex else UNCERTAIN if e._.hedged else POSITIVE
            for lab, capped in by_span.get((e.start, e.end), []):
                w = UNCERTAIN if capped and v == POSITIVE else v
                if lab == L.OTHER:
                    other = other or w != NEGATIVE
                    continue
                i = INDEX[lab]
                if math.isnan(out[i]) or L._PRECEDENCE[w] > L._PRECEDENCE[float(out[i])]:
                    out[i] = w
        if any(c.isalpha() for c in low):
            f = out[L._FINDING_IDX]
            out[L._NO_FINDING] = NEGATIVE if other or np.any((f == 1) | (f == -1)) else POSITIVE
        return out
