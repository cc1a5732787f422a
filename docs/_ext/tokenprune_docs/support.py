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

from .common import DOCS, GENERATED, md_table, write_page, write_text

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
    """The mini check in a few words: "pass" when every variant passed, else the variants that did not."""
    if not outcome.checks:
        return "not checked (no test model file)"
    failed = []
    for label, report in outcome.checks.items():
        if isinstance(report, str):
            failed.append(f"{label}: {'invalid spec' if report.startswith('invalid spec') else 'error'}")
        elif not report.passed:
            failed.append(f"{label}: **FAIL**")
    if failed:
        return "; ".join(failed)
    return "pass" if len(outcome.checks) == 1 else f"pass ({len(outcome.checks)} variants)"


def _passing(outcome) -> bool:
    return bool(outcome.checks) and all(not isinstance(r, str) and r.passed for r in outcome.checks.values())


def generate_support_table(outcomes) -> None:
    suite = suite_results()
    # Status first and three columns, so the table fits a 1280 px window; the details are on each spec page.
    header = ["mini check", "spec", "architectures (text model)"]
    if suite is not None:
        header.insert(1, "conformance suite")
    rows = []
    for o in outcomes:
        row = [_status(o), f"[`{o.name}`](specs/{o.name}.md)",
               ", ".join(f"`{a}`" for a in o.architectures) + f" ({', '.join(o.text_models) or '—'})"]
        if suite is not None:
            c = suite.get(o.name)
            row.insert(1, f"{c['passed']} passed, {c['failed']} failed" if c else "no results")
        rows.append(row)
    others = _other_architectures(outcomes)
    body = ["# Supported models\n\n",
            "Generated from the bundled specs (`model_specs/*.yaml`) on every docs build. *Mini check* builds each "
            "spec's tiny random test model (default configuration) and checks that a keep-all compile is "
            "bit-identical to the original and that a 2-cut schedule matches the masking reference "
            "(see {doc}`/reference/conformance`). The full conformance suite (`pytest tests/conformance`) checks "
            "much more: eager and sdpa, batches, generation, caches, batch invariance. Each spec's page lists "
            "what its keys locate and the vision-token ids it reads from the config.\n\n",
            md_table(header, rows),
            "\nA model whose class is not listed can usually be supported with a YAML file alone: "
            "see {doc}`/guides/add-a-model`.\n\n",
            others[0],
            "```{toctree}\n:hidden:\n\n" + "\n".join(f"specs/{o.name}" for o in outcomes) + "\n```\n"]
    write_page("models.md", "".join(body))
    _write_count_fragment(outcomes, others[1])


def _write_count_fragment(outcomes, unsupported: int) -> None:
    """The support count of the landing page, from the same build as the table."""
    import transformers

    passing = sum(_passing(o) for o in outcomes)
    text = (f"**{len(outcomes)}** model families have a bundled spec ({passing} pass the build-time mini check "
            f"of these docs); the {unsupported} other image-text architectures of transformers "
            f"{transformers.__version__} are listed with the reason they are not supported (yet). "
            "See {doc}`/generated/models`.\n")
    write_text(GENERATED / "fragments" / "support-count.md", text)


def _analysis(architectures) -> dict[str, str]:
    """architecture -> reason, from tokenprune.support's analysis of this build's code."""
    from tokenprune.support import support_rows

    return {r.architecture: r.reason for r in support_rows(architectures) if r.status != "supported"}


def _other_architectures(outcomes) -> tuple[str, int]:
    """The section on architectures without a bundled spec, and how many there are."""
    try:
        from tokenprune.support import image_text_architectures
    except ImportError:
        return "", 0
    import transformers

    bundled = {a for o in outcomes for a in o.architectures}
    others = [(arch, kind) for arch, kind in image_text_architectures() if arch not in bundled]
    if not others:
        return "", 0
    reasons = _analysis(others)
    rows = [[f"`{arch}` (`{kind}`)", reasons[arch]] for arch, kind in others]
    how = ("Reasons come from `tokenprune.support`'s analysis, run on every docs build: each architecture is built "
           "on the meta device from its default config, its decoder stack found, traced and cut; the first "
           "obstacle is shown.")
    return (f"## Other image-text architectures in transformers {transformers.__version__}\n\n"
            f"{len(others)} architectures of transformers' image-text-to-text mapping have no bundled spec. {how}\n\n"
            + md_table(["architecture (model type)", "why not supported (yet)"], rows) + "\n", len(others))
