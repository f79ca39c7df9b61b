"""Fully sharded data parallel (``fsdp=true``): each process holds a slice of every weight, of
its gradient and of its optimizer state, through torch's own ``fully_shard`` (FSDP2), for
backbones whose training state does not fit one device.

Accelerate's FSDP plugin only acts on GPUs (a CPU run under it trains unsharded), so the engine
shards the model with torch.distributed itself, the same on CPU (gloo) and GPU (NCCL), and
places it unwrapped, as it does for strategies that change their trainable set. The rest of
the engine sees whole tensors: checkpoints, the best epoch's file and the final weights hold
full tensors (gathered here), so a sharded run resumes with another process count, sharded or
not, and its files are those of any run.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from adaptlab.errors import AdaptlabError

# A repeated block smaller than this is not worth its own all-gather: it joins the module
# above it (the root at the latest).
MIN_BLOCK_PARAMS = 100_000


def _dtensor() -> type:
    """The sharded tensor's class, or a class nothing is an instance of while nothing has
    imported it: torch.distributed.tensor takes about a second to import, which a run that
    never shards should not pay (the meter asks about every gradient of every step)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module.DTensor if module is not None else _NeverSharded


class _NeverSharded:
    pass


def _blocks(model: nn.Module, min_params: int) -> list[nn.Module]:
    """The units that gather their weights on their own: the members of a ModuleList or
    Sequential (a backbone's repeated blocks), innermost first, each with at least
    ``min_params`` parameters. Only modules that their parent calls are chosen, since
    FSDP gathers in a module's ``__call__``: a backbone whose ``forward_features`` its task
    model calls directly stays with the root, whose call gathers it."""
    chosen: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(module, (nn.ModuleList, nn.Sequential)) \
                    and sum(p.numel() for p in child.parameters()) >= min_params:
                chosen.append(child)
            visit(child)

    visit(model)
    # Nested members (a stage's blocks inside a list of stages) come after their parents;
    # fully_shard needs children sharded before their parents.
    return chosen[::-1]


def shard_model(model: nn.Module, device: torch.device, min_params: int = MIN_BLOCK_PARAMS,
                every_block: bool = False) -> int:
    """Shard ``model`` over every process of the group, in place; returns the number of units
    (blocks, then the root) that gather on their own.

    ``every_block``: every member of every ModuleList and Sequential gathers its own weights,
    whatever its size. Gradient checkpointing needs it: the backbones' checkpointing calls
    blocks one by one, past the module above them (timm's EfficientNet calls each block of a
    stage, not the stage), so a block whose weights only its stage gathered would find them
    sharded."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise AdaptlabError("fsdp=true needs the processes' group; start the run with "
                            "--processes N or under torchrun / accelerate launch")
    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = _blocks(model, 1 if every_block else min_params)
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # Whatever loads whole tensors into it (a checkpoint, the best epoch, a strategy's own
    # loader under its own names, as peft's) loads each process's slice of them.
    model.register_load_state_dict_pre_hook(_slice_whole_tensors)
    return len(units) + 1


def _slice_whole_tensors(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    own = module.state_dict()
    for key, value in state_dict.items():
        if key.startswith(prefix) and key[len(prefix):] in own:
            state_dict[key] = like(own[key[len(prefix):]], value)


def check_shards(strategy_class: type) -> None:
    """Refuse a strategy whose weights cannot be sharded (``Strategy.shards``), by name."""
    if strategy_class.shards:
        return
    from adaptlab.strategies.registry import get_strategy_class, strategy_names

    can = [name for name in strategy_names() if get_strategy_class(name).shards]
    raise AdaptlabError(f"fsdp=true: strategy {strategy_class.name!r} cannot have its weights "
                        f"sharded over processes; strategies that can: {', '.join(can)}")


def is_sharded(model: nn.Module) -> bool:
    dtensor = _dtensor()
    return any(isinstance(p, dtensor) for p in model.parameters())


def local(tensor: torch.Tensor) -> torch.Tensor:
    """What this process holds of ``tensor`` (its shard, or the tensor itself)."""
    return tensor.to_local() if isinstance(tensor, _dtensor()) else tensor


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of ``tensor`` where it is sharded, on its device and differentiable (every
    process must call, in the same order); ``tensor`` itself otherwise."""
    return tensor.full_tensor() if isinstance(tensor, _dtensor()) else tensor


def _whole(tensor):
    # Gathered one at a time into host memory: a model sharded for not fitting one device
    # may not fit it whole either.
    return tensor.full_tensor().cpu() if isinstance(tensor, _dtensor()) else tensor


def full(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole tensors for sharded ones, in host memory (every process must call: it
    gathers, in the same order everywhere)."""
    return {k: _whole(v) for k, v in sorted(tensors.items())}


def like(reference: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (whole) laid out as ``reference`` is: this process's shard of it when
    ``reference`` is sharded. Every process holds the whole tensor (read from the same file),
    so each cuts its own shard without communicating."""
    dtensor = _dtensor()
    if not isinstance(reference, dtensor) or isinstance(tensor, dtensor):
        return tensor
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(tensor.to(reference.device, reference.dtype),
                             reference.device_mesh, reference.placements, src_data_rank=None)


def full_optimizer_state(state: dict) -> dict:
    """An optimizer's ``state_dict`` with whole tensors (every process must call)."""
    return {**state, "state": {index: {k: _whole(v) for k, v in sorted(entry.items())}
                               for index, entry in sorted(state["state"].items())}}


def optimizer_state_like(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A whole-tensor optimizer ``state_dict`` laid out as ``optimizer``'s parameters are: a
    moment of a parameter's shape becomes this process's shard of it."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    restored = {}
    for index, entry in state["state"].items():
        param = params[int(index)]
        restored[index] = {k: like(param, v) if torch.is_tensor(v) and v.shape == param.shape
                           else v for k, v in entry.items()}
    return {**state, "state": restored}
