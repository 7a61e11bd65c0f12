"""User-facing text names no paths outside the repository, and every doc the code cites is in docs/."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_docs_name_no_paths_outside_the_repository():
    outside = re.compile(r"(?<![\w.])\.\./|/work/|/home/\w")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if outside.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_every_doc_the_code_cites_is_in_docs():
    cited = set()
    for folder in ("unlearnx", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()  # "docs/metric.md" or "metric.md §2" (not output files like metrics.md)
            cited |= set(re.findall(r"docs/([a-z-]+\.md)", text)) | set(re.findall(r"\b([a-z-]+\.md) §", text))
    assert cited, "the code cites its reference docs"
    missing = sorted(name for name in cited if not (ROOT / "docs" / name).exists())
    assert missing == []
