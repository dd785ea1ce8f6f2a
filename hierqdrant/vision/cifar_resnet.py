"""The CIFAR ResNets of He et al. 2016, §4.2 ("Deep Residual Learning for Image Recognition").

A 3×3 convolution with 16 channels, BN, ReLU; three stages of n basic blocks with 16, 32 and 64
channels (stride 2 at the start of stages 2 and 3); global average pooling to a 64-d feature; one
linear layer. Depth = 6n + 2: ResNet-20/32/44/56/110 have n = 3/5/7/9/18.

Shortcuts are "option A": the identity, and where the shape changes x ↦ pad_c(x[:, :, ::2, ::2]),
a spatial subsampling by 2 followed by zero-padding of the channels, which has no parameters.

Parameter names match akamaster/pytorch_resnet_cifar10 (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``), so its checkpoints load with
``strict=True`` once the ``module.`` prefix of ``DataParallel`` is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CIFAR_DEPTHS",
    "CifarResNet",
    "cifar_resnet",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
]

CIFAR_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` in space, zero-pad channels to ``out_planes``."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class _BasicBlock(nn.Module):
    """out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2; ``forward`` gives logits, ``forward_features`` the 64-d feature."""

    feature_dim = 64

    def __init__(self, depth: int = 56, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear: nn.Module = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [_BasicBlock(in_planes, planes, stride)]
        layers += [_BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate feature: global average of the last stage, shape (N, 64)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) = linear(forward_features(x))."""
        return self.linear(self.forward_features(x))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """A randomly initialised CIFAR ResNet of the given depth (20, 32, 44, 56, 110, …)."""
    return CifarResNet(depth=depth, num_classes=num_classes)


def cifar_resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def cifar_resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


def cifar_resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


def cifar_resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


def cifar_resnet110(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(110, num_classes)
