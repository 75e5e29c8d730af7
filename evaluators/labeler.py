"""Rule labeler: free-text report or prompt -> the 14 CheXpert labels (1, 0, -1, NaN).

In the spirit of the CheXpert / NegBio labeler, but small enough to read in one sitting:

1. Sections that do not describe the image (INDICATION:, HISTORY:, COMPARISON:, TECHNIQUE: ...) are
   blanked out; FINDINGS: and IMPRESSION: are kept.
2. The text is split into sentences, and each sentence into clauses at words that start a new
   thought ("but", "however", "although", "which", ";", "there is" ...). Negation and uncertainty
   cues never reach across a clause.
3. Mentions are found per label with word-boundary regexes (synonyms, e.g. "blunting of the
   costophrenic angle" for Pleural Effusion). Heart and mediastinum are special: "heart size" is
   only a mention once qualified ("is enlarged" -> 1, "is normal" -> 0, "borderline" -> -1).
4. Each mention takes the status of the nearest cue before it in its clause ("no", "without",
   "possible", "cannot exclude", "?" ...) or, failing that, of a cue right after it in its comma
   segment ("... is not seen", "... cannot be excluded", "... has resolved"). A pre-cue stops at a
   comma or "and" that opens a new finding (", small ...", "and the ..."), and "suggest"-type
   cues inside a negation stay negative ("no consolidation to suggest pneumonia" -> 0).
5. Mentions of one label are merged with CheXpert's precedence: positive > uncertain > negative.
6. No Finding is 1 when the text has content and no other label except Support Devices is
   positive or uncertain, else 0 (CheXpert's rule; an uncertain finding makes it 0 even after
   "no acute cardiopulmonary process").

Everything is pure Python ``re`` with regexes compiled once; labelling a prompt takes well under a millisecond.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .pathologies import INDEX, N_LABELS, NEGATIVE, PATHOLOGIES, POSITIVE, UNCERTAIN, empty_labels

if TYPE_CHECKING:
    import pandas as pd

STATUS_NAMES = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
_PRECEDENCE = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
_NO_FINDING = INDEX["No Finding"]
# Labels whose positive or uncertain value rules out "No Finding" (all but itself and Support Devices).
_FINDING_IDX = [INDEX[p] for p in PATHOLOGIES if p not in ("No Finding", "Support Devices")]

# --------------------------------------------------------------------------------------------- mentions
# Direct mentions: a match is a mention of the label; its status comes from the cues around it.
_MENTIONS: dict[str, list[str]] = {
    "Atelectasis": [
        r"atelecta\w*",
        r"(?<!vertebral )(?<!compression )(?<!body )collapsed?",
    ],
    "Cardiomegaly": [
        r"cardiomegaly",
        r"cardiac enlargement",
        r"enlargement of the (?:heart|cardiac silhouette)",
    ],
    "Consolidation": [r"consolidat\w*"],
    "Edema": [
        r"(?<!soft tissue )(?<!subcutaneous )(?:(?:pulmonary|interstitial|alveolar) )?o?edema",
        r"(?:(?:pulmonary )?vascular |pulmonary )?congestion",
        r"(?:pulmonary )?vascular engorgement",
        r"cephalization",
        r"kerley b lines",
        r"fluid overload",
        r"(?:congestive )?heart failure",
        r"chf",
    ],
    "Enlarged Cardiomediastinum": [
        r"enlarged cardiomediastinum",
        r"(?:cardio)?mediastinal (?:widening|enlargement)",
        r"widening of the (?:superior )?mediastinum",
        r"enlargement of the (?:cardio)?mediastinal (?:silhouette|contours?)",
        r"(?:prominence|widening|enlargement) of the (?:superior )?(?:cardio)?mediastinum",
    ],
    "Fracture": [r"fractur\w*", r"fx"],
    "Lung Lesion": [
        r"(?<!calcified )(?:pulmonary |lung )?nodul(?:e|es|arity)(?! shadows?)",
        r"nodular (?:densit(?:y|ies)|opacit(?:y|ies)|opacification|lesions?)",
        r"(?:pulmonary |lung )?mass(?:es)?(?! effect)",
        r"(?<!bony )(?<!osseous )(?<!lytic )(?<!sclerotic )(?<!skin )lesions?",
        r"tumou?rs?",
        r"neoplasms?",
        r"malignan\w*",
        r"(?<!osseous )(?<!bony )(?<!skeletal )(?<!bone )metasta\w+",
        r"carcinoma",
    ],
    "Lung Opacity": [
        r"opaci\w+",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|process)",
        r"(?<!calcified )(?<!bone )(?<!nodular )(?<!soft tissue )(?<!tubular )(?<!linear density )densit(?:y|ies)",
        r"(?<!pleural )(?<!pleural-parenchymal )(?<!pleuroparenchymal )(?<!pleural parenchymal )scar(?:s|ring)?",
        r"(?:increased|prominent|coarse(?:ned)?) interstitial markings",
        r"(?:bronchial |peribronchial )?wall thickening",
        r"reticula(?:r|tion)\w*",
        r"haziness",
        r"hazy",
        r"ground[- ]glass",
    ],
    "Pleural Effusion": [
        r"(?<!pericardial )(?<!joint )(?:pleural )?effusions?",
        r"pleural fluid",
        r"hydro(?:pneumo)?thorax",
        r"fluid (?:in|within) the (?:\w+ )?(?:fissures?|pleural space)",
        r"layering fluid",
    ],
    "Pleural Other": [
        r"pleural (?:thickening|plaques?|scarring|calcifications?)",
        r"thickening of the pleura",
        r"fibrothorax",
        r"(?<!cystic )fibros[ie]s",
        r"fibrotic changes?",
        r"pleural[- ]parenchymal scar(?:s|ring)?|pleuroparenchymal scar(?:s|ring)?",
        r"calcified plaques?",
        r"apical (?:pleural )?caps?",
    ],
    "Pneumonia": [
        r"pneumoni(?:a|as|c|tis)",
        r"(?:infectious|inflammatory) process",
        r"infectious",
        r"infections?",
    ],
    "Pneumothorax": [r"(?:hydro)?pneumothora(?:x|ces)", r"pleural air", r"ptx"],
    "Support Devices": [
        r"(?:(?:endotracheal|et|tracheostomy|trach|nasogastric|ng|orogastric|og|feeding|enteric|dobhoff"
        r"|chest|gastrostomy|drainage|thoracostomy) )?tubes?",
        r"ett",
        r"dobhoff",
        r"tracheostomy",
        r"(?<!kerley b )(?<!pleural )(?<!septal )(?<!fold )(?:(?:central venous|central|picc|venous|arterial"
        r"|ij|subclavian|jugular|dialysis|swan[- ]ganz) )?lines?",
        r"(?:(?:central venous|venous|picc|dialysis|hemodialysis|pigtail|swan[- ]ganz|pulmonary artery) )?"
        r"catheters?",
        r"picc",
        r"pacemakers?",
        r"pacers?",
        r"(?:(?:pacer|pacemaker|pacing|ekg|ecg|monitoring|cardiac|epicardial) )?leads",
        r"(?:(?:sternotomy|sternal|epicardial|pacing) )?wires",
        r"(?:(?:surgical|vascular|cholecystectomy) )?clips",
        r"(?:orthopedic |surgical |spinal |fixation )?hardware",
        r"(?:fixation |surgical )?(?:plates?(?![- ]?like)|screws)",
        r"(?:embolization )?coils?",
        r"(?:cardiac )?defibrillator",
        r"a?icd",
        r"stents?",
        r"port-a-cath|portacath|mediport|ports?",
        r"(?:(?:chest|surgical|pleural) )?drains?",
        r"(?:prosthetic|mechanical|replacement) (?:aortic |mitral )?valves?",
        r"valve replacement",
        r"(?:support )?devices?",
        r"electrodes",
        r"(?:intra-?aortic )?balloon pump|iabp|lvad|loop recorder",
        r"cannula\w*",
    ],
}


def _alt(patterns: Iterable[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


_MENTION_RE = {label: re.compile(rf"\b(?:{_alt(pats)})\b") for label, pats in _MENTIONS.items()}

# Mentions that are at most uncertain for their label (an unnegated mention is -1, a negated one 0):
# "aspiration" (Pneumonia), blunting of a costophrenic angle (a small effusion or pleural thickening).
_CAPPED: dict[str, list[str]] = {
    "Edema": [r"(?:pulmonary )?vascular (?:prominence|indistinctness)|indistinct(?:ness of the)? pulmonary vessels"],
    "Pneumonia": [r"(?<!no )aspiration(?! pneumonia)"],
    "Pleural Effusion": [
        r"blunt\w* of (?:the )?(?:\w+ ){0,2}costophrenic (?:angles?|sulc\w+)",
        r"(?:costophrenic (?:angles?|sulc\w+)|cp angles?) (?:is |are |remains? )?(?:\w+ )?blunt\w*",
        r"(?:costophrenic|cp) (?:angle )?blunting",
    ],
}
_CAPPED_RE = {label: re.compile(rf"\b(?:{_alt(pats)})\b") for label, pats in _CAPPED.items()}
# Heart failure is Edema and, when not negated, an uncertain Cardiomegaly (CheXpert's aggregation rule).
_HEART_FAILURE_RE = re.compile(r"\b(?:(?:congestive )?heart failure|chf)\b")

# Findings outside the 14 labels (CheXpert's "no finding" mention list, curated): unnegated, they make
# No Finding 0 ("calcified granuloma", "degenerative changes of the spine", "emphysema", "hiatal hernia").
OTHER = "Other finding"
_OTHER_FINDINGS = [
    r"(?:subcutaneous |bullous )?emphysema(?:tous)?",
    r"copd",
    r"hyper-?(?:inflat|expan)\w*",
    r"bullae|bullous|blebs?",
    r"granulom\w*",
    r"calcified (?:nodules?|(?:\w+ ){0,2}(?:lymph )?nodes?|densit(?:y|ies))",
    r"calcifi\w+",
    r"atherosclero\w+",
    r"degenerat\w+",
    r"spondylo\w+|osteophyt\w+",
    r"\w*scolio\w+|kyphosis|kyphotic",
    r"(?:hiatal |hiatus )?hernias?",
    r"elevat\w+ (?:of )?(?:the )?(?:\w+ )?hemidiaphragm|(?:\w+ )?hemidiaphragm is elevated"
    r"|elevated (?:\w+ )?hemidiaphragm",
    r"eventration",
    r"pneumomediastinum|pneumoperitoneum|free air",
    r"osteopenia|demineraliz\w+",
    r"deformit(?:y|ies)",
    r"volume loss",
    r"contusions?|hemorrhage|hematoma",
    r"bronchiectasis|bronchitis|bronchiolitis|airways? disease|peribronchial (?:cuffing|thickening)",
    r"cephalization",
    r"pulmonary (?:arterial )?hypertension",
    r"(?:hilar |mediastinal )?(?:lymphadenopathy|adenopathy)",
    r"(?:shift|deviation) of the (?:mediastinum|trachea)|(?:mediastinal|tracheal) (?:shift|deviation)",
]
_OTHER_RE = re.compile(rf"\b(?:{_alt(_OTHER_FINDINGS)})\b")

# Anatomy that is only a mention once qualified: label -> (subject, positive qualifiers).
# Negative ("normal", "within normal limits") and uncertain ("borderline") qualifiers are shared.
_ANATOMY: dict[str, tuple[str, str]] = {
    "Cardiomegaly": (
        r"heart(?: size)?(?! failure)|cardiac (?:silhouette|size|contours?|shadow|dimensions?|outline)|size of the heart"
        r"|cardiac(?= and mediastinal)",
        r"enlarged|enlargement|large|increased|prominent|prominence|big",
    ),
    "Enlarged Cardiomediastinum": (
        r"(?:superior )?mediastinum|cardiomediastinum"
        r"|(?:cardio)?mediastinal (?:and hilar )?(?:silhouettes?|contours?|width|shadow)",
        r"widened|widening|wide|enlarged|enlargement|prominent|increased",
    ),
}
_NEG_QUAL = (
    r"normal(?:[- ]sized?)?|within (?:the )?(?:normal limits|limits of normal)|unremarkable"
    r"|(?:at )?(?:the )?(?:upper|high) limits? of normal|top[- ]normal"
)
_UNC_QUAL = r"borderline(?: (?:enlarged|large|widened|prominent)| size of(?: the)?)?"
_SUBJECT_RE = {label: re.compile(rf"\b(?:{subj})\b") for label, (subj, _) in _ANATOMY.items()}
_QUAL_RE = {
    label: re.compile(rf"\b(?:(?P<unc>{_UNC_QUAL})|(?P<neg>{_NEG_QUAL})|(?P<pos>{pos}))\b")
    for label, (_, pos) in _ANATOMY.items()
}
_PRE_QUAL_RE = {
    label: re.compile(rf"\b(?:(?P<unc>{_UNC_QUAL})|(?P<neg>{_NEG_QUAL})|(?P<pos>{pos}))[\s-]+$")
    for label, (_, pos) in _ANATOMY.items()
}
# Words allowed between an anatomic subject and its qualifier ("heart size and mediastinal contours are normal").
_FILLER = frozenset(
    re.findall(
        r"[a-z]+",
        """is are was were appears appear appearing remains remain remained seems seem to be been has have become
    becomes again still now not possibly probably likely may might could mildly moderately severely markedly
    massively slightly minimally mild moderate severe substantially significantly at the a upper top limits
    limit of and or hilar mediastinal cardiomediastinal contours contour silhouette silhouettes heart cardiac
    size within stable unchanged overall otherwise grossly also in hila hilum lungs lung pulmonary vasculature
        vascularity mediastinum cardiomediastinum questionably perhaps somewhat potentially vascular markings
        engorgement congestion pleural surfaces both""",
    )
)
_ANY_SUBJECT_RE = re.compile(rf"\b(?:{_alt(subj for subj, _ in _ANATOMY.values())})\b")

# Phrases that state a normal study; reported by explain(), and No Finding follows the rule above.
_NORMAL_STUDY_RE = re.compile(
    r"\b(?:no acute (?:cardiopulmonary|intrathoracic|cardiothoracic|pulmonary|chest) "
    r"(?:process|abnormalit(?:y|ies)|disease|findings?|pathology)"
    r"|no acute (?:process|findings?|abnormalit(?:y|ies)|disease)"
    r"|normal chest(?: radiographs?| x-?rays?| study| examination| films?)?"
    r"|(?:unremarkable|normal) (?:chest )?(?:radiograph|study|examination)"
    r"|no (?:radiographic )?evidence of (?:acute )?cardiopulmonary disease)\b"
)

# ------------------------------------------------------------------------------------------------- cues
# Cues before a mention ("no effusion", "possible effusion").
_NEG_PRE = [
    r"no(?! (?:significant |interval |appreciable |substantial |definite |major )?"
    r"(?:change|increase|worsening|progression|improvement|decrease|difference)\b)",
    r"without(?! (?:significant |interval )?change\b)",
    r"free of",
    r"negative for",
    r"clear of",
    r"absence of",
    r"absent",
    r"resolution of",
    r"resolved",
    r"interval clearing of",
    r"removal of",
    r"not",
    r"never",
    r"nor",
    r"neither",
    r"rule[sd] out",
    r"exclude[sd]?",
]
_UNC_PRE = [
    r"possibl[ey]",
    r"may",
    r"might",
    r"could",
    r"(?<!most )(?<!very )(?<!highly )likely",
    r"unlikely",
    r"probabl[ey]",
    r"presum\w+",
    r"versus",
    r"vs\b\.?",
    r"differential",
    r"consider(?:ed|ation)?",
    r"can ?not (?:entirely |completely )?(?:exclude|rule out)",
    r"can't (?:exclude|rule out)",
    r"difficult to exclude",
    r"indeterminate",
    r"equivocal",
    r"borderline",
    r"uncertain",
    r"perhaps",
    r"potential(?:ly)?",
    r"possibility",
    r"question(?:able|ably|ed)?",
    r"(?:to )?rule out|r/o|to exclude",
    r"(?:more |less )?likely than|rather than",
    r"evaluat\w* for|eval for|assess\w* for",
    r"not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)",
]
# Evidential uncertainty: inside a negation it stays negative ("no opacity to suggest pneumonia").
_EVID_PRE = [
    r"suggest\w*",
    r"suspect\w*",
    r"suspicious(?: for)?",
    r"concerning(?: for)?",
    r"concern for",
    r"worrisome(?: for)?",
    r"indicat\w+",
]
# Cues after a mention, in the same comma segment ("effusion has resolved", "pneumonia is not excluded").
_NEG_POST = [
    r"(?:(?:is|are|was|were|has been|have been) )?(?:not|no longer) (?:definitely |convincingly "
    r"|currently )?(?:seen|identified|present|visualized|visible|appreciated|evident|demonstrated|detected|noted"
    r"|apparent|re-?demonstrated)",
    r"(?:(?:has|have) (?:since |now |completely |nearly )?)?(?:resolved|cleared)",
    r"(?:is|are|appears?|remains?) (?:now )?(?:absent|normal|unremarkable|within normal limits|clear(?! of)|negative)",
    r"(?:(?:is|are|appears?|remains?) )?(?:grossly |otherwise )?within (?:the )?(?:limits of normal|normal limits)",
    r"(?:is|are|has been|have been) (?:excluded|ruled out)",
    r"(?:(?:has|have) been )?removed",
    r"removal",
    r":\s*(?:none|negative|absent)",
]
# A hedge at the end of a clause that covers all of it ("pleural effusions are small, if present").
_WIDE_POST_RE = re.compile(r"\bif (?:any|present)\b")
_UNC_POST = [
    r"(?:(?:is|are|was|were) )?not (?:well|clearly) (?:seen|visualized|evaluated|assessed)",  # CheXpert
    r"(?:can ?not|can't|could not|may not) be (?:entirely |completely |totally |definitely )?(?:excluded|ruled out)",
    r"(?:(?:is|are) )?not (?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"(?:is|are) (?:also )?(?:more |most |less )?(?:possible|likely|probable|suspected|questioned|questionable"
    r"|a possibility|a consideration|considered|not excluded)(?=\s*(?:$|[,.;:?]|than\b))",
    r"(?:may|might|could) (?:also )?be (?:present|seen)",
    r"(?:is|are) (?:also )?difficult to (?:exclude|rule out)",
    r"(?:may|might|could|can) (?:also )?have (?:this|a similar) appearance",
    r"(?:is|are) (?:possibly|probably|likely) present",
    r"versus",
    r"vs\b\.?",
]


def _cue_re(patterns: list[str]) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{_alt(patterns)})(?!\w)")


_NEG_PRE_RE = _cue_re(_NEG_PRE)
_UNC_PRE_RE = re.compile(rf"\b(?:{_alt(_UNC_PRE)})(?!\w)|\?(?=[a-z])")
_EVID_PRE_RE = _cue_re(_EVID_PRE)
_NEG_POST_RE = _cue_re(_NEG_POST)
_UNC_POST_RE = re.compile(rf"\b(?:{_alt(_UNC_POST)})(?!\w)|\?(?=\s|$)")

# A comma or "and" that opens a new finding ends a pre-cue's reach ("no effusion, small pneumothorax").
_BARRIER_RE = re.compile(
    r"(?:,|\band\b)\s*(?:(?:and|or|with) )?(?:small|moderate|large|mild|mildly|severe|severely|trace|minimal"
    r"|tiny|new|newly|increased|increasing|worsening|worsened|persistent|persisting|stable|unchanged|decreased"
    r"|decreasing|improved|improving|residual|known|extensive|marked|markedly|moderately|a|an|the|there|this"
    r"|these|with|likely|possible|probable)\b"
)
# What may stand between two items of a coordinated list: a connector and up to three modifiers.
_LIST_GAP_RE = re.compile(
    r"\s*(?:,\s*(?:(?:and|or|nor|and/or)\s+)?|(?:and/or|and|or|nor)\s+|/\s*)(?:[a-z0-9_-]+\s+){0,3}"
)
_OR_RE = re.compile(r"\b(?:or|nor)\b")
_VERB_RE = re.compile(r"\b(?:is|are|was|were|has|have|had|shows?|demonstrates?)\b")
_WORD_RE = re.compile(r"[a-z]+")
_PRE_REACH_WORDS = 16  # a pre-cue reaches at most this many words
_POST_REACH_WORDS = 10

# ---------------------------------------------------------------------------------- sentences, clauses
_HEADER_RE = re.compile(
    r"(?:^|(?<=[\s.]))(?P<name>indications?|history|clinical history|clinical information|reason for "
    r"(?:exam|examination|study)|comparisons?|technique|examination|exam|procedure|findings|impressions?"
    r"|conclusions?|notification|recommendations?|wet read|final report)\s*:"
)
_KEEP_SECTIONS = {"findings", "impression", "impressions", "conclusion", "conclusions", "final report"}
_SENTENCE_END_RE = re.compile(r"[.!](?=\s|$)|\?(?=\s|$)|\n\s*\n")
_CLAUSE_BREAK_RE = re.compile(
    r";|:(?!\s*(?:none|negative|absent)\b)|\s-\s|\b(?:but|however|although|though|whereas|while|which|except"
    r"|aside from|apart from|other than|otherwise|in the setting of|there (?:is|are|has been|have been|was|were)"
    r"|status post|s/p|after|following)\b"
)


@dataclass(frozen=True)
class Mention:
    """One phrase that mentions a label, with the status it was given and the cue that decided it."""

    label: str
    value: float
    start: int
    end: int
    phrase: str
    cue: str | None
    scope: str | None = None  # the text from the trigger to the mention (or the mention to the trigger)
    rule: str = ""  # how the trigger reached the mention

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "status": STATUS_NAMES[self.value],
            "value": self.value,
            "phrase": self.phrase,
            "cue": self.cue,
            "scope": self.scope,
            "rule": self.rule,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    value: float  # NEGATIVE or UNCERTAIN
    text: str
    evidential: bool = False


def _blank_sections(low: str) -> str:
    """Blank (with spaces, keeping offsets) sections that do not describe the image, and all headers."""
    headers = list(_HEADER_RE.finditer(low))
    if not headers:
        return low
    chars = list(low)
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(low)
        name = re.sub(r"\s+", " ", h.group("name"))
        stop = h.end() if name in _KEEP_SECTIONS else end
        chars[h.start() : stop] = " " * (stop - h.start())
    return "".join(chars)


def _spans(text: str, breaks: re.Pattern[str], *, keep_break_left: bool) -> list[tuple[int, int]]:
    out, start = [], 0
    for m in breaks.finditer(text):
        cut = m.end() if keep_break_left else m.start()
        if cut > start:
            out.append((start, cut))
            start = cut
    if start < len(text):
        out.append((start, len(text)))
    return out


def _find_cues(clause: str) -> tuple[list[_Cue], list[_Cue]]:
    """Pre-cues and post-cues in one clause, overlaps resolved (longer and uncertain cues win)."""
    unc_post = [_Cue(m.start(), m.end(), UNCERTAIN, m.group()) for m in _UNC_POST_RE.finditer(clause)]
    neg_post = [_Cue(m.start(), m.end(), NEGATIVE, m.group()) for m in _NEG_POST_RE.finditer(clause)]
    unc_pre = [_Cue(m.start(), m.end(), UNCERTAIN, m.group()) for m in _UNC_PRE_RE.finditer(clause)]
    unc_pre += [_Cue(m.start(), m.end(), UNCERTAIN, m.group(), True) for m in _EVID_PRE_RE.finditer(clause)]
    neg_pre = [_Cue(m.start(), m.end(), NEGATIVE, m.group()) for m in _NEG_PRE_RE.finditer(clause)]

    def overlaps(a: _Cue, others: list[_Cue], *, longer_only: bool = False) -> bool:
        return any(
            a.start < b.end and b.start < a.end and (not longer_only or (b.end - b.start) > (a.end - a.start))
            for b in others
        )

    neg_post = [c for c in neg_post if not overlaps(c, unc_post)]
    post = unc_post + neg_post
    neg_pre = [c for c in neg_pre if not overlaps(c, unc_pre) and not overlaps(c, unc_post)]
    pre = [c for c in unc_pre + neg_pre if not overlaps(c, post, longer_only=True)]
    pre.sort(key=lambda c: (c.end, c.start))
    post.sort(key=lambda c: c.start)
    return pre, post


class _Clause:
    """Cue lookup for one clause (text is lower case; offsets are relative to the clause)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pre, self.post = _find_cues(text)
        self.pre_ends = [c.end for c in self.pre]
        self.post_starts = [c.start for c in self.post]
        self.barriers = [m.start() for m in _BARRIER_RE.finditer(text)]
        self.spans: list[tuple[int, int]] = []  # merged mention spans, set by _clause_mentions
        self.wide = [_Cue(m.start(), m.end(), UNCERTAIN, m.group()) for m in _WIDE_POST_RE.finditer(text)]

    def set_spans(self, spans: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for a, b in sorted(spans):
            if merged and (a < merged[-1][1] or not self.text[merged[-1][1] : a].strip(" -")):
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.spans = [(a, b) for a, b in merged]

    def _is_list(self, a: int, b: int) -> bool:
        """Is text[a:b] a run of list items (mentions joined by connectors), from a mention end to a start?"""
        pos = a
        for s0, s1 in self.spans:
            if s0 < a or s1 > b:
                continue
            if not _LIST_GAP_RE.fullmatch(self.text, pos, s0):
                return False
            pos = s1
        return pos == b

    def _or_list(self, cue_end: int, start: int) -> bool:
        """A negation in front of a disjunctive list ("no A, large B, or C") reaches every item."""
        verb = _VERB_RE.search(self.text, cue_end)
        stop = verb.start() if verb else len(self.text)
        return start < stop and bool(_OR_RE.search(self.text, cue_end, stop))

    def _pre_cue(self, start: int, floor: int = 0) -> _Cue | None:
        i = bisect_right(self.pre_ends, start) - 1  # cues ending at or before the mention
        while i >= 0 and self.pre[i].start < floor:
            i -= 1
        if i < 0 or not self._reaches(self.pre[i].end, start):
            return None
        cue = self.pre[i]
        if cue.evidential:  # "no focal opacity to suggest pneumonia": the negation governs
            for other in self.pre[max(0, i - 4) : i][::-1]:
                if other.start >= floor and other.value == NEGATIVE and self._reaches(other.end, start):
                    return other
        return cue

    def _reaches(self, cue_end: int, start: int) -> bool:
        if start - cue_end > _PRE_REACH_WORDS * 25:
            return False
        k = bisect_left(self.barriers, cue_end)
        if k < len(self.barriers) and self.barriers[k] < start and not self._or_list(cue_end, start):
            return False
        return len(_WORD_RE.findall(self.text, cue_end, start)) <= _PRE_REACH_WORDS

    def _post_cue(self, end: int) -> _Cue | None:
        k = bisect_left(self.post_starts, end)
        if k == len(self.post):
            return None
        cue = self.post[k]
        inner = [sp for sp in self.spans if sp[0] >= end and sp[1] <= cue.start]
        if inner:  # "pneumothorax, effusion, and consolidation are not seen": back over the whole list
            if not self._is_list(end, inner[-1][1]):
                return None
            end = inner[-1][1]
        gap = self.text[end : cue.start]
        if (
            len(gap) > _POST_REACH_WORDS * 25
            or "," in gap
            or _VERB_RE.search(gap)
            or _ANY_SUBJECT_RE.search(gap)
        ):
            return None
        if len(_WORD_RE.findall(gap)) > _POST_REACH_WORDS:
            return None
        return cue

    def status(self, start: int, end: int, floor: int = 0) -> tuple[float, tuple[int, int] | None]:
        """Status of the mention at [start, end) and the deciding cue's span: the nearest pre-cue,
        else a post-cue, else positive (no cue)."""
        cue = self._pre_cue(start, floor) or self._post_cue(end)
        if cue is None:
            cue = next((c for c in self.wide if c.start >= end), None)
        if cue is None:
            return POSITIVE, None
        return cue.value, (cue.start, cue.end)


def _is_filler_gap(gap: str) -> bool:
    if not all(w in _FILLER for w in _WORD_RE.findall(gap)):
        return False
    comma = gap.find(",")
    return comma < 0 or not _VERB_RE.search(gap, 0, comma)


_BLUNTING_CAUSE_RE = re.compile(
    r"[^.;]{0,40}?\b(?:due to|from|by|secondary to|related to|reflecting|representing|consistent with)"
    r" (?:\w+ ){0,2}pleural (?:thickening|scarring|scar)"
)
_LIST_NORMAL_RE = re.compile(r"\b(?P<neg>normal|unremarkable)\b")


def _list_normal(text: str, start: int) -> re.Match[str] | None:
    """A "normal" in front of a list of anatomy that reaches ``start`` across commas and "and"."""
    best = None
    for m in _LIST_NORMAL_RE.finditer(text, max(0, start - 120), start):
        best = m
    if best is None:
        return None
    gap = text[best.end() : start]
    words = _WORD_RE.findall(gap)
    if _VERB_RE.search(gap) or re.match(r"\s*(?:,|and\b|or\b)", gap) or not all(w in _FILLER for w in words):
        return None
    return _QUAL_RE["Cardiomegaly"].match(text, best.start())


def _or_coordinated(clause: _Clause, items: list[tuple[int, int, str]]) -> dict[tuple[int, int], tuple[int, int]]:
    """Positive mentions in a list joined by "or" with a mention of another label -> the "or" span."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    items = sorted(items)
    i = 0
    while i < len(items):
        j, ors = i, []
        while j + 1 < len(items):
            gap_a, gap_b = items[j][1], items[j + 1][0]
            if gap_b < gap_a or not _LIST_GAP_RE.fullmatch(clause.text, gap_a, gap_b):
                break
            m = re.search(r"\b(?:and/)?or\b", clause.text[gap_a:gap_b])
            if m:
                ors.append((gap_a + m.start(), gap_a + m.end()))
            j += 1
        chain = items[i : j + 1]
        if ors and len({lab for _, _, lab in chain}) > 1:
            for a, b, _ in chain:
                out[(a, b)] = ors[-1]
        i = j + 1
    return out


def _clause_mentions(clause: _Clause, offset: int, original: str) -> list[Mention]:
    text = clause.text
    found: list[Mention] = []

    def add(label: str, s: int, e: int, value: float, cue: tuple[int, int] | None, rule: str = "") -> None:
        cue_text = scope = None
        if cue:
            cue_text = original[offset + cue[0] : offset + cue[1]]
            a, b = min(s, cue[0]), max(e, cue[1])
            scope = original[offset + a : offset + b]
            if not rule:
                kind = "negation" if value == NEGATIVE else "hedge"
                if cue[0] >= e:
                    rule = f"{kind} after the mention"
                elif any(s0 >= cue[1] and s1 <= s for s0, s1 in clause.spans):
                    rule = f"{kind} before a list, reaching this item"
                else:
                    rule = f"{kind} before the mention"
        elif not rule:
            rule = "no negation or hedge in scope"
            if re.search(r"\b(?:most|very|highly) likely\s+(?:\w+\s+){0,3}$", text[max(0, s - 60) : s]):
                rule = "'most likely' reads as positive (CheXpert)"
        phrase = original[offset + s : offset + e]
        found.append(Mention(label, value, offset + s, offset + e, phrase, cue_text, scope, rule))

    # Every mention first (the list scope needs them all), then the status of each.
    raw: list[tuple[str, int, int, str]] = []
    for label, rx in _MENTION_RE.items():
        raw += [(label, m.start(), m.end(), "plain") for m in rx.finditer(text)]
    for label, rx in _CAPPED_RE.items():
        for m in rx.finditer(text):
            if label == "Pleural Effusion" and _BLUNTING_CAUSE_RE.match(text, m.end()):
                continue  # "blunting ... due to pleural thickening": not an effusion
            raw.append((label, m.start(), m.end(), "capped"))
    raw += [("Cardiomegaly", m.start(), m.end(), "heart failure") for m in _HEART_FAILURE_RE.finditer(text)]
    raw += [(OTHER, m.start(), m.end(), "other") for m in _OTHER_RE.finditer(text)]
    clause.set_spans((a, b) for _, a, b, _ in raw)
    statuses = [clause.status(a, b) for _, a, b, _ in raw]
    # "X or Y" (CheXpert: conj:or is uncertain): unhedged positives coordinated by "or" with another finding.
    hedged_or = _or_coordinated(clause, [(a, b, lab) for (lab, a, b, _), (v, c) in zip(raw, statuses, strict=True)
                                         if v == POSITIVE and c is None and lab != OTHER])
    for (label, a, b, kind), (value, cue) in zip(raw, statuses, strict=True):
        rule = ""
        if (a, b) in hedged_or:
            value, cue, rule = UNCERTAIN, hedged_or[(a, b)], "coordinated with another finding by 'or'"
        if kind == "capped" and value == POSITIVE:  # at most uncertain
            value, rule = UNCERTAIN, f"'{text[a:b]}' is at most uncertain for {label}"
        if kind == "heart failure" and value == NEGATIVE:
            continue  # negated heart failure says nothing about heart size
        if kind == "heart failure":
            value, rule = UNCERTAIN, "heart failure: Cardiomegaly uncertain (CheXpert)"
        add(label, a, b, value, cue, rule)

    # Anatomy: a subject counts once qualified ("heart size is normal", "enlarged heart"). The qualifier
    # is right before the subject, or the first one after it with only filler words between; the gap
    # may cross commas only when the subject is a bare list item ("the heart, mediastinum and hila are").
    for label, subj_re in _SUBJECT_RE.items():
        for s in subj_re.finditer(text):
            seg_start = text.rfind(",", 0, s.start()) + 1
            lo = max(seg_start, s.start() - 40)  # a short window, starting at a word
            if lo > seg_start:
                sp = text.find(" ", lo, s.start())
                lo = sp + 1 if sp >= 0 else s.start()
            qual = _PRE_QUAL_RE[label].search(text, lo, s.start())
            floor = 0
            if qual is None:
                qual = _QUAL_RE[label].search(text, s.end(), s.end() + 200)
                if qual is not None and _is_filler_gap(text[s.end() : qual.start()]):
                    floor = s.start()
                else:  # "normal heart, lungs, hila, mediastinum": a normal in front of the list
                    qual = _list_normal(text, s.start())
                    if qual is None:
                        continue
            a, b = min(s.start(), qual.start()), max(s.end(), qual.end())
            if qual.group("neg"):
                add(label, a, b, NEGATIVE, qual.span("neg"), "normal qualifier of the anatomy")
            elif qual.group("unc"):
                add(label, a, b, UNCERTAIN, qual.span("unc"), "borderline qualifier of the anatomy")
            else:
                value, cue = clause.status(qual.start("pos"), qual.end("pos"), floor)
                add(label, a, b, value, cue)
    return found


def _analyse(text: str) -> tuple[list[Mention], list[tuple[int, int]], bool]:
    """Mentions, normal-study phrases and whether the text has any content."""
    if not isinstance(text, str):
        if text is None or (isinstance(text, float) and math.isnan(text)):
            text = ""
        else:
            raise InputError(f"Report text must be a string, got {type(text).__name__}: {text!r}.")
    low = _blank_sections(text.lower())
    has_content = bool(re.search(r"[a-z]", low))
    mentions: list[Mention] = []
    normal: list[tuple[int, int]] = []
    for s0, s1 in _spans(low, _SENTENCE_END_RE, keep_break_left=True):
        sentence = low[s0:s1]
        normal += [(s0 + m.start(), s0 + m.end()) for m in _NORMAL_STUDY_RE.finditer(sentence)]
        for c0, c1 in _spans(sentence, _CLAUSE_BREAK_RE, keep_break_left=False):
            clause = _Clause(sentence[c0:c1])
            mentions += _clause_mentions(clause, s0 + c0, text)
    mentions.sort(key=lambda m: (m.start, m.label))
    return mentions, normal, has_content


def _aggregate(mentions: list[Mention], has_content: bool) -> np.ndarray:
    out = empty_labels()
    other = False
    for m in mentions:
        if m.label == OTHER:
            other = other or m.value != NEGATIVE
            continue
        i = INDEX[m.label]
        if math.isnan(out[i]) or _PRECEDENCE[m.value] > _PRECEDENCE[float(out[i])]:
            out[i] = m.value
    if has_content:
        findings = out[_FINDING_IDX]
        found = other or np.any((findings == POSITIVE) | (findings == UNCERTAIN))
        out[_NO_FINDING] = NEGATIVE if found else POSITIVE
    return out


def label_report(text: str) -> np.ndarray:
    """The 14 CheXpert labels of one report (float32 [14]: 1, 0, -1, NaN = not mentioned)."""
    mentions, _, has_content = _analyse(text)
    return _aggregate(mentions, has_content)


def label_reports(texts: Iterable[str]) -> np.ndarray:
    """Labels of many reports, float32 [N, 14]."""
    rows = [label_report(t) for t in texts]
    return np.stack(rows) if rows else np.zeros((0, N_LABELS), dtype=np.float32)


def explain(text: str) -> list[dict]:
    """Which phrase matched which label with which status (and the cue that decided it), in text order.

    Ends with one entry for No Finding, which is derived from the others (phrase: a normal-study
    phrase such as "no acute cardiopulmonary process" when there is one).
    """
    mentions, normal, has_content = _analyse(text)
    rows = [m.as_dict() for m in mentions]
    labels = _aggregate(mentions, has_content)
    nf = float(labels[_NO_FINDING])
    if not math.isnan(nf):
        start, end = normal[0] if normal else (0, 0)
        blockers = [
            m.label if m.label != OTHER else f"{m.phrase!r}"
            for m in mentions
            if (m.label == OTHER or INDEX[m.label] in _FINDING_IDX) and m.value != NEGATIVE
        ]
        reason = (
            f"derived: {', '.join(dict.fromkeys(blockers))} positive or uncertain"
            if nf == NEGATIVE
            else "derived: no other finding positive or uncertain"
        )
        rows.append(
            {
                "label": "No Finding",
                "status": STATUS_NAMES[nf],
                "value": nf,
                "phrase": text[start:end],
                "cue": reason,
                "scope": None,
                "rule": "No Finding: 1 when no finding other than Support Devices is positive or uncertain",
                "start": start,
                "end": end,
            }
        )
    return rows


def explain_labels(text: str) -> list[dict]:
    """Per label (in PATHOLOGIES order, mentioned ones only): the mention that decided its value, with the
    trigger, the rule and the scope. When several mentions disagree, the first one with the winning status
    (positive > uncertain > negative) decides; ``others`` counts the rest."""
    rows = explain(text)
    labels = label_report(text)
    out = []
    for name in PATHOLOGIES:
        v = float(labels[INDEX[name]])
        if math.isnan(v):
            continue
        mine = [r for r in rows if r["label"] == name]
        deciding = next(r for r in mine if r["value"] == v)
        out.append({**deciding, "others": len(mine) - 1})
    return out


def format_explanation(text: str) -> str:
    """Readable --explain output: per label the deciding mention, trigger, rule and scope; then every mention."""
    lines = ["Why (per label: the mention, the trigger and the scope that decided it):"]
    for r in explain_labels(text):
        head = f"{r['label']:<28}{int(r['value']):>2} {r['status']:<10}"
        if r["label"] == "No Finding":
            lines.append(f"{head}{r['cue']}")
            continue
        trig = f"trigger {r['cue']!r}" if r["cue"] else "no trigger"
        lines.append(f"{head}mention {r['phrase']!r}; {trig} ({r['rule']})")
        if r["scope"]:
            lines.append(f"{'':<41}scope {r['scope']!r}")
        if r["others"]:
            lines.append(f"{'':<41}(+{r['others']} other mention(s) of this label, outranked)")
    others = [r for r in explain(text) if r["label"] == OTHER and r["value"] != NEGATIVE]
    for r in others:
        lines.append(f"{'(other finding)':<28}   {'':<10}mention {r['phrase']!r}: outside the 14 labels; No Finding 0")
    lines += ["", "All mentions, in text order:"]
    for row in explain(text):
        cue = f" (cue: {row['cue']})" if row["cue"] else ""
        lines.append(f"{row['label']:<28}{row['status']:<10}{row['phrase']!r}{cue}")
    return "\n".join(lines)


def format_labels(labels: np.ndarray) -> str:
    """One line per label: name, value and its meaning (for the CLI)."""
    lines = []
    for name, v in zip(PATHOLOGIES, np.asarray(labels, dtype=np.float32).tolist(), strict=True):
        word = "blank (not mentioned)" if math.isnan(v) else f"{int(v):d} ({STATUS_NAMES[v]})"
        lines.append(f"{name:<28}{word}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- CLI
def label_csv(path: Path, prompt_col: str = "prompt") -> pd.DataFrame:
    """A CSV's rows with the 14 label columns filled from its prompt column (existing ones replaced)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"CSV file {str(path)!r} does not exist; pass the path of a CSV with a text column.")
    try:
        df = pd.read_csv(path, dtype={prompt_col: str}, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(
            f"Could not read {str(path)!r} as CSV ({exc}); check the file is a comma-separated table."
        ) from exc
    if prompt_col not in df.columns:
        cols = ", ".join(map(str, df.columns)) or "(none)"
        raise InputError(
            f"{str(path)!r} has no column {prompt_col!r} (columns: {cols}); pass --prompt-col with the column "
            "that holds the report or prompt text."
        )
    labels = label_reports(df[prompt_col].astype(str).tolist())
    for j, name in enumerate(PATHOLOGIES):
        df[name] = labels[:, j] if len(df) else pd.Series(dtype="float32")
    return df
