"""evtp's Qwen2.5-VL and Qwen3-VL for vLLM: vLLM's own classes plus visual-token selection.

Registered under the stock architecture names (`evtp.integrations.vllm.register`), so every
Qwen2.5-VL / Qwen3-VL checkpoint resolves here; a model whose config has no ``evtp`` key runs
every method of the stock class unchanged. With the key:

* the processor emits k = `EvtpSettings.kept` (N) placeholders per run (an image, a Qwen2.5-VL
  video, a Qwen3-VL video frame; `positions.Run`), from the grid alone;
* `embed_multimodal` (vLLM's own) runs the vision tower, then the two post-processing hooks vLLM
  calls for pruning models select k tokens per run with `evtp.select_tokens` on the projected
  features and their (row, col) / (frame, row, col) grid, and append their position channels;
* `get_mrope_input_positions` lays out the pruned prompt (text positions final,
  `positions.prompt_positions`); vLLM's runner calls `recompute_mrope_positions` whenever kept
  embeddings are gathered, which writes their original grid positions in.

vLLM's own dummy inputs (memory profiling, compilation warm-up, the front-end's processor warm-up)
take the same path as a request: the dummy prompt is written in the layout evtp requires (every
placeholder between ``<|vision_start|>`` and ``<|vision_end|>``), pruned like a request, and the
per-item maxima vLLM sizes its encoder budget and cache with are the kept counts, so profiling runs
as many full-size items through the vision tower and the selection as the scheduler can admit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement
from vllm.utils.gpu_sync_debug import gpu_sync_allowed

from evtp.integrations.vllm.positions import (NUM_CHANNELS, Run, check_runs_separated, decode_channels,
                                              encode_channels, prompt_positions, write_kept_positions)
from evtp.integrations.vllm.settings import EvtpSettings
from evtp.selection import select_tokens


# --------------------------------------------------------------------------------------------
# runs per media item, per family
# --------------------------------------------------------------------------------------------
def qwen2_5_vl_runs(modality: str, grid_thw: Sequence[int], merge: int, seconds_per_grid: float,
                    tokens_per_second: float) -> list[Run]:
    """Qwen2.5-VL: one run per image or video; video frames spaced by seconds x tokens/s."""
    t, h, w = (int(x) for x in grid_thw)
    if modality == "image":
        return [Run(1, h // merge, w // merge)]
    return [Run(t, h // merge, w // merge, float(seconds_per_grid) * float(tokens_per_second), video=True)]


def qwen3_vl_runs(modality: str, grid_thw: Sequence[int], merge: int) -> list[Run]:
    """Qwen3-VL: one run per image, one per video frame (frames are separated by timestamp text)."""
    t, h, w = (int(x) for x in grid_thw)
    if modality == "image":
        return [Run(1, h // merge, w // merge)]
    return [Run(1, h // merge, w // merge) for _ in range(t)]


def _item_value(item, key: str):
    """A field of a vLLM MultiModalKwargsItem (``.data``) or None."""
    field = item.get(key) if hasattr(item, "get") else None
    return None if field is None else getattr(field, "data", field)


# --------------------------------------------------------------------------------------------
# vLLM's dummy inputs and encoder budget (profiling, warm-up)
# --------------------------------------------------------------------------------------------
class _EvtpProcessingInfoMixin:
    """The per-item maxima of vLLM's encoder budget, in kept tokens.

    vLLM's scheduler charges each media item its placeholders (the kept count) against the encoder
    compute budget and the encoder cache, while the vision tower still runs on the full grid. With
    the stock (unpruned) maxima, profiling would run budget / N_max full-size items where the
    scheduler admits up to budget / k_max, and would fill the encoder cache to a ``keep`` share of
    its size. With k_max = `EvtpSettings.kept` (N_max) both are sized for what the scheduler admits.
    """

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        stock = super().get_mm_max_tokens_per_item(seq_len, mm_counts)
        settings = EvtpSettings.from_hf_config(self.get_hf_config())
        if settings is None or stock is None:
            return stock
        # one run per image and per stock maximum video (Qwen2.5-VL: the whole video; Qwen3-VL
        # sizes its video budget on one temporal patch, i.e. one frame run); kept(N) grows with N
        return {modality: settings.kept(int(n)) if n > 0 else 0 for modality, n in stock.items()}


class EvtpQwen2_5_VLProcessingInfo(_EvtpProcessingInfoMixin, Qwen2_5_VLProcessingInfo):
    pass


class EvtpQwen3VLProcessingInfo(_EvtpProcessingInfoMixin, Qwen3VLProcessingInfo):
    pass


class EvtpQwen2_5_VLDummyInputsBuilder(Qwen2_5_VLDummyInputsBuilder):
    """vLLM's dummy prompt in the layout evtp requires of every prompt.

    vLLM's stock Qwen2.5-VL dummy text is the bare placeholders (``<|image_pad|><|video_pad|>``),
    which ends with a placeholder. With the key, each placeholder is written between
    ``<|vision_start|>`` and ``<|vision_end|>`` as the chat template writes it (and as vLLM's
    Qwen3-VL dummy already is), so the dummy is checked and pruned exactly like a request.
    """

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        text = super().get_dummy_text(mm_counts)
        cfg = self.info.get_hf_config()
        if EvtpSettings.from_hf_config(cfg) is None:
            return text
        start, end = self.info.get_tokenizer().convert_ids_to_tokens([cfg.vision_start_token_id,
                                                                      cfg.vision_end_token_id])
        hf_processor = self.info.get_hf_processor()
        placeholders = [hf_processor.image_token] * mm_counts.get("image", 0) + \
            [hf_processor.video_token] * mm_counts.get("video", 0)
        return "".join(start + p + end for p in placeholders)


# --------------------------------------------------------------------------------------------
# the processor side (front-end process): placeholder counts, prompt checks
# --------------------------------------------------------------------------------------------
class _EvtpProcessorMixin:
    """Placeholder counts from `EvtpSettings`, and the prompt layout the positions rely on."""

    def _evtp_settings(self) -> EvtpSettings | None:
        return EvtpSettings.from_hf_config(self.info.get_hf_config())

    def _evtp_merge(self, hf_processor_mm_kwargs) -> int:
        return int(self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size)

    def apply(self, inputs, *args, **kwargs):
        # checked before any processing, so that a refused request leaves no trace in vLLM's
        # multimodal caches
        if self._evtp_settings() is not None:
            cfg = self.info.get_hf_config()
            check_runs_separated(inputs.prompt, (cfg.image_token_id, cfg.video_token_id))
        return super().apply(inputs, *args, **kwargs)


class EvtpQwen2_5_VLMultiModalProcessor(_EvtpProcessorMixin, Qwen2_5_VLMultiModalProcessor):
    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs: Mapping[str, Any], out_mm_kwargs):
        settings = self._evtp_settings()
        if settings is None:
            return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        vocab = self.info.get_tokenizer().get_vocab()
        placeholder = {"image": vocab[hf_processor.image_token], "video": vocab[hf_processor.video_token]}
        merge = self._evtp_merge(hf_processor_mm_kwargs)

        def replacement(item_idx: int, modality: str):
            grid = _item_value(out_mm_kwargs[modality][item_idx], f"{modality}_grid_thw")
            runs = qwen2_5_vl_runs(modality, grid.tolist(), merge, 1.0, 1.0)
            return [placeholder[modality]] * sum(settings.kept(r.num_tokens) for r in runs)

        return [PromptReplacement(modality=m, target=[placeholder[m]], replacement=partial(replacement, modality=m))
                for m in ("image", "video")]


class EvtpQwen3VLMultiModalProcessor(_EvtpProcessorMixin, Qwen3VLMultiModalProcessor):
    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs: Mapping[str, Any], out_mm_kwargs):
        stock = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        settings = self._evtp_settings()
        if settings is None:
            return stock
        cfg = self.info.get_hf_config()
        tokenizer = self.info.get_tokenizer()
        merge = self._evtp_merge(hf_processor_mm_kwargs)

        def image(item_idx: int):
            grid = _item_value(out_mm_kwargs["image"][item_idx], "image_grid_thw")
            (run,) = qwen3_vl_runs("image", grid.tolist(), merge)
            return [cfg.image_token_id] * settings.kept(run.num_tokens)

        def video(item_idx: int):
            item = out_mm_kwargs["video"][item_idx]
            grid = _item_value(item, "video_grid_thw")
            timestamps = _item_value(item, "timestamps")
            runs = qwen3_vl_runs("video", grid.tolist(), merge)
            return Qwen3VLMultiModalProcessor.get_video_repl(
                tokens_per_frame=[settings.kept(r.num_tokens) for r in runs], timestamps=timestamps,
                tokenizer=tokenizer, vision_start_token_id=cfg.vision_start_token_id,
                vision_end_token_id=cfg.vision_end_token_id, video_token_id=cfg.video_token_id,
                select_token_id=True)

        fn = {"image": image, "video": video}
        return [PromptReplacement(modality=u.modality, target=u.target, replacement=fn[u.modality]) for u in stock]


# --------------------------------------------------------------------------------------------
# the model side (worker processes)
# --------------------------------------------------------------------------------------------
class _EvtpModelMixin:
    """Selection in the pruning hooks, and the positions of the pruned prompt.

    Subclasses define ``_evtp_runs(modality, grid_thw, seconds_per_grid)`` and
    ``_evtp_feature_dim`` (the width of the features the selection sees)."""

    evtp: EvtpSettings | None = None

    def _evtp_init(self):
        self.evtp = EvtpSettings.from_hf_config(self.config)
        if self.evtp is not None:
            # vLLM's own switch: embed_multimodal calls the two post-processing hooks below, the
            # encoder CUDA graphs (which would bypass them) are off, and the evtp worker turns the
            # runner's recompute_mrope_positions call on (`evtp.integrations.vllm.worker`).
            self.is_multimodal_pruning_enabled = True
            self.evtp_prunes = True
            self.get_model_state_cls = _v2_model_state_cls

    # -- selection ------------------------------------------------------------------------
    def _evtp_select(self, embeds: torch.Tensor, runs: list[Run]) -> torch.Tensor:
        """Kept rows of one media item and their position channels.

        Args:
            embeds: (N, D) the item's vision-tower output, N = sum of its runs' tokens.
        Returns:
            (k, D + NUM_CHANNELS): kept rows in token order, then `encode_channels`.
        """
        settings = self.evtp
        total = sum(r.num_tokens for r in runs)
        if embeds.shape[0] != total:
            raise RuntimeError(f"evtp: the vision tower returned {embeds.shape[0]} tokens for a grid of {total}")
        out, start = [], 0
        with gpu_sync_allowed():
            for run in runs:
                rows = embeds[start:start + run.num_tokens]
                start += run.num_tokens
                grid = run.grid(device=embeds.device)
                k = settings.kept(run.num_tokens)
                if k >= run.num_tokens:
                    idx = torch.arange(run.num_tokens, device=embeds.device)
                else:
                    pos = grid if run.video else grid[:, 1:]
                    generator = torch.Generator(device=embeds.device).manual_seed(settings.seed)
                    idx = select_tokens(rows[:, :self._evtp_feature_dim].float(), pos, keep=k,
                                        method=settings.method, generator=generator, **settings.options)
                channels = encode_channels(run.relative_positions(grid[idx]), torch.arange(k, device=idx.device),
                                           embeds.dtype)
                out.append(torch.cat([rows[idx], channels], -1))
        return torch.cat(out, 0)

    def _evtp_prune_items(self, embeds_split, mm_input, modality: str):
        grids = mm_input[f"{modality}_grid_thw"].tolist()
        seconds = mm_input.get("second_per_grid_ts") if modality == "video" else None
        seconds = [1.0] * len(grids) if seconds is None else [float(s) for s in seconds]
        return tuple(self._evtp_select(e, self._evtp_runs(modality, g, s))
                     for e, g, s in zip(embeds_split, grids, seconds))

    def _postprocess_image_embeds_evs(self, image_embeds_split, image_input):
        if self.evtp is None:
            return super()._postprocess_image_embeds_evs(image_embeds_split, image_input)
        return self._evtp_prune_items(image_embeds_split, image_input, "image")

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        if self.evtp is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        return self._evtp_prune_items(video_embeds_split, video_input, "video")

    # -- positions ------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens, mm_features):
        if self.evtp is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        ids = torch.as_tensor(list(input_tokens), dtype=torch.long)
        is_ph = torch.isin(ids, torch.tensor([self.config.image_token_id, self.config.video_token_id]))
        runs = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            seconds = _item_value(feature.data, "second_per_grid_ts")
            seconds = 1.0 if seconds is None else float(seconds)
            grid = _item_value(feature.data, f"{feature.modality}_grid_thw").tolist()
            cursor = feature.mm_position.offset
            for run in self._evtp_runs(feature.modality, grid, seconds):
                kept = self.evtp.kept(run.num_tokens)
                start = cursor + int(is_ph[cursor:].long().argmax())  # the run's first placeholder
                runs.append((start, kept, run.extent))
                cursor = start + kept
        positions, delta = prompt_positions(len(ids), runs, self.evtp.position_mode)
        return positions, delta

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        if self.evtp is None:
            return super().recompute_mrope_positions(input_ids, multimodal_embeddings, mrope_positions,
                                                     num_computed_tokens)
        stripped = [mm[:, :-NUM_CHANNELS] for mm in multimodal_embeddings]
        n = mrope_positions.shape[-1]
        if not multimodal_embeddings or self.evtp.position_mode == "contiguous":
            return stripped, mrope_positions, self._evtp_delta(mrope_positions)
        ids = torch.as_tensor(input_ids).to(torch.long).cpu()[:n]
        is_ph = (ids == self.config.image_token_id) | (ids == self.config.video_token_id)
        with gpu_sync_allowed():
            channels = torch.cat([mm[:, -NUM_CHANNELS:] for mm in multimodal_embeddings], 0).cpu()
            relative, index = decode_channels(channels)
            positions = write_kept_positions(mrope_positions.cpu(), is_ph, int(num_computed_tokens), relative, index)
        return stripped, positions.to(mrope_positions.device), self._evtp_delta(positions)

    def _evtp_delta(self, positions: torch.Tensor) -> int:
        # prompts end with text (checked by the processor), whose position is final
        return int(positions[0, -1]) + 1 - positions.shape[-1] if self.evtp.position_mode == "original" else 0


def _v2_model_state_cls():
    """vLLM's V2 GPU runner asks the model for its state class; this one always creates vLLM's
    MultiModalPruner, which calls recompute_mrope_positions (V2 enables it only for EVS)."""
    from vllm.v1.worker.gpu.model_states.default import DefaultModelState
    from vllm.v1.worker.gpu.model_states.mm_pruning import MultiModalPruner

    class EvtpModelState(DefaultModelState):
        def __init__(self, vllm_config, model, encoder_cache, device):
            super().__init__(vllm_config, model, encoder_cache, device)
            if self.mm_pruner is None and self.rope_state is not None and encoder_cache is not None:
                self.mm_pruner = MultiModalPruner(model, self.rope_state, encoder_cache,
                                                  vllm_config.model_config.get_inputs_embeds_size())

    return EvtpModelState


@MULTIMODAL_REGISTRY.register_processor(EvtpQwen2_5_VLMultiModalProcessor, info=EvtpQwen2_5_VLProcessingInfo,
                                        dummy_inputs=EvtpQwen2_5_VLDummyInputsBuilder)
class EvtpQwen2_5_VLForConditionalGeneration(_EvtpModelMixin, Qwen2_5_VLForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._evtp_feature_dim = int(self.config.vision_config.out_hidden_size)
        self._evtp_init()

    def _evtp_runs(self, modality, grid_thw, seconds_per_grid):
        return qwen2_5_vl_runs(modality, grid_thw, int(self.config.vision_config.spatial_merge_size),
                               seconds_per_grid, getattr(self.config.vision_config, "tokens_per_second", 1.0))


@MULTIMODAL_REGISTRY.register_processor(EvtpQwen3VLMultiModalProcessor, info=EvtpQwen3VLProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class EvtpQwen3VLForConditionalGeneration(_EvtpModelMixin, Qwen3VLForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        # the vision tower's output is [main, deepstack levels...]; select on the main features
        self._evtp_feature_dim = int(self.config.vision_config.out_hidden_size)
        self._evtp_init()

    def _evtp_runs(self, modality, grid_thw, seconds_per_grid):
        return qwen3_vl_runs(modality, grid_thw, int(self.config.vision_config.spatial_merge_size))
