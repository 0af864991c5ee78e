"""Result tables in the paper's layout, and their JSON form."""
from __future__ import annotations

from typing import Any

from .measures import measure

Metrics = dict[str, float]


def model_label(method: str) -> str:
    """The paper's name of a model by its measure."""
    return measure(method).label


def results_table(rows: dict[str, dict[str, Metrics]], title: str = "") -> str:
    """Caption retrieval (image->text) and image retrieval (text->image), one row per model, as in the paper."""
    keys = ("R@1", "R@5", "R@10", "medr", "meanr")
    head = f"{'model':<14}" + " | ".join(
        f"{'R@1':>5} {'R@5':>5} {'R@10':>5} {'med r':>5} {'mean r':>6}" for _ in range(2))
    lines = [title] if title else []
    lines += [f"{'':<14}{'caption retrieval (image -> text)':<33} | {'image retrieval (text -> image)'}", head,
              "-" * len(head)]
    for name, r in rows.items():
        cells = []
        for direction in ("i2t", "t2i"):
            m = r[direction]
            cells.append(" ".join(f"{m[k]:5.1f}" if k != "meanr" else f"{m[k]:6.1f}" for k in keys))
        lines.append(f"{name:<14}" + " | ".join(cells))
    return "\n".join(lines)


def rounded(metrics: dict[str, Any], digits: int = 2) -> dict[str, Any]:
    """Metrics rounded for JSON output, nested dicts included."""
    return {k: rounded(v, digits) if isinstance(v, dict) else round(float(v), digits) for k, v in metrics.items()}
