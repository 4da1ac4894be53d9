"""K same-shaped models as one module: each member's layers stacked along a member axis.

Activations of a pack are (K, B, ...): member k's batch is `x[k]`. Every layer of the
members' own models is replaced by its packed form, and the containers (Sequential, the
ResNet's blocks) are kept, so their forward code runs unchanged on the stacked activations:

    Linear       one batched matmul (baddbmm) over K weight matrices, stored (K, in, out)
    Conv2d       one grouped convolution (groups=K) over (B, K*C, H, W)
    norm layers  the members' own layer type built for K*C channels (BatchNorm, GroupNorm
                 with K*G groups, batch renorm, ghost BN) over (B, K*C, ...), so every
                 member gets exactly its own batch and running statistics (HFTA's layout);
                 members whose norm momentum/eps differ share one layer per distinct value
    Dropout      one mask per member from the member's own generator, drawn exactly as
                 the single run draws it from the global one (CPU)
    Flatten      shifted one dim; other stateless layers run on (K*B, ...) or elementwise

No operation mixes members: member k's outputs, gradients and statistics depend on member
k's parameters and batch alone, so a member that diverges changes no other member.
`member_tensors()` maps every parameter and buffer of a member's own model to its slice of
the pack, which is how the pack is loaded from and written back to the members.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.norm import is_norm_layer

ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity)  # any shape, as they are


@dataclass(frozen=True)
class Slot:
    """Where one tensor of the members' models lives in the pack: `packed` holds the K
    members' copies, member k's is `views[k]` (a view of `packed`, in the member's shape)."""

    packed: torch.Tensor
    views: list[torch.Tensor]
    first: int  # the member index of views[0] (norm layers split by hyperparameters)


class PackedLinear(nn.Module):
    """Member k's `Linear` as `x[k] @ weight[k]`: the weights are stored (K, in, out), the
    layout whose gradient a batched matmul writes directly (the transposed one is ~3x slower
    per step on a CPU at batch 8)."""

    def __init__(self, members: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in members])
                                   .contiguous())
        self.bias = None if members[0].bias is None else nn.Parameter(
            torch.stack([m.bias.detach() for m in members]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, in) -> (K, B, out)
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def slots(self) -> dict[str, Slot]:
        slots = {"weight": Slot(self.weight, list(self.weight.transpose(1, 2).unbind(0)), 0)}
        if self.bias is not None:
            slots["bias"] = Slot(self.bias, list(self.bias.unbind(0)), 0)
        return slots


class PackedConv2d(nn.Module):
    """Member convolutions as one grouped convolution over (B, K*C, H, W)."""

    def __init__(self, members: Sequence[nn.Conv2d]):
        super().__init__()
        first = members[0]
        if first.groups != 1 or first.padding_mode != "zeros":
            raise TypeError("only plain (groups=1, zero-padded) convolutions pack")
        self.members, self.out_channels = len(members), first.out_channels
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in members]))
        self.bias = None if first.bias is None else nn.Parameter(
            torch.cat([m.bias.detach() for m in members]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, C, H, W)
        members, batch = x.shape[:2]
        folded = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
        out = F.conv2d(folded, self.weight, self.bias, self.stride, self.padding,
                       self.dilation, groups=members)
        return out.view(batch, members, self.out_channels, *out.shape[2:]).transpose(0, 1)

    def slots(self) -> dict[str, Slot]:
        return {name: Slot(t, list(t.view(self.members, -1, *t.shape[1:]).unbind(0)), 0)
                for name, t in (("weight", self.weight), ("bias", self.bias)) if t is not None}


def _wide_norm(layer: nn.Module, members: int) -> nn.Module:
    """The member's norm layer type for `members` times its channels, same hyperparameters."""
    if isinstance(layer, nn.LayerNorm):  # over each example's features: one group per member
        if len(layer.normalized_shape) != 1:
            raise TypeError("only LayerNorm over the last dimension packs")
        return nn.GroupNorm(members, members * layer.normalized_shape[0], eps=layer.eps)
    if isinstance(layer, nn.GroupNorm):
        return nn.GroupNorm(members * layer.num_groups, members * layer.num_channels,
                            eps=layer.eps)
    wide = copy.deepcopy(layer)
    channels = layer.running_mean.shape[0]
    for name, tensor in [*layer.named_parameters(recurse=False),
                         *layer.named_buffers(recurse=False)]:
        repeated = tensor.detach().repeat(members) if tensor.dim() else tensor.detach().clone()
        if name in dict(layer.named_parameters(recurse=False)):
            setattr(wide, name, nn.Parameter(repeated))
        else:
            setattr(wide, name, repeated)
    if hasattr(wide, "num_features"):
        wide.num_features = members * channels
    return wide


def _norm_settings(layer: nn.Module) -> tuple:
    return (getattr(layer, "momentum", None), layer.eps)


class PackedNorm(nn.Module):
    """Member norm layers as wide layers over (B, K*C, ...): one per run of consecutive
    members with equal momentum and eps (usually one for the whole pack)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        parts, bounds = [], []
        start = 0
        for end in range(1, len(members) + 1):
            if end == len(members) or _norm_settings(members[end]) != _norm_settings(
                    members[start]):
                parts.append(_wide_norm(members[start], end - start))
                bounds.append((start, end))
                start = end
        self.parts = nn.ModuleList(parts)
        self.bounds = bounds
        self.affine = [name for name in ("weight", "bias") if getattr(members[0], name, None)
                       is not None]
        for part in parts:  # the wide layers keep only the halves the members have
            for name in ("weight", "bias"):
                if name not in self.affine and getattr(part, name, None) is not None:
                    part.register_parameter(name, None)

    def _run(self, part: nn.Module, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[:2]
        folded = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
        return part(folded).view(batch, members, *x.shape[2:]).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, C, ...)
        if len(self.parts) == 1:
            return self._run(self.parts[0], x)
        return torch.cat([self._run(part, x[start:end])
                          for part, (start, end) in zip(self.parts, self.bounds)])

    def slots(self) -> dict[str, Slot]:
        slots: dict[str, Slot] = {}
        for part, (start, end) in zip(self.parts, self.bounds):
            count = end - start
            for name, tensor in [*part.named_parameters(recurse=False),
                                 *part.named_buffers(recurse=False)]:
                views = (list(tensor.view(count, -1).unbind(0)) if tensor.dim()
                         else [tensor] * count)  # num_batches_tracked: one count per layer
                slots[f"{start}.{name}"] = Slot(tensor, views, start)
        return slots


class PackedDropout(nn.Module):
    """Each member's mask from its own generator: `bernoulli_(1 - p)` on a tensor of the
    member's batch shape, then `/ (1 - p)`, as `F.dropout` draws it on a CPU from the global
    generator, so a member's masks are the single run's (given the generator's state)."""

    def __init__(self, probabilities: Sequence[float], generators: Sequence[torch.Generator]):
        super().__init__()
        self.keep = [1.0 - p for p in probabilities]
        self.generators = list(generators)
        self.register_buffer("scale", torch.tensor(self.keep), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        noise = torch.empty_like(x)
        for member, (keep, generator) in enumerate(zip(self.keep, self.generators)):
            noise[member].bernoulli_(keep, generator=generator)
        return x * noise.div_(self.scale.view(-1, *([1] * (x.dim() - 1))))


class FoldMembers(nn.Module):
    """A stateless layer applied to (K*B, ...): members become part of the batch."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x.flatten(0, 1))
        return out.view(*x.shape[:2], *out.shape[1:])


def pack_modules(members: Sequence[nn.Module], generators: Sequence[torch.Generator]
                 ) -> nn.Module:
    """The packed form of corresponding modules of K members' models (same structure)."""
    first = members[0]
    kinds = {type(m) for m in members}
    if len(kinds) != 1:
        raise TypeError(f"members differ in structure: {sorted(k.__name__ for k in kinds)}")
    if isinstance(first, nn.Linear):
        return PackedLinear(members)
    if isinstance(first, nn.Conv2d):
        return PackedConv2d(members)
    if is_norm_layer(first):
        return PackedNorm(members)
    if isinstance(first, nn.Dropout):
        return PackedDropout([m.p for m in members], generators)
    if isinstance(first, nn.Flatten):
        return nn.Flatten(first.start_dim + 1 if first.start_dim >= 0 else first.start_dim,
                          first.end_dim if first.end_dim < 0 else first.end_dim + 1)
    if isinstance(first, ELEMENTWISE):
        return copy.deepcopy(first)
    own = [*first.named_parameters(recurse=False), *first.named_buffers(recurse=False)]
    if not first._modules:
        if own:
            raise TypeError(f"{type(first).__name__} holds tensors and has no packed form")
        return FoldMembers(copy.deepcopy(first))
    if own:
        raise TypeError(f"{type(first).__name__} holds tensors besides its children")
    packed = copy.copy(first)  # the container's forward code, fresh module dicts
    packed.__dict__.update(_parameters=OrderedDict(), _buffers=OrderedDict(),
                           _non_persistent_buffers_set=set(), _forward_hooks=OrderedDict(),
                           _forward_pre_hooks=OrderedDict(), _backward_hooks=OrderedDict())
    packed._modules = OrderedDict(
        (name, pack_modules([m._modules[name] for m in members], generators))
        for name, child in first._modules.items() if child is not None)
    return packed


class PackedModel(nn.Module):
    """K members' models as one; `load_members`/`store_members` copy every parameter and
    buffer between the pack and the members' own models."""

    def __init__(self, members: Sequence[nn.Module], generators: Sequence[torch.Generator]):
        super().__init__()
        self.size = len(members)
        self.body = pack_modules(members, generators)
        self._pairs = self._pair_tensors(members)

    def _pair_tensors(self, members: Sequence[nn.Module]
                      ) -> list[tuple[Slot, list[torch.Tensor]]]:
        """(slot, the members' own tensors) for every tensor of a member's model."""
        pairs = []
        for path, module in self.body.named_modules():
            if not hasattr(module, "slots"):
                continue
            for key, slot in module.slots().items():
                name = key.rsplit(".", 1)[-1]
                own = [getattr(m.get_submodule(path), name) for m in members]
                pairs.append((slot, own[slot.first: slot.first + len(slot.views)]))
        expected = {id(t) for m in members for t in [*m.parameters(), *m.buffers()]}
        found = {id(t) for _, tensors in pairs for t in tensors}
        if found != expected:
            raise TypeError(f"the pack maps {len(found & expected)} of the {len(expected)} "
                            "tensors of its members")
        return pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @torch.no_grad()
    def load_members(self) -> None:
        for slot, own in self._pairs:
            for view, tensor in zip(slot.views, own):
                view.copy_(tensor)

    @torch.no_grad()
    def store_members(self) -> None:
        for slot, own in self._pairs:
            for view, tensor in zip(slot.views, own):
                tensor.copy_(view)

    def parameter_slots(self) -> list[tuple[Slot, list[torch.Tensor]]]:
        """(slot, the members' own parameters) for every packed parameter."""
        params = {id(p) for p in self.parameters()}
        return [(slot, own) for slot, own in self._pairs if id(slot.packed) in params]



def same_view(tensor: torch.Tensor, view: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """The view of `tensor` (shaped and laid out as `packed`) that `view` is of `packed`:
    how a momentum buffer of a packed parameter maps onto one member's parameter."""
    return tensor.as_strided(view.size(), view.stride(),
                             tensor.storage_offset() + view.storage_offset()
                             - packed.storage_offset())
