"""`evtp demo` (what `make demo` runs): the pruning job on the embedded defaults.

1. Kept-token overlays of every selection method on a real bundled photo (scikit-image's
   astronaut), with the coverage of each kept set: one PNG per method plus a contact sheet.
2. If the shipped reference IVS model is present: segment a few scenes of the synthetic benchmark
   at full tokens and at 20 % with several methods, and print accuracy and timing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import evtp
from evtp import coverage


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
    """Dim pruned patches, outline kept ones, write the title on top."""
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
    draw.rectangle([0, 0, side, 14], fill=(0, 0, 0))
    draw.text((3, 1), title, fill=(255, 255, 255))
    return im


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
        im = overlay(img, kept, grid, f"{name}: {kept.numel()}/{grid * grid}")
        im.save(out / f"overlay_{name}.png")
        tiles.append(im)
    cols = 4
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, ((len(tiles) + cols - 1) // cols) * h))
    for i, im in enumerate(tiles):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    sheet.save(out / "overlays.png")
    return rows


def reference_demo(keep: float, samples: int,
                   methods=("evtp", "evtp[saliency_weight=4]", "kcenter", "random", "uniform"),
                   weights: str | None = None) -> dict | None:
    """Segment `samples` test scenes of the synthetic image benchmark with the shipped reference
    model, at full tokens and at `keep` with each method (a method may carry options, as in
    ``evtp bench reference --methods``); print and return cIoU / gIoU / timing."""
    from evtp.bench.reference import parse_methods
    from evtp.data.synthetic import make_samples
    from evtp.metrics import ciou_giou
    from evtp.models import load_model
    from evtp.selection import METHODS

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
    print(f"\nReference IVS model on {samples} synthetic test images (trained on this benchmark; "
          f"its measured accuracy and limits: src/evtp/weights/MODEL_CARD.md):\n")
    print("| method @ keep | tokens | cIoU | gIoU | LM prefill ms | total ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in table.items():
        print(f"| {name} | {r['tokens_kept']:.0f} | {r['ciou']:.3f} | {r['giou']:.3f} | "
              f"{r['lm_prefill_ms']:.1f} | {r['total_ms']:.1f} |")
    print("\n(More samples, all methods and keep ratios: `evtp bench reference --help`.)")
    return table


def example_demo(out: Path, keep: float, *, weights: str | None = None, index: int = 0,
                 repeats: int = 3) -> dict | None:
    """One test image and one test video through the reference model at full tokens and with
    EVTP-IV at ``keep``, plain and with ``saliency_weight=4``: prints the instruction, IoU / J&F,
    tokens and the measured speed-ups (median of ``repeats``), writes ``example_<task>.png``
    overlays (rows: full, EVTP-IV, saliency-weighted EVTP-IV; darkened = pruned tokens, green =
    predicted mask, red = ground truth). None when no weights exist."""
    from evtp.bench.reference import overlay
    from evtp.data.synthetic import make_sample
    from evtp.metrics import j_and_f
    from evtp.models import load_model

    try:
        model = load_model("reference", weights=weights)
    except FileNotFoundError as e:
        print(f"\n(reference model examples skipped: {e})")
        return None
    result = {}
    for task in ("image", "video"):
        s = make_sample("test", index, task)
        rows, panels = {}, []
        for name, k, opts in (("full", 1.0, {}), (f"evtp@{keep}", keep, {}),
                              (f"evtp[saliency_weight=4]@{keep}", keep, {"saliency_weight": 4.0})):
            runs = [model.predict(s, method="evtp", keep=k, **opts) for _ in range(max(1, repeats))]
            pred = runs[-1]
            tm = {c: float(np.median([r.timings_ms[c] for r in runs])) for c in runs[0].timings_ms}
            mllm = tm["selection"] + tm["lm_prefill"] + tm["decode"]
            if task == "image":
                inter = np.logical_and(pred.masks, s.gt_masks).sum()
                score = {"iou": float(inter / max(np.logical_or(pred.masks, s.gt_masks).sum(), 1))}
            else:
                j, f, jf = j_and_f(pred.masks, s.gt_masks)
                score = {"j": float(j), "f": float(f), "jf": float(jf)}
            rows[name] = {**score, "tokens_kept": pred.tokens_kept, "tokens_total": pred.tokens_total,
                          "mllm_ms": mllm, "total_ms": tm["total"]}
            panels.append(overlay(s, pred, model.cfg.patch, model.lm_frame_ids(s.frames.shape[0])))
        full = rows["full"]
        for r in rows.values():
            r["speedup_mllm"] = full["mllm_ms"] / r["mllm_ms"]
            r["speedup_total"] = full["total_ms"] / r["total_ms"]
        png = out / f"example_{task}.png"
        Image.fromarray(np.concatenate(panels, 0)).save(png)
        metric = "iou" if task == "image" else "jf"
        print(f"\nReference model, one test {task} ({s.family}): \"{s.instruction}\"")
        print(f"| setting | tokens | {'IoU' if task == 'image' else 'J&F'} | MLLM ms | total ms | MLLM speed-up | total speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            print(f"| {name} | {r['tokens_kept']}/{r['tokens_total']} | {r[metric]:.3f} | {r['mllm_ms']:.1f} | "
                  f"{r['total_ms']:.1f} | {r['speedup_mllm']:.2f}x | {r['speedup_total']:.2f}x |")
        print(f"Overlay (rows: full, EVTP-IV, EVTP-IV weighted by the ViT's attention): {png}")
        result[task] = {"instruction": s.instruction, "family": s.family, "overlay": str(png), **rows}
    return result


def main(argv: list[str] | None = None, prog: str = "evtp demo") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo_out", help="folder for PNGs and JSON (created)")
    ap.add_argument("--keep", type=float, default=0.2)
    ap.add_argument("--samples", type=int, default=8, help="synthetic scenes for the reference-model part")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    rows = selection_overlays(out, a.keep)
    print(f"Selection on scikit-image's astronaut (16 x 16 patch tokens, pixel features), keep {a.keep}:\n")
    print("| method | kept | select ms | covering radius (1 - cos) | covering radius (cells) | cells within 1 of a kept token |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['kept']} | {r['select_ms']:.2f} | {r['radius_feature']:.3f} | "
              f"{r['radius_spatial_cells']:.2f} | {r['spatial_coverage_r1']:.2%} |")
    print(f"\nOverlays: {out / 'overlays.png'} and {out}/overlay_<method>.png")
    result = {"selection": rows}
    examples = example_demo(out, a.keep)
    if examples is not None:
        result["examples"] = examples
    ref = reference_demo(a.keep, a.samples)
    if ref is not None:
        result["reference"] = ref
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    return 0
