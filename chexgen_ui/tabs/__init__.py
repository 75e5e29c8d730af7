"""One module per app tab (layout + callbacks); :mod:`chexgen_ui.app` calls each module's ``build``."""
