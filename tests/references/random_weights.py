"""Random weights for the differential import checks (tests/test_import_references.py and
benchmarks/torchvision_reference.py, which runs in a separate venv with torchvision): torch only, no cnnkit."""

import torch


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights at the scale of a trained network and random batch-norm statistics, so every affine
    parameter and buffer a wrong mapping could swap or drop changes the logits. Eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()
