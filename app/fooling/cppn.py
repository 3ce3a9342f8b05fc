"""Indirect encoding: CPPNs (compositional pattern-producing networks), evolved as in the paper's
code, for a whole population at once.

A genome is a feed-forward network over a fixed number of node slots: 4 inputs (x, y, distance
from the centre, bias), the outputs (1 grey value, or 3 colour values: H, L, S by default), and up
to ``max_hidden`` hidden slots that start empty. Every individual's network is a set of tensors
with a leading population dimension, so mutation is a handful of masked tensor ops and rendering
is one batched loop over node ranks, never a Python loop over individuals or pixels.

Feed-forward order: each node has an order key (inputs 0, outputs 1, hidden strictly between);
a link src -> dst may exist only when key[src] < key[dst]. Splitting a link gives the new node a
key between its two ends, so the order stays valid without any graph search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from app.fooling.color import COLORS, to_rgb
from app.fooling.direct import polynomial_mutation

N_IN = 4  # x, y, d, bias
ACTIVATIONS = ("sine", "sigmoid", "gaussian", "linear")
WEIGHT_RANGE = 10.0  # genes in [0, 1] map to weights in [-10, 10], as in the paper's code


@dataclass
class CppnGenomes:
    """A population of CPPNs. Slots: [0, 4) inputs, [4, 4 + n_out) outputs, the rest hidden."""

    weight: torch.Tensor  # (N, M, M) genes in [0, 1]; weight[n, src, dst]
    link: torch.Tensor  # (N, M, M) bool
    act: torch.Tensor  # (N, M) activation index into ACTIVATIONS
    alive: torch.Tensor  # (N, M) bool (inputs and outputs always)
    key: torch.Tensor  # (N, M) feed-forward order key

    def __len__(self) -> int:
        return self.weight.shape[0]

    def map(self, fn) -> CppnGenomes:
        return CppnGenomes(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


_FUNCS = (
    torch.sin,
    lambda x: 2 * torch.sigmoid(x) - 1,  # bipolar sigmoid
    lambda x: torch.exp(-x * x),  # gaussian
    lambda x: x.clamp(-3, 3) / 3,  # clipped linear
)


def activate(pre: torch.Tensor, act: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The paper code's four functions, chosen per row of ``pre`` by ``act``. Rows are grouped by
    function so that each row pays for one function, not four. ``out`` (a view into the render's
    node values) is written in place, saving a copy of the whole layer."""
    out = torch.empty_like(pre) if out is None else out
    for k, fn in enumerate(_FUNCS):
        rows = (act == k).nonzero().squeeze(1)
        if len(rows) == len(pre):  # one function for every row: no gather, no scatter
            out.copy_(fn(pre))
        elif len(rows):
            out[rows] = fn(pre[rows])
    return out


CPPN_INPUTS = ("unit", "pixels")


def coordinates(height: int, width: int, device, dtype=torch.float32, inputs: str = "unit") -> torch.Tensor:
    """(4, H*W): x, y, distance from the centre, bias. ``unit`` (this lab's default): x and y in
    [-1, 1] and the distance rescaled to [-1, 1], so a CPPN is a continuous function of position and
    the same genome renders at any resolution. ``pixels`` (the paper's code): x and y are raw
    column and row indices (0 .. size - 1), the distance is measured on the grid normalised to
    [-1, 1] (0 .. sqrt 2)."""
    if inputs not in CPPN_INPUTS:
        raise ValueError(f"cppn_inputs must be one of {', '.join(CPPN_INPUTS)}, not {inputs!r}")
    ys = torch.linspace(-1, 1, height, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, width, device=device, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    if inputs == "pixels":
        d = torch.sqrt(x * x + y * y)
        row, col = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                                  torch.arange(width, device=device, dtype=dtype), indexing="ij")
        return torch.stack([col, row, d, torch.ones_like(x)]).flatten(1)
    d = torch.sqrt(x * x + y * y) / math.sqrt(2) * 2 - 1
    return torch.stack([x, y, d, torch.ones_like(x)]).flatten(1)


class CppnEncoding:
    """The encoding interface used by MAP-Elites, single-target evolution and the random baseline:
    init / mutate / render / take / put / select. Mutation probabilities follow the paper's code."""

    name = "cppn"

    def __init__(self, shape: tuple[int, int, int], device, max_hidden: int = 24, eta: float = 15.0,
                 coord_scale: float = 1.0, p_add_link: float = 0.5, p_del_link: float = 0.3,
                 p_add_node: float = 0.5, p_del_node: float = 0.2, p_act: float = 0.1,
                 render_chunk: int = 1 << 24, group_render: bool | None = None, color: str = "hls",
                 inputs: str = "unit") -> None:
        self.shape, self.device, self.eta = shape, torch.device(device), eta
        channels = shape[0]
        if channels not in (1, 3):
            raise ValueError(f"CPPN images need 1 or 3 channels, not {channels}")
        if color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, not {color!r}")
        if inputs not in CPPN_INPUTS:
            raise ValueError(f"cppn_inputs must be one of {', '.join(CPPN_INPUTS)}, not {inputs!r}")
        self.color, self.inputs = color, inputs  # outputs read as this colour space; coordinate inputs
        self.n_out = channels
        self.first_hidden = N_IN + self.n_out
        self.slots = self.first_hidden + max_hidden
        self.coord_scale = coord_scale
        self.p_add_link, self.p_del_link = p_add_link, p_del_link
        self.p_add_node, self.p_del_node, self.p_act = p_add_node, p_del_node, p_act
        self.render_chunk = render_chunk  # floats of node values held at once while rendering
        # Render networks of equal size together (None: when images are large, see render)
        self.group_render = group_render
        self._coords: dict[tuple[int, int], torch.Tensor] = {}

    # -- population -----------------------------------------------------------------------------
    def init(self, n: int, gen: torch.Generator) -> CppnGenomes:
        """Every input linked to every output, random weights and activations, no hidden nodes."""
        m, dev = self.slots, self.device
        link = torch.zeros((n, m, m), dtype=torch.bool, device=dev)
        link[:, :N_IN, N_IN:self.first_hidden] = True
        weight = torch.rand((n, m, m), generator=gen, device=dev) * link
        act = torch.randint(len(ACTIVATIONS), (n, m), generator=gen, device=dev)
        alive = torch.zeros((n, m), dtype=torch.bool, device=dev)
        alive[:, :self.first_hidden] = True
        key = torch.full((n, m), 2.0, device=dev)  # empty hidden slots sort last
        key[:, :N_IN] = 0.0
        key[:, N_IN:self.first_hidden] = 1.0
        return CppnGenomes(weight, link, act, alive, key)

    @staticmethod
    def take(g: CppnGenomes, idx: torch.Tensor) -> CppnGenomes:
        return g.map(lambda t: t[idx])

    @staticmethod
    def put(g: CppnGenomes, idx: torch.Tensor, new: CppnGenomes, new_idx: torch.Tensor) -> None:
        for f in fields(g):
            getattr(g, f.name)[idx] = getattr(new, f.name)[new_idx]

    @staticmethod
    def select(parents: CppnGenomes, children: CppnGenomes, rows: torch.Tensor,
               from_children: torch.Tensor) -> CppnGenomes:
        def pick(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            mask = from_children.view(-1, *([1] * (p.ndim - 1)))
            return torch.where(mask, c[rows], p[rows])

        return CppnGenomes(**{f.name: pick(getattr(parents, f.name), getattr(children, f.name))
                              for f in fields(parents)})

    # -- mutation -------------------------------------------------------------------------------
    def mutate(self, g: CppnGenomes, gen: torch.Generator, rate: float = 0.1) -> CppnGenomes:
        """The paper code's operators, in its order: weights (polynomial, per link with
        probability ``rate``), activation redraw (per node, 0.1), add link (0.5), delete link
        (0.3), add node by splitting a link (0.5), delete a hidden node (0.2)."""
        g = g.map(torch.clone)
        n, m, dev = len(g), self.slots, self.device
        g.weight = torch.where(g.link, polynomial_mutation(g.weight, rate, self.eta, gen), g.weight)
        redraw = (torch.rand((n, m), generator=gen, device=dev) < self.p_act) & g.alive
        g.act = torch.where(redraw, torch.randint(len(ACTIVATIONS), (n, m), generator=gen, device=dev), g.act)

        def chance(p: float) -> torch.Tensor:
            return torch.rand(n, generator=gen, device=dev) < p

        def pick(mask: torch.Tensor, who: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """A uniformly random True entry of each row of ``mask`` (flattened), for the rows in
            ``who`` that have one: returns (rows, flat index)."""
            flat = mask.flatten(1)
            score = torch.rand(flat.shape, generator=gen, device=dev).masked_fill_(~flat, -1.0)
            best, where = score.max(1)
            ok = who & (best >= 0)
            rows = ok.nonzero().squeeze(1)
            return rows, where[rows]

        # add a link: both ends alive, feed-forward by key, not yet linked
        allowed = (g.alive[:, :, None] & g.alive[:, None, :] & (g.key[:, :, None] < g.key[:, None, :]) & ~g.link)
        rows, flat = pick(allowed, chance(self.p_add_link))
        src, dst = flat // m, flat % m
        g.link[rows, src, dst] = True
        g.weight[rows, src, dst] = torch.rand(len(rows), generator=gen, device=dev)

        rows, flat = pick(g.link, chance(self.p_del_link))
        g.link[rows, flat // m, flat % m] = False

        # add a node: split a random link src -> dst into src -> new -> dst, both with its weight
        free = ~g.alive
        free[:, :self.first_hidden] = False
        want = chance(self.p_add_node) & free.any(1)
        rows, flat = pick(g.link, want)
        src, dst = flat // m, flat % m
        _, new = pick(free[rows], torch.ones(len(rows), dtype=torch.bool, device=dev))
        w = g.weight[rows, src, dst]
        lo, hi = g.key[rows, src], g.key[rows, dst]
        t = torch.rand(len(rows), generator=gen, device=dev) * 0.98 + 0.01
        g.alive[rows, new] = True
        g.key[rows, new] = lo + (hi - lo) * t
        g.act[rows, new] = torch.randint(len(ACTIVATIONS), (len(rows),), generator=gen, device=dev)
        g.link[rows, src, dst] = False
        g.link[rows, src, new] = True
        g.link[rows, new, dst] = True
        g.weight[rows, src, new] = w
        g.weight[rows, new, dst] = w

        # delete a hidden node with all its links
        hidden = g.alive.clone()
        hidden[:, :self.first_hidden] = False
        rows, node = pick(hidden, chance(self.p_del_node))
        g.alive[rows, node] = False
        g.key[rows, node] = 2.0
        g.link[rows, node, :] = False
        g.link[rows, :, node] = False
        g.weight = g.weight * g.link  # unlinked genes carry nothing (keeps genomes canonical)
        return g

    # -- rendering ------------------------------------------------------------------------------
    def grid(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._coords:
            c = coordinates(height, width, self.device, inputs=self.inputs)
            c[:2] *= self.coord_scale
            self._coords[(height, width)] = c
        return self._coords[(height, width)]

    def render(self, g: CppnGenomes, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1], at the model's size unless ``size`` is given."""
        h, w = size or self.shape[1:]
        coords = self.grid(h, w)
        p = coords.shape[1]
        count = g.alive.sum(1)
        # A batch is computed over its largest network's node count, so a small network padded to a
        # large one's size does wasted work on every pixel. At ImageNet size that waste dominates
        # (measured: 32 genomes at 224x224 render in half the time when grouped by size); at MNIST size
        # the extra Python steps of more, smaller batches cost more than the padding.
        group = self.group_render if self.group_render is not None else p >= 64 * 64
        if group:
            order = count.argsort(stable=True)
            sizes = count[order].tolist()
        else:
            order, sizes = None, [int(count.max())] * len(g)
        out = torch.empty((len(g), self.n_out, p), device=self.device, dtype=coords.dtype)
        i = 0
        while i < len(g):
            per = max(1, self.render_chunk // (self.slots * p))
            j = i + 1
            while j < len(g) and j - i < per and sizes[j] == sizes[i]:
                j += 1
            rows = slice(i, j) if order is None else order[i:j]
            out[rows] = self._render(g.map(lambda t, rows=rows: t[rows]), coords).view(j - i, self.n_out, p)
            i = j
        return out.view(len(g), self.n_out, h, w)

    def _render(self, g: CppnGenomes, coords: torch.Tensor) -> torch.Tensor:
        n = len(g)
        steps = int(g.alive.sum(1).max())
        # Work in rank order (inputs, hidden by key, outputs): node r then reads only the r values
        # computed before it, and each step writes one contiguous row.
        order = g.key.argsort(dim=1, stable=True)[:, :steps]
        w = torch.where(g.link, g.weight * (2 * WEIGHT_RANGE) - WEIGHT_RANGE, 0.0)
        w = w.gather(1, order[:, :, None].expand(n, steps, w.shape[2]))  # rows: sources by rank
        w = w.gather(2, order[:, None, :].expand(n, steps, steps)).transpose(1, 2).contiguous()  # [n, dst, src]
        act = g.act.gather(1, order)
        vals = torch.empty((n, steps, coords.shape[1]), device=self.device, dtype=coords.dtype)
        vals[:, :N_IN] = coords
        for r in range(N_IN, steps):
            pre = torch.bmm(w[:, r:r + 1, :r], vals[:, :r]).squeeze(1)
            activate(pre, act[:, r], out=vals[:, r])
        # each individual's outputs are its last n_out live ranks
        last = g.alive.sum(1)[:, None] - self.n_out + torch.arange(self.n_out, device=self.device)
        vals = vals.gather(1, last[:, :, None].expand(n, self.n_out, vals.shape[2]))
        outs = vals.abs().clamp_(0, 1)  # pixel = |out|, as the code does
        return to_rgb(outs, self.color)
