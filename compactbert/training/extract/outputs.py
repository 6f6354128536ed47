"""What an extraction writes: the ranked table (JSON and Markdown), the Pareto front of (p, i, e) as
a PNG plot, the chosen architecture's config.json and a summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import BaseConfig
from ...io.atomic import write_atomic
from .space import SearchSpace

if TYPE_CHECKING:
    from .search import Candidate, ExtractionConfig, ExtractionResult

logger = logging.getLogger("compactbert.training.extract")


def pareto_front(candidates: list["Candidate"]) -> list["Candidate"]:
    """The measured candidates no other one beats on all of p, i and e (lower is better) at once."""
    measured = [c for c in candidates if c.error is not None]

    def keys(c: "Candidate") -> tuple[float, float, float]:
        return (c.costs.parameters, c.costs.flops, c.error)  # type: ignore[return-value]

    return [c for c in measured
            if not any(all(a <= b for a, b in zip(keys(o), keys(c))) and keys(o) != keys(c) for o in measured)]


def ranking(candidates: list["Candidate"]) -> list["Candidate"]:
    """Measured candidates by W (best first), then the others by their size-and-speed factor."""
    measured = sorted((c for c in candidates if c.w is not None), key=lambda c: -c.w)  # type: ignore[operator]
    rest = sorted((c for c in candidates if c.w is None), key=lambda c: -c.factor)
    return measured + rest


def markdown_table(result: "ExtractionResult") -> str:
    front = {c.architecture for c in pareto_front(result.candidates)}
    lines = ["| rank | architecture | p (layers) | p (net) | i (FLOPs/token) | factor | e (nats) | accuracy | W "
             "| front |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rank, c in enumerate(ranking(result.candidates), 1):
        measured = c.error is not None
        lines.append(f"| {rank if measured else ''} | {c.architecture.name} | {c.costs.parameters:,} | "
                     f"{c.costs.net_parameters:,} | {c.costs.flops:,} | {c.factor:.4f} | "
                     f"{f'{c.error:.4f}' if measured else ''} | {f'{c.accuracy:.3f}' if measured else ''} | "
                     f"{f'{c.w:.4f}' if measured else ''} | {'yes' if c.architecture in front else ''} |")
    return "\n".join(lines) + "\n"


def plot_front(result: "ExtractionResult", path: Path) -> bool:
    """p against i for the measured candidates, coloured by e; the front ringed, the choice starred.
    False (and a log line) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install \"compactbert[plot]\"): no pareto.png")
        return False
    measured = [c for c in result.candidates if c.error is not None]
    front = pareto_front(result.candidates)
    figure, axes = plt.subplots(figsize=(7, 5))
    points = axes.scatter([c.costs.parameters / 1e6 for c in measured], [c.costs.flops / 1e6 for c in measured],
                          c=[c.error for c in measured], cmap="viridis_r", s=40)
    axes.scatter([c.costs.parameters / 1e6 for c in front], [c.costs.flops / 1e6 for c in front], s=160,
                 facecolors="none", edgecolors="black", label="Pareto front of (p, i, e)")
    chosen = result.chosen
    axes.scatter([chosen.costs.parameters / 1e6], [chosen.costs.flops / 1e6], marker="*", s=300, color="red",
                 label=f"chosen: {chosen.architecture.name}")
    figure.colorbar(points, label="e: held-out masked-LM cross-entropy (nats)")
    axes.set_xlabel("p: encoder-layer parameters (millions)")
    axes.set_ylabel("i: operations per token (millions)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
    return True


def write_outputs(result: "ExtractionResult", teacher_config: BaseConfig, space: SearchSpace,
                  config: "ExtractionConfig") -> dict[str, str]:
    out = Path(config.output_dir)  # type: ignore[arg-type]
    files: dict[str, str] = {}

    def text(name: str, content: str) -> None:
        files[name] = str(write_atomic(out / name, lambda path: path.write_text(content, encoding="utf-8")))

    chosen = result.chosen
    text("candidates.json", json.dumps([c.row() for c in ranking(result.candidates)], indent=2) + "\n")
    text("ranking.md", markdown_table(result))
    text("config.json", json.dumps(chosen.architecture.config(teacher_config).to_dict(), indent=2) + "\n")
    summary: dict[str, Any] = {
        "chosen": chosen.row(), "maximum": result.maximum.row(), "space": space.to_dict(),
        "candidates": len(result.candidates), "surrogates_trained": result.trained,
        "mode": "exhaustive" if config.exhaustive else f"approximation, epsilon {config.epsilon}",
        "surrogate_seconds_this_run": round(result.seconds, 1), "pareto_front": [c.architecture.name for c in
                                                                                 pareto_front(result.candidates)],
        "settings": {k: v for k, v in vars(config).items() if k != "output_dir" and not isinstance(v, dict)},
    }
    text("extraction.json", json.dumps(summary, indent=2, default=str) + "\n")
    if plot_front(result, out / "pareto.png"):
        files["pareto.png"] = str(out / "pareto.png")
    return files
