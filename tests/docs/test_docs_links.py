"""README.md, docs/*.md and figures/README.md: every relative link points to an existing file."""

from pathlib import Path


def test_readme_and_docs_links_point_to_existing_files():
    import re

    root = Path(__file__).resolve().parents[2]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "figures" / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
