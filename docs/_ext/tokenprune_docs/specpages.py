"""One reference page per bundled spec: how tokenprune handles the family (hand-written notes in
``docs/models/<name>.md``), what each key locates, the spec and its test data, the traced graph of its tiny test
model (2-cut schedule, inserted nodes marked, as text and as a picture) and a mini conformance check.

Returns the per-spec check results so the support table can show them.
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .common import DOCS, GENERATED, IMAGES, code, md_table, save_figure, write_page, write_text

# Pages are regenerated when their inputs change: the key hashes the sources, the spec and the versions.
CACHE = GENERATED / ".cache"
# Hand-written notes per family (how it is handled, its quirks), included in its generated page.
NOTES = DOCS / "models"

FIELD_NOTES = {
    "multimodal_model": "module that receives `input_ids` (vision positions are read from its input)",
    "language_model": "the text decoder stack that is traced and rewritten",
    "decoder_layers": "the decoder layers (relative to the language model); each is a leaf of the trace",
    "rotary_embedding": "the rotary module (relative to the language model); a leaf of the trace",
}


@dataclass
class SpecOutcome:
    name: str
    architectures: list[str]
    text_models: list[str]
    token_refs: list[str]
    checks: dict[str, object] = field(default_factory=dict)  # variant label -> ConformanceReport | str (error)


def generate_spec_pages() -> list[SpecOutcome]:
    import torch

    import tokenprune as tp

    torch.set_num_threads(1)  # tiny models: threads only contend
    outcomes = []
    for name in tp.bundled_spec_names():
        try:
            spec = tp.load_spec(name)
        except Exception as err:  # an invalid bundled spec is shown as such, and the build goes on
            outcome = SpecOutcome(name, [], [], [], {"default": f"invalid spec: {err}"})
            write_page(f"specs/{name}.md", f"# `{name}`\n\nThis bundled spec does not load:\n\n" + code(str(err)))
            outcomes.append(outcome)
            continue
        outcome = SpecOutcome(name, list(spec.architectures), _text_models(spec), list(spec.vision_tokens.token_ids))
        key = cache_key(name)
        cached = read_cache(name, key)
        if cached is not None:
            body, outcome.checks = cached["body"], {k: _Cached(**v) for k, v in cached["checks"].items()}
        else:
            try:
                body = _page(spec, outcome)
            except Exception as err:  # a spec that breaks must show up in the docs, not stop the build
                body = (f"# `{name}`\n\nThe page generator failed for this spec with "
                        f"`{type(err).__name__}`:\n\n" + code(str(err)) + "\nTraceback:\n\n" +
                        code(traceback.format_exc()))
                outcome.checks["default"] = "page generation failed"
            write_cache(name, key, body, outcome.checks)
        write_page(f"specs/{name}.md", body)
        outcomes.append(outcome)
    return outcomes


@dataclass
class _Cached:
    """The part of a ConformanceReport the support table needs, as stored in the cache."""

    passed: bool


def cache_key(name: str) -> str:
    """A hash of everything a spec page depends on: the package sources, the spec and library versions."""
    import hashlib
    from importlib import resources

    import torch
    import transformers

    import tokenprune

    digest = hashlib.sha256(f"{torch.__version__} {transformers.__version__} {name}".encode())
    package = Path(tokenprune.__file__).parent
    paths = sorted(Path(tokenprune.rewrites.__file__).parent.rglob("*.py"))
    for sub in ("scoring", "testing"):
        paths += sorted((package / sub).rglob("*.py"))
    paths += sorted(p for p in package.glob("*.py") if p.name not in ("visualize.py", "saving.py", "demo.py"))
    for path in paths:  # what compiling, checking and drawing a spec depends on (not search/bench/...)
        digest.update(path.read_bytes())
    specs = resources.files("tokenprune.model_specs")
    for data in (specs / f"{name}.yaml", specs / f"{name}.test.yaml", NOTES / f"{name}.md"):
        digest.update(data.read_bytes() if data.is_file() else b"-")
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def read_cache(name: str, key: str) -> dict | None:
    path = CACHE / f"{name}.json"
    image = IMAGES / f"graph_{name}.png"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("key") != key or ("![graph" in data.get("body", "") and not image.is_file()):
        return None
    return data


def write_cache(name: str, key: str, body: str, checks: dict) -> None:
    stored = {label: {"passed": (r.passed if not isinstance(r, str) else False)} for label, r in checks.items()}
    write_text(CACHE / f"{name}.json", json.dumps({"key": key, "body": body, "checks": stored}))


def _text_models(spec) -> list[str]:
    """The text model types the spec's test configuration (and its variants) build."""
    from tokenprune.spec_testdata import load_test_model
    from tokenprune.testing.builders import build_test_config

    test = load_test_model(spec, required=False)
    if test is None:
        return []
    found = []
    for variant in [None, *test.variants]:
        try:
            kind = build_test_config(spec, variant).get_text_config().model_type
        except Exception:  # reported by the page itself
            kind = "?"
        if kind not in found:
            found.append(kind)
    return found


def _page(spec, outcome: SpecOutcome) -> str:
    import tokenprune as tp
    from tokenprune.cli import graph_lines
    from tokenprune.spec_testdata import load_test_model
    from tokenprune.testing import build_test_model, make_test_inputs
    from tokenprune.testing.conformance import run_mini_conformance, two_cut_schedule

    # The description's pointer to the notes is dropped: the notes follow on this page.
    description = re.sub(r"\s*How tokenprune handles it: docs/models/\S+\.md$", "", spec.description.strip())
    parts = [f"# `{spec.name}`\n\n", description + "\n\n",
             f"Load it with `tp.load_spec(\"{spec.name}\")`; `tp.compile(model, \"auto\", ...)` picks it for "
             f"{', '.join(f'`{a}`' for a in spec.architectures)}.\n\n"]
    notes = NOTES / f"{spec.name}.md"
    if notes.is_file():
        parts.append("## How tokenprune handles this family\n\n" + _without_comments(notes.read_text()) + "\n")
    parts.append("## What each key locates\n\n")
    test = load_test_model(spec, required=False)
    if test is None:
        parts.append(_keys_table(spec, None))
        parts.append("\n## The spec file\n\n" + code(_bundled_text(f"{spec.name}.yaml"), "yaml"))
        parts.append(f"\nThis spec has no test model file (`{spec.name}.test.yaml`), so no graph is drawn here.\n")
        return "".join(parts)
    model = build_test_model(spec, attn_implementation="eager", test=test)
    parts.append(_keys_table(spec, model))
    parts.append("\n## The spec file\n\n" + code(_bundled_text(f"{spec.name}.yaml"), "yaml"))
    parts.append(f"\n## The test model file\n\n`{spec.name}.test.yaml` beside the spec: the tiny random "
                 "configuration the conformance suite and this page build (format: {doc}`/generated/spec-schema`)."
                 "\n\n" + code(_bundled_text(f"{spec.name}.test.yaml"), "yaml"))
    n_layers = model.config.get_text_config().num_hidden_layers
    schedule = two_cut_schedule(n_layers, test.first_cut)
    images = [1, 1] if test.max_images_per_sample == 1 else [1, 2]
    batch = make_test_inputs(spec, model, images, [5, 8], seed=0, test=test)
    report = run_mini_conformance(model, spec, batch.kwargs, schedule=schedule)
    outcome.checks["default"] = report
    compiled = report.pruned_model or tp.compile(model, spec, schedule, self_check="off")
    graph = tp.graph_of(compiled).graph
    picture = save_figure(draw_graph(graph, f"{spec.name}: traced language model, schedule {schedule.name}"),
                          f"graph_{spec.name}")
    parts.append(f"\n## Traced graph of the tiny test model\n\nThe tiny random model (test model file, {n_layers} "
                 f"decoder layers, text model `{_text_models(spec)[0]}`) compiled with `{schedule!r}`: cuts before "
                 f"layers {list(schedule.cuts)}. Nodes tokenprune inserted are orange in the picture and marked "
                 f"`<<` in the listing (`cutL_select` scores and selects, the `cutL_*` gathers reshape the hidden "
                 f"state, mask, rotary embeddings and position ids for layer `L`).\n\n")
    parts.append(f"![graph of {spec.name}]({picture})\n\n")
    parts.append(code("\n".join(graph_lines(graph))))
    parts.append("\n## Mini conformance check\n\nComputed for the current sources by "
                 "`tokenprune.testing.conformance.run_mini_conformance` (eager attention, a left-padded batch of "
                 "2, default configuration; recomputed whenever the package sources or this spec change):\n\n")
    parts += [f"- {line}\n" for line in report.lines()]
    variants = list(test.variants)
    if variants:
        parts.append(f"\nConfig variants {', '.join(f'`{v}`' for v in variants)} are covered by the full "
                     "conformance suite (`pytest tests/conformance`).\n")
    return "".join(parts)


def _bundled_text(filename: str) -> str:
    """A file of the bundled spec folder (a spec or its test data)."""
    from importlib import resources

    return (resources.files("tokenprune.model_specs") / filename).read_text()


def _without_comments(text: str) -> str:
    """The notes without their HTML comments (a note for editors of the file, not for readers of the page)."""
    return re.sub(r"<!--.*?-->\n?", "", text, flags=re.DOTALL).strip() + "\n"


def _keys_table(spec, model) -> str:
    from tokenprune.spec import ModelSpec, resolve_module

    rows = []
    fields = ModelSpec.model_fields

    def located(path, root):
        if model is None or root is None or not path:
            return ""
        try:
            return f"`{type(resolve_module(root, path, 'docs')).__name__}`"
        except Exception as err:
            return f"error: {err}"

    lm = None
    layer = None
    if model is not None:
        lm = resolve_module(model, spec.language_model, "docs")
        layer = resolve_module(lm, spec.decoder_layers, "docs")[0]
    for key in ("multimodal_model", "language_model", "decoder_layers", "rotary_embedding"):
        value = getattr(spec, key)
        root = model if key in ("multimodal_model", "language_model") else lm
        what = FIELD_NOTES.get(key) or fields[key].description
        rows.append([f"`{key}`", f"`{value}`" if value else "(the model itself)" if value == "" else "—",
                     what, located(value, root) if value else (f"`{type(model).__name__}`" if model and value == ""
                                                              else "")])
    for key, info in type(spec.layer).model_fields.items():
        value = getattr(spec.layer, key)
        rows.append([f"`layer.{key}`", f"`{value}`" if value else "—", info.description or "",
                     located(value, layer)])
    attn = None
    if layer is not None:
        try:
            attn = resolve_module(layer, spec.layer.attention, "docs")
        except Exception:
            attn = None
    for key, info in type(spec.attention).model_fields.items():
        name = getattr(spec.attention, key)
        value = ""
        if attn is not None and key != "rope" and isinstance(name, str):
            value = f"`{getattr(attn, name)!r}`" if hasattr(attn, name) else "(absent)"
        rows.append([f"`attention.{key}`", f"`{name}`" if name is not None else "—", info.description or "", value])
    ids = ""
    if model is not None:
        try:
            ids = ", ".join(str(i) for i in spec.vision_token_ids(model.config))
        except Exception as err:
            ids = f"error: {err}"
    rows.append(["`vision_tokens.token_ids`", ", ".join(f"`{r}`" for r in spec.vision_tokens.token_ids),
                 "config references whose values are the vision token ids",
                 f"ids {ids} on the test model" if ids else ""])
    if spec.vision_tokens.locator:
        rows.append(["`vision_tokens.locator`", f"`{spec.vision_tokens.locator}`", "registered locator", ""])
    if spec.tracing.hints or spec.tracing.layer_kwargs or spec.tracing.layer_args:
        args = f", layer_args {spec.tracing.layer_args}" if spec.tracing.layer_args else ""
        rows.append(["`tracing`", f"hints {spec.tracing.hints}, layer_kwargs {spec.tracing.layer_kwargs}{args}",
                     "registered tracing specialisations", ""])
    # The long description goes last, where it can wrap without pushing a short column off the page.
    return md_table(["key", "value", "on the tiny test model", "locates"],
                    [[key, value, found, what] for key, value, what, found in rows])


def draw_graph(graph, title: str):
    """The fx graph as a left-to-right DAG: placeholders grey, layers blue, inserted nodes orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    from tokenprune.cli import is_inserted
    from tokenprune.rewrites.analysis import to_networkx

    g = to_networkx(graph)
    nodes = {n.name: n for n in graph.nodes}
    for depth, generation in enumerate(nx.topological_generations(g)):
        for name in generation:
            g.nodes[name]["depth"] = depth
    for name in g.nodes:  # sources (inputs, get_attr) sit just before their first consumer
        users = [g.nodes[u]["depth"] for u in g.successors(name)]
        if g.in_degree(name) == 0 and users and nodes[name].op == "get_attr":
            g.nodes[name]["depth"] = max(0, min(users) - 1)
    pos = nx.multipartite_layout(g, subset_key="depth", align="vertical", scale=1.0)
    colors = []
    for name in g.nodes:
        node = nodes[name]
        if is_inserted(node):
            colors.append("#f28e2b")
        elif node.op == "call_module" and str(node.target).rsplit(".", 1)[-1].isdigit():
            colors.append("#4e79a7")
        elif node.op in ("placeholder", "output"):
            colors.append("#bab0ac")
        else:
            colors.append("#d4e6f1")
    width = max(10.0, 0.55 * (max(nx.get_node_attributes(g, "depth").values()) + 1))
    fig, ax = plt.subplots(figsize=(width, 5.2))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=7, width=0.6, edge_color="#999999",
                           node_size=260)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=260, linewidths=0.4, edgecolors="#333333")
    labels = {name: name.replace("_position_embeddings", "_rope").replace("_attention_mask", "_mask")
              .replace("base_model_output_with_past", "output_obj").replace("_tokenprune_config_0", "config")
              for name in g.nodes}
    for name, (x, y) in pos.items():
        ax.text(x, y + 0.035, labels[name], fontsize=6.2, ha="center", va="bottom", rotation=25)
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=c, markeredgecolor="#333333",
                     label=label) for c, label in (("#f28e2b", "inserted by tokenprune"), ("#4e79a7", "decoder layer"),
                                                   ("#d4e6f1", "other node"), ("#bab0ac", "input / output"))]
    ax.legend(handles=legend, loc="lower right", fontsize=7, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    fig.tight_layout()
    return fig
