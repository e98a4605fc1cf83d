"""Seeded random streams a component owns, one per device, that survive a checkpoint.

A component that draws its own random numbers (CL4SRec's operators, DuoRec's
same-target draw) must not share the global RNG: the encoder's dropout would
then shift with every augmenter. It keeps a :class:`DeviceGenerators` seeded from
the run's seed plus its own offset, and returns :meth:`DeviceGenerators.state_dict`
from ``get_extra_state`` so that ``--resume`` continues the very same stream
(see ``seqcl.interfaces``, "State").
"""

from __future__ import annotations

import torch
from torch import Tensor


class DeviceGenerators:
    """``torch.Generator`` objects seeded with ``seed``, created lazily per device.

    A saved stream of a device this machine lacks (a GPU run resumed on CPU) is
    kept as saved: it goes back into :meth:`state_dict`, and into the generator
    should that device be used later.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        self._absent: dict[str, Tensor] = {}  # saved states of devices this machine lacks

    def get(self, device: torch.device | str) -> torch.Generator:
        """The stream on ``device`` (created and seeded on first use, or set to its saved state)."""
        key = str(torch.device(device))
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = torch.Generator(device=key).manual_seed(self.seed)
            if key in self._absent:
                gen.set_state(self._absent.pop(key))
        return gen

    def state_dict(self) -> dict[str, Tensor]:
        """Device name → generator state (a CPU byte tensor; loadable with ``weights_only=True``)."""
        return {**self._absent, **{key: gen.get_state() for key, gen in self._generators.items()}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the streams saved by :meth:`state_dict` (devices not in ``state`` start afresh)."""
        self._generators, self._absent = {}, {}
        for key, value in state.items():
            if device_available(key):
                self.get(key).set_state(value)
            else:
                self._absent[key] = value


def device_available(name: str) -> bool:
    """Whether this machine has the device ``name`` (``cpu``, ``cuda:1``, ``mps``, …): the
    check ``train.device`` gets (:func:`seqcl.config.check_device`), as a yes or no."""
    from seqcl.config import check_device
    from seqcl.errors import ConfigError

    try:
        check_device(name)
    except ConfigError:
        return False
    return True


class OwnsGenerators:
    """Mixin for an ``nn.Module`` that draws from ``self.generators``.

    Puts the streams' state into the module's ``state_dict`` (PyTorch's
    ``get_extra_state``/``set_extra_state``), so a checkpoint holds them.
    """

    generators: DeviceGenerators

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The component's own stream on ``device``."""
        return self.generators.get(device)

    def get_extra_state(self) -> dict:
        return {"generators": self.generators.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.generators.load_state_dict(state["generators"])
