"""``detnorm-inspect ANN.json [--images DIR]`` / ``tools/inspect_data.py``: what is in a dataset?

Prints markdown tables (per-class counts and sizes, objects per image, image sizes, crowd and
empty counts; with ``--images``, the image files checked against the JSON) and writes them as
``stats.md`` and ``stats.json``, with ``classes.png``, ``objects_per_image.png``,
``object_sizes.png`` and ``image_sizes.png``, to ``--output-dir`` (default
``runs/inspect/<ANN stem>``). Numbers come from :func:`detnorm.analysis.dataset_stats.dataset_stats`.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from detnorm.analysis.dataset_stats import AREA_LIMITS, check_image_files, dataset_stats
from detnorm.io import atomic_write, read_json, write_json_atomic

PROG = "detnorm-inspect"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def tables(stats: dict, files: dict | None = None) -> str:
    """The markdown report of :func:`dataset_stats` (and :func:`check_image_files`) output."""
    small, medium = (int(np.sqrt(a)) for a in AREA_LIMITS)
    s = stats
    parts = [
        _table(["images", "objects", "crowd regions", "images without objects",
                "short side", "long side"],
               [[s["images"], s["objects"], s["crowd"], s["empty_images"],
                 "{}-{}".format(*s["short_side"]), "{}-{}".format(*s["long_side"])]]),
        f"\nper class (small: area < {small}², medium: < {medium}², large: the rest):\n",
        _table(["id", "class", "objects", "images", "crowd", "small", "medium", "large"],
               [[c["id"], c["name"], c["objects"], c["images"], c["crowd"], c["small"],
                 c["medium"], c["large"]] for c in s["categories"]]
               + [["", "all", s["objects"], "", s["crowd"], *s["sizes"].values()]]),
        "\nobjects per image:\n",
        _table(["objects", "images"], list(s["objects_per_image"].items())),
        "\nimage sizes (width x height, most common first):\n",
        _table(["size", "images"], list(s["image_sizes"].items())[:15]),
    ]  # fmt: skip
    if files is not None:
        parts += ["\nimage files:\n", _table(
            ["checked", "missing", "unreadable", "size differs from the JSON"],
            [[files["checked"], len(files["missing"]), len(files["unreadable"]),
              len(files["size_mismatch"])]])]  # fmt: skip
        for what in ("missing", "unreadable"):
            if files[what]:
                parts.append(
                    f"{what}: "
                    + ", ".join(files[what][:10])
                    + (", ..." if len(files[what]) > 10 else "")
                )
    return "\n".join(parts) + "\n"


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buf.getvalue()), binary=True)


def plots(stats: dict, out: Path) -> list[Path]:
    """The four PNGs of the module docstring; returns their paths."""
    cats = stats["categories"]
    fig = Figure(figsize=(min(16.0, max(5.0, 0.45 * len(cats) + 2)), 3.8))
    ax = fig.subplots()
    x = np.arange(len(cats))
    bottom = np.zeros(len(cats))
    for size in ("small", "medium", "large"):
        values = np.array([c[size] for c in cats], float)
        ax.bar(x, values, bottom=bottom, label=size)
        bottom += values
    turn = 90 if len(cats) > 24 else 30 if len(cats) > 3 else 0
    ax.set_xticks(x, [c["name"] for c in cats], rotation=turn, ha="right" if turn else "center",
                  fontsize=6 if len(cats) > 24 else None)  # fmt: skip
    ax.set_ylim(0, max(1.0, float(bottom.max())) * 1.2)  # room for the legend
    ax.set(ylabel="objects", title="objects per class, by COCO size")
    ax.legend(ncol=3, loc="upper center", fontsize=8)
    written = [_save(fig, out / "classes.png")]

    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    per_image = stats["objects_per_image"]
    ax.bar([int(k) for k in per_image], list(per_image.values()), width=0.9)
    ax.set(xlabel="objects in the image", ylabel="images", title="objects per image")
    written.append(_save(fig, out / "objects_per_image.png"))

    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    sides = np.asarray(stats["object_sqrt_areas"], float)
    if len(sides):
        ax.hist(sides, bins=np.linspace(0, max(float(sides.max()), 100.0) * 1.02, 50))
    for limit, name in zip(AREA_LIMITS, ("small | medium", "medium | large"), strict=True):
        ax.axvline(np.sqrt(limit), color="red", ls="--")
        ax.text(
            np.sqrt(limit), ax.get_ylim()[1] * 0.95, f" {name}", color="red", fontsize=8, va="top"
        )
    ax.set(xlabel="sqrt(area) (pixels)", ylabel="objects", title="object sizes")
    written.append(_save(fig, out / "object_sizes.png"))

    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    wh = np.array([[int(v) for v in k.split("x")] for k in stats["image_sizes"]]).reshape(-1, 2)
    counts = np.array(list(stats["image_sizes"].values()), float)
    if len(wh):
        ax.scatter(wh[:, 0], wh[:, 1], s=12 + 60 * counts / counts.max(), alpha=0.6)
    ax.set(xlabel="width", ylabel="height", title="image sizes (marker: number of images)")
    written.append(_save(fig, out / "image_sizes.png"))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("ann", type=Path, help="COCO instances JSON")
    p.add_argument("--images", type=Path, help="image folder: check each file exists, is "
                   "readable and has the JSON's size")  # fmt: skip
    p.add_argument("--output-dir", type=Path, help="default: runs/inspect/<ANN stem>")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-inspect`` and ``tools/inspect_data.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        data = read_json(args.ann, "annotations")
        if not isinstance(data, dict):
            raise ValueError(f"{args.ann}: not a COCO instances file (not a JSON object)")
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(f"{args.ann}: not a COCO instances file (no {', '.join(missing)})")
        if args.images is not None and not args.images.is_dir():
            raise ValueError(f"--images: folder not found: {args.images}")
        stats = dataset_stats(data, name=str(args.ann))
        files = check_image_files(data, args.images) if args.images is not None else None
    except KeyError as e:
        print(
            f"{PROG}: error: {args.ann}: an image or annotation lacks the key {e}", file=sys.stderr
        )
        return 2
    except (ValueError, OSError, TypeError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = args.output_dir or Path("runs") / "inspect" / args.ann.stem
    out.mkdir(parents=True, exist_ok=True)
    report = tables(stats, files)
    print(f"# {args.ann}\n\n{report}")
    atomic_write(out / "stats.md", lambda f: f.write(f"# {args.ann}\n\n{report}"))
    summary = {k: v for k, v in stats.items() if k != "object_sqrt_areas"}  # one per object
    write_json_atomic(out / "stats.json", {**summary, "image_files": files}, indent=1)
    for path in plots(stats, out):
        print(f"wrote {path}")
    print(f"wrote {out / 'stats.md'}, {out / 'stats.json'}")
    return 0
