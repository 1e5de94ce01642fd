"""The model card: what the model is for, what it was trained on, how good it is and where it
falls short, from the run's own files (no figure is typed by hand).

`card_blocks` builds the card as a list of blocks; `to_markdown` and `to_html` render it, the
HTML self-contained (its plots embedded as data URIs, its style inline) so it opens offline.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from stages.core.contracts import Meta
from stages.core.params import LOSS_LABEL, Params
from stages.evaluation.report import cv_line
from stages.evaluation.scoring import SMALL_SPLIT

Block = tuple[Any, ...]  # ("h1"|"h2"|"p", text) | ("ul", [items]) | ("table", header, rows) | ("img", alt, path)




def _g(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def intended_use(params: Params, meta: Meta) -> list[Block]:
    what = "a number" if meta.task == "regression" else f"one of {len(meta.classes or [])} classes"
    source = (f"synthetic data ({meta.kind}, seed {meta.seed})" if meta.source == "synthetic"
              else f"the table {meta.path}")
    model = f"an MLP {list(params.train.hidden)}" if params.train.model == "mlp" else "a linear model"
    return [("h2", "Intended use"),
            ("p", f"Predicts {meta.target!r} ({meta.task}: {what}) from {len(meta.feature_names)} input column(s) "
                  f"of rows like those of {source}; {model} trained with {params.train.optimizer}. Serve it with "
                  "`fitline predict` or `fitline serve-model`, on rows with the same columns.")]


def data_section(meta: Meta) -> list[Block]:
    rows = meta.rows
    blocks: list[Block] = [("h2", "Data"),
                           ("p", f"Rows: {sum(rows.values())} (train {rows.get('train')}, val {rows.get('val')}, "
                                 f"test {rows.get('test')}).")]
    if meta.source == "synthetic" and meta.ground_truth:
        floor = ", ".join(f"{k} {_g(v)}" for k, v in (meta.irreducible or {}).items())
        blocks.append(("p", f"Synthetic ({meta.kind}): the generating process is known, so the noise floor is "
                            f"too: {floor}."))
    elif meta.source_sha256:
        blocks.append(("p", f"File {meta.path}, sha256 {meta.source_sha256[:16]}..."))
    if meta.target_missing:
        blocks.append(("p", f"{meta.target_missing} row(s) without a target were left out."))
    if meta.dropped:
        blocks.append(("ul", [f"left out: {k} ({v})" for k, v in meta.dropped.items()]))
    return blocks


def input_schema(meta: Meta) -> list[Block]:
    rows = [(c.name, c.kind, f"{c.missing_rate:.1%}",
             f"{len(c.vocabulary)} categories" if c.vocabulary is not None else "-") for c in meta.schema]
    return [("h2", "Input schema"), ("table", ["column", "kind", "missing in train", "categories"], rows)]


def validation_section(report: dict[str, Any]) -> list[Block]:
    splits = report.get("splits", {})
    counts = ", ".join(f"{s}: {v.get('checks')} checks" for s, v in splits.items())
    verdict = "passed" if report.get("success") else f"FAILED ({report.get('failed_checks')} checks)"
    return [("h2", "Validation"), ("p", f"Great Expectations suites {verdict}: {counts}.")]


def metrics_section(ev: dict[str, Any]) -> list[Block]:
    task = ev["task"]
    keys = ["mse", "rmse", "mae", "r2"] if task == "regression" else ["accuracy", "f1_macro", "log_loss", "roc_auc"]
    floor = dict(ev.get("irreducible") or {})
    if "mse" in floor:
        floor["rmse"] = math.sqrt(floor["mse"])
    rows = [(k, *(_g(ev[s].get(k)) for s in ("train", "val", "test") if s in ev),
             _g(ev["baseline"].get("test", {}).get(k)), _g(floor.get(k))) for k in keys]
    splits = [s for s in ("train", "val", "test") if s in ev]
    blocks: list[Block] = [("h2", "Metrics"),
                           ("table", ["metric", *splits, "constant baseline (test)", "noise floor"], rows)]
    ci = ev.get("test", {}).get("ci") or {}
    if ci:  # how far the test figures could move with other test rows
        blocks.append(("p", "Test metrics, " + f"{round(100 * next(iter(ci.values()))['level'])}% bootstrap intervals: "
                       + ", ".join(f"{k} [{_g(v['low'])}, {_g(v['high'])}]" for k, v in ci.items() if k in keys) + "."))
    if "cv" in ev:
        blocks.append(("p", cv_line(ev["cv"], task) + "."))
    return blocks


def fit_section(ev: dict[str, Any]) -> list[Block]:
    fit = ev["fit"]
    blocks: list[Block] = [("h2", f"Fit: {fit['verdict']}"), ("ul", list(fit["reasons"]))]
    if fit.get("remedies"):
        blocks += [("p", "What would help:"), ("ul", list(fit["remedies"]))]
    return blocks


def export_section(ex: dict[str, Any], params: Params) -> list[Block]:
    e = params.export
    rows = [("parity (max |onnx - torch|)", f"{_g(ex.get('parity_max_abs'))} ({_g(ex.get('parity_max_scaled'))} of "
             f"the tolerance {e.parity_atol:g} + {e.parity_rtol:g}|y|)"),
            (f"int8 drop in test {ex.get('metric_name')}", f"{_g(ex.get('metric_drop'))} (budget {e.max_metric_drop:g})"),
            ("file sizes", f"fp32 {ex.get('size_fp32_bytes')} B, int8 {ex.get('size_int8_bytes')} B"),
            ("latency, batch 1 (ms)", ", ".join(f"{k} {_g(v.get('batch_1'))}" for k, v in ex.get("latency_ms", {}).items()))]
    return [("h2", "Export (ONNX)"), ("table", ["check", "figure"], rows)]


def limitations(ev: dict[str, Any], ex: dict[str, Any], meta: Meta, params: Params) -> list[Block]:
    """What the figures imply a reader should not rely on."""
    notes = []
    n_test = ev.get("test", {}).get("n")
    if n_test is not None and n_test < SMALL_SPLIT:
        notes.append(f"The test split has {n_test} rows: one row moves a test metric by about {100 / n_test:.1f} "
                     "points; prefer cross-validation or more data before trusting small differences.")
    if not ev.get("irreducible"):
        notes.append("The noise floor is unknown (real data): the fit verdict judges skill over a constant "
                     "baseline, not distance from the best possible model.")
    if ev["fit"]["verdict"] != "good":
        notes.append(f"The fit diagnosis says {ev['fit']['verdict']}: see Fit above before using the model.")
    drop = ex.get("metric_drop")
    if drop is not None and drop > 0.5 * params.export.max_metric_drop:
        notes.append(f"int8 costs {drop:.4g} of the test metric, over half the budget: serve the fp32 model "
                     "where that matters.")
    notes.append("Rows unlike the training data (values outside the train ranges, categories never seen) get "
                 "predictions the metrics above say nothing about: watch new data with `fitline monitor`.")
    return [("h2", "Limitations"), ("ul", notes)]


def card_blocks(params: Params, meta: Meta, ev: dict[str, Any], ex: dict[str, Any], validation: dict[str, Any],
                images: dict[str, Path]) -> list[Block]:
    loss = LOSS_LABEL.get(ev["fit"]["loss"], ev["fit"]["loss"])
    title = f"Model card: {meta.target} ({meta.task})"
    return [("h1", title), *intended_use(params, meta), *data_section(meta), *input_schema(meta),
            *validation_section(validation), *metrics_section(ev), *fit_section(ev), *export_section(ex, params),
            *limitations(ev, ex, meta, params), ("h2", "Figures"),
            *[("img", f"{name} ({loss})" if name == "learning curves" else name, path) for name, path in images.items()]]


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out += [f"{'#' if kind == 'h1' else '##'} {rest[0]}", ""]
        elif kind == "p":
            out += [rest[0], ""]
        elif kind == "ul":
            out += [*(f"- {item}" for item in rest[0]), ""]
        elif kind == "table":
            header, rows = rest
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]
        elif kind == "img":
            out += [f"![{rest[0]}]({Path(rest[1]).name})", ""]
    return "\n".join(out)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;line-height:1.45;"
         "color:#1d1d1f}table{border-collapse:collapse;margin:.5rem 0 1rem;display:block;overflow-x:auto}"
         "th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}th{background:#f3f3f3}"
         "img{max-width:100%;height:auto;display:block;margin:.5rem 0 1.5rem}h1{font-size:1.6rem}")


def to_html(blocks: list[Block]) -> str:
    """One self-contained page: inline style, the PNGs as data URIs."""
    e = html.escape
    body: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(rest[1]).read_bytes()).decode()
            body.append(f'<img alt="{e(rest[0])}" src="data:image/png;base64,{data}">')
    title = e(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "model card"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body>{''.join(body)}</body></html>\n")
