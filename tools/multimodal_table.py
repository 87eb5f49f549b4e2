#!/usr/bin/env python3
"""docs/multimodal.md's table from tools/multimodal_runs.sh's reports (runs/multimodal/<row>.json)."""
import json
import pathlib
import sys

ROWS = [
    ("rgb", "RGB only"),
    ("nir", "NIR only"),
    ("depth", "depth only"),
    ("rgb-nir", "late fusion RGB+NIR, no dropout"),
    ("early", "early fusion, dropout 0.25 (any)"),
    ("early-drop-depth", "early fusion, dropout 0.5 (depth)"),
    ("late", "late fusion (concat), dropout 0.25 (any)"),
    ("late-drop-depth", "late fusion (concat), dropout 0.5 (depth)"),
    ("late-drop-depth-75", "late fusion (concat), dropout 0.75 (depth)"),
    ("late-weighted", "late fusion (weighted), dropout 0.25 (any)"),
    ("late-weighted-drop-depth", "late fusion (weighted), dropout 0.5 (depth)"),
]
COLUMNS = ["day", "night", "day_no_depth", "night_no_depth"]


def main(folder: str = "runs/multimodal") -> None:
    root = pathlib.Path(folder)
    print("| model | day | night | day, no depth | night, no depth | steps | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, label in ROWS:
        path = root / f"{name}.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        acc = report["accuracy"]
        cells = [f"{100 * acc[c]:.2f}" if c in acc else "" for c in COLUMNS]
        train = report["train"]
        print(f"| {label} (`{name}`) | " + " | ".join(cells)
              + f" | {train['steps']} | {train['wall_secs']:.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
