"""``python -m spacy_kogner``: the command-line interface (see ``spacy_kogner.cli``)."""

from .cli import app

if __name__ == "__main__":
    app()
