"""vLLM's GPU worker, with the V1 runner's position-recompute call on for evtp models.

vLLM 0.32's V1 GPU runner enables ``recompute_mrope_positions`` only when its own video pruning
is configured. (The V2 runner asks the model for its state class instead, see
`evtp.integrations.vllm.qwen`.) Chosen per engine by `hooks.configure_engine`. Not run on a GPU
by this project's tests (no GPU was available); the CPU worker exercises the same model code.
"""
from vllm.v1.worker.gpu_worker import Worker


class EvtpGPUWorker(Worker):
    def load_model(self, *args, **kwargs):
        super().load_model(*args, **kwargs)
        runner = self.model_runner
        if getattr(runner.get_model(), "evtp_prunes", False) and hasattr(runner, "is_multimodal_pruning_enabled"):
            runner.is_multimodal_pruning_enabled = True
