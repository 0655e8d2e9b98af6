"""`evtp train`: train the reference IVS model on the synthetic benchmark (CPU, resumable).

Re-running the same command resumes from ``--out``/ckpt.pt; the run is described in
`evtp.models.reference.train` and docs/reference_model.md."""
from __future__ import annotations

from evtp.cli.args import parser
from evtp.settings import SettingsError, parse_device


def main(argv: list[str] | None = None, prog: str = "evtp train") -> int:
    from evtp.models.reference import train as training

    d = training.TrainConfig.__dataclass_fields__
    ap = parser(prog, __doc__)
    ap.add_argument("--out", default=d["out"].default, help="run directory (checkpoints, logs, final weights)")
    ap.add_argument("--steps", type=int, default=d["steps"].default, help="maximum optimiser steps of the full stage")
    ap.add_argument("--minutes", type=float, default=d["minutes"].default,
                    help="wall-clock budget of all stages; the full stage's LR schedule completes by "
                         "min(steps, minutes)")
    ap.add_argument("--vit-minutes", type=float, default=d["vit_minutes"].default,
                    help="stage 1: minutes of vision pretraining (ViT + per-patch attribute head alone)")
    ap.add_argument("--seg-decoder-minutes", type=float, default=d["seg_decoder_minutes"].default,
                    help="then: minutes of the 'seg' readout's decoder pretraining on ground-truth prompts "
                         "(needs 'seg' in the config's readouts); the decoder and the ViT are frozen after it")
    ap.add_argument("--align-minutes", type=float, default=d["align_minutes"].default,
                    help="then: minutes of projector alignment (the projector alone, on video batches, toward "
                         "its output's word alignment: colour, shape and, with align_motion, motion words)")
    ap.add_argument("--batch", type=int, default=d["batch"].default, help="images per image step")
    ap.add_argument("--video-batch", type=int, default=d["video_batch"].default, help="videos per video step")
    ap.add_argument("--video-every", type=int, default=d["video_every"].default,
                    help="every n-th step is a video step (0: none)")
    ap.add_argument("--lr", type=float, default=d["lr"].default, help="peak learning rate")
    ap.add_argument("--warmup", type=float, default=d["warmup"].default, help="warm-up share of progress")
    ap.add_argument("--curriculum", type=float, default=d["curriculum"].default,
                    help="share of progress in which attribute expressions dominate")
    ap.add_argument("--threads", type=int, default=d["threads"].default, help="torch CPU threads")
    ap.add_argument("--device", default=d["device"].default,
                    help="cpu, cuda, cuda:N or auto (CUDA when present); the shipped recipe is the CPU one")
    ap.add_argument("--seed", type=int, default=d["seed"].default,
                    help=f"seed of torch (initialisation) and of the data stream (seed s reads the train split "
                         f"from index s * {training.SEED_DATA_STRIDE:,}; 0 .. {training.SEED_STREAMS - 1})")
    ap.add_argument("--ckpt-minutes", type=float, default=d["ckpt_minutes"].default, help="minutes between checkpoints")
    ap.add_argument("--val-every", type=int, default=d["val_every"].default,
                    help="steps between quick validations (0: never)")
    ap.add_argument("--export", default=None, help="also copy the final weights into this directory")
    ap.add_argument("--config", default=None, help="JSON file with ReferenceConfig overrides")
    ap.add_argument("--init", default=None,
                    help="start a new run from the model weights of this checkpoint (ckpt.pt of another run; "
                         "missing parameters keep their initialisation, a wider vocabulary keeps its words, a "
                         "projector widened by temporal_patch 2 starts with zero weights on its new inputs)")
    ap.add_argument("--seg-attention", action="store_true",
                    help="training-only: supervise [SEG]'s attention (first head of the last LM layer) toward "
                         "the visual tokens on the target")
    args = ap.parse_args(argv)
    try:
        config = training.TrainConfig(**vars(args))
        parse_device(config.device, "--device")
        if config.config:
            training.read_config(config.config)
        training.check_seg_stage(config)
    except SettingsError as err:
        ap.error(str(err))
    return training.train(config)
