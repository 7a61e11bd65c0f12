"""User model factories as a user would write them (``--model user_models:plain_cnn``): each is called with
``num_classes`` and ``in_channels``. Neither uses ResNet names."""
import torch
import torch.nn.functional as F
from torch import nn


def plain_cnn(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    """A small VGG-like CNN: no residual connections, a hidden linear layer before the head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, 16), nn.ReLU(), nn.Linear(16, num_classes))


class TinyViT(nn.Module):
    """A one-block vision transformer whose patch embedding is a Linear on unfolded patches (no conv)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int = 16, patch: int = 4, dim: int = 16):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(in_channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))
        layer = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self):  # its own parameters: what retraining from scratch re-draws
        nn.init.normal_(self.pos_embedding, std=0.02)
        nn.init.zeros_(self.cls_token)

    def forward(self, x):
        patches = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)
        z = self.embed(patches)
        z = torch.cat([self.cls_token.expand(len(z), -1, -1), z], dim=1) + self.pos_embedding
        return self.head(self.norm(self.blocks(z))[:, 0])


def tiny_vit(num_classes: int, in_channels: int, **options) -> nn.Module:
    return TinyViT(num_classes, in_channels, **options)


def not_a_model(num_classes: int, in_channels: int):
    return {"num_classes": num_classes}
