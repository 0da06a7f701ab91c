"""Runs across processes and machines with torch.distributed, as launched by ``torchrun``.

Each rank scores a contiguous share of the queries. Candidates every query needs (the
in-batch positives, a shared pool) are read by each rank from shared storage, block by
block, rather than exchanged: a rank's compute grows with N²·d / ranks while reading the
candidates costs N·d, so the reads are cheap and the network carries only results.
Results are combined with collectives: per-sample arrays (a few numbers per query) are
gathered so that medians and percentiles are exact, and the temperature fit sums its
per-query derivatives across ranks. Every collective has a timeout, and errors are
exchanged at fixed points so that a failure on one rank stops them all with its message.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import InfonceError

TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("INFONCE_DIST_TIMEOUT", "600")))
"""How long a collective may wait for the other ranks before the run fails."""


def launched() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Cluster:
    """This process's place in a distributed run (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def share(self, rows: int) -> tuple[int, int]:
        """This rank's contiguous share [first, last) of ``rows`` queries.

        >>> Cluster(1, 3).share(10)
        (4, 7)
        """
        base, extra = divmod(rows, self.world)
        first = self.rank * base + min(self.rank, extra)
        return first, first + base + (1 if self.rank < extra else 0)

    def check(self, error: BaseException | None) -> None:
        """Exchange errors: if any rank failed, every rank raises the first failure."""
        if self.world == 1:
            if error is not None:
                raise error
            return
        message = None if error is None else str(error)
        messages: list[Any] = [None] * self.world
        dist.all_gather_object(messages, message)
        for rank, text in enumerate(messages):
            if text is not None:
                if rank == self.rank and isinstance(error, InfonceError):
                    raise error
                raise InfonceError(f"rank {rank}: {text}")

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a step on every rank: if it fails on any, it fails on all, with that message."""
        error: Exception | None = None
        try:
            yield
        except Exception as exc:
            error = exc
        self.check(error)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (in float64 for floats)."""
        if self.world == 1:
            return tensor
        work = tensor.double() if tensor.is_floating_point() else tensor.long()
        work = work.to(self._collective_device()).contiguous()
        dist.all_reduce(work)
        return work.to(tensor.device)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's rows, in rank order (shares differ in size by at most 1)."""
        if self.world == 1:
            return tensor
        device = self._collective_device()
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=device))
        longest = int(max(size.item() for size in sizes))
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
        padded[:tensor.shape[0]] = tensor.to(device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:int(size.item())] for part, size in zip(parts, sizes,
                                                                          strict=True)]).cpu()

    def summer(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``sum`` for a distributed run, None alone (callers then skip the collectives)."""
        return None if self.world == 1 else self.sum

    def _collective_device(self) -> torch.device:
        if dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def start(device: str) -> Cluster:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPUs."""
    if not launched():
        return Cluster()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if wants_cuda:
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    except Exception as exc:
        raise InfonceError(f"cannot join the distributed run ({exc})") from None
    return Cluster(rank, world, local_rank)


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_scores(cluster: Cluster, scores: Any) -> Any:
    """A PerSampleScores with every rank's rows, in order (unchanged when run alone)."""
    if cluster.world == 1:
        return scores
    from dataclasses import fields, replace

    gathered = {}
    for field in fields(scores):
        value = getattr(scores, field.name)
        if isinstance(value, torch.Tensor):
            gathered[field.name] = cluster.gather(value.detach())
    return replace(scores, **gathered)
