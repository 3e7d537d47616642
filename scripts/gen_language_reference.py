"""Write docs/language.md from the primitive registry (derivd.dsl.reference); run after adding a
primitive or a language function: tests/gateway/test_docs.py fails while the committed file differs."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))

from derivd.dsl.reference import markdown  # noqa: E402

if __name__ == "__main__":
    (ROOT / "docs" / "language.md").write_text(markdown())
    print(f"wrote {ROOT / 'docs' / 'language.md'}")
