"""Regenerate docs/derivations.md's Answers section from the formulas the report renders.

    python scripts/derivations_answers.py            # rewrite docs/derivations.md's marked section
    python scripts/derivations_answers.py --check    # exit 1 if it is stale (tests/test_answers.py does this too)
"""

import sys
from pathlib import Path

from softmaxlab.report.answers import answers_markdown, write_answers

DOC = Path(__file__).resolve().parents[1] / "docs" / "derivations.md"

if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if answers_markdown() in DOC.read_text() else 1)
    print("updated" if write_answers(DOC) else "unchanged", DOC)
