"""Report text: one tokenisation for the captioner's vocabulary, the scores and the copy check.

Reports are lower-cased and split into words and punctuation marks (``"Small left effusion."`` ->
``small left effusion .``); a generated token sequence is turned back into sentences with capitals. The
captioner's vocabulary is built from its training reports only (a word seen in no training report is
``<unk>``), so a synthetic-trained model cannot write a word the synthetic prompts never used.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
UPPER = {"pa", "ap", "ett", "ng", "og", "picc", "svc", "ij", "icd", "chf", "copd", "ct", "iv"}  # written in capitals
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case words (hyphenated kept whole) and single punctuation marks."""
    return _TOKEN.findall(str(text or "").lower())


def normalise(text: str) -> str:
    """The comparable form of a report: its tokens joined by single spaces (used for copies and the scores)."""
    return " ".join(tokenize(text))


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens -> readable sentences: punctuation attached to the word before, each sentence capitalised."""
    out: list[str] = []
    cap = True
    for tok in tokens:
        if tok in SPECIALS:
            continue
        if re.fullmatch(r"[^\sa-z0-9]", tok) and out:
            out[-1] += tok
            cap = tok in ".!?"
            continue
        out.append(tok.upper() if tok in UPPER else tok.capitalize() if cap else tok)
        cap = False
    return " ".join(out)


class Vocab:
    """Word <-> id; ids 0-3 are the special tokens."""

    def __init__(self, words: Iterable[str]):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, reports: Iterable[str], min_count: int = 1) -> Vocab:
        counts = Counter(t for r in reports for t in tokenize(r))
        return cls(sorted(w for w, c in counts.items() if c >= min_count))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> list[int]:
        """<bos> tokens <eos>, cut to ``max_len`` ids (the cut keeps <bos> and ends on <eos>)."""
        ids = [self.stoi.get(t, self.stoi[UNK]) for t in tokenize(text)][: max_len - 2]
        return [self.stoi[BOS], *ids, self.stoi[EOS]]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            w = self.itos[int(i)] if 0 <= int(i) < len(self.itos) else UNK
            if w == EOS:
                break
            if w not in (PAD, BOS):
                words.append(w)
        return detokenize(words)
