"""The checkpoint format's fixed names (torch-free; engine.model.checkpoint documents them)."""

FORMAT = "dit-workbench-checkpoint/1"
WEIGHTS = "diffusion_pytorch_model.safetensors"
