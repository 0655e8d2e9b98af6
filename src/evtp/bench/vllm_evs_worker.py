"""For `evtp bench vllm` only: vLLM's CPU worker with the runner's position-recompute call on when
vLLM's own video pruning (EVS) is configured. vLLM 0.32's CPU runner never turns it on, and EVS
then crashes on CPU (docs/vllm.md, bug 1); with it on, EVS runs as it does on GPUs."""
from vllm.v1.worker.cpu_worker import CPUWorker


class EvsCPUWorker(CPUWorker):
    def load_model(self, *args, **kwargs):
        super().load_model(*args, **kwargs)
        mm = self.model_config.multimodal_config
        if mm is not None and mm.is_multimodal_pruning_enabled():
            self.model_runner.is_multimodal_pruning_enabled = True
