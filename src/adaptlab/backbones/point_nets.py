"""Point-cloud backbones built in the project (no pre-trained point-cloud weights exist
offline, so they are pre-trained on a source, e.g. generated shapes, and adapted).

- ``dgcnn``: a small DGCNN (Wang et al. 2019): EdgeConv layers on a k-nearest-neighbour
  graph recomputed in feature space at every layer, then a shared embedding, max and mean
  pooled.
- ``point_transformer``: a small point-patch transformer of the Point-BERT / Point-MAE
  family, the architecture the IDPT seed paper adapts with prompts: farthest-point-sampled
  patch centres, a mini-PointNet per k-NN patch as the token embedding, a positional
  embedding of the centres, pre-norm transformer blocks whose linear layers are named as
  timm's ViT names them (``qkv``, ``proj``, ``fc1``, ``fc2``), so LoRA and freezing address
  them the same way.

Both take [B, N, 3] and return pooled features; ``forward_features`` returns per-point
features [B, N, F] (``num_point_features``: each point's own features joined with the
cloud's pooled ones), what segmentation reads. Layer maps list the stem, each block, and
the neck (DGCNN's shared embedding, the transformer's final norm).
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.backbones.backbone import Backbone, seeded_init
from adaptlab.backbones.layer_map import LayerMap, norm_modules
from adaptlab.backbones.point_ops import farthest_point_sample, gather, interpolate, knn
from adaptlab.backbones.weights import load_weights_option


def max_pool(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """The maximum over ``dim``. ``max``, not ``amax``: the same values, but ``amax`` keeps
    its whole input for backward (to share a gradient among tied entries) where ``max`` keeps
    only the winners' indices, 2 / n of the input's bytes for n pooled entries (int64 against
    float32): on the point transformer's patch embedding (16 points a patch) ``amax`` kept
    7 MiB of a batch's 55. A tie's gradient goes to one of the tied entries."""
    return x.max(dim=dim, keepdim=keepdim).values


class EdgeConv(nn.Module):
    """max over the k neighbours j of MLP([x_j - x_i, x_i])."""

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Linear(2 * in_channels, out_channels, bias=False),
                                 nn.LayerNorm(out_channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neighbours = gather(x, knn(x, x, self.k))  # [B, N, k, C]
        centre = x.unsqueeze(2).expand_as(neighbours)
        return max_pool(self.mlp(torch.cat([neighbours - centre, centre], dim=-1)), 2)


class DGCNN(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 32, 64), embed: int = 256,
                 k: int = 16) -> None:
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers.append(EdgeConv(previous, width, k))
            previous = width
        self.edges = nn.ModuleList(layers)
        self.embed = nn.Sequential(nn.Linear(sum(widths), embed, bias=False),
                                   nn.LayerNorm(embed), nn.GELU())
        self.num_features = 2 * embed
        self.num_point_features = sum(widths) + 2 * embed

    def _local(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, outputs = points, []
        for edge in self.edges:
            x = edge(x)
            outputs.append(x)
        local = torch.cat(outputs, dim=-1)
        return local, self.embed(local)

    @staticmethod
    def _pool(embedded: torch.Tensor) -> torch.Tensor:
        return torch.cat([max_pool(embedded, 1), embedded.mean(dim=1)], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self._pool(self._local(points)[1])

    def forward_features(self, points: torch.Tensor) -> torch.Tensor:
        """Per-point features [B, N, num_point_features]."""
        local, embedded = self._local(points)
        pooled = self._pool(embedded).unsqueeze(1).expand(-1, points.shape[1], -1)
        return torch.cat([local, pooled], dim=-1)



class PatchEmbed(nn.Module):
    """Mini-PointNet over each patch's points in the patch's own frame, max-pooled."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Linear(3, 64), nn.LayerNorm(64), nn.GELU(),
                                   nn.Linear(64, 128))
        self.second = nn.Sequential(nn.Linear(256, 256), nn.LayerNorm(256), nn.GELU(),
                                    nn.Linear(256, dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # [B, G, K, 3]
        x = self.first(patches)
        pooled = max_pool(x, 2, keepdim=True).expand_as(x)
        return max_pool(self.second(torch.cat([x, pooled], dim=-1)), 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads) \
            .permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PointPatchTransformer(nn.Module):
    def __init__(self, patches: int = 32, patch_size: int = 16, dim: int = 96, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.patches, self.patch_size = patches, patch_size
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.Linear(64, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.num_features = 2 * dim
        self.num_point_features = 3 * dim

    def _tokens(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centres = gather(points, farthest_point_sample(points, self.patches))
        members = gather(points, knn(centres, points, self.patch_size))  # [B, G, K, 3]
        x = self.patch_embed(members - centres.unsqueeze(2)) + self.pos_embed(centres)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), centres

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        tokens, _ = self._tokens(points)
        return torch.cat([max_pool(tokens, 1), tokens.mean(dim=1)], dim=-1)

    def forward_features(self, points: torch.Tensor) -> torch.Tensor:
        """Per-point features [B, N, num_point_features]: the patch tokens interpolated to
        the points, joined with the pooled tokens."""
        tokens, centres = self._tokens(points)
        pooled = torch.cat([max_pool(tokens, 1), tokens.mean(dim=1)], dim=-1)
        spread = interpolate(tokens, centres, points)
        return torch.cat([spread, pooled.unsqueeze(1).expand(-1, points.shape[1], -1)], dim=-1)



def dgcnn(options: dict) -> Backbone:
    """``options``: ``num_points`` (per cloud, default 512), ``k``, ``widths``, ``embed``,
    ``weights`` (a safetensors file of this network's state dict), ``init_seed``."""
    widths = tuple(options.get("widths", (32, 32, 64)))
    module = seeded_init(lambda: DGCNN(widths, int(options.get("embed", 256)),
                                       int(options.get("k", 16))), options)
    load_weights_option(module, options)
    # The shared embedding reads every EdgeConv's output: after the last block, the neck.
    layer_map = LayerMap(embeddings=["edges.0"],
                         blocks=[[f"edges.{i}"] for i in range(1, len(widths))],
                         neck=["embed"], norms=norm_modules(module))
    return Backbone(name="dgcnn", module=module, num_features=module.num_features,
                    layer_map=layer_map, source="built in, random initialisation",
                    num_points=int(options.get("num_points", 512)), feature_layout="points",
                    feature_dim=module.num_point_features)


def point_transformer(options: dict) -> Backbone:
    """``options``: ``num_points`` (default 512), ``patches``, ``patch_size``, ``dim``,
    ``depth``, ``heads``, ``weights``, ``init_seed``."""
    module = seeded_init(lambda: PointPatchTransformer(
        int(options.get("patches", 32)), int(options.get("patch_size", 16)),
        int(options.get("dim", 96)), int(options.get("depth", 4)), int(options.get("heads", 4))),
        options)
    load_weights_option(module, options)
    layer_map = LayerMap(embeddings=["patch_embed", "pos_embed"],
                         blocks=[[f"blocks.{i}"] for i in range(len(module.blocks))],
                         neck=["norm"], norms=norm_modules(module))
    return Backbone(name="point_transformer", module=module, num_features=module.num_features,
                    layer_map=layer_map, source="built in, random initialisation",
                    num_points=int(options.get("num_points", 512)), feature_layout="points",
                    feature_dim=module.num_point_features)
