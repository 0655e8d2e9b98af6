"""`evtp demo` (what `make demo` runs): the pruning job on the embedded defaults.

1. Kept-token overlays of every selection method on a real bundled photo (scikit-image's
   astronaut), with the coverage of each kept set: one PNG per method plus a labelled contact sheet.
2. If the shipped reference IVS model is present: one test image and one test video at full tokens
   and with EVTP-IV at ``--keep``, drawn as labelled figures (instruction, tokens kept, IoU / J&F
   per panel). The example is not picked by hand: of the demo's ``--samples`` test scenes it is the
   one whose EVTP-IV score is the median (`typical_index`), so it shows a typical case whatever
   the weights are; the figure, its caption and the printed output say so.
3. A few scenes of the synthetic benchmark at full tokens and at ``--keep`` with several methods:
   accuracy and timing.
"""
from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

import evtp
from evtp import coverage
from evtp.eval.records import prepare_output_dir, write_json_atomic
from evtp.settings import SettingsError


def example_rule(n: int, task: str, metric: str, keep: float) -> str:
    """How the demo's example is chosen (`typical_index`), in words: printed, drawn under each
    example figure and saved in demo.json."""
    tie = " (the lower of the two middle ones, as the count is even)" if n % 2 == 0 else ""
    return (f"chosen by a fixed rule, not by hand: of the first {n} test {task}s of the synthetic "
            f"benchmark, the one whose EVTP-IV {metric} at keep {keep} is the median{tie}, i.e. a typical case")



def patch_tokens(image: np.ndarray, grid: int = 16) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Split an RGB image into grid x grid patches; features = centred, flattened patch pixels.

    Returns:
        features (grid*grid, 3*p*p) float32, positions (grid*grid, 2) long, the resized image.
    """
    side = (min(image.shape[:2]) // grid) * grid
    img = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))
    p = side // grid
    patches = img.reshape(grid, p, grid, p, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, -1)
    x = torch.from_numpy(patches.astype(np.float32) / 255.0)
    x = x - x.mean(0, keepdim=True)
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return x, torch.stack([r.flatten(), c.flatten()], -1), img


def overlay(img: np.ndarray, kept: torch.Tensor, grid: int, title: str) -> Image.Image:
    """Dim pruned patches, outline kept ones, write the title (if any) on top."""
    side = img.shape[0]
    p = side // grid
    keep = np.zeros(grid * grid, dtype=bool)
    keep[kept.numpy()] = True
    shade = np.repeat(np.repeat(keep.reshape(grid, grid), p, 0), p, 1)
    out = img.astype(np.float32)
    out[~shade] = out[~shade] * 0.25
    im = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for i in np.flatnonzero(keep):
        r, c = divmod(int(i), grid)
        draw.rectangle([c * p, r * p, (c + 1) * p - 1, (r + 1) * p - 1], outline=(255, 220, 0))
    if title:
        draw.rectangle([0, 0, side, 14], fill=(0, 0, 0))
        draw.text((3, 1), title, fill=(255, 255, 255))
    return im


def selection_sheet(tiles: Sequence[np.ndarray], rows: Sequence[dict], *, keep: float, grid: int):
    """The contact sheet of `selection_overlays` as a labelled matplotlib `Figure`: one panel per
    method titled with its kept count and covering radius, a title naming the photo and the keep
    ratio, and a legend for kept / pruned tokens."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cols = 4
    n_rows = -(-len(tiles) // cols)
    fig = Figure(figsize=(cols * 2.6, n_rows * 2.9 + 1.2), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, tile, row in zip(axes.flat, tiles, rows):
        ax.imshow(tile)
        ax.set_title(f"{row['method']}: {row['kept']} of {grid * grid} kept\n"
                     f"spatial covering radius {row['radius_spatial_cells']:.2f} cells", fontsize=9)
    fig.suptitle(f"Kept tokens of every method at keep {keep} on scikit-image's astronaut\n"
                 f"({grid} x {grid} patch tokens, pixel features; score-based methods scored by "
                 f"patch contrast; no segmentation here, see example_image.png)", fontsize=10)
    fig.legend(handles=[Patch(facecolor="white", edgecolor=(1.0, 0.86, 0.0), label="kept token (outlined)"),
                        Patch(facecolor=(0.2, 0.2, 0.2), label="pruned token (dimmed)")],
               loc="outside lower center", ncol=2, fontsize=9)
    return fig


def selection_overlays(out: Path, keep: float = 0.2, grid: int = 16) -> list[dict]:
    from skimage import data

    x, pos, img = patch_tokens(data.astronaut(), grid)
    scores = x.norm(dim=-1)  # a stand-in importance for the score-based methods: patch contrast
    rows, tiles = [], []
    for name in sorted(evtp.METHODS):
        kw = {"scores": scores} if evtp.METHODS[name].needs_scores else {}
        run = lambda: evtp.select_tokens(x, pos, keep, name, generator=torch.Generator().manual_seed(0), **kw)
        run()  # warm-up: the first call of an op pays one-off costs
        t0 = time.perf_counter()
        kept = run()
        ms = (time.perf_counter() - t0) * 1e3
        row = {
            "method": name, "kept": int(kept.numel()), "select_ms": round(ms, 2),
            "radius_feature": coverage.covering_radius(x, kept, pos, metric="feature").item(),
            "radius_spatial_cells": coverage.covering_radius(x, kept, pos, metric="spatial").item(),
            "spatial_coverage_r1": coverage.spatial_coverage(pos, kept, r=1).item(),
        }
        rows.append(row)
        im = overlay(img, kept, grid, f"{name}: {kept.numel()} of {grid * grid} kept")
        im.save(out / f"overlay_{name}.png")
        tiles.append(np.asarray(overlay(img, kept, grid, "")))
    selection_sheet(tiles, rows, keep=keep, grid=grid).savefig(out / "overlays.png", dpi=100)
    return rows


def typical_index(scores: Sequence[float]) -> int:
    """The demo's rule for an honest example: the index of the median sample.

    Samples are ranked by score (ties by index) and the one at rank ``(n - 1) // 2`` from the
    lowest is returned: the median for an odd count, the lower of the two middle ones for an even
    count. At most ``(n - 1) // 2`` scores lie strictly below the chosen one and at most ``n // 2``
    strictly above it.

    Args:
        scores: (n,) finite per-sample scores, n >= 1.
    Returns:
        an index into ``scores``.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"typical_index needs a non-empty 1-d sequence of scores, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"typical_index needs finite scores; got non-finite ones at indices "
                         f"{np.flatnonzero(~np.isfinite(values)).tolist()}")
    order = np.argsort(values, kind="stable")
    return int(order[(values.size - 1) // 2])


def sample_score(task: str, pred, sample) -> float:
    """The demo's per-sample score: IoU for an image, J&F for a video (no mask counts as empty)."""
    from evtp.metrics.aggregate import image_sample_metrics, video_sample_metrics

    if task == "image":
        return float(image_sample_metrics(pred.masks, sample.gt_masks)["iou"])
    return float(video_sample_metrics(pred.masks, sample.gt_masks)["J&F"])


def kept_cells(positions: np.ndarray, kept: np.ndarray, n_frames: int, grid: int) -> np.ndarray:
    """Where the kept tokens sit on the token grid.

    Args:
        positions: (N, 2) (row, col) for one frame or (N, 3) (frame, row, col) grid coordinates.
        kept: (k,) indices into N.
        n_frames: frames of the grid (1 for (N, 2) positions); grid: cells per side.
    Returns:
        (n_frames, grid, grid) bool, True at every kept token's cell.
    """
    pos = np.asarray(positions)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise ValueError(f"positions must be (N, 2) or (N, 3), got shape {pos.shape}")
    pos = pos[np.asarray(kept, dtype=np.int64)].astype(np.int64)
    if pos.shape[1] == 2:
        pos = np.concatenate([np.zeros((len(pos), 1), np.int64), pos], 1)
    cells = np.zeros((n_frames, grid, grid), dtype=bool)
    cells[pos[:, 0], pos[:, 1], pos[:, 2]] = True
    return cells


def example_figure(sample, settings: Sequence[tuple[str, object, float]], *, task: str, grid: int,
                   lm_frames: Sequence[int], caption: str):
    """A labelled matplotlib `Figure` of one example at several pruning settings.

    Columns are settings for an image and the frames the LM reads for a video (rows are then
    settings). Pruned tokens are dimmed, the ground truth is outlined in red and the prediction in
    green; each panel (image) or row (video) says its setting, the tokens kept (k of N) and its IoU
    / J&F; the title quotes the instruction; ``caption`` (how the example was chosen) goes under the
    legend.

    Args:
        sample: the `Sample` (frames (T, H, W, 3) uint8, gt_masks (T, H, W) bool, instruction).
        settings: (label, `Prediction`, score) per setting; the prediction's ``extra`` holds
            ``kept`` and ``positions`` of its visual tokens.
        task: "image" or "video"; grid: token-grid cells per side; lm_frames: frame ids the LM reads.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    metric = "IoU" if task == "image" else "J&F"
    H, W = sample.frames.shape[1:3]
    rows_of, cols_of = (np.arange(H) * grid) // H, (np.arange(W) * grid) // W
    n_rows, n_cols = (1, len(settings)) if task == "image" else (len(settings), len(lm_frames))
    fig = Figure(figsize=(n_cols * 2.7 + 0.6, n_rows * 2.7 + 2.6), layout="constrained")
    # panel rows, then one row across the figure for the legend and the caption
    grid_spec = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[2.7] * n_rows + [1.1])
    axes = np.array([[fig.add_subplot(grid_spec[r, c]) for c in range(n_cols)] for r in range(n_rows)])
    footer = fig.add_subplot(grid_spec[n_rows, :])
    footer.set_axis_off()
    for s_i, (label, pred, score) in enumerate(settings):
        cells = kept_cells(pred.extra["positions"], pred.extra["kept"], len(lm_frames), grid)
        tag = (f"{label}\n{pred.tokens_kept} of {pred.tokens_total} tokens kept\n{metric} {score:.3f}"
               + ("" if pred.masks is not None else " (no [SEG]: empty mask)"))
        for f_i, frame in enumerate(lm_frames):
            ax = axes[0, s_i] if task == "image" else axes[s_i, f_i]
            lit = cells[f_i][rows_of][:, cols_of][..., None]
            ax.imshow((sample.frames[frame] * np.where(lit, 1.0, 0.3)).astype(np.uint8))
            ax.contour(sample.gt_masks[frame].astype(float), levels=[0.5], colors=[(1.0, 0.15, 0.15)],
                       linewidths=1.2)
            if pred.masks is not None and pred.masks[frame].any():
                ax.contour(pred.masks[frame].astype(float), levels=[0.5], colors=[(0.15, 1.0, 0.15)],
                           linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if task == "image":
                ax.set_title(tag, fontsize=9)
            else:
                if s_i == 0:
                    ax.set_title(f"frame {frame}", fontsize=9)
                if f_i == 0:
                    ax.set_ylabel(tag, fontsize=9)
    where = (f"a synthetic test image (#{sample.meta.get('index', '?')}, {sample.family})" if task == "image"
             else f"a synthetic test video (#{sample.meta.get('index', '?')}, {sample.family}; "
                  f"{metric} over all {sample.frames.shape[0]} frames, shown: the {len(lm_frames)} the LM reads)")
    fig.suptitle(f"Reference IVS model on {where}\n\"{sample.instruction}\"", fontsize=11)
    footer.legend(handles=[Line2D([], [], color=(1.0, 0.15, 0.15), label="ground truth"),
                           Line2D([], [], color=(0.15, 1.0, 0.15), label="predicted mask"),
                           Patch(facecolor=(0.25, 0.25, 0.25), label="pruned token (dimmed)")],
                  loc="upper center", ncol=3, fontsize=9, frameon=False)
    footer.text(0.5, 0.0, "\n".join(textwrap.wrap(caption, 130 if n_cols > 3 else 100)), fontsize=8,
                ha="center", va="bottom", transform=footer.transAxes)
    return fig


def reference_demo(keep: float, samples: int,
                   methods=("evtp", "evtp[saliency_weight=4]", "kcenter", "random", "uniform"),
                   weights: str | None = None) -> dict | None:
    """Segment `samples` test scenes of the synthetic image benchmark with the shipped reference
    model, at full tokens and at `keep` with each method (a method may carry options, as in
    ``evtp bench reference --methods``); print and return cIoU / gIoU / timing."""
    from evtp.data.synthetic import make_samples
    from evtp.metrics import ciou_giou
    from evtp.models import load_model
    from evtp.selection import METHODS
    from evtp.settings import parse_methods

    try:
        model = load_model("reference", weights=weights)
    except FileNotFoundError as e:
        print(f"\n(reference model part skipped: {e})")
        return None
    data = make_samples("test", samples, "image")
    runs = [(1.0, "full", "evtp", {})] + [(keep, label, name, opts) for label, name, opts
                                          in parse_methods(",".join(methods), METHODS)]
    table = {}
    for k, m, name, opts in runs:
        preds = [model.predict(s, method=name, keep=k, **opts) for s in data]
        ciou, giou = ciou_giou([p.masks[0] if p.masks is not None else None for p in preds],
                               [s.gt_masks[0] for s in data])
        ms = float(np.median([p.timings_ms["lm_prefill"] for p in preds]))
        tot = float(np.median([p.timings_ms["total"] for p in preds]))
        table[f"{m}@{k}"] = {"ciou": ciou, "giou": giou, "lm_prefill_ms": ms, "total_ms": tot,
                             "tokens_kept": float(np.mean([p.tokens_kept for p in preds]))}
    print(f"\nReference IVS model on {samples} synthetic test images, {model.check_readout(None)!r} readout "
          f"(trained on this benchmark, one seed; its measured accuracy and limits: "
          f"src/evtp/weights/MODEL_CARD.md):\n")
    print("| method @ keep | tokens | cIoU | gIoU | LM prefill ms | total ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in table.items():
        print(f"| {name} | {r['tokens_kept']:.0f} | {r['ciou']:.3f} | {r['giou']:.3f} | "
              f"{r['lm_prefill_ms']:.1f} | {r['total_ms']:.1f} |")
    print("\n(More samples, all methods and keep ratios: `evtp bench reference --help`.)")
    return table


def timing_caveat(repeats: int) -> str:
    """What the demo's printed times and speed-ups are, and what they are not."""
    how = (f"medians of {repeats} interleaved runs per setting" if repeats > 1
           else "one run per setting (single-shot)")
    return (f"Times: {how} of this one sample, batch 1, on this machine; a small model at batch 1 "
            f"is overhead-bound and other load on the machine moves these numbers, so they are "
            f"noisy. Measured speed-ups: `evtp bench throughput` (docs/reference_model.md).")


def _interleaved_runs(model, sample, configs, repeats: int) -> dict[str, list]:
    """``repeats`` rounds, each predicting ``sample`` once per configuration (round-robin, so
    machine-load drift hits every setting alike), after one untimed warm-up round.
    configs: (name, label, keep, options). Returns {name: [Prediction per round]}."""
    runs: dict[str, list] = {name: [] for name, _, _, _ in configs}
    for r in range(1 + max(1, repeats)):
        for name, _, k, opts in configs:
            pred = model.predict(sample, method="evtp", keep=k, **opts)
            if r:
                runs[name].append(pred)
    return runs


def example_demo(out: Path, keep: float, *, weights: str | None = None, samples: int = 9,
                 repeats: int = 5) -> dict | None:
    """One test image and one test video through the reference model at full tokens and with
    EVTP-IV at ``keep``, plain and with ``saliency_weight=4``.

    The example of each task is the typical one of the first ``samples`` test scenes: every scene
    is run once with EVTP-IV at ``keep`` and `typical_index` picks the median score
    (`example_rule`). The chosen scene is then run ``repeats`` times per setting, interleaved, for
    timing (`_interleaved_runs`); the printed table says what the times are (`timing_caveat`).
    Prints the rule, the instruction, IoU / J&F, tokens and the measured speed-ups (medians), and
    writes ``example_<task>.png`` (`example_figure`). None when no weights exist.
    """
    from evtp.data.synthetic import make_samples
    from evtp.metrics.aggregate import image_sample_metrics, video_sample_metrics
    from evtp.models import load_model

    try:
        model = load_model("reference", weights=weights)
    except FileNotFoundError as e:
        print(f"\n(reference model examples skipped: {e})")
        return None
    result = {}
    for task in ("image", "video"):
        metric, metric_key = ("IoU", "iou") if task == "image" else ("J&F", "jf")
        data = make_samples("test", samples, task)
        screened = [sample_score(task, model.predict(s, method="evtp", keep=keep), s) for s in data]
        chosen = typical_index(screened)
        s = data[chosen]
        rank = (len(data) - 1) // 2 + 1  # typical_index's rank, counted from the lowest score
        rule = example_rule(len(data), task, metric, keep)
        choice = {"rule": rule, "index": chosen, "rank": rank, "scores": screened,
                  "median": float(np.median(screened)), "min": float(min(screened)), "max": float(max(screened))}
        rows, settings = {}, []
        configs = (("full", "all tokens", 1.0, {}),
                   (f"evtp@{keep}", f"EVTP-IV, keep {keep}", keep, {}),
                   (f"evtp[saliency_weight=4]@{keep}", f"EVTP-IV + ViT attention\n"
                    f"(saliency_weight=4), keep {keep}", keep, {"saliency_weight": 4.0}))
        timed = _interleaved_runs(model, s, configs, repeats)
        for name, label, k, opts in configs:
            runs = timed[name]
            pred = runs[-1]
            tm = {c: float(np.median([r.timings_ms[c] for r in runs])) for c in runs[0].timings_ms}
            mllm = tm["selection"] + tm["lm_prefill"] + tm["decode"]
            if task == "image":
                score = {"iou": float(image_sample_metrics(pred.masks, s.gt_masks)["iou"])}
            else:
                jf = video_sample_metrics(pred.masks, s.gt_masks)
                score = {"j": float(jf["J"]), "f": float(jf["F"]), "jf": float(jf["J&F"])}
            rows[name] = {**score, "tokens_kept": pred.tokens_kept, "tokens_total": pred.tokens_total,
                          "mllm_ms": mllm, "total_ms": tm["total"]}
            settings.append((label, pred, score[metric_key]))
        full = rows["full"]
        for r in rows.values():
            r["speedup_mllm"] = full["mllm_ms"] / r["mllm_ms"]
            r["speedup_total"] = full["total_ms"] / r["total_ms"]
        plain = rows[f"evtp@{keep}"][metric_key]
        share = f"{plain / full[metric_key]:.0%} of" if full[metric_key] > 0 else "vs"
        caption = (f"Example {rule}: this {task} is #{chosen}, rank {rank} of {len(data)} "
                   f"(EVTP-IV {metric} over the {len(data)}: min {choice['min']:.3f}, median "
                   f"{choice['median']:.3f}, max {choice['max']:.3f}). On it EVTP-IV scores "
                   f"{plain:.3f}, {share} the {full[metric_key]:.3f} at full tokens. The model is trained "
                   f"on this synthetic benchmark only; its accuracy and limits: src/evtp/weights/MODEL_CARD.md.")
        png = out / f"example_{task}.png"
        example_figure(s, settings, task=task, grid=model.cfg.grid,
                       lm_frames=model.lm_frame_ids(s.frames.shape[0]), caption=caption).savefig(png, dpi=100)
        print(f"\nReference model, one test {task} ({s.family}): \"{s.instruction}\"")
        print(f"Example {rule}: #{chosen}, rank {rank} of {len(data)} (EVTP-IV {metric}: min "
              f"{choice['min']:.3f}, median {choice['median']:.3f}, max {choice['max']:.3f}).")
        print(f"| setting | tokens | {metric} | MLLM ms | total ms | MLLM speed-up | total speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            print(f"| {name} | {r['tokens_kept']}/{r['tokens_total']} | {r[metric_key]:.3f} | {r['mllm_ms']:.1f} | "
                  f"{r['total_ms']:.1f} | {r['speedup_mllm']:.2f}x | {r['speedup_total']:.2f}x |")
        print(timing_caveat(repeats))
        print(f"Figure (full tokens, EVTP-IV, EVTP-IV weighted by the ViT's attention): {png}")
        result[task] = {"instruction": s.instruction, "family": s.family, "overlay": str(png),
                        "choice": choice, "caption": caption, "timing": timing_caveat(repeats), **rows}
    return result


@dataclass(frozen=True)
class DemoConfig:
    """What ``evtp demo`` runs: ``out`` the folder for PNGs and demo.json (created), ``keep`` the
    fraction of visual tokens kept in (0, 1], ``samples`` the synthetic test scenes of the
    reference-model part (the examples are their median ones), ``repeats`` the interleaved timed
    runs per setting behind each printed speed-up (medians), ``weights`` the reference model's
    folder (None: the shipped weights)."""

    out: Path = Path("demo_out")
    keep: float = 0.2
    samples: int = 9
    repeats: int = 5
    weights: str | None = None

    def __post_init__(self):
        if not (isinstance(self.keep, float) and math.isfinite(self.keep) and 0.0 < self.keep <= 1.0):
            raise SettingsError(f"--keep: must be a fraction in (0, 1], e.g. 0.2; got {self.keep!r}")
        for name in ("samples", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"--{name}: must be an integer >= 1; got {value!r}")


def run_demo(config: DemoConfig) -> dict:
    """The whole demo (module docstring); returns what it writes to ``out/demo.json``. The output
    folder is checked (created, writable) before any work."""
    out = prepare_output_dir(config.out)
    torch.manual_seed(0)
    rows = selection_overlays(out, config.keep)
    print(f"Selection on scikit-image's astronaut (16 x 16 patch tokens, pixel features), keep {config.keep}:\n")
    print("| method | kept | select ms | covering radius (1 - cos) | covering radius (cells) | cells within 1 of a kept token |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['kept']} | {r['select_ms']:.2f} | {r['radius_feature']:.3f} | "
              f"{r['radius_spatial_cells']:.2f} | {r['spatial_coverage_r1']:.2%} |")
    print(f"\nOverlays: {out / 'overlays.png'} and {out}/overlay_<method>.png")
    result = {"selection": rows}
    examples = example_demo(out, config.keep, weights=config.weights, samples=config.samples,
                            repeats=config.repeats)
    if examples is not None:
        result["examples"] = examples
    ref = reference_demo(config.keep, config.samples, weights=config.weights)
    if ref is not None:
        result["reference"] = ref
    write_json_atomic(out / "demo.json", result)
    return result
