"""vLLM's CPU worker, with the runner's position-recompute call on for evtp models.

vLLM 0.32's CPU runner overrides ``load_model`` and never sets ``is_multimodal_pruning_enabled``,
so a pruning model's ``recompute_mrope_positions`` is never called on CPU (the same bug crashes
vLLM's own video pruning there: docs/vllm.md). Chosen per engine by `hooks.configure_engine`.
"""
from vllm.v1.worker.cpu_worker import CPUWorker


class EvtpCPUWorker(CPUWorker):
    def load_model(self, *args, **kwargs):
        super().load_model(*args, **kwargs)
        if getattr(self.model_runner.get_model(), "evtp_prunes", False):
            self.model_runner.is_multimodal_pruning_enabled = True
