"""One self-contained HTML page: tables, figures embedded as data URIs, no network, no script."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from schedlab.metrics import METRICS
from schedlab.report.data import TABLE_METRICS, StudyView
from schedlab.report.stats import INTERVAL
from schedlab.report.tables import (
    FLEET_SHARES,
    PROFILE_TAUS,
    PaperRow,
    SummaryRow,
    cell_value,
    floor_label,
    has_floor,
    metric_grid,
    shared_times,
    shown_metrics,
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222;
       line-height: 1.45; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.92rem; }
.scroll { overflow-x: auto; max-width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #555; }
tr.floor td { color: #666; font-style: italic; }
.warn { color: #8a5300; }
.bad { color: #a40000; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #eee; }
code, pre { background: #f5f5f5; padding: 0.1rem 0.3rem; }
pre { padding: 0.6rem; overflow-x: auto; }
"""

KL = "kl_divergence"
PAPER_SETTINGS = {  # ../shared/SPEC.md: the paper's one run per cell
    "training steps": 10_000,
    "batch size": 256,
    "points per dataset": 100_000,
    "seeds per cell": 1,
}


def esc(value: object) -> str:
    return html.escape(str(value))


def fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], row_class: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr{row_class and f' class={row_class!r}'}>"
        + "".join(f"<td>{esc(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    # A wide table (a column per metric, say) scrolls inside its box; the page keeps its width.
    table_ = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table_}</div>'


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(alt)}</figcaption></figure>"
    )


def kl_section(view: StudyView, rows: list[SummaryRow]) -> str:
    kl = METRICS["kl_divergence"]
    if not any(kl.applies(d, view.sample_shape(d)) for d in view.datasets):
        return (
            "<h2>KL divergence (bits)</h2><p>n/a: the kNN KL estimate and the sample distances "
            "(sliced Wasserstein, MMD) apply to vector data, and this study's models see "
            "images. The held-out eval loss ranks its schedules below.</p>"
        )
    index = {(r.schedule, r.dataset): r for r in rows if r.metric == "kl_divergence"}
    lines = []
    for label in view.labels:
        cells = []
        for d in view.datasets:
            r = index[(label, d)]
            ci = f" [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
            cells.append("-" if r.n == 0 else f"{fmt(r.mean)} ± {fmt(r.std)}{ci} (n={r.n})")
        lines.append([view.display(label), *cells])
    floor_row = table(
        ["", *view.datasets],
        [
            [
                "bias floor (fresh real sample)",
                *(fmt(view.floor("kl_divergence", d)) for d in view.datasets),
            ]
        ],
        "floor",
    )
    return (
        "<h2>KL divergence (bits)</h2><p>KL(real ‖ generated), kNN estimator (k = 5, Chebyshev),"
        f" mean ± sample std over seeds with the {INTERVAL} of the mean (t with n - 1 degrees of"
        " freedom: wide at 2-3 seeds, as an honest interval must be). Lower is better; a"
        " perfect model scores the bias floor, not 0.</p>"
        + table(["schedule", *view.datasets], lines)
        + floor_row
    )


TIME_TO_TARGET = ("steps_to_target", "seconds_to_target")


def time_to_target_section(view: StudyView, rows: list[SummaryRow]) -> str:
    """Steps and seconds to each dataset's target, with the targets and how they were set."""
    spec = view.spec.get("target", {})
    targets = [
        [
            dataset,
            fmt(view.targets.get(dataset, math.nan), 4),
            "set by the study"
            if dataset in spec.get("loss", {})
            else f"{view.baseline}'s final held-out EMA loss x {spec.get('factor', 1.01):g}",
        ]
        for dataset in view.datasets
    ]
    grids = "".join(
        f"<h3>{esc(TABLE_METRICS[metric][0])}</h3>"
        + table(["schedule", *view.datasets], metric_grid(view, rows, metric))
        for metric in TIME_TO_TARGET
        if metric in shown_metrics(rows)
    )
    if not grids:
        return (
            "<h2>Time to target</h2><p>No run of this study recorded a held-out curve (runs "
            "trained before schedlab recorded them): train them again to measure it.</p>"
        )
    return (
        "<h2>Time to target</h2><p>How soon each schedule's held-out EMA loss (recorded while "
        "training) first reaches the dataset's target: steps, and seconds at the run's own "
        "measured step rate. Mean ± std over the seeds that reached it; '(k of n)' when only k "
        "of n did. A schedule that decays early reaches a loose target fast and a tight one "
        "never.</p>" + table(["dataset", "target", "how it was set"], targets) + grids
    )


def metric_sections(view: StudyView, rows: list[SummaryRow]) -> str:
    parts = []
    for metric, (title, _) in shown_metrics(rows).items():
        if metric == "kl_divergence" or metric in TIME_TO_TARGET:
            continue
        parts.append(f"<h3>{esc(title)}</h3>")
        if metric in FLEET_SHARES and shared_times(view):
            parts.append(
                "<p>A fleet's share: its runs trained (or sampled) as one computation, and each "
                "run's time is the fleet's wall time divided by its runs, so it is not ranked. "
                "`benchmarks/engine.py` measures the engines' speed.</p>"
            )
        parts.append(table(["schedule", *view.datasets], metric_grid(view, rows, metric)))
        if has_floor(metric):
            floors = [cell_value(view.floor(metric, d), metric) for d in view.datasets]
            label = f"{floor_label(metric)} (fresh real sample)"
            parts.append(table(["", *view.datasets], [[label, *floors]], "floor"))
    return "<h2>Other metrics (mean ± std over seeds)</h2>" + "".join(parts)


def ranking_section(
    ranked_by: str,
    ranks: dict[str, float],
    profile: dict[str, list[float]],
    spread: str,
    by_metric: dict[str, dict[str, float]],
    profiles: dict[str, dict[str, list[float]]],
) -> str:
    order = sorted(ranks, key=lambda s: ranks[s])
    unmeasured = [math.nan] * len(PROFILE_TAUS)
    lines = [[s, fmt(ranks[s], 2), *(fmt(v, 2) for v in profile.get(s, unmeasured))] for s in order]
    metrics = list(by_metric)
    per_metric = [[s, *(fmt(by_metric[m][s], 2) for m in metrics)] for s in order]
    name = "KL" if ranked_by == "kl_divergence" else TABLE_METRICS[ranked_by][0].lower()
    gap = " above the bias floor" if ranked_by == "kl_divergence" else ""
    return (
        f"<h2>Across datasets</h2><p>Mean rank of each schedule's mean {esc(name)} (1 = best), "
        f"and its performance profile: the fraction of datasets where its {esc(name)}{gap} is "
        "within a factor τ of the best schedule's.</p>"
        + table(["schedule", "mean rank", *(f"τ = {t:g}" for t in PROFILE_TAUS)], lines)
        + spread
        + "<p>Mean rank over datasets under every metric (1 = best, each metric's own "
        "direction): where the columns disagree, the ranking depends on the metric.</p>"
        + table(["schedule", *metrics], per_metric)
        + profiles_details(order, profiles)
    )


def profiles_details(order: list[str], profiles: dict[str, dict[str, list[float]]]) -> str:
    """One performance profile per metric, folded away (they are many)."""
    tables = "".join(
        f"<h3>{esc(TABLE_METRICS[metric][0])}</h3>"
        + table(
            ["schedule", *(f"τ = {t:g}" for t in PROFILE_TAUS)],
            [[s, *(fmt(v, 2) for v in profile[s])] for s in order],
        )
        for metric, profile in profiles.items()
    )
    return (
        "<details><summary>Performance profiles under every metric</summary><p>The fraction "
        "of datasets where a schedule's mean is within a factor τ of the best schedule's: of "
        "the gap to the floor for a metric with one (KL, the sample distances, log-density), of "
        "the value for losses and times. A target never reached counts as never within τ.</p>"
        + tables
        + "</details>"
    )


def status_section(view: StudyView) -> str:
    total = len(view.records) + view.not_in_store
    missing = view.missing()
    folded = "".join(
        f" {', '.join(others)} names the same runs as {label}: they are counted and shown once."
        for label, others in view.aliases.items()
    )
    parts = [
        f"<h2>Runs</h2><p>{total - len(missing)} of {total} planned runs finished "
        f"(done or diverged).{esc(folded)}</p>"
    ]
    if view.not_in_store:
        parts.append(
            f'<p class="warn">{view.not_in_store} more planned runs are not in the store: '
            "run `schedlab run` on the study file.</p>"
        )
    if view.other_plans:
        parts.append(
            f"<p>The store also holds {view.other_plans} other configuration(s) of study "
            f"{esc(view.name)} (the file was edited after they ran): they are not shown; report "
            "them from their own files.</p>"
        )
    if missing:
        parts.append(
            '<p class="warn">This study is partial: the tables use finished runs only. Missing:</p>'
        )
        parts.append(
            table(
                ["schedule", "dataset", "seed", "status"],
                [[r.label, r.dataset, str(r.seed), r.status] for r in missing],
            )
        )
    problems = view.problems()
    if problems:
        parts.append('<h3 class="bad">Failed and diverged runs</h3>')
        parts.append(
            table(
                ["schedule", "dataset", "seed", "status", "diverged at step", "error"],
                [
                    [
                        r.label,
                        r.dataset,
                        str(r.seed),
                        r.status,
                        "" if r.diverged_at is None else str(r.diverged_at),
                        r.error or "",
                    ]
                    for r in problems
                ],
            )
        )
    return "".join(parts)


def metrics_section(rows: list[SummaryRow]) -> str:
    """What each metric on this page is, from the registry."""
    lines = []
    for key in shown_metrics(rows):
        for metric in (
            METRICS[key],
            *([METRICS[METRICS[key].floor]] if METRICS[key].floor else []),
        ):
            better = {"lower": "lower is better", "higher": "higher is better"}.get(
                metric.direction or "", "a reference value"
            )
            lines.append([metric.key, metric.label, better, metric.description])
    return "<h2>The metrics</h2>" + table(["key", "title", "direction", "what it is"], lines)


def settings_section(view: StudyView) -> str:
    versions = sorted({json.dumps(r.versions, sort_keys=True) for r in view.records if r.versions})
    hosts = sorted({r.host for r in view.records if r.host})
    return (
        "<h2>Study settings and software</h2>"
        f"<pre>{esc(json.dumps(view.spec, indent=2, sort_keys=True))}</pre>"
        f"<p>Software: {'; '.join(esc(v) for v in versions) or 'unknown'}. "
        f"Hosts: {esc(', '.join(hosts)) or 'unknown'}.</p>"
    )


def paper_section(view: StudyView, rows: list[PaperRow]) -> str:
    if not rows:
        return (
            "<h2>Against the paper</h2><p>No cell of this study matches the paper's "
            "(schedule labels baseline, step, exponential, plateau, cosine).</p>"
        )
    lines = [
        [r.schedule, r.dataset, r.metric, fmt(r.paper), fmt(r.ours), fmt(r.diff), str(r.n)]
        for r in rows
    ]
    return (
        "<h2>Against the paper</h2><p>The paper's published means beside this study's (ours "
        "minus paper). Times depend on the machine.</p>"
        + paper_settings_note(view)
        + table(["schedule", "dataset", "metric", "paper", "ours", "diff", "n"], lines)
    )


def figures_section(figures: dict[str, Path]) -> str:
    captions = {
        "samples": "Generated samples: rows schedules, columns datasets (the paper's Figure 1)",
        "loss": "Training loss per dataset, one line per schedule (the paper's Figure 2)",
        "lr": "The learning rate each schedule used: a collapse shows as a drop off the axis",
        "kl": "KL per dataset with 95% Student-t intervals of the mean and the bias floor",
        "heldout": (
            "Held-out EMA loss while training (median and band over seeds) and the target "
            "time-to-target measures against (dashed)"
        ),
        "sensitivity": (
            "Tuning: each trial's objective against its LR, per dataset (ringed: the chosen "
            "configuration; on the top edge: the worst quarter of the trials; x: diverged)"
        ),
    }
    figs = "".join(image(path, captions[name]) for name, path in figures.items())
    return "<h2>Figures</h2>" + figs


def slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:40]


def with_anchors(sections: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The sections with an id on each <h2>, and (id, title) of each for the contents."""
    out, entries = [], []
    for section in sections:
        parts = section.split("<h2")
        rebuilt = [parts[0]]
        for part in parts[1:]:
            attributes, _, rest = part.partition(">")
            title, _, tail = rest.partition("</h2>")
            anchor = attributes.split('id="')[1].split('"')[0] if 'id="' in attributes else None
            if anchor is None:
                anchor = slug(html.unescape(title))
                attributes = f' id="{anchor}"'
            entries.append((anchor, html.unescape(title.replace("<b>", "").replace("</b>", ""))))
            rebuilt.append(f"<h2{attributes}>{title}</h2>{tail}")
        out.append("".join(rebuilt))
    return out, entries


def paper_settings_note(view: StudyView) -> str:
    """Where this study's settings differ from the paper's (10,000 steps, batch 256, 100,000
    points, one run per cell): its numbers are then not a reproduction test."""
    train, data_ = view.spec.get("train") or {}, view.spec.get("data") or {}
    seeds = view.spec.get("seeds", 1)
    ours = {
        "training steps": (train.get("steps", PAPER_SETTINGS["training steps"])),
        "batch size": train.get("batch_size", PAPER_SETTINGS["batch size"]),
        "points per dataset": data_.get("n", PAPER_SETTINGS["points per dataset"]),
        "seeds per cell": seeds if isinstance(seeds, int) else len(seeds),
    }
    differ = [
        f"{name}: {ours[name]:,} here, {paper:,} in the paper"
        for name, paper in PAPER_SETTINGS.items()
        if ours[name] != paper
    ]
    if not differ:
        return ""
    return (
        "<p class=\"warn\">This study's settings differ from the paper's ("
        + esc("; ".join(differ))
        + "): a difference below says what those settings give, not whether the paper "
        "reproduces.</p>"
    )


def page(view: StudyView, sections: Sequence[str]) -> str:
    """The page: the verdict first, then the contents, then every other section in order."""
    anchored, entries = with_anchors(sections)
    contents = (
        "<nav><h2>Contents</h2><ol>"
        + "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t in entries)
        + "</ol></nav>"
    )
    first, rest = anchored[:1], anchored[1:]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>schedlab report: {esc(view.name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>schedlab report: study {esc(view.name)}</h1>"
        + "".join(first)
        + contents
        + "".join(rest)
        + "</body></html>"
    )
