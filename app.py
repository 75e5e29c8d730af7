"""CheXGen Studio: the app's entry point (also the Hugging Face Space's app_file). Builds the UI and launches."""

from chexgen_ui.main import main

if __name__ == "__main__":
    main()
