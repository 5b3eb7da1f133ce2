"""``reports/index.html``: one self-contained page with everything a run produced.

No network and no scripts: figures are PNGs embedded as ``data:`` URIs, styles are inline.
Sections: data, training curves of both phases, test metrics (operating point, every TTA ×
threshold setting), confusion matrix, ROC/PR, calibration, Grad-CAM, cross-validation (when
its report exists) and export parity. A missing input leaves its section with a note saying
which stage writes it. A multi-label run (``task: multilabel`` in its reports) gets positives
per label instead of images per class, and a per-label test table with each label's own
threshold and temperature.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass
from pathlib import Path

from unfreeze.config.params import METRIC_NAMES
from unfreeze.evaluation.caveats import caveats
from unfreeze.evaluation.plots import pyplot, save_figure
from unfreeze.io import read_json, write_atomic
from unfreeze.report_tables import (
    MEANING,
    image_tag,
    label_counts,
    label_details,
    label_split_table,
    missing,
    per_label,
    table,
    with_interval,
)

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-top:.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.3em}.missing{color:#a60}.figs{display:flex;flex-wrap:wrap}
.warn{border:2px solid #c60;background:#fff6ec;padding:0 1em;margin:1em 0}"""
METRIC_KEYS = (*METRIC_NAMES, "ece")


@dataclass(frozen=True)
class ReportInputs:
    """Where the report reads from (the stages' own output folders)."""

    prepare: Path
    split: Path
    head: Path
    finetune: Path
    evaluate: Path
    cv: Path
    export: Path


def inputs_under(reports: Path) -> ReportInputs:
    """The stages' report folders under one ``reports`` folder."""
    return ReportInputs(*(reports / name for name in ReportInputs.__dataclass_fields__))


def read_series(plots_dir: Path) -> dict[str, list[float]]:
    """dvclive's per-epoch TSV files (``train/loss.tsv`` …) as ``{"train/loss": [...]}``."""
    series = {}
    for tsv in sorted(plots_dir.glob("*/*.tsv")):
        with tsv.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        name = tsv.stem
        series[f"{tsv.parent.name}/{name}"] = [float(r[name]) for r in rows]
    return series


def plot_training(path: Path, phases: dict[str, dict[str, list[float]]]) -> Path | None:
    """Loss and accuracy per epoch, phase two continuing after phase one; None if no data."""
    if not any(phases.values()):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = 0
    for phase, series in phases.items():
        n = 0
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for part, style in (("train", "-"), ("val", "--")):
                values = series.get(f"{part}/{metric}", [])
                n = max(n, len(values))
                ax.plot(range(offset + 1, offset + len(values) + 1), values, style,
                        marker="o", label=f"{phase} {part}")
            ax.set(xlabel="epoch", title=metric)
        offset += n
    axes[0].legend(fontsize=8)
    written = save_figure(fig, path)
    plt.close(fig)
    return written


def read_rates(folder: Path) -> list[float]:
    """The learning rate of each step of a phase (dvclive's ``plots/custom/lr.json``)."""
    file = folder / "plots" / "custom" / "lr.json"
    return [float(p["lr"]) for p in read_json(file)] if file.is_file() else []


def plot_rates(path: Path, phases: dict[str, list[float]]) -> Path | None:
    """The learning rate per optimizer step, phase two after phase one; None without data."""
    if not any(phases.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 2.8))
    offset = 0
    for phase, rates in phases.items():
        ax.plot(range(offset + 1, offset + len(rates) + 1), rates, label=phase)
        offset += len(rates)
    ax.set(xlabel="optimizer step", ylabel="learning rate", yscale="log",
           title="learning rate per step (the base rate; layer-wise factors multiply it)")
    ax.legend(fontsize=8)
    written = save_figure(fig, path)
    plt.close(fig)
    return written


def data_section(inputs: ReportInputs) -> str:
    """Images found, usable, rejected; the split's counts per class (multi-label: positives
    per label, images with no label, the stratification and its warnings)."""
    out = ["<h2>Data</h2>"]
    data_file, split_file = inputs.prepare / "data.json", inputs.split / "split.json"
    if data_file.is_file():
        data = read_json(data_file)
        out.append(table(["images", "usable", "rejected", "ignored"],
                         [[data["n_candidates"], data["n_ok"], data["n_rejected"],
                           data["n_ignored"]]]))
        if data.get("task") == "multilabel":
            out.append(label_counts(data))
    else:
        out.append(missing(f"{data_file} not found (stage prepare)"))
    if not split_file.is_file():
        out.append(missing(f"{split_file} not found (stage split)"))
        return "\n".join(out)
    split = read_json(split_file)
    splits = split["splits"]
    if any("labels" in s for s in splits.values()):
        out.append(label_split_table(split))
    else:
        classes = sorted({c for s in splits.values() for c in s["classes"]})
        out.append(table(["split", "images", "fraction", *classes],
                         [[name, s["n"], s["fraction"], *(s["classes"].get(c, 0)
                                                          for c in classes)]
                          for name, s in splits.items()]))
    return "\n".join(out)


def training_section(inputs: ReportInputs, scratch: Path) -> str:
    """Both phases' loss and accuracy curves and their best epochs."""
    phases = {name: read_series(folder / "plots" / "metrics")
              for name, folder in (("head", inputs.head), ("finetune", inputs.finetune))}
    figure = plot_training(scratch / "training.png", phases)
    rates = plot_rates(scratch / "lr.png", {name: read_rates(folder) for name, folder in
                                            (("head", inputs.head),
                                             ("finetune", inputs.finetune))})
    out = ["<h2>Training curves</h2>",
           image_tag(figure, "training curves") if figure else
           missing("no training logs found (stages head, finetune)")]
    if rates:
        out.append(image_tag(rates, "learning rate per step"))
    rows = []
    for name, folder in (("head", inputs.head), ("finetune", inputs.finetune)):
        if (folder / "metrics.json").is_file():
            m = read_json(folder / "metrics.json")
            rows.append([name, m.get("epochs_run"), m.get("best_epoch"),
                         m.get("best_val_loss"), m.get("best_val_accuracy"), m.get("seconds")])
    if rows:
        out.append(table(["phase", "epochs run", "best epoch", "val loss", "val accuracy",
                          "seconds"], rows))
    return "\n".join(out)


def test_section(inputs: ReportInputs) -> str:
    """Test metrics at the operating point, every TTA × threshold setting, the figures."""
    folder = inputs.evaluate
    if not (folder / "metrics.json").is_file():
        return "<h2>Test set</h2>" + missing(f"{folder}/metrics.json not found (stage evaluate)")
    m = read_json(folder / "metrics.json")
    multilabel = m.get("task") == "multilabel"
    compare = m.get("compare", {})
    rows = [[name, *(with_interval(v.get(k), (v.get("ci95") or {}).get(k))
                     for k in METRIC_KEYS)] for name, v in compare.items()]
    per_class = [[c, v["precision"], v["recall"], v["f1"], v["support"]]
                 for c, v in m.get("per_class", {}).items()]
    figures = "".join(image_tag(folder / f"{name}.png", name)
                      for name in ("confusion", "roc", "pr", "reliability"))
    return "\n".join([
        "<h2>Test set</h2>", operating_point(m), *([MEANING] if multilabel else []),
        interval_table(m), table(["setting", *METRIC_KEYS], rows) if rows else "",
        label_details(m) if multilabel else
        table(["class", "precision", "recall", "f1", "support"], per_class),
        f'<div class="figs">{figures}</div>',
        "<h2>Grad-CAM</h2>", image_tag(folder / "gradcam.png", "Grad-CAM grid")])


def operating_point(m: dict) -> str:
    """The sentence saying how the test decisions were made (multi-label: per label)."""
    rule = html.escape(str(m.get("threshold_rule")))
    if m.get("task") == "multilabel":
        decide = (f"per-label thresholds {per_label(m.get('thresholds'), 4)} (rule {rule}), "
                  f"per-label temperatures {per_label(m.get('temperatures'), 3)}")
    else:
        decide = (f"threshold {_number(m.get('threshold'))} (rule {rule}), temperature "
                  f"{m.get('temperature', 1.0):.3f}")
    return (f"<p>{m['n_test']} test images. Operating point fitted on {m.get('n_val')} "
            f"validation images: {decide}, test-time augmentation "
            f"{html.escape(str(m.get('tta')))}. Expected calibration error "
            f"{m.get('ece_uncalibrated', 0):.4f} before, {m.get('ece', 0):.4f} after.</p>")


def interval_table(m: dict) -> str:
    """Each headline test metric at the operating point with its bootstrap 95% interval."""
    ci = m.get("ci95") or {}
    boot = m.get("bootstrap") or {}
    strata = "label-set" if m.get("task") == "multilabel" else "class"
    note = (f"95% interval: {boot['resamples']} {strata}-stratified bootstrap resamples of the "
            "test images" if boot else "no intervals in this metrics.json (evaluate.bootstrap: "
            "0, or written before 0.2)")
    rows = [[name, m.get(name), *((ci.get(name) or {}).get(k) for k in ("low", "high"))]
            for name in METRIC_NAMES]
    return table(["metric", "test", "95% CI low", "95% CI high"], rows) + f"<p>{note}</p>"


def _number(value) -> str:
    return "none (arg-max)" if value is None else f"{value:.4f}"


def cv_section(inputs: ReportInputs) -> str:
    """Cross-validation: mean, std and 95% CI per metric, and its figures."""
    folder = inputs.cv
    if not (folder / "metrics.json").is_file():
        return ("<h2>Cross-validation</h2>"
                + missing("no cross-validation report (run `dvc repro cv_report`)"))
    cv = read_json(folder / "metrics.json")
    rows = [[name, v["mean"], v["std"], *(v["ci95"] or [None, None])]
            for name, v in cv["metrics"].items()]
    figures = "".join(image_tag(folder / f"{n}.png", f"cv {n}") for n in ("folds", "roc"))
    point = cv.get("operating_point") or {}
    per_label = any("thresholds" in p for p in point.get("per_fold") or [])
    said = (f"<p>Estimates {html.escape(cv.get('estimates', 'the procedure of cv.phases'))}. "
            f"Each fold at its own operating point, fitted on its inner validation slice "
            f"({'per-label thresholds by ' if per_label else 'threshold '}rule "
            f"{html.escape(str(point.get('threshold_rule')))}, calibration "
            f"{html.escape(str(point.get('calibration')))}, test-time augmentation "
            f"{html.escape(str(point.get('tta')))}), as the test set's is on validation.</p>"
            if point else "")
    return "\n".join([f"<h2>Cross-validation ({cv['folds']} folds, phases "
                      f"{', '.join(cv['phases'])})</h2>", said,
                      table(["metric", "mean", "std", "95% CI low", "95% CI high"], rows),
                      f'<div class="figs">{figures}</div>'])


def caveats_section(inputs: ReportInputs) -> str:
    """The warnings a reader must see before any number (empty when there are none)."""
    found = caveats(_read(inputs.evaluate / "metrics.json"), _read(inputs.cv / "metrics.json"))
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(c)}</li>" for c in found)
    return f'<div class="warn"><h2>Read this first</h2><ul>{items}</ul></div>'


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def export_section(inputs: ReportInputs) -> str:
    """The export stage's parity numbers."""
    file = inputs.export / "metrics.json"
    if not file.is_file():
        return "<h2>Export</h2>" + missing(f"{file} not found (stage export)")
    m = read_json(file)
    rows = [[k, v] for k, v in sorted(m.items())]
    return "<h2>Export parity (test images)</h2>" + table(["check", "value"], rows)


def build_report(inputs: ReportInputs, out: Path, title: str = "unfreeze report") -> Path:
    """Write the self-contained HTML page to ``out`` (atomically)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        sections = [caveats_section(inputs), data_section(inputs),
                    training_section(inputs, Path(scratch)),
                    test_section(inputs), cv_section(inputs), export_section(inputs)]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            + "\n".join(sections) + "</body></html>\n")
    return write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
