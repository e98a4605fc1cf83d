"""Per-device random streams (seqcl.rng): saved and restored, also across machines."""

from __future__ import annotations

import torch

import seqcl.rng as rng
from seqcl.rng import DeviceGenerators


def test_streams_round_trip_through_state_dict():
    a = DeviceGenerators(7)
    torch.rand(3, generator=a.get("cpu"))  # advance the stream
    b = DeviceGenerators(7)
    b.load_state_dict(a.state_dict())
    assert torch.randint(1000, (5,), generator=a.get("cpu")).tolist() == \
        torch.randint(1000, (5,), generator=b.get("cpu")).tolist()


def test_a_stream_of_a_device_this_machine_lacks_is_kept_and_used_when_the_device_appears(monkeypatch):
    """A GPU run resumed on CPU: its CUDA stream cannot be made here. It is kept as saved (the next
    checkpoint holds it again) and set into the generator if that device is used after all."""
    saved = torch.Generator().manual_seed(99).get_state()
    monkeypatch.setattr(rng, "device_available", lambda name: False)  # as "cuda:0" is on a CPU machine
    gens = DeviceGenerators(3)
    gens.load_state_dict({"cpu": saved})
    assert list(gens.state_dict()) == ["cpu"] and torch.equal(gens.state_dict()["cpu"], saved)
    assert torch.equal(gens.get("cpu").get_state(), saved)  # the device is used: its saved stream, not a fresh one
    assert torch.equal(gens.state_dict()["cpu"], saved)


def test_device_available_names_what_this_machine_has():
    assert rng.device_available("cpu")
    assert rng.device_available("cuda") == torch.cuda.is_available()
    assert not rng.device_available(f"cuda:{torch.cuda.device_count()}")
