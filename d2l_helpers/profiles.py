"""Run profiles: how much of the book's recipe a run can afford on this hardware.

=======  =====================================================================
profile  what it changes from the book's recipe
=======  =====================================================================
full     nothing: 224 px crops, batch 128, 5 epochs, every image (for GPUs)
cpu      160 px crops and batch 32 so the whole module runs in minutes on a
         2-core laptop; the book's 5 epochs, every image
ci       a few images per class at a small size: checks the code, not the science
=======  =====================================================================

The learning rates stay the book's in every profile. They are *per example*
(``trainer.step(1)`` sums the batch's gradients), so they need no change when the
batch size changes.

The profile comes from ``D2L_PROFILE`` (``full``, ``cpu`` or ``ci``); without it, ``full``
on a machine with a GPU and ``cpu`` otherwise.

Example:
    >>> from d2l_helpers.profiles import get_profile
    >>> get_profile("full").image_size
    224
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    """One run size. ``image_size`` is the crop the net sees; ``resize`` the test-time
    resize before the centre crop (the book's 256 for 224); ``decode_size`` the short side
    the photos are decoded to once, before any augmentation."""

    name: str
    image_size: int
    resize: int
    decode_size: int | None  # short side photos are decoded to once; None: as stored
    batch_size: int
    num_epochs: int
    train_per_class: int | None  # None: every image
    test_per_class: int | None
    description: str
    seeds: int = 5  # how many seeds the seed study (`study`) compares every method on

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "full": Profile("full", 224, 256, None, 128, 5, None, None,
                    "the book's recipe: 224 px, batch 128, 5 epochs, all images"),
    # Measured on 2 vCPUs (efficientnet_lite0, batch 32, seed 0, stand-in photos): test
    # accuracy after 5 epochs 0.882 at 160 px (115 s) vs 0.856 at 128 px (76 s); batch 32
    # trains faster than 64 here (28 vs 22 examples/s) and needs half the memory.
    "cpu": Profile("cpu", 160, 183, 224, 32, 5, None, None,
                   "laptop CPU: 160 px crops, batch 32, the book's 5 epochs, all images"),
    "ci": Profile("ci", 96, 110, 128, 32, 3, 125, 50,
                  "CI: 96 px, batch 32, 3 epochs, 125 train / 50 test images per class",
                  seeds=2),
}


def default_profile_name() -> str:
    """``full`` when a GPU is visible, else ``cpu``."""
    from .runtime import num_gpus

    return "full" if num_gpus() > 0 else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else ``$D2L_PROFILE``, else the hardware default."""
    name = name or os.environ.get("D2L_PROFILE") or default_profile_name()
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"Unknown profile {name!r} (from D2L_PROFILE or the call). "
            f"Choose one of: {', '.join(PROFILES)}.") from None


def resolve_profile(profile: str | Profile | None = None) -> Profile:
    """``profile`` itself if it is a `Profile`, else `get_profile` of the name (or None)."""
    return profile if isinstance(profile, Profile) else get_profile(profile)
