"""Point-BERT point-cloud encoder, as ULIP's copy used by RegionBLIP, with a deterministic grouping.

points (B, N, 3) -> FPS centres (B, G, 3) -> kNN groups (B, G, M, 3) centred on their centre -> mini-PointNet
tokens (B, G, C) -> transformer with the centre position MLP re-added before every block -> (B, 1 + G, D).
Parameter names follow ULIP's `PointTransformer` (except `blocks.blocks.*` -> `blocks.*`) so its weights map 1:1.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import RegionBLIPConfig


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Indices (B, S) of farthest-point samples. Starts at index 0 (the release starts at a random index), so the
    same cloud always gives the same groups."""
    batch, num_points, _ = points.shape
    rows = torch.arange(batch, device=points.device)
    indices = torch.zeros(batch, num_samples, dtype=torch.long, device=points.device)
    distance = torch.full((batch, num_points), float("inf"), device=points.device, dtype=points.dtype)
    farthest = torch.zeros(batch, dtype=torch.long, device=points.device)
    for i in range(num_samples):
        indices[:, i] = farthest
        centre = points[rows, farthest]  # (B, 3)
        distance = torch.minimum(distance, (points - centre[:, None]).square().sum(-1))
        farthest = distance.argmax(-1)
    return indices


def nearest_neighbours(centres: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k points nearest each centre: squared distances (B, G, k), nearest first, and indices (B, G, k).

    Distances are |c|² - 2 c·p + |p|², Point-BERT's form, as one matmul of augmented coordinates
    [-2c, |c|², 1] · [p, 1, |p|²]: the (B, G, N) matrix is the only tensor of that size, with neither the
    (B, G, N, 3) differences nor a sqrt to undo as cdist(...).square() has."""
    # Relative to the cloud's mean, so that a scene far from its frame's origin keeps the squares small and the
    # cancellation exact enough to pick the neighbours the differences would.
    origin = points.mean(dim=1, keepdim=True)  # (B, 1, 3)
    centres, points = centres - origin, points - origin
    centres = torch.cat([-2 * centres, centres.square().sum(-1, keepdim=True), torch.ones_like(centres[..., :1])],
                        dim=-1)  # (B, G, 5)
    points = torch.cat([points, torch.ones_like(points[..., :1]), points.square().sum(-1, keepdim=True)],
                       dim=-1)  # (B, N, 5)
    nearest = torch.bmm(centres, points.transpose(1, 2)).topk(k, dim=-1, largest=False)  # of (B, G, N)
    # Rounding can take a distance (a point's to itself) below zero. Clamped on the k kept: a Clip on the whole
    # matrix costs ONNX Runtime a second (B, G, N) buffer, as it does not run it in place there.
    return nearest.values.clamp_min(0), nearest.indices


def group_points(points: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a cloud into kNN neighbourhoods around FPS centres: (B, G, M, 3) centred groups and (B, G, 3) centres."""
    rows = torch.arange(points.shape[0], device=points.device)[:, None]
    centres = points[rows, farthest_point_sample(points, num_group)]  # (B, G, 3)
    neighbours = nearest_neighbours(centres, points, group_size)[1]  # (B, G, M)
    groups = points[rows[:, :, None], neighbours]  # (B, G, M, 3)
    return groups - centres[:, :, None], centres


class MiniPointNet(nn.Module):
    """Shared per-point MLP, max-pool, concat the pooled feature back, MLP, max-pool: one token per group."""

    def __init__(self, width: int):
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, width // 2, 1), nn.BatchNorm1d(width // 2), nn.ReLU(), nn.Conv1d(width // 2, width, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * width, 2 * width, 1), nn.BatchNorm1d(2 * width), nn.ReLU(), nn.Conv1d(2 * width, width, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        batch, num_group, group_size, _ = groups.shape
        x = self.first_conv(groups.reshape(batch * num_group, group_size, 3).transpose(1, 2))  # (BG, C, M)
        pooled = x.max(dim=2, keepdim=True).values  # (BG, C, 1)
        x = self.second_conv(torch.cat([pooled.expand(-1, -1, group_size), x], dim=1))  # (BG, C, M)
        return x.max(dim=2).values.reshape(batch, num_group, -1)  # (B, G, C)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, D/H)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PointBERT(nn.Module):
    """Frozen in the released recipe, so stochastic depth (drop_path 0.1, a training-only op) is left out."""

    def __init__(self, config: RegionBLIPConfig):
        super().__init__()
        self.num_group, self.group_size = config.point_num_group, config.point_group_size
        dim = config.point_trans_dim
        self.encoder = MiniPointNet(config.point_pointnet_width)
        self.reduce_dim = nn.Linear(config.point_pointnet_width, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = nn.ModuleList(Block(dim, config.point_heads) for _ in range(config.point_depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        groups, centres = group_points(points, self.num_group, self.group_size)  # (B, G, M, 3), (B, G, 3)
        tokens = self.reduce_dim(self.encoder(groups))  # (B, G, D)
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + G, D)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)  # (B, 1 + G, D)
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x)  # (B, 1 + G, D)
