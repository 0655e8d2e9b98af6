"""``evtp bench reference``: flags -> `evtp.bench.reference.ReferenceBenchConfig` ->
`evtp.bench.reference.run_reference_bench`."""
from __future__ import annotations

from dataclasses import fields

from evtp.bench import reference as bench
from evtp.cli.args import non_negative_int, out_file, parser, positive_int
from evtp.data.synthetic import DIFFICULTIES
from evtp.models.reference.config import READOUTS
from evtp.models.reference.scores import SCORE_SOURCES
from evtp.selection import METHODS
from evtp.settings import SettingsError, parse_keeps, parse_methods, parse_options


def _parser(prog: str):
    d = {f.name: f.default for f in fields(bench.ReferenceBenchConfig)}  # the defaults' one home
    ap = parser(prog, bench.__doc__)
    ap.add_argument("--task", choices=bench.TASKS, default=d["task"], help="benchmark task")
    ap.add_argument("--split", choices=bench.SPLITS, default=d["split"], help="benchmark split")
    ap.add_argument("--difficulty", choices=DIFFICULTIES, default=d["difficulty"],
                    help="scene difficulty: hard = the background / low-saliency / small / dense families "
                         "(docs/benchmarks/synthetic.md)")
    ap.add_argument("--textured", action="store_true", help="textured objects (interiors change when they move)")
    ap.add_argument("--seed-offset", type=int, default=d["seed_offset"], help="shift of the split's seed range")
    ap.add_argument("--samples", type=positive_int, default=d["samples"], help="samples of the split")
    ap.add_argument("--methods", default="evtp,kcenter,random,uniform,attention,dpp,tome,dart",
                    help=f"comma-separated methods of {', '.join(sorted(METHODS))}; a method may carry its "
                         "own options, e.g. evtp[saliency_weight=4] (several: "
                         "evtp[saliency_weight=4;spatial_weight=0.5])")
    ap.add_argument("--keep", default="1.0,0.5,0.3,0.2,0.1,0.05",
                    help="comma-separated keep ratios (with a dot) or counts; 0 = no visual tokens")
    ap.add_argument("--out", type=out_file, default=str(d["out"]), help="results JSON")
    ap.add_argument("--weights", default=d["weights"],
                    help="model directory (None: the shipped weights; random-tiny: a tiny untrained model)")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="method option, e.g. spatial_weight=0.5 (repeatable); passed to the methods that "
                         "declare it")
    ap.add_argument("--contiguous", action="store_true",
                    help="re-index kept tokens contiguously instead of keeping their original positions")
    ap.add_argument("--readout", choices=READOUTS, default=d["readout"],
                    help="how the mask is read from the LM: point (the LM writes the target's location, "
                         "an exact segmenter returns the object there), seg (the [SEG] state prompts a "
                         "frozen promptable decoder), dense (Text4Seg-style heat map of "
                         "per-kept-token logits); default: the weights' primary readout (point for the "
                         "shipped weights)")
    ap.add_argument("--score-source", choices=SCORE_SOURCES, default=d["score_source"],
                    help="scores of the score-based methods (attention; dpp, dart, evtp[saliency_weight] when "
                         "they use scores): vit (attention received in the ViT's last block), lm (FastV-style: "
                         "attention from the last instruction word in LM layer --score-layer, an extra LM pass "
                         "timed in selection), noisy (vit + --score-noise x std x N(0,1), seeded per sample)")
    ap.add_argument("--score-layer", type=positive_int, default=d["score_layer"],
                    help="K of --score-source lm (FastV: 2)")
    ap.add_argument("--score-noise", type=float, default=d["score_noise"], help="sigma of --score-source noisy (>= 0)")
    ap.add_argument("--repeats", type=positive_int, default=d["repeats"], help="timing repeats per timed sample")
    ap.add_argument("--timed-samples", type=non_negative_int, default=d["timed_samples"],
                    help="samples timed with --repeats")
    ap.add_argument("--overlays", type=non_negative_int, default=d["overlays"],
                    help="samples to draw kept-token overlays for")
    ap.add_argument("--threads", type=positive_int, default=d["threads"], help="torch CPU threads")
    ap.add_argument("--no-plots", action="store_true", help="no PNG plots")
    return ap


def main(argv: list[str] | None = None, prog: str = "evtp bench reference") -> int:
    ap = _parser(prog)
    a = ap.parse_args(argv)
    try:
        options = parse_options(a.option, "--option")
        config = bench.ReferenceBenchConfig(
            keeps=tuple(parse_keeps(a.keep, allow_zero=True)), options=options,
            methods=tuple(parse_methods(a.methods, base_options=options)), task=a.task, split=a.split,
            difficulty=a.difficulty, textured=a.textured,
            seed_offset=a.seed_offset, samples=a.samples, out=a.out, weights=a.weights,
            contiguous=a.contiguous, readout=a.readout, score_source=a.score_source, score_layer=a.score_layer,
            score_noise=a.score_noise, repeats=a.repeats, timed_samples=a.timed_samples,
            overlays=a.overlays, threads=a.threads, plots=not a.no_plots)
        bench.prepare_output_file(config.out)
    except SettingsError as exc:
        ap.error(str(exc))
    command = " ".join([prog, *(argv if argv is not None else [])])
    try:
        bench.run_reference_bench(config, command)
    except SettingsError as exc:  # a readout the weights lack; --out holding a run with other settings
        ap.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
