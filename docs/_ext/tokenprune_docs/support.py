"""The model support table: one row per bundled spec, with the build-time mini check as its status, then every
other image-text architecture of the installed transformers.

If a JUnit XML report of the conformance suite is present (``docs/_data/conformance.xml``, written by
``pytest tests/conformance --junitxml docs/_data/conformance.xml``), its pass/fail counts per spec are shown too.
The reasons why other architectures are unsupported come from ``tokenprune.support``'s analysis (every
architecture built on the meta device, its decoder stack traced and cut), run on every build (~20 s of CPU) so
the table always reflects the current code and the installed transformers.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .common import DOCS, md_table, write_page

JUNIT = DOCS / "_data" / "conformance.xml"


def suite_results() -> dict[str, dict[str, int]] | None:
    """Per spec name: counts of passed/failed/skipped conformance tests from the JUnit file, if any."""
    if not JUNIT.is_file():
        return None
    counts: dict[str, dict[str, int]] = {}
    for case in ET.parse(JUNIT).getroot().iter("testcase"):
        match = re.search(r"\[([^\]]+)\]", case.get("name", ""))
        if not match:
            continue
        spec = match.group(1).split("-")[0]
        state = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        counts.setdefault(spec, {"passed": 0, "failed": 0, "skipped": 0})[state] += 1
    return counts


def _status(outcome) -> str:
    if not outcome.checks:
        return "not checked (no `test_model`)"
    parts = []
    for label, report in outcome.checks.items():
        if isinstance(report, str):
            parts.append(f"{label}: {'invalid spec' if report.startswith('invalid spec') else 'error'}")
        else:
            parts.append(f"{label}: {'pass' if report.passed else 'FAIL'}")
    return "; ".join(parts)


def generate_support_table(outcomes) -> None:
    suite = suite_results()
    header = ["spec", "architectures", "text models tested", "vision tokens", "mini check"]
    if suite is not None:
        header.append("conformance suite")
    rows = []
    for o in outcomes:
        row = [f"[`{o.name}`](specs/{o.name}.md)", ", ".join(f"`{a}`" for a in o.architectures),
               ", ".join(o.text_models) or "—", ", ".join(f"`{r}`" for r in o.token_refs), _status(o)]
        if suite is not None:
            c = suite.get(o.name)
            row.append(f"{c['passed']} passed, {c['failed']} failed" if c else "no results")
        rows.append(row)
    body = ["# Supported models\n\n",
            "Generated from the bundled specs (`model_specs/*.yaml`) on every docs build. *Mini check* builds each "
            "spec's tiny random test model (default configuration) and checks that a keep-all compile is "
            "bit-identical to the original and that a 2-cut schedule matches the masking reference "
            "(see {doc}`/reference/conformance`). The full conformance suite (`pytest tests/conformance`) checks "
            "much more: eager and sdpa, batches, generation, caches, batch invariance.\n\n",
            md_table(header, rows),
            "\nA model whose class is not listed can usually be supported with a YAML file alone: "
            "see {doc}`/guides/add-a-model`.\n\n",
            _other_architectures(outcomes),
            "```{toctree}\n:hidden:\n\n" + "\n".join(f"specs/{o.name}" for o in outcomes) + "\n```\n"]
    write_page("models.md", "".join(body))


def _analysis(architectures) -> dict[str, str]:
    """architecture -> reason, from tokenprune.support's analysis of this build's code."""
    from tokenprune.support import support_rows

    return {r.architecture: r.reason for r in support_rows(architectures) if r.status != "supported"}


def _other_architectures(outcomes) -> str:
    try:
        from tokenprune.support import image_text_architectures
    except ImportError:
        return ""
    import transformers

    bundled = {a for o in outcomes for a in o.architectures}
    others = [(arch, kind) for arch, kind in image_text_architectures() if arch not in bundled]
    if not others:
        return ""
    reasons = _analysis(others)
    rows = [[f"`{arch}`", f"`{kind}`", reasons[arch]] for arch, kind in others]
    how = ("Reasons come from `tokenprune.support`'s analysis, run on every docs build: each architecture is built "
           "on the meta device from its default config, its decoder stack found, traced and cut; the first "
           "obstacle is shown.")
    return (f"## Other image-text architectures in transformers {transformers.__version__}\n\n"
            f"{len(others)} architectures of transformers' image-text-to-text mapping have no bundled spec. {how}\n\n"
            + md_table(["architecture", "model type", "why not supported (yet)"], rows) + "\n")
