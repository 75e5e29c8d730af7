"""Which built-in models come from the demo world, and the note shown when one is judged against a real reference.

The demo generator and the reference oracle draw demo-world phantoms; the copycat copies its source set (the demo
world unless ``CHEXGEN_COPYCAT_SOURCE`` names another). Against a reference that is not the demo world, their
fidelity says how far phantoms are from that reference, and their privacy verdicts test copies of images they never
saw: "new" is then no evidence that a model does not memorise.
"""

from __future__ import annotations

from .. import settings
from .baselines import COPYCAT, COPYCAT_SOURCE_ENV, DEFAULT_COPYCAT_SOURCE, ORACLE

DEMO_MODEL = "demo"


def training_source(model: str | None) -> str | None:
    """The set a built-in model was trained on (or copies from), as a spec; None for models it does not know."""
    if model in (DEMO_MODEL, ORACLE):
        return "demo@train"
    if model == COPYCAT:
        return settings.get(COPYCAT_SOURCE_ENV) or DEFAULT_COPYCAT_SOURCE
    return None


def demo_model_note(model: str | None, reference) -> str | None:
    """A note when ``model`` comes from the demo world and ``reference`` (an ImageSet, index or spec) is not it."""
    from ..domain import is_demo_world

    source = training_source(model)
    if source is None or not is_demo_world(source) or reference is None or is_demo_world(reference):
        return None
    return (f"Model note: {model} draws demo-world phantoms (trained on / copying {source}), not images of this "
            "reference set: its fidelity here measures phantoms against real radiographs, and its privacy verdicts "
            "check copies of images it never saw (\"new\" is no evidence about memorisation). Use a model trained on "
            "this reference's source, or the demo world as the reference.")
