"""CheXGen Studio's headless engine: image sets, encoders, metrics, generators, results and the CLI.

No Gradio import anywhere in this package; the app (``chexgen_ui``) calls into it.
"""

__version__ = "0.1.0"
